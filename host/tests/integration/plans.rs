//! Serving plans through the control plane: weighted sticky splits, shadows and their comparison
//! figures, automatic removal of a failing arm, plan changes under load, and every refusal naming
//! its field.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::util::{self, TestServer, admin, metric, rank};

const CONFIG: &str = r#"
[surfaces.discovery]
policy = "popularity"
"#;

/// Uploads a bundled policy or test guest.
async fn push(server: &TestServer, name: &str, version: &str, bytes: Vec<u8>) {
    let answer = admin(server, "PUT", &format!("/v1/policies/{name}/versions/{version}"), bytes).await;
    assert!(answer.status.is_success(), "{name}: {}", String::from_utf8_lossy(&answer.body));
}

/// Sets the plan of `surface`; returns the answer.
async fn plan(server: &TestServer, surface: &str, body: Value) -> util::Answer {
    admin(server, "PUT", &format!("/v1/surfaces/{surface}/plan"), body.to_string()).await
}

async fn set_plan(server: &TestServer, surface: &str, body: Value) -> Value {
    let answer = plan(server, surface, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    answer.json()
}

async fn status(server: &TestServer, surface: &str) -> Value {
    admin(server, "GET", &format!("/v1/surfaces/{surface}"), "").await.json()
}

fn arm(policy: &str, weight: f64) -> Value {
    json!({"policy": policy, "version": "0.1.0", "weight": weight})
}

/// The arm index every one of `users` is assigned to, by the binding that serves now.
fn assignments(server: &TestServer, users: &[String]) -> Vec<usize> {
    let binding = server.handle.as_ref().unwrap().state.router.get("discovery").unwrap();
    users.iter().map(|user| binding.assign(Some(user), 0).arm.unwrap()).collect()
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

async fn with_guests() -> TestServer {
    let server = util::start(&["popularity", "discovery"], &[], CONFIG).await;
    push(&server, "ordered", "0.1.0", relish_tests::guest_bytes("ordered")).await;
    push(&server, "discovery", "0.1.0", relish_tests::policy_bytes("discovery")).await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn each_arm_gets_its_weight_within_half_a_point_over_100_000_users() {
    let server = with_guests().await;
    let users = users(100_000);
    for weights in [&[95.0, 5.0][..], &[50.0, 50.0], &[70.0, 20.0, 10.0]] {
        let arms: Vec<Value> =
            ["popularity", "ordered", "discovery"].iter().zip(weights).map(|(p, w)| arm(p, *w)).collect();
        set_plan(&server, "discovery", json!({"arms": arms, "salt": "split"})).await;
        let assigned = assignments(&server, &users);
        for (index, weight) in weights.iter().enumerate() {
            let share = 100.0 * assigned.iter().filter(|&&a| a == index).count() as f64 / users.len() as f64;
            assert!((share - weight).abs() <= 0.5, "arm {index}: {share:.2} % for a weight of {weight} %");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_keeps_their_arm_across_requests_weight_changes_and_a_restart() {
    let server = with_guests().await;
    let users = users(100_000);
    set_plan(&server, "discovery", json!({"arms": [arm("popularity", 95.0), arm("ordered", 5.0)], "salt": "s1"})).await;
    let before = assignments(&server, &users);

    // Real requests get the arm the assignment says, and the same one every time.
    for user in users.iter().take(40) {
        let body = json!({"user": {"id": user}, "candidates": [{"id": "a"}, {"id": "b"}]}).to_string();
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            let answer = rank(&server, "discovery", &body).await;
            assert_eq!(answer.status, StatusCode::OK);
            let json = answer.json();
            assert_eq!(json["arm"]["sticky"], true);
            assert_eq!(answer.header("x-relish-arm"), json["arm"]["name"].as_str());
            seen.insert(json["arm"]["index"].as_u64().unwrap());
        }
        assert_eq!(seen.len(), 1, "{user} saw arms {seen:?}");
        let index = users.iter().position(|u| u == user).unwrap();
        assert_eq!(seen.into_iter().next().unwrap() as usize, before[index]);
    }

    // An anonymous caller's `bucket_key` assigns like a user id; without either, the seed does,
    // and the answer says it is not sticky.
    let keyed = json!({"bucket_key": "device-7", "candidates": [{"id": "a"}]}).to_string();
    let answer = rank(&server, "discovery", &keyed).await.json();
    assert_eq!(answer["arm"]["sticky"], true);
    assert_eq!(answer["arm"]["index"].as_u64().unwrap() as usize, assignments(&server, &["device-7".to_owned()])[0]);
    let bad = rank(&server, "discovery", r#"{"bucket_key": "", "candidates": []}"#).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["path"], "bucket_key");
    let anonymous = rank(&server, "discovery", r#"{"candidates": [{"id": "a"}]}"#).await.json();
    assert_eq!(anonymous["arm"]["sticky"], false);

    // 95/5 → 80/20: every canary user stays, and only control users move, into the canary.
    set_plan(&server, "discovery", json!({"arms": [arm("popularity", 80.0), arm("ordered", 20.0)]})).await;
    let after = assignments(&server, &users);
    let mut moved = 0;
    for (was, is) in before.iter().zip(&after) {
        if was == &1 {
            assert_eq!(is, &1, "a canary user stays in the canary");
        } else if was != is {
            moved += 1;
        }
    }
    let share = 100.0 * moved as f64 / users.len() as f64;
    assert!((share - 15.0).abs() <= 0.5, "{share:.2} % moved, the grown range is 15 %");
    // Back to 95/5: exactly the original assignment.
    set_plan(&server, "discovery", json!({"arms": [arm("popularity", 95.0), arm("ordered", 5.0)]})).await;
    assert_eq!(assignments(&server, &users), before);

    // A restart on the same data directory assigns everyone the same arm.
    let TestServer { handle, dir, .. } = server;
    let mut config = handle.as_ref().unwrap().state.config.clone();
    handle.unwrap().shutdown().await;
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    let server = util::start_config(dir, config).await;
    assert_eq!(assignments(&server, &users), before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shadows_change_nothing_for_the_caller_and_their_agreement_is_measured() {
    let server = with_guests().await;
    let candidates: Vec<Value> = (0..6).map(|i| json!({"id": format!("c{i}")})).collect();
    let body = json!({"request_id": "r-1", "seed": 42, "limit": 10, "user": {"id": "u-1"}, "candidates": candidates})
        .to_string();
    let control = json!({"policy": "ordered", "version": "0.1.0", "weight": 100});
    set_plan(&server, "discovery", json!({"arms": [control.clone()]})).await;
    let without = rank(&server, "discovery", &body).await.json();

    set_plan(
        &server,
        "discovery",
        json!({"arms": [control], "shadow": [
            {"name": "reversed", "policy": "ordered", "version": "0.1.0", "params": {"reverse": "true"}},
            {"name": "same", "policy": "ordered", "version": "0.1.0"},
        ]}),
    )
    .await;
    const CALLS: u64 = 20;
    let strip = |mut v: Value| {
        v["took_us"] = Value::Null;
        v["arm"]["revision"] = Value::Null;
        v
    };
    let mut figures = Value::Null;
    for sent in 1..=CALLS {
        let with = rank(&server, "discovery", &body).await.json();
        assert_eq!(strip(with), strip(without.clone()), "a shadow changes nothing in the answer");
        // Shadows run off the response path: wait until this request's are counted (run, or
        // skipped at the surface's shadow concurrency limit).
        figures = loop {
            let status = status(&server, "discovery").await;
            let counted = |s: &Value| s["against"][0]["calls"].as_u64().unwrap_or(0) + s["skipped"].as_u64().unwrap();
            if status["shadows"].as_array().unwrap().iter().all(|s| counted(s) == sent) {
                break status["shadows"].clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
    }
    let of = |name: &str| figures.as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["against"][0].clone();
    let reversed = of("reversed");
    assert_eq!((reversed["top1_agreement"].as_f64(), reversed["overlap"].as_f64()), (Some(0.0), Some(1.0)));
    assert_eq!(reversed["kendall_tau"].as_f64(), Some(-1.0));
    assert!(reversed["rbo"].as_f64().unwrap() < 1.0);
    let same = of("same");
    for measure in ["top1_agreement", "overlap", "rbo", "kendall_tau"] {
        assert_eq!(same[measure].as_f64(), Some(1.0), "{measure}");
    }
    let scrape = util::get(&server, "/metrics").await.body;
    let scrape = String::from_utf8_lossy(&scrape);
    let labels = [("surface", "discovery"), ("shadow", "reversed"), ("measure", "kendall_tau")];
    let compared = metric(&scrape, "relish_shadow_agreement_count", &labels);
    assert!(compared >= 1.0);
    assert_eq!(metric(&scrape, "relish_shadow_agreement_sum", &labels), -compared, "tau is -1 on every compared call");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shadow_that_loops_or_traps_never_alters_an_answer_and_is_counted() {
    let server = util::start(&["popularity"], &[], &format!("{CONFIG}deadline_ms = 20\n")).await;
    push(&server, "infinite-loop", "0.1.0", relish_tests::guest_bytes("infinite-loop")).await;
    push(&server, "panic", "0.1.0", relish_tests::guest_bytes("panic")).await;
    let expected = rank(&server, "discovery", util::THREE).await.json();
    set_plan(
        &server,
        "discovery",
        json!({"arms": [arm("popularity", 100.0)], "shadow": [
            {"policy": "infinite-loop", "version": "0.1.0"}, {"policy": "panic", "version": "0.1.0"}]}),
    )
    .await;
    for _ in 0..10 {
        let answer = rank(&server, "discovery", util::THREE).await.json();
        assert_eq!(answer["fallback"], Value::Null);
        assert_eq!(util::ids(&answer), util::ids(&expected));
    }
    // Every shadow call counted once, whatever its outcome: the test binary's servers share one
    // engine, so under a full test run an instance slot may be busy (`capacity`) instead of the
    // call timing out or trapping.
    let counted = |scrape: &str, shadow: &str| {
        metric(scrape, "relish_shadow_calls_total", &[("shadow", shadow)])
            + metric(scrape, "relish_shadow_skipped_total", &[("shadow", shadow)])
    };
    let waiting = std::time::Instant::now();
    loop {
        let scrape = String::from_utf8_lossy(&util::get(&server, "/metrics").await.body).into_owned();
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(60),
            "the shadow calls were not all counted within a minute: {}",
            scrape.lines().filter(|l| l.starts_with("relish_shadow")).collect::<Vec<_>>().join("\n")
        );
        if counted(&scrape, "infinite-loop@0.1.0") == 10.0 && counted(&scrape, "panic@0.1.0") == 10.0 {
            assert!(
                metric(&scrape, "relish_shadow_calls_total", &[("shadow", "panic@0.1.0"), ("outcome", "trap")]) > 0.0
            );
            // Stopped by its deadline: a timeout, or, when the shadow threads (idle priority)
            // got too little CPU on a busy machine, preempted.
            let stopped = |outcome| {
                metric(&scrape, "relish_shadow_calls_total", &[("shadow", "infinite-loop@0.1.0"), ("outcome", outcome)])
            };
            assert!(stopped("timeout") + stopped("preempted") > 0.0, "{scrape}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let status = status(&server, "discovery").await;
    assert_eq!(status["arms"][0]["health"]["failures"], 0, "a shadow's failures never count for the arm: {status}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_canary_is_taken_out_of_the_plan_and_history_says_why() {
    let toml = format!("{CONFIG}rollback_min_calls = 20\nrollback_window = 40\n");
    let server = util::start(&["popularity"], &[], &toml).await;
    push(&server, "nan-score", "0.1.0", relish_tests::guest_bytes("nan-score")).await;
    let set = set_plan(&server, "discovery", json!({"arms": [arm("popularity", 90.0), arm("nan-score", 10.0)]})).await;
    let failing_revision = set["revision"].as_u64().unwrap();
    let mut user = 0;
    let status = loop {
        for _ in 0..50 {
            let body = json!({"user": {"id": format!("u-{user}")}, "candidates": [{"id": "a"}, {"id": "b"}]});
            user += 1;
            assert_eq!(rank(&server, "discovery", &body.to_string()).await.status, StatusCode::OK);
        }
        let status = status(&server, "discovery").await;
        if status["revision"].as_u64().unwrap() > failing_revision {
            break status;
        }
        assert!(user < 20_000, "the canary was never taken out: {status}");
    };
    assert_eq!(status["arms"].as_array().unwrap().len(), 1);
    assert_eq!(
        (status["arms"][0]["name"].as_str(), status["arms"][0]["weight"].as_u64()),
        (Some("popularity@0.1.0"), Some(10_000))
    );
    let history = status["history"].as_array().unwrap();
    let failed = &history[failing_revision as usize - 1];
    assert_eq!(failed["failed"]["arm"], "nan-score@0.1.0");
    let current = history.last().unwrap();
    assert_eq!(current["actor"], "relish");
    assert!(current["reason"].as_str().unwrap().contains("taken out automatically"), "{current}");
    // The removed arm's series are gone from /metrics: cardinality follows what serves.
    let scrape = String::from_utf8_lossy(&util::get(&server, "/metrics").await.body).into_owned();
    assert!(!scrape.contains("arm=\"nan-score@0.1.0\""), "{scrape}");
    assert!(metric(&scrape, "relish_requests_total", &[("arm", "popularity@0.1.0")]) > 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_belongs_to_the_revision_not_the_version() {
    let toml = format!("{CONFIG}rollback_min_calls = 10\nrollback_window = 20\n");
    let server = util::start(&["popularity"], &[], &toml).await;
    push(&server, "nan-score", "0.1.0", relish_tests::guest_bytes("nan-score")).await;
    push(&server, "discovery", "0.1.0", relish_tests::policy_bytes("discovery")).await;

    // (a) Parameters the policy refuses are refused at activation, naming the parameter.
    for bad in ["banana", "-5", "", "NaN"] {
        let body = json!({"policy": "discovery", "version": "0.1.0", "params": {"diversity": bad}});
        let answer = admin(&server, "PUT", "/v1/surfaces/discovery/activation", body.to_string()).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        let error = answer.json();
        assert_eq!(error["error"]["path"], "arms[0].params", "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains("diversity"), "{error}");
    }
    let body = json!({"policy": "discovery", "version": "0.1.0", "params": {"mmr_depth": "12345678901234567890"}});
    let answer = admin(&server, "PUT", "/v1/surfaces/discovery/activation", body.to_string()).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.json()["error"]["message"].as_str().unwrap().contains("mmr_depth"));

    // (b) nan-score with a finite score is healthy; with NaN or inf every call fails.
    let activate =
        |score: &str| json!({"policy": "nan-score", "version": "0.1.0", "params": {"score": score}}).to_string();
    let healthy = admin(&server, "PUT", "/v1/surfaces/discovery/activation", activate("1")).await;
    assert_eq!(healthy.status, StatusCode::OK);
    for failing in ["NaN", "inf"] {
        let set = admin(&server, "PUT", "/v1/surfaces/discovery/activation", activate(failing)).await.json();
        let revision = set["revision"].as_u64().unwrap();
        let status = loop {
            assert_eq!(rank(&server, "discovery", util::THREE).await.status, StatusCode::OK);
            let status = status(&server, "discovery").await;
            if status["revision"].as_u64().unwrap() > revision {
                break status;
            }
        };
        // Back to the healthy revision (the same version with its good parameters), never further.
        let current = &status["current"];
        assert_eq!(current["plan"]["arms"][0]["params"]["score"], "1", "{status}");
        assert_eq!(current["plan"]["arms"][0]["policy"], "nan-score", "not further back than the healthy revision");
        let restored = current["restores"].as_u64().unwrap();
        let restored = &status["history"][restored as usize - 1];
        assert!(restored["failed"].is_null(), "restores a revision that did not fail: {restored}");
        assert_eq!(status["history"][revision as usize - 1]["failed"]["arm"], "nan-score@0.1.0");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_plans_are_refused_naming_the_field_and_change_nothing() {
    let server = with_guests().await;
    push(&server, "banners", "0.2.0", relish_tests::policy_bytes("banners")).await;
    let good = set_plan(&server, "discovery", json!({"arms": [arm("popularity", 100.0)]})).await;
    let revision = good["revision"].as_u64().unwrap();
    let cases = [
        (json!({"arms": [arm("popularity", 90.0), arm("ordered", 5.0)]}), 422, "arms[].weight", "add up to 95"),
        (
            json!({"arms": [arm("popularity", 50.0), {"policy": "ordered", "version": "9.9.9", "weight": 50}]}),
            404,
            "arms[1].version",
            "no version 9.9.9",
        ),
        (
            json!({"arms": [arm("popularity", 50.0), {"policy": "banners", "version": "0.2.0", "weight": 50}]}),
            422,
            "arms[1].policy",
            "not made for surface discovery",
        ),
        (json!({"arms": [arm("popularity", 50.0), arm("popularity", 50.0)]}), 422, "arms[1].name", "given twice"),
        (json!({"arms": [arm("popularity", 100.0)], "expected_revision": revision - 1}), 409, "", "expected_revision"),
        (
            json!({"arms": [arm("popularity", 100.0)], "shadow": [{"policy": "ordered", "version": "0.1.0", "sample": 1.5}]}),
            422,
            "shadow[0].sample",
            "(0, 1]",
        ),
        (
            json!({"arms": [arm("popularity", 100.0)], "shadow": [{"policy": "ordered", "version": "0.1.0", "sample": 0}]}),
            422,
            "shadow[0].sample",
            "(0, 1]",
        ),
        (json!({"arms": []}), 422, "arms", "1 to 16 arms"),
        (
            json!({"arms": [{"policy": "popularity", "version": "0.1.0", "weight": 100, "colour": "red"}]}),
            400,
            "",
            "colour",
        ),
    ];
    for (body, status_code, field, words) in cases {
        let answer = plan(&server, "discovery", body.clone()).await;
        assert_eq!(answer.status.as_u16(), status_code, "{body}: {}", String::from_utf8_lossy(&answer.body));
        let error = answer.json();
        if !field.is_empty() {
            assert_eq!(error["error"]["path"], field, "{body}: {error}");
        }
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(words) || error["error"]["path"].as_str().unwrap_or("").contains(words),
            "{body}: {error}"
        );
    }
    let stale = plan(&server, "discovery", json!({"arms": [arm("popularity", 100.0)], "expected_revision": 0})).await;
    assert_eq!(stale.header("x-relish-plan-revision"), Some(revision.to_string().as_str()));
    let status = status(&server, "discovery").await;
    assert_eq!(status["revision"].as_u64(), Some(revision), "nothing changed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_plan_changes_under_load_fail_no_request_and_every_answer_names_a_current_arm() {
    let server = Arc::new(with_guests().await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..2 {
        let (server, stop) = (server.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<(u64, String, u64)> = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let before = server.handle.as_ref().unwrap().state.router.get("discovery").unwrap().revision;
                let body = json!({"user": {"id": format!("c{client}-{i}")}, "candidates": [{"id": "a"}, {"id": "b"}]});
                let answer = rank(&server, "discovery", &body.to_string()).await;
                assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
                let json = answer.json();
                assert_eq!(json["fallback"], Value::Null, "{json}");
                seen.push((
                    before,
                    json["arm"]["name"].as_str().unwrap().to_owned(),
                    json["arm"]["revision"].as_u64().unwrap(),
                ));
                i += 1;
            }
            seen
        }));
    }
    // Every revision's arms, as the control plane answered each change.
    let mut plans: HashMap<u64, BTreeSet<String>> = HashMap::new();
    let record = |plans: &mut HashMap<u64, BTreeSet<String>>, answer: &Value| {
        let arms = answer["plan"]["arms"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_owned());
        plans.insert(answer["revision"].as_u64().unwrap(), arms.collect());
    };
    let first = status(&server, "discovery").await;
    record(&mut plans, &first["current"]);
    let mut changes = 0;
    while changes < 1000 {
        let weight = f64::from(1 + (changes % 99) as u32);
        let body = match changes % 5 {
            0 | 1 => json!({"arms": [arm("popularity", 100.0 - weight), arm("ordered", weight)]}),
            2 => {
                json!({"arms": [arm("ordered", 100.0 - weight), arm("discovery", weight)], "shadow": [{"policy": "popularity", "version": "0.1.0", "sample": 0.5}]})
            }
            _ => {
                json!({"arms": [arm("popularity", 100.0 - weight), arm("ordered", weight / 2.0), arm("discovery", weight / 2.0)], "salt": format!("s{changes}")})
            }
        };
        let answer = if changes % 7 == 6 {
            admin(&server, "POST", "/v1/surfaces/discovery/rollback", r#"{"reason": "load test"}"#).await
        } else {
            plan(&server, "discovery", body).await
        };
        if answer.status == StatusCode::OK {
            let json = answer.json();
            record(&mut plans, &json);
            changes += 1;
        } else {
            // A rollback with nothing left to return to: fine, just not a change.
            assert_eq!(answer.status, StatusCode::CONFLICT, "{}", String::from_utf8_lossy(&answer.body));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut answered = 0;
    for client in clients {
        for (before, arm, revision) in client.await.unwrap() {
            assert!(revision >= before, "answered by revision {revision}, older than {before} current when it started");
            let arms = plans.get(&revision).unwrap_or_else(|| panic!("revision {revision} was never a plan"));
            assert!(arms.contains(&arm), "arm {arm} is not in revision {revision}: {arms:?}");
            answered += 1;
        }
    }
    assert!(answered > 0);
    let latest: BTreeMap<_, _> = plans.keys().map(|k| (*k, ())).collect();
    assert!(latest.len() >= 1000, "{} revisions", latest.len());
    Arc::into_inner(server).unwrap().stop().await;
}

/// A data directory as the host before plans wrote it: format 1, a surface's history a list of
/// single activations (here `popularity`, then `ordered`, rolled back automatically, then
/// `popularity` restored). The new host opens it as one-arm plans, keeps the old manifest beside
/// it, and serves what it served.
#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_of_the_previous_format_opens_as_one_arm_plans() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["popularity"], &[]);
    let data = dir.path().join("data");
    // The versions part of the manifest did not change: let a registry store the components.
    {
        let registry =
            relish_host::registry::Registry::open(&data, relish_tests::runtime(), Default::default()).unwrap();
        registry.put_version("popularity", "0.1.0", &relish_tests::policy_bytes("popularity"), "ci").unwrap();
        registry.put_version("ordered", "0.1.0", &relish_tests::guest_bytes("ordered"), "ci").unwrap();
    }
    let manifest: Value = serde_json::from_slice(&std::fs::read(data.join("manifest.json")).unwrap()).unwrap();
    let digest = |policy: &str| {
        manifest["versions"].as_array().unwrap().iter().find(|v| v["policy"] == policy).unwrap()["digest"].clone()
    };
    let at = "2026-11-30T10:00:00Z";
    let v1 = json!({
        "format": 1,
        "versions": manifest["versions"],
        "surfaces": [{"name": "discovery", "history": [
            {"policy": "popularity", "version": "0.1.0", "digest": digest("popularity"), "params": {}, "actor": "config",
             "activated_at": at, "ended": {"how": "superseded", "at": at}},
            {"policy": "ordered", "version": "0.1.0", "digest": digest("ordered"), "params": {"reverse": "true"}, "actor": "ops",
             "activated_at": at, "ended": {"how": "rolled-back", "at": at, "actor": "relish", "reason": "errors", "automatic": true}},
            {"policy": "popularity", "version": "0.1.0", "digest": digest("popularity"), "params": {}, "actor": "relish",
             "activated_at": at, "restores": 0}
        ]}]
    });
    let written = serde_json::to_vec_pretty(&v1).unwrap();
    std::fs::write(data.join("manifest.json"), &written).unwrap();

    let config = util::config(dir.path(), &bundled, CONFIG);
    let server = util::start_config(dir, config).await;
    let status = status(&server, "discovery").await;
    assert_eq!(status["revision"], 3, "{status}");
    assert_eq!(status["serving"], "popularity@0.1.0");
    assert_eq!(status["current"]["restores"], 1);
    assert_eq!(status["history"][1]["plan"]["arms"][0]["params"]["reverse"], "true");
    assert_eq!(status["history"][1]["failed"]["reason"], "errors");
    let answer = rank(&server, "discovery", util::THREE).await.json();
    assert_eq!(
        (answer["arm"]["name"].as_str(), answer["arm"]["revision"].as_u64()),
        (Some("popularity@0.1.0"), Some(3))
    );
    let data = server.dir.path().join("data");
    assert_eq!(std::fs::read(data.join("manifest.v1.json")).unwrap(), written, "the old manifest is kept");
    let migrated: Value = serde_json::from_slice(&std::fs::read(data.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(migrated["format"], 2);
    // It goes on from there: a new plan is revision 4.
    let set = set_plan(&server, "discovery", json!({"arms": [arm("popularity", 95.0), arm("ordered", 5.0)]})).await;
    assert_eq!(set["revision"], 4);
    server.stop().await;
}

/// The memory-fit check holds for a plan restored at startup too: a host whose settings no longer
/// fit the stored plan refuses to start, naming the surface (rather than failing every call).
#[tokio::test(flavor = "multi_thread")]
async fn a_plan_that_no_longer_fits_its_surface_is_never_served() {
    // Bundled policies start with 4 MiB of linear memory (`relish build`).
    let server = util::start(&["popularity"], &[], CONFIG).await;
    push(&server, "ordered", "0.1.0", relish_tests::guest_bytes("ordered")).await;
    set_plan(&server, "discovery", json!({"arms": [arm("ordered", 100.0)]})).await;
    let TestServer { handle, dir, .. } = server;
    let mut config = handle.as_ref().unwrap().state.config.clone();
    handle.unwrap().shutdown().await;
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    let mut tight = config.clone();
    tight.surfaces.get_mut("discovery").unwrap().settings.memory_mb = Some(2);
    let refused = relish_host::server::start_with(tight, relish_tests::runtime()).await.err().expect("refused");
    let message = format!("{refused:#}");
    assert!(message.contains("surfaces.discovery") && message.contains("does not fit"), "{message}");
    // With settings that fit, the same directory serves the plan it had.
    let server = util::start_config(dir, config).await;
    let answer = rank(&server, "discovery", util::THREE).await.json();
    assert_eq!(answer["arm"]["name"], "ordered@0.1.0");
    server.stop().await;
}

/// A data directory of a host before contract 0.3.0 holds components built against 0.2.0: the
/// upgraded host serves them over HTTP, handing them every name and context string in 0.2.0's
/// shape, and keeps doing so after a restart (from the stored artifact, nothing recompiled).
#[tokio::test(flavor = "multi_thread")]
async fn components_of_contract_0_2_0_in_a_data_directory_serve_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["popularity"], &[]);
    let config = util::config(dir.path(), &bundled, CONFIG);
    let body = json!({
        "user": {"id": "u-1", "features": {"affinity.pizza": 0.8, "affinity.sushi": 0.2}},
        "context": {"country": "SE", "device": "android"},
        "candidates": [
            {"id": "a", "features": {"rating": 7.5, "eta_min": 30}, "tags": ["pizza"]},
            {"id": "b", "features": {"rating": 9.1}, "tags": ["sushi", "dinner"]},
            {"id": "c", "features": {"rating": 8.2, "eta_min": 12}}
        ]
    })
    .to_string();
    // {country}-{device}-{feature columns}-{tags}-{user features}-{cart items}, as the guest sees them.
    let expected = (vec!["b", "c", "a"], "se-android-2-3-2-0");
    let answered = |answer: &Value| {
        let ids = util::ids(answer);
        assert!(answer["items"].as_array().unwrap().iter().all(|item| item["reason"] == expected.1), "{answer}");
        assert_eq!(answer["arm"]["name"], "contract-0-2@0.1.0", "{answer}");
        assert_eq!(answer["fallback"], Value::Null, "{answer}");
        ids
    };

    let first = relish_host::server::start(config.clone()).await.unwrap();
    let server = TestServer {
        base: format!("http://{}", first.addr),
        admin: format!("http://{}", first.admin_addr),
        handle: Some(first),
        dir,
    };
    push(&server, "contract-0-2", "0.1.0", relish_tests::guest_bytes("contract-0-2")).await;
    set_plan(&server, "discovery", json!({"arms": [arm("contract-0-2", 100.0)]})).await;
    assert_eq!(answered(&rank(&server, "discovery", &body).await.json()), expected.0);
    let TestServer { handle, dir, .. } = server;
    handle.unwrap().shutdown().await;

    let second = relish_host::server::start(config).await.unwrap();
    let server = TestServer {
        base: format!("http://{}", second.addr),
        admin: format!("http://{}", second.admin_addr),
        handle: Some(second),
        dir,
    };
    assert_eq!(answered(&rank(&server, "discovery", &body).await.json()), expected.0);
    let status = status(&server, "discovery").await;
    assert_eq!(status["serving"], "contract-0-2@0.1.0", "{status}");
    let scrape = String::from_utf8_lossy(&util::get(&server, "/metrics").await.body).into_owned();
    assert_eq!(metric(&scrape, "relish_compiles_total", &[]), 0.0, "restored from its artifact");
    server.stop().await;
}
