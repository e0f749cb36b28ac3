//! Containment beyond one call: automatic rollback of a failing version, the whole fallback
//! chain, and a version refused where it cannot fit a surface's budget.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;

use crate::util::{self, THREE, admin, get, ids, metric, rank};

#[tokio::test]
async fn a_failing_version_is_rolled_back_by_the_host_and_not_reactivated() {
    // tagger@1.0.0 (good) is active; panic@0.1.0 (fails every call) is activated over it.
    let toml = "[surfaces.swap]\npolicy = \"tagger\"\nrollback_min_calls = 20\nrollback_window = 40\n\
                rollback_failure_rate = 0.25\n";
    let server = util::start(&["popularity"], &["tagger=tagger-v1"], toml).await;
    let uploaded = admin(&server, "PUT", "/v1/policies/panic/versions/0.1.0", relish_tests::guest_bytes("panic")).await;
    assert_eq!(uploaded.status, StatusCode::CREATED);
    let body = r#"{"policy": "panic", "version": "0.1.0"}"#;
    assert_eq!(admin(&server, "PUT", "/v1/surfaces/swap/activation", body).await.status, StatusCode::OK);
    let status = admin(&server, "GET", "/v1/surfaces/swap", "").await.json();
    assert_eq!(status["arms"][0]["health"]["min_calls"], 20, "{status}");
    assert_eq!(status["arms"][0]["health"]["calls"], 0, "a fresh window for the new version: {status}");

    // Every request is answered while the failing version is active, and for a while after.
    let mut fallbacks = 0;
    for _ in 0..20 {
        let answer = rank(&server, "swap", THREE).await;
        assert_eq!(answer.status, StatusCode::OK);
        fallbacks += usize::from(answer.json()["fallback"]["reason"] == "trap");
    }
    assert_eq!(fallbacks, 20, "the first 20 calls are judged before anything changes");

    // The host rolls back by itself (in the background; generous bound).
    let mut status = Value::Null;
    for _ in 0..200 {
        status = admin(&server, "GET", "/v1/surfaces/swap", "").await.json();
        if status["serving"] == "tagger@1.0.0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["serving"], "tagger@1.0.0", "rolled back to the good version: {status}");
    let history = status["history"].as_array().unwrap();
    let failed = &history[history.len() - 2];
    assert_eq!(failed["plan"]["arms"][0]["policy"], "panic");
    assert_eq!(failed["failed"]["arm"], "panic@0.1.0", "the revision is marked failed: {failed}");
    assert_eq!(failed["ended"]["how"], "rolled-back");
    assert_eq!(failed["ended"]["automatic"], true);
    assert!(failed["ended"]["reason"].as_str().unwrap().contains("20 of the last 20 calls failed"), "{failed}");
    assert_eq!(status["current"]["plan"]["arms"][0]["policy"], "tagger");
    let scrape = String::from_utf8(get(&server, "/metrics").await.body.to_vec()).unwrap();
    assert_eq!(metric(&scrape, "relish_auto_rollbacks_total", &[("surface", "swap")]), 1.0);

    // The good version answers again, and nothing re-activates the failing one.
    for _ in 0..30 {
        let answer = rank(&server, "swap", THREE).await.json();
        assert_eq!(answer["fallback"], Value::Null, "{answer}");
        assert_eq!(answer["policy"]["name"], "tagger");
    }
    let status = admin(&server, "GET", "/v1/surfaces/swap", "").await.json();
    assert_eq!(status["serving"], "tagger@1.0.0");
    server.stop().await;
}

#[tokio::test]
async fn automatic_rollback_can_be_turned_off_per_surface() {
    // The same set-up as above, where the host would roll back: a failing version over a good one.
    let toml = "[surfaces.swap]\npolicy = \"tagger\"\nauto_rollback = false\n";
    let server = util::start(&["popularity"], &["tagger=tagger-v1"], toml).await;
    let uploaded = admin(&server, "PUT", "/v1/policies/panic/versions/0.1.0", relish_tests::guest_bytes("panic")).await;
    assert_eq!(uploaded.status, StatusCode::CREATED);
    let body = r#"{"policy": "panic", "version": "0.1.0"}"#;
    assert_eq!(admin(&server, "PUT", "/v1/surfaces/swap/activation", body).await.status, StatusCode::OK);
    // 150 failures: past the default window's 100 calls at 100 % failures.
    for _ in 0..150 {
        assert_eq!(rank(&server, "swap", THREE).await.json()["fallback"]["reason"], "trap");
    }
    // Give a rollback, were one asked for, every chance to run (the server shares this thread).
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let status = admin(&server, "GET", "/v1/surfaces/swap", "").await.json();
        assert_eq!(status["serving"], "panic@0.1.0", "{status}");
        assert_eq!(status["arms"][0]["health"], Value::Null, "{status}");
    }
    let scrape = String::from_utf8(get(&server, "/metrics").await.body.to_vec()).unwrap();
    assert_eq!(metric(&scrape, "relish_auto_rollbacks_total", &[("surface", "swap")]), 0.0);
    server.stop().await;
}

#[tokio::test]
async fn when_the_fallback_policy_fails_too_the_input_order_answers_and_both_reasons_are_given() {
    let toml = "[surfaces.banners]\npolicy = \"panic\"\nfallback = \"declines\"\n";
    let server = util::start(&[], &["panic", "declines"], toml).await;
    let answer = rank(&server, "banners", THREE).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = answer.json();
    assert_eq!(answer["fallback"]["reason"], "trap", "{answer}");
    assert_eq!(answer["fallback"]["answered_by"], "input-order");
    assert_eq!(answer["fallback"]["fallback_reason"], "error");
    assert!(answer["fallback"]["fallback_detail"].as_str().unwrap().contains("model not loaded"), "{answer}");
    assert_eq!(ids(&answer), ["first", "second", "third"]);
    let scrape = String::from_utf8(get(&server, "/metrics").await.body.to_vec()).unwrap();
    let labels = [("surface", "banners"), ("reason", "trap"), ("answered_by", "input-order")];
    assert_eq!(metric(&scrape, "relish_fallbacks_total", &labels), 1.0);
    assert_eq!(metric(&scrape, "relish_policy_errors_total", &[("policy", "declines"), ("reason", "error")]), 1.0);
    server.stop().await;
}

#[tokio::test]
async fn a_version_whose_memory_exceeds_a_surface_cap_is_refused_there_with_the_reason() {
    // Bundled policies start with 4 MiB of linear memory (`relish build`); `tiny` allows 2.
    let toml = "[surfaces.discovery]\npolicy = \"popularity\"\n[surfaces.tiny]\nmemory_mb = 2\n";
    let server = util::start(&["popularity"], &[], toml).await;
    let body = r#"{"policy": "popularity", "version": "0.1.0"}"#;
    let refused = admin(&server, "PUT", "/v1/surfaces/tiny/activation", body).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = refused.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("declares 4 MiB of initial linear memory"), "{message}");
    assert!(message.contains("surface `tiny`'s memory cap of 2 MiB"), "{message}");
    // Where it fits, the same version activates.
    assert_eq!(admin(&server, "PUT", "/v1/surfaces/other/activation", body).await.status, StatusCode::OK);
    let status = admin(&server, "GET", "/v1/surfaces/tiny", "").await.json();
    assert_eq!(status["serving"], Value::Null);
    assert_eq!(status["limits"]["memory_mb"], 2.0, "{status}");
    server.stop().await;
}

#[tokio::test]
async fn the_fallback_version_is_fixed_at_startup_and_cannot_be_deleted_while_it_serves() {
    // `tagger` (1.0.0, bundled) is every surface's fallback. Uploading 2.0.0 later, by any token,
    // does not make it the fallback, and the version that is cannot be deleted from under it.
    let toml = "[defaults]\nfallback = \"tagger\"\n[surfaces.banners]\npolicy = \"popularity\"\n";
    let server = util::start(&["popularity"], &["tagger=tagger-v1"], toml).await;
    let v2 = relish_tests::guest_bytes("tagger-v2");
    assert_eq!(admin(&server, "PUT", "/v1/policies/tagger/versions/2.0.0", v2).await.status, StatusCode::CREATED);
    let uploaded = admin(&server, "PUT", "/v1/policies/panic/versions/0.1.0", relish_tests::guest_bytes("panic")).await;
    assert_eq!(uploaded.status, StatusCode::CREATED);
    let body = r#"{"policy": "panic", "version": "0.1.0"}"#;
    assert_eq!(admin(&server, "PUT", "/v1/surfaces/banners/activation", body).await.status, StatusCode::OK);
    let status = admin(&server, "GET", "/v1/surfaces/banners", "").await.json();
    assert_eq!(status["fallback"], "tagger@1.0.0", "rebinding kept the fallback: {status}");
    assert_eq!(rank(&server, "banners", THREE).await.json()["fallback"]["answered_by"], "tagger");

    let refused = admin(&server, "DELETE", "/v1/policies/tagger/versions/1.0.0", "").await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("answers as a fallback"));
    assert_eq!(admin(&server, "DELETE", "/v1/policies/tagger/versions/2.0.0", "").await.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_starved_of_cpu_answers_every_request_and_never_rolls_back_a_healthy_version() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["popularity"], &["memory-growth"]);
    // A strict rollback: two failures in a window of ten calls would roll `discovery` back. The
    // version is healthy but not instant: `memory-growth`, told to stop after 8 MiB, writes 8 MiB
    // on every call (page faults included, far less than half the deadline in CPU time: a call
    // stopped on the wall clock with half its deadline of CPU used is blamed on the policy,
    // `timeout`). So a starved call of it is still running at the wall-clock limit (the 20 ms
    // deadline plus as much grace), where a call of a few microseconds (`popularity`, until
    // 2026-12-08) was preempted only when the scheduler happened to stop it inside the policy:
    // on a fast machine, in none of 40 calls.
    let toml = format!(
        "[server]\nbundled_dir = {:?}\n[surfaces.discovery]\npolicy = \"memory-growth\"\ndeadline_ms = 20\n\
         params = {{ stop_after_mb = \"8\" }}\n\
         rollback_min_calls = 5\nrollback_window = 10\nrollback_failure_rate = 0.2\n\
         [surfaces.banners]\npolicy = \"memory-growth\"\ndeadline_ms = 5000\nparams = {{ stop_after_mb = \"8\" }}\n",
        bundled.display().to_string()
    );
    std::fs::write(dir.path().join("relish.toml"), toml).unwrap();
    let (port, admin_port) = (util::free_port(), util::free_port());
    let server = util::TestServer::at(port, admin_port);
    let mut host = util::spawn(dir.path(), port, admin_port);
    util::ready(&server, &mut host).await;
    let before = admin(&server, "GET", "/v1/surfaces/discovery", "").await.json();
    // The first calls of a fresh host pay for what is set up once (a pool slot's memory image,
    // thread-local state): in a debug build here, sometimes more than a short deadline in CPU
    // time. They are paid on another surface of the same version, with a long deadline.
    for _ in 0..5 {
        assert_eq!(rank(&server, "banners", THREE).await.json()["fallback"], serde_json::Value::Null);
    }

    // Saturate it, certainly: the host on one CPU where two busy threads of normal priority run,
    // and every thread of it but the epoch ticker (a saturated host's ticker still ticks: it
    // sleeps and wakes at its own priority) under SCHED_IDLE.
    let allowed = rustix::thread::sched_getaffinity(None).unwrap();
    let cpu = (0..rustix::thread::CpuSet::MAX_CPU).find(|&c| allowed.is_set(c)).unwrap();
    let pid = host.id().to_string();
    let run = |tool: &str, args: &[&str]| {
        let done = std::process::Command::new(tool).args(args).output().expect("taskset and chrt (util-linux)");
        assert!(done.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&done.stderr));
    };
    run("taskset", &["-a", "-p", "-c", &cpu.to_string(), &pid]);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if name.trim() != "relish-epoch" {
            run("chrt", &["--idle", "-p", "0", task.file_name().unwrap().to_str().unwrap()]);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut one = rustix::thread::CpuSet::new();
                one.set(cpu);
                rustix::thread::sched_setaffinity(None, &one).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    // At least eight calls (enough for the strict rollback above to trip, were preemption a
    // failure), and on until one was stopped while preempted.
    let mut statuses = Vec::new();
    let mut preempted = false;
    while statuses.len() < 8 || (!preempted && statuses.len() < 40) {
        let answer = rank(&server, "discovery", THREE).await;
        preempted |= answer.json()["fallback"]["reason"] == "preempted";
        statuses.push(answer.status);
    }
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "every request answered: {statuses:?}");

    let scrape = String::from_utf8_lossy(&get(&server, "/metrics").await.body).into_owned();
    let fallbacks = |reason| metric(&scrape, "relish_fallbacks_total", &[("surface", "discovery"), ("reason", reason)]);
    assert!(fallbacks("preempted") > 0.0, "some calls were preempted, and said so:\n{scrape}");
    assert_eq!(fallbacks("timeout"), 0.0, "none was blamed on the policy");
    assert_eq!(metric(&scrape, "relish_auto_rollbacks_total", &[("surface", "discovery")]), 0.0);
    let after = admin(&server, "GET", "/v1/surfaces/discovery", "").await.json();
    assert_eq!(after["revision"], before["revision"], "the plan never changed: {after}");
    assert_eq!(after["arms"][0]["health"]["failures"], 0, "preemption is not a failure of the version: {after}");
    host.kill();
}

/// A surface with a long deadline whose every call is stuck in a loop to it: with more such
/// calls in flight than the runtime has workers, `/healthz`, the admin API and another surface
/// still answer while all of them are stuck (its decisions run off the workers, since they may
/// take longer than `server.inline_decision_ms`), and the stuck ones are answered by fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_admin_and_other_surfaces_answer_while_a_slow_surface_is_stuck() {
    let toml = "[surfaces.stuck]\npolicy = \"infinite-loop\"\nfallback = \"popularity\"\ndeadline_ms = 1500\n\
                preemption_grace_ms = 1500\nauto_rollback = false\n[surfaces.other]\npolicy = \"popularity\"\n";
    let server = std::sync::Arc::new(util::start(&["popularity"], &["infinite-loop"], toml).await);
    let stuck: Vec<_> = (0..6)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { rank(&server, "stuck", THREE).await })
        })
        .collect();
    // Every stuck request is in its call (the fallback answers only after the deadline).
    let inflight = |scrape: &str| metric(scrape, "relish_inflight_requests", &[]);
    let mut scrape = String::new();
    for _ in 0..500 {
        scrape = get(&server, "/metrics").await.text();
        if inflight(&scrape) >= 6.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(inflight(&scrape), 6.0, "six stuck requests in flight");
    let health = get(&server, "/healthz").await;
    let surfaces = admin(&server, "GET", "/v1/surfaces/stuck", "").await;
    let other = rank(&server, "other", THREE).await;
    assert!(stuck.iter().all(|request| !request.is_finished()), "answered while every stuck call still runs");
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(surfaces.status, StatusCode::OK);
    assert_eq!((other.status, &other.json()["fallback"]), (StatusCode::OK, &Value::Null));
    for request in stuck {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        let answer = answer.json();
        let reason = answer["fallback"]["reason"].as_str().unwrap().to_owned();
        assert!(reason == "timeout" || reason == "preempted", "{answer}");
        assert_eq!(answer["fallback"]["answered_by"], "popularity", "{answer}");
    }
    std::sync::Arc::into_inner(server).expect("the requests are done").stop().await;
}
