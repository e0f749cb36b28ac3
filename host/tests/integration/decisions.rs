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
hash_key = "test-key-0123456789"
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
    let server = util::TestServer::at(port, admin_port);
    let mut child = spawn(dir.path(), port, admin_port);
    ready(&server, &mut child).await;
    let mut answered = 0;
    for user in 0..300 {
        if rank(&server, "discovery", &body(user)).await.status == StatusCode::OK {
            answered += 1;
        }
    }
    // Everything answered so far is on disk (flushed), then the host is killed mid-stream with
    // requests still arriving.
    let log_dir = dir.path().join("data/decisions");
    let start = std::time::Instant::now();
    while records(&log_dir).0.len() < answered {
        assert!(start.elapsed() < Duration::from_secs(60), "the log never caught up with {answered} answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

    let (records, reports) = records(&log_dir);
    assert!(reports.iter().all(|r| r.bad.is_empty()), "no line is garbage: {reports:?}");
    assert!(reports.iter().filter(|r| r.torn).count() <= 1, "at most the file being written is torn");
    assert!(records.len() >= answered, "{} records, {answered} were on disk before the kill", records.len());
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
        ("[decision_log]\nqueue_mb = 0", "decision_log.queue_mb"),
        ("[surfaces.banners]\nlog_mask = { \"user.id\" = \"hash\" }", "decision_log.hash_key"),
    ] {
        let error = relish_host::server::config::Config::from_toml(toml).unwrap_err();
        assert!(error.key.contains(key), "{toml}: {error:?}");
    }
}

/// Runs `relish replay` and returns its JSON report.
fn replay(args: &[&str]) -> (bool, serde_json::Value) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_relish"))
        .arg("replay")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    });
    (output.status.success(), report)
}

#[tokio::test(flavor = "multi_thread")]
async fn relish_replay_reproduces_every_answer_and_measures_a_candidate_as_a_direct_computation_does() {
    let toml = "[surfaces.discovery]\npolicy = \"discovery\"\nlog_sample = 1.0\n[decision_log]\nflush_ms = 20\n";
    let server = util::start(&["discovery", "popularity"], &[], toml).await;
    for user in 0..120 {
        let body = relish_tests::synthetic::venues(20, user, false);
        assert_eq!(rank(&server, "discovery", &body.to_string()).await.status, StatusCode::OK);
    }
    let mut server = server;
    server.handle.take().unwrap().shutdown().await;
    let data = server.dir.path().join("data");
    let files: Vec<String> =
        decisions::log_files(&data.join("decisions")).iter().map(|p| p.display().to_string()).collect();
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    let data_arg = data.display().to_string();
    args.extend(["--data-dir", &data_arg]);

    // The logged versions: every answer, bit for bit.
    let (ok, report) = replay(&args);
    assert!(ok, "{report}");
    assert_eq!(report["decisions"], 120);
    assert_eq!(report["reproduced"], 120, "{report}");
    assert_eq!(report["differing"], json!([]));

    // A candidate: the logged policy with one parameter changed. Its agreement is what comparing
    // the two answers of every decision directly gives.
    let (records, _) = records(&data.join("decisions"));
    let discovery = relish_tests::policy("discovery");
    let (mut top1, mut overlap, mut tau) = (0.0, 0.0, 0.0);
    for record in &records {
        let mut request = record.request.to_request().unwrap();
        request.params.set("diversity", "0.9");
        let order = discovery.rank(&request, &relish_tests::budget()).unwrap().order().to_vec();
        let agreement = relish_host::serving::compare::compare(&record.answer.order, &order);
        top1 += agreement.top1;
        overlap += agreement.overlap;
        tau += agreement.tau;
    }
    let n = records.len() as f64;
    let candidate = relish_tests::policies()["discovery"].component.display().to_string();
    let mut with_candidate = args.clone();
    with_candidate.extend(["--policy", &candidate, "--param", "diversity=0.9"]);
    let (ok, report) = replay(&with_candidate);
    assert!(ok, "{report}");
    let group = &report["agreement"][0];
    assert_eq!(group["decisions"], 120, "{report}");
    for (field, direct) in [("top1", top1 / n), ("overlap", overlap / n), ("tau", tau / n)] {
        let reported = group[field].as_f64().unwrap();
        assert!((reported - direct).abs() < 1e-9, "{field}: reported {reported}, direct {direct}");
    }
    assert!(overlap / n < 1.0 || tau / n < 1.0, "the parameter changes some answers: the test means something");
    // The same candidate named as a version the data directory stores.
    let mut stored = args.clone();
    stored.extend(["--version", "discovery@0.1.0", "--param", "diversity=0.9"]);
    let (ok, by_version) = replay(&stored);
    assert!(ok, "{by_version}");
    assert_eq!(by_version["agreement"], report["agreement"]);
    let mut unknown = args.clone();
    unknown.extend(["--version", "discovery@9.9.9"]);
    let output =
        std::process::Command::new(env!("CARGO_BIN_EXE_relish")).arg("replay").args(&unknown).output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("discovery@9.9.9 is not stored"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Bad input: a line of another contract, a record of a version the directory does not have,
    // a torn file; named, and the rest replayed.
    let mut text = String::new();
    std::io::Read::read_to_string(&mut zstd::Decoder::new(std::fs::File::open(&files[0]).unwrap()).unwrap(), &mut text)
        .unwrap();
    let good = text.lines().next().unwrap();
    let unknown: String = {
        let mut record: serde_json::Value = serde_json::from_str(good).unwrap();
        record["id"] = json!("unknown-version");
        record["arm"]["digest"] = json!(format!("sha256:{}", "0".repeat(64)));
        record.to_string()
    };
    let other_contract = good.replace("relish:policy@0.3.0", "relish:policy@0.9.0");
    let mixed = server.dir.path().join("mixed.jsonl");
    std::fs::write(&mixed, format!("{good}\n{other_contract}\n{unknown}\n{}", &good[..good.len() / 2])).unwrap();
    let mixed_arg = mixed.display().to_string();
    let (ok, report) = replay(&[&mixed_arg, "--data-dir", &data_arg]);
    assert!(!ok, "a log with bad lines fails the replay's exit code");
    assert_eq!(report["reproduced"], 1, "{report}");
    let file = &report["files"][0];
    assert_eq!(file["torn"], true);
    assert!(
        file["bad"][0].as_str().unwrap().contains("mixed.jsonl:2: ")
            && file["bad"][0].as_str().unwrap().contains("0.9.0"),
        "{report}"
    );
    assert_eq!(report["skipped"][0]["id"], "unknown-version");
    assert!(report["skipped"][0]["reason"].as_str().unwrap().contains("is not in"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_written_under_load_replays_at_100_percent_with_feature_lookup_and_an_exploring_policy() {
    let features = relish_tests::root().join("tests/fixtures/features.jsonl");
    let toml = format!(
        r#"
[decision_log]
flush_ms = 20
[features.stores.file]
backend = "memory"
path = {:?}
[surfaces.discovery]
policy = "discovery"
log_sample = 1.0
features = {{ source = "store", store = "file", deadline_ms = 1000 }}
[surfaces.banners]
policy = "banners"
log_sample = 1.0
"#,
        features.display().to_string()
    );
    let server = util::start(&["discovery", "banners", "popularity"], &[], &toml).await;
    let ids_only: serde_json::Value =
        serde_json::from_str(&relish_tests::fixture("discovery-evening-ids.json")).unwrap();
    let banners: serde_json::Value = serde_json::from_str(&relish_tests::fixture("banners-home.json")).unwrap();
    // Four clients at once, each request with its own seed (so the banners policy explores).
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let (base, ids_only, banners) = (server.base.clone(), ids_only.clone(), banners.clone());
        clients.push(tokio::spawn(async move {
            let probe =
                util::TestServer { handle: None, base, admin: String::new(), dir: tempfile::tempdir().unwrap() };
            let mut firsts = HashSet::new();
            for i in 0..60u64 {
                let seed = client * 1000 + i;
                let (surface, mut body) =
                    if i % 2 == 0 { ("discovery", ids_only.clone()) } else { ("banners", banners.clone()) };
                body["request_id"] = json!(format!("r-{seed}"));
                body["seed"] = json!(seed);
                let answer = rank(&probe, surface, &body.to_string()).await;
                assert_eq!(answer.status, StatusCode::OK);
                if surface == "banners" {
                    firsts.insert(util::ids(&answer.json())[0].clone());
                }
            }
            firsts
        }));
    }
    let mut firsts = HashSet::new();
    for client in clients {
        firsts.extend(client.await.unwrap());
    }
    assert!(firsts.len() > 1, "the banners policy explores: different banners come first ({firsts:?})");
    let mut server = server;
    server.handle.take().unwrap().shutdown().await;
    let data = server.dir.path().join("data");
    let (logged, _) = records(&data.join("decisions"));
    assert_eq!(logged.len(), 240);
    let discovery = logged.iter().find(|r| r.surface == "discovery").unwrap();
    assert!(
        discovery.request.features.iter().any(|v| !v.is_nan()),
        "the record holds the features the store filled in"
    );

    let files: Vec<String> =
        decisions::log_files(&data.join("decisions")).iter().map(|p| p.display().to_string()).collect();
    let data_arg = data.display().to_string();
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    args.extend(["--data-dir", &data_arg]);
    let (ok, report) = replay(&args);
    assert!(ok, "{report}");
    assert_eq!((report["decisions"].as_u64(), report["reproduced"].as_u64()), (Some(240), Some(240)), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logged_decision_carries_what_its_shadows_did() {
    let toml = r#"
[decision_log]
flush_ms = 20
[surfaces.discovery]
policy = "popularity"
log_sample = 1.0
"#;
    let server = util::start(&["popularity"], &[], toml).await;
    let push =
        util::admin(&server, "PUT", "/v1/policies/ordered/versions/0.1.0", relish_tests::guest_bytes("ordered")).await;
    assert!(push.status.is_success(), "{}", String::from_utf8_lossy(&push.body));
    let plan = json!({
        "arms": [{"policy": "popularity", "version": "0.1.0", "weight": 100}],
        "shadow": [{"policy": "ordered", "version": "0.1.0", "sample": 1.0}]
    });
    let answer = util::admin(&server, "PUT", "/v1/surfaces/discovery/plan", plan.to_string()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    const REQUESTS: u64 = 30;
    for user in 0..REQUESTS {
        assert_eq!(rank(&server, "discovery", &body(user as usize)).await.status, StatusCode::OK);
    }
    // Shadows run off the response path, and a decision's record is written once its shadows
    // are done: a graceful stop waits for those still running, so every record is there.
    let data = server.dir.path().join("data/decisions");
    let mut server = server;
    server.handle.take().unwrap().shutdown().await;

    let (records, _) = records(&data);
    assert_eq!(records.len() as u64, REQUESTS);
    let mut answered = 0;
    for record in &records {
        assert_eq!(record.shadow_results.len(), 1, "{}", record.id);
        let shadow = &record.shadow_results[0];
        assert_eq!(shadow.name, "ordered@0.1.0");
        match shadow.outcome.as_str() {
            "answered" => {
                answered += 1;
                // `ordered` answers in input order; its agreement is what a direct computation gives.
                assert_eq!(shadow.order, [0, 1, 2], "{}", record.id);
                let direct = relish_host::serving::compare::compare(&record.answer.order, &shadow.order);
                let logged = shadow.agreement.unwrap();
                assert_eq!(
                    (logged.top1, logged.overlap, logged.rbo, logged.tau),
                    (direct.top1, direct.overlap, direct.rbo, direct.tau)
                );
                assert_eq!(logged.overlap, 1.0, "the same three candidates");
            }
            "skipped" => assert!(shadow.order.is_empty() && shadow.agreement.is_none()),
            other => panic!("{}: shadow outcome {other}", record.id),
        }
    }
    assert!(answered > 0, "some shadow calls ran");
}
