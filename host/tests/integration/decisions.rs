//! The decision log: sampled decisions written off the response path, read back whole, replayed
//! with the logged version to the same answer; a host killed while logging loses at most its
//! last flush and the file still reads.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hyper::StatusCode;
use relish_host::decisions::{self, record::Record};
use serde_json::json;

use crate::util::{self, free_port, rank, ready, spawn};

fn records(dir: &std::path::Path) -> (Vec<Record>, Vec<decisions::ReadReport>) {
    let mut records = Vec::new();
    let mut reports = Vec::new();
    for file in decisions::log_files(dir) {
        reports.push(decisions::read(&file, |r| records.push(r)).unwrap());
    }
    (records, reports)
}

fn body(user: usize) -> String {
    json!({
        "user": {"id": format!("u-{user}")},
        "candidates": [
            {"id": "a", "features": {"rating": 4.0, "orders_7d": 30}},
            {"id": "b", "features": {"rating": 4.8, "orders_7d": 300}},
            {"id": "c", "features": {"rating": 3.1}}]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_sampled_decision_is_logged_and_replays_to_the_same_answer() {
    let toml = r#"
[decision_log]
hash_key = "test-key"
flush_ms = 20
[surfaces.discovery]
policy = "popularity"
log_sample = 1.0
log_mask = { "context.location" = "drop" }
[surfaces.banners]
policy = "popularity"
log_sample = 0.3
log_mask = { "user.id" = "hash" }
"#;
    let server = util::start(&["popularity"], &[], toml).await;
    let mut answers = HashMap::new();
    for user in 0..200 {
        let answer = rank(&server, "discovery", &body(user)).await;
        assert_eq!(answer.status, StatusCode::OK);
        let id = answer.header("x-relish-decision-id").expect("a logged decision names its id").to_owned();
        answers.insert(id, util::ids(&answer.json()));
    }
    let mut banner_ids = HashSet::new();
    for _ in 0..2 {
        for user in 0..300 {
            let answer = rank(&server, "banners", &body(user)).await;
            assert_eq!(answer.status, StatusCode::OK);
            if let Some(id) = answer.header("x-relish-decision-id") {
                banner_ids.insert(id.to_owned());
            }
        }
    }
    let data = server.dir.path().join("data/decisions");
    let scrape = String::from_utf8_lossy(&util::get(&server, "/metrics").await.body).into_owned();
    assert_eq!(util::metric(&scrape, "relish_decisions_dropped_total", &[]), 0.0);
    // A graceful stop writes what is queued and finishes the file (the data directory stays).
    let mut server = server;
    server.handle.take().unwrap().shutdown().await;

    let (records, reports) = records(&data);
    assert!(reports.iter().all(|r| r.bad.is_empty() && !r.torn), "{reports:?}");
    let discovery: Vec<&Record> = records.iter().filter(|r| r.surface == "discovery").collect();
    assert_eq!(discovery.len(), 200, "every decision of a 100 % sample");
    let popularity = relish_tests::policy("popularity");
    for record in &discovery {
        assert_eq!(Some(&record.answer.ids), answers.get(&record.id), "{}: the answer sent", record.id);
        let arm = record.arm.as_ref().unwrap();
        assert_eq!((arm.policy.as_str(), arm.version.as_str()), ("popularity", "0.1.0"));
        assert!(record.sticky);
        // Replayed with the logged version: the same answer, bit for bit.
        let request = record.request.to_request().unwrap();
        let again = popularity.rank(&request, &relish_tests::budget()).unwrap();
        assert_eq!(again.order(), record.answer.order.as_slice(), "{}", record.id);
        let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(again.scores()), bits(&record.answer.scores), "{}", record.id);
    }
    assert!(discovery.iter().all(|r| r.request.user_id.as_deref().is_some_and(|u| u.starts_with("u-"))));
    assert!(discovery.iter().all(|r| r.masked == ["context.location: dropped"]));

    // 30 % of users, the same users on every request, their ids hashed.
    let banners: Vec<&Record> = records.iter().filter(|r| r.surface == "banners").collect();
    assert_eq!(banners.len(), banner_ids.len());
    let users: HashSet<&str> = banners.iter().map(|r| r.request.user_id.as_deref().unwrap()).collect();
    assert_eq!(banners.len(), 2 * users.len(), "a sampled user is sampled on both requests");
    assert!((60..=120).contains(&users.len()), "{} of 300 users", users.len());
    assert!(users.iter().all(|u| u.starts_with("h:")), "{users:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_while_logging_leaves_a_log_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["popularity"], &[]);
    let toml = format!(
        "[server]\nbundled_dir = {:?}\n[decision_log]\nflush_ms = 50\n[surfaces.discovery]\npolicy = \"popularity\"\nlog_sample = 1.0\n",
        bundled.display().to_string()
    );
    std::fs::write(dir.path().join("relish.toml"), toml).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let server = util::TestServer {
        handle: None,
        base: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
        dir: tempfile::tempdir().unwrap(),
    };
    let mut child = spawn(dir.path(), port, admin_port);
    ready(&server, &mut child).await;
    let mut answered = 0;
    for user in 0..300 {
        if rank(&server, "discovery", &body(user)).await.status == StatusCode::OK {
            answered += 1;
        }
    }
    // Past a flush, then killed mid-stream with requests still arriving.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let more = tokio::spawn({
        let base = server.base.clone();
        async move {
            let probe =
                util::TestServer { handle: None, base, admin: String::new(), dir: tempfile::tempdir().unwrap() };
            for user in 300..100_000 {
                let request = hyper::Request::post(format!("{}/v1/rank/discovery", probe.base))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body(user))))
                    .unwrap();
                let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
                if client.request(request).await.is_err() {
                    return;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill();
    more.await.unwrap();

    let (records, reports) = records(&dir.path().join("data/decisions"));
    assert!(reports.iter().all(|r| r.bad.is_empty()), "no line is garbage: {reports:?}");
    assert!(reports.iter().filter(|r| r.torn).count() <= 1, "at most the file being written is torn");
    assert!(records.len() >= answered, "{} records, {answered} answered before the last flush", records.len());
    let ids: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), records.len(), "no record twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_logging_settings_are_refused_naming_the_key() {
    for (toml, key) in [
        ("[surfaces.discovery]\nlog_sample = 1.5", "surfaces.discovery.log_sample"),
        ("[defaults]\nlog_sample = -0.1", "defaults.log_sample"),
        ("[surfaces.discovery]\nlog_mask = { \"user.email\" = \"drop\" }", "surfaces.discovery.log_mask.user.email"),
        ("[surfaces.discovery]\nlog_mask = { \"user.id\" = \"encrypt\" }", "surfaces.discovery"),
        ("[decision_log]\nqueue = 0", "decision_log.queue"),
        ("[decision_log]\nflush_ms = 1", "decision_log.flush_ms"),
    ] {
        let error = relish_host::server::config::Config::from_toml(toml).unwrap_err();
        assert!(error.key.contains(key), "{toml}: {error:?}");
    }
}
