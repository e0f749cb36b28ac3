//! The fleet: hosts on one machine (own ports and data directories) that share versions and plans
//! through NATS JetStream. Tests against the machine's NATS use buckets of their own (removed at
//! the end); the outage test starts its own `nats-server -js` on a free port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::util::{self, ADMIN_TOKEN, TestServer, admin, free_port, rank, ready, spawn};

/// The machine's NATS with JetStream.
const NATS: &str = "nats://127.0.0.1:4222";

/// Buckets of their own for one test, removed when dropped.
struct Buckets {
    prefix: String,
    nats: String,
}

impl Buckets {
    fn new(test: &str, nats: &str) -> Self {
        let unique =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
        Buckets { prefix: format!("relish-test-{test}-{}-{unique}", std::process::id()), nats: nats.to_owned() }
    }

    /// `[fleet]` for a host named `host` (a stable name, so a restarted host reports as itself).
    fn toml(&self, host: &str, startup_timeout_secs: u64) -> String {
        self.toml_with(host, startup_timeout_secs, "")
    }

    /// [`Buckets::toml`] with more settings of the `discovery` surface.
    fn toml_with(&self, host: &str, startup_timeout_secs: u64, surface: &str) -> String {
        format!(
            r#"
[surfaces.discovery]
policy = "popularity"
{surface}

[fleet]
nats = "{nats}"
host = "{host}"
state_bucket = "{p}-state"
components_bucket = "{p}-components"
hosts_bucket = "{p}-hosts"
reconcile_secs = 1
heartbeat_secs = 1
write_timeout_ms = 3000
startup_timeout_secs = {startup_timeout_secs}
"#,
            nats = self.nats,
            p = self.prefix
        )
    }

    async fn remove(&self) {
        let Ok(client) = async_nats::connect(&self.nats).await else { return };
        let js = async_nats::jetstream::new(client);
        for suffix in ["state", "hosts"] {
            let _ = js.delete_key_value(format!("{}-{suffix}", self.prefix)).await;
        }
        let _ = js.delete_object_store(format!("{}-components", self.prefix)).await;
    }
}

async fn host(buckets: &Buckets, name: &str) -> TestServer {
    util::start(&["popularity"], &[], &buckets.toml(name, 10)).await
}

/// The arm and plan revision a host answers `discovery` with.
async fn serving(server: &TestServer) -> (String, u64) {
    let answer =
        rank(server, "discovery", r#"{"user": {"id": "u-1"}, "candidates": [{"id": "a"}, {"id": "b"}]}"#).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let arm = answer.header("x-relish-arm").unwrap_or("none").to_owned();
    let revision = answer.header("x-relish-plan-revision").and_then(|r| r.parse().ok()).unwrap_or(0);
    (arm, revision)
}

/// Waits until `check` holds, for up to `limit`.
async fn until<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn upload(server: &TestServer, name: &str, version: &str, bytes: Vec<u8>) -> util::Answer {
    admin(server, "PUT", &format!("/v1/policies/{name}/versions/{version}"), bytes).await
}

fn plan(arms: &[(&str, f64)]) -> Value {
    let arms: Vec<Value> = arms.iter().map(|(p, w)| json!({"policy": p, "version": "0.1.0", "weight": w})).collect();
    json!({ "arms": arms })
}

async fn put_plan(server: &TestServer, body: &Value) -> util::Answer {
    admin(server, "PUT", "/v1/surfaces/discovery/plan", body.to_string()).await
}

async fn surface(server: &TestServer) -> Value {
    admin(server, "GET", "/v1/surfaces/discovery", "").await.json()
}

/// The plans of a surface's history, by revision: what must be equal on every host.
fn history(status: &Value) -> Vec<(u64, Value)> {
    status["history"].as_array().unwrap().iter().map(|r| (r["revision"].as_u64().unwrap(), r["plan"].clone())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_uploaded_to_one_host_and_a_plan_set_on_another_serve_on_all_three() {
    let buckets = Buckets::new("three", NATS);
    let hosts = [host(&buckets, "a").await, host(&buckets, "b").await, host(&buckets, "c").await];
    for server in &hosts {
        assert_eq!(serving(server).await.0, "popularity@0.1.0", "the configured policy serves first");
    }

    let uploaded = upload(&hosts[0], "ordered", "0.1.0", relish_tests::guest_bytes("ordered")).await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&uploaded.body));
    // Stored on the uploading host by the time the call answers, and everywhere soon after.
    for server in &hosts {
        until(Duration::from_secs(10), "the version reaches every host", async || {
            admin(server, "GET", "/v1/policies/ordered/versions/0.1.0", "").await.status == StatusCode::OK
        })
        .await;
    }
    let again = upload(&hosts[2], "ordered", "0.1.0", relish_tests::guest_bytes("ordered")).await;
    assert_eq!(again.status, StatusCode::OK, "the same bytes again change nothing");
    let other = upload(&hosts[1], "ordered", "0.1.0", relish_tests::guest_bytes("tagger-v1")).await;
    assert!(other.status.is_client_error(), "other bytes under the same version are refused: {}", other.status);

    let answer = put_plan(&hosts[1], &plan(&[("ordered", 100.0)])).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let revision = answer.json()["revision"].as_u64().unwrap();
    assert_eq!(serving(&hosts[1]).await, ("ordered@0.1.0".to_owned(), revision), "the writing host serves it at once");
    for server in &hosts {
        until(Duration::from_secs(10), "every host serves the new arm", async || {
            serving(server).await == ("ordered@0.1.0".to_owned(), revision)
        })
        .await;
    }
    let reference = history(&surface(&hosts[0]).await);
    for server in &hosts[1..] {
        assert_eq!(history(&surface(server).await), reference, "every host keeps the same history");
    }

    // A rollback through the third host returns every host to the configured plan.
    let back = admin(&hosts[2], "POST", "/v1/surfaces/discovery/rollback", r#"{"reason": "test"}"#).await;
    assert_eq!(back.status, StatusCode::OK, "{}", String::from_utf8_lossy(&back.body));
    for server in &hosts {
        until(Duration::from_secs(10), "every host rolls back", async || serving(server).await.0 == "popularity@0.1.0")
            .await;
    }

    // Every host reports to the fleet, none of them behind.
    until(Duration::from_secs(10), "/v1/fleet lists three hosts that are not behind", async || {
        let fleet = admin(&hosts[0], "GET", "/v1/fleet", "").await;
        let fleet = fleet.json();
        let listed: Vec<&str> = fleet["hosts"].as_array().unwrap().iter().filter_map(|h| h["host"].as_str()).collect();
        listed == ["a", "b", "c"] && fleet["hosts"].as_array().unwrap().iter().all(|h| h["behind"] == 0)
    })
    .await;
    let fleet = admin(&hosts[2], "GET", "/v1/fleet", "").await.json();
    assert_eq!(fleet["host"], "c");
    assert!(fleet["head_revision"].as_u64().unwrap() >= 4, "{fleet}");
    let cli = hosts[1].admin.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_relish"))
            .args(["fleet", "status", "--admin", &cli, "--token", ADMIN_TOKEN])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    for name in ["a", "b", "c"] {
        assert!(printed.lines().any(|l| l.starts_with(&format!("{name} ")) && l.ends_with("ok")), "{printed}");
    }
    let metrics = util::get(&hosts[2], "/metrics").await;
    let scrape = String::from_utf8_lossy(&metrics.body);
    assert_eq!(util::metric(&scrape, "relish_fleet_connected", &[]), 1.0);
    assert!(util::metric(&scrape, "relish_fleet_entries_total", &[("kind", "plan"), ("outcome", "applied")]) >= 2.0);

    for server in hosts {
        server.stop().await;
    }
    buckets.remove().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_started_after_twenty_changes_is_ready_only_once_it_serves_the_same_plans() {
    let buckets = Buckets::new("late", NATS);
    let a = host(&buckets, "a").await;
    let b = host(&buckets, "b").await;
    assert_eq!(upload(&a, "ordered", "0.1.0", relish_tests::guest_bytes("ordered")).await.status, StatusCode::CREATED);
    for i in 0..20 {
        let writer = if i % 2 == 0 { &a } else { &b };
        let weight = 10.0 + 4.0 * f64::from(i);
        let answer = put_plan(writer, &plan(&[("popularity", 100.0 - weight), ("ordered", weight)])).await;
        assert_eq!(answer.status, StatusCode::OK, "change {i}: {}", String::from_utf8_lossy(&answer.body));
    }
    let expected = surface(&a).await;

    // `start` returns once the host is ready: by then it must have caught up.
    let c = host(&buckets, "c").await;
    assert_eq!(util::get(&c, "/readyz").await.status, StatusCode::OK);
    let caught = surface(&c).await;
    assert_eq!(caught["revision"], expected["revision"], "{caught}");
    assert_eq!(caught["current"]["plan"], expected["current"]["plan"]);
    assert_eq!(history(&caught), history(&expected), "the late host has the whole history");
    assert_eq!(serving(&c).await.1, expected["revision"].as_u64().unwrap());
    let ordered = admin(&c, "GET", "/v1/policies/ordered/versions/0.1.0", "").await;
    assert_eq!(ordered.status, StatusCode::OK, "the version uploaded before it started");

    // Restarted, it resumes from the revision it applied (kept in its data directory).
    let position: Value =
        serde_json::from_slice(&std::fs::read(c.dir.path().join("data/fleet.json")).unwrap()).unwrap();
    assert!(position["applied"].as_u64().unwrap() >= 21, "{position}");

    for server in [a, b, c] {
        server.stop().await;
    }
    buckets.remove().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_writers_racing_on_one_plan_one_wins_the_other_gets_409_and_no_update_is_lost() {
    let buckets = Buckets::new("race", NATS);
    let a = host(&buckets, "a").await;
    let b = host(&buckets, "b").await;
    assert_eq!(upload(&a, "ordered", "0.1.0", relish_tests::guest_bytes("ordered")).await.status, StatusCode::CREATED);
    let start = surface(&a).await["revision"].as_u64().unwrap();
    let mut winners = Vec::new();
    for race in 0..200u32 {
        let current = start + u64::from(race);
        // Two different plans, both different from the current one.
        let weight = |offset: u32| f64::from(1 + (2 * race + offset) % 98);
        let body = |offset: u32| {
            let mut body = plan(&[("popularity", 100.0 - weight(offset)), ("ordered", weight(offset))]);
            body["expected_revision"] = json!(current);
            body
        };
        let (first, second) = (body(0), body(1));
        let (x, y) = tokio::join!(put_plan(&a, &first), put_plan(&b, &second));
        let answers = [(x, &first), (y, &second)];
        let won: Vec<_> = answers.iter().filter(|(a, _)| a.status == StatusCode::OK).collect();
        let lost: Vec<_> = answers.iter().filter(|(a, _)| a.status == StatusCode::CONFLICT).collect();
        assert_eq!(
            (won.len(), lost.len()),
            (1, 1),
            "race {race}: {:?}",
            answers.iter().map(|(a, _)| (a.status, String::from_utf8_lossy(&a.body).into_owned())).collect::<Vec<_>>()
        );
        let (won, body) = won[0];
        assert_eq!(won.json()["revision"].as_u64(), Some(current + 1), "race {race}");
        assert_eq!(
            lost[0].0.header("x-relish-plan-revision"),
            Some((current + 1).to_string().as_str()),
            "race {race}: the loser learns the current revision"
        );
        winners.push((current + 1, body["arms"][1]["weight"].as_f64().unwrap()));
    }
    // Every winner is in the history of both hosts, in order: no update was lost.
    for server in [&a, &b] {
        until(Duration::from_secs(10), "both hosts applied every race", async || {
            surface(server).await["revision"].as_u64() == Some(start + 200)
        })
        .await;
        let status = surface(server).await;
        for (revision, weight) in &winners {
            let entry = status["history"].as_array().unwrap().iter().find(|r| r["revision"] == *revision);
            // The history keeps the last 64 revisions of the fleet and every one this host applied.
            let entry = entry.unwrap_or_else(|| panic!("revision {revision} is missing"));
            let ordered =
                entry["plan"]["arms"].as_array().unwrap().iter().find(|arm| arm["policy"] == "ordered").unwrap();
            assert_eq!(ordered["weight"].as_f64(), Some(weight * 100.0), "revision {revision}");
        }
    }
    a.stop().await;
    b.stop().await;
    buckets.remove().await;
}

/// A NATS server of the test's own, with JetStream, on a free port.
struct OwnNats {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    config: Option<PathBuf>,
}

impl OwnNats {
    fn start(store: &Path, port: u16) -> Self {
        Self::start_with(store, port, None)
    }

    /// With a configuration file (authorization, say) besides the command line.
    fn start_with(store: &Path, port: u16, config: Option<&Path>) -> Self {
        let mut command = Command::new("nats-server");
        if let Some(config) = config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed (Debian package nats-server)");
        let own = OwnNats { child: Some(child), port, store: store.to_owned(), config: config.map(Path::to_owned) };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return own;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nats-server did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        *self = OwnNats::start_with(&self.store.clone(), self.port, self.config.clone().as_deref());
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends rank requests to every host until told to stop; returns (answered, failed).
fn load(hosts: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, usize)> {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<bytes::Bytes>>();
        while !stop.load(Ordering::Relaxed) {
            for base in &hosts {
                let request = hyper::Request::post(format!("{base}/v1/rank/discovery"))
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(br#"{"candidates": [{"id": "a"}]}"#)))
                    .unwrap();
                let answered = match client.request(request).await {
                    Ok(response) => response.status() == StatusCode::OK,
                    Err(_) => false,
                };
                if answered { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn with_nats_stopped_hosts_keep_serving_refuse_writes_with_503_and_catch_up_after() {
    let store = tempfile::tempdir().unwrap();
    let mut nats = OwnNats::start(store.path(), free_port());
    let buckets = Buckets::new("outage", &nats.url());
    // Every decision is logged, to the files and to the fleet's stream: a sink that stalls.
    let logging = format!(
        "log_sample = 1.0\n[decision_log]\nflush_ms = 20\nstream = \"{}-decisions\"\nstream_subject = \"{}.decisions\"",
        buckets.prefix,
        buckets.prefix.replace('-', "_")
    );
    let a = util::start(&["popularity"], &[], &buckets.toml_with("a", 2, &logging)).await;
    let b = util::start(&["popularity"], &[], &buckets.toml_with("b", 2, &logging)).await;
    assert_eq!(upload(&a, "ordered", "0.1.0", relish_tests::guest_bytes("ordered")).await.status, StatusCode::CREATED);
    assert_eq!(put_plan(&b, &plan(&[("ordered", 100.0)])).await.status, StatusCode::OK);
    until(Duration::from_secs(10), "both serve the plan", async || {
        serving(&a).await.0 == "ordered@0.1.0" && serving(&b).await.0 == "ordered@0.1.0"
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(vec![a.base.clone(), b.base.clone()], stop.clone());
    nats.stop();
    // Writes are refused, naming the fleet store; nothing changes.
    let refused = put_plan(&a, &plan(&[("popularity", 100.0)])).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&refused.body));
    let error = refused.json();
    assert_eq!(error["error"]["code"], "fleet_unavailable");
    assert!(error["error"]["message"].as_str().unwrap().contains("unreachable"), "{error}");
    let upload_refused = upload(&b, "discovery", "0.1.0", relish_tests::policy_bytes("discovery")).await;
    assert_eq!(upload_refused.status, StatusCode::SERVICE_UNAVAILABLE);
    let back = admin(&b, "POST", "/v1/surfaces/discovery/rollback", "").await;
    assert_eq!(back.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(serving(&a).await.0, "ordered@0.1.0", "the last applied plan still serves");
    assert_eq!(admin(&b, "GET", "/v1/policies/discovery/versions/0.1.0", "").await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin(&a, "GET", "/v1/fleet", "").await.status, StatusCode::SERVICE_UNAVAILABLE);

    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = traffic.await.unwrap();
    assert_eq!(failed, 0, "no rank request failed while NATS was down ({answered} answered)");
    assert!(answered > 0);
    // The decision stream could not take the records: dropped from it, counted; the files have
    // them.
    until(Duration::from_secs(30), "the stream's drops are counted", async || {
        let scrape = String::from_utf8_lossy(&util::get(&a, "/metrics").await.body).into_owned();
        let dropped = |reason| util::metric(&scrape, "relish_decisions_dropped_total", &[("reason", reason)]);
        dropped("stream-unavailable") + dropped("stream-queue-full") > 0.0
            && util::metric(&scrape, "relish_decisions_logged_total", &[("surface", "discovery")]) > 0.0
    })
    .await;

    // A host restarted meanwhile serves what its data directory holds.
    let mut a = a;
    let handle = a.handle.take().unwrap();
    handle.shutdown().await;
    let config = util::config(a.dir.path(), &a.dir.path().join("bundled"), &buckets.toml_with("a", 1, &logging));
    let a = util::start_config(a.dir, config).await;
    assert_eq!(serving(&a).await.0, "ordered@0.1.0", "restarted into its last applied state");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(vec![a.base.clone(), b.base.clone()], stop.clone());

    // NATS back: a change written through one host reaches the other.
    nats.restart();
    until(Duration::from_secs(30), "a write succeeds again", async || {
        put_plan(&b, &plan(&[("popularity", 50.0), ("ordered", 50.0)])).await.status == StatusCode::OK
    })
    .await;
    let expected = surface(&b).await["revision"].clone();
    until(Duration::from_secs(30), "the other host catches up", async || surface(&a).await["revision"] == expected)
        .await;
    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = traffic.await.unwrap();
    assert_eq!(failed, 0, "no rank request failed while NATS came back ({answered} answered)");
    assert!(answered > 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_behind_nkey_authentication_admits_only_hosts_with_the_seed() {
    // The user key pair of async-nats' own nkey tests.
    const SEED: &str = "SUACH75SWCM5D2JMJM6EKLR2WDARVGZT4QC6LX3AGHSWOMVAKERABBBRWM";
    const PUBLIC: &str = "UAFHG6FUD2UU4SDFVAFUL5LDFO2XM4WYM76UNXTPJYJK7EEMYRBHT2VE";
    let store = tempfile::tempdir().unwrap();
    let conf = store.path().join("nats.conf");
    std::fs::write(&conf, format!("authorization: {{ users: [ {{ nkey: {PUBLIC} }} ] }}\n")).unwrap();
    let seed = store.path().join("relish.nk");
    std::fs::write(&seed, format!("{SEED}\n")).unwrap();
    let nats = OwnNats::start_with(&store.path().join("js"), free_port(), Some(&conf));
    let buckets = Buckets::new("nkey", &nats.url());

    let with_seed = format!("{}nkey_seed = {:?}\n", buckets.toml("a", 10), seed.display().to_string());
    let a = util::start(&["popularity"], &[], &with_seed).await;
    let uploaded = upload(&a, "ordered", "0.1.0", relish_tests::guest_bytes("ordered")).await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&uploaded.body));

    // Without the seed the server refuses the connection: the host serves its own state and
    // refuses writes, naming the fleet store.
    let b = util::start(&["popularity"], &[], &buckets.toml("b", 1)).await;
    assert_eq!(serving(&b).await.0, "popularity@0.1.0");
    let refused = put_plan(&b, &plan(&[("popularity", 100.0)])).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&refused.body));
    assert_eq!(refused.json()["error"]["code"], "fleet_unavailable");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_stood_alone_joins_the_fleet_with_the_plan_it_served() {
    // A data directory written by a host without a fleet, serving a plan of its own.
    let alone = util::start(&["popularity"], &[], "[surfaces.discovery]\npolicy = \"popularity\"").await;
    assert_eq!(
        upload(&alone, "ordered", "0.1.0", relish_tests::guest_bytes("ordered")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(put_plan(&alone, &plan(&[("popularity", 50.0), ("ordered", 50.0)])).await.status, StatusCode::OK);
    let before = surface(&alone).await;
    let mut alone = alone;
    alone.handle.take().unwrap().shutdown().await;

    let buckets = Buckets::new("join", NATS);
    let config = util::config(alone.dir.path(), &alone.dir.path().join("bundled"), &buckets.toml("a", 10));
    let joined = util::start_config(alone.dir, config).await;
    let after = surface(&joined).await;
    assert_eq!(after["current"]["plan"], before["current"]["plan"], "it keeps serving what it served");
    assert_eq!(after["revision"], before["revision"]);

    // Its plan and the versions it calls are the fleet's now: a new host serves them.
    let other = host(&buckets, "b").await;
    let status = surface(&other).await;
    assert_eq!(status["current"]["plan"], before["current"]["plan"]);
    assert_eq!(status["revision"], before["revision"], "the same revision number on every host: {status}");
    assert_eq!(serving(&other).await.1, before["revision"].as_u64().unwrap());
    // Its history starts at the fleet's revision 2, and stays so across a restart.
    let mut other = other;
    other.handle.take().unwrap().shutdown().await;
    let config = util::config(other.dir.path(), &other.dir.path().join("bundled"), &buckets.toml("b", 10));
    let other = util::start_config(other.dir, config).await;
    assert_eq!(history(&surface(&other).await), history(&status));
    joined.stop().await;
    other.stop().await;
    buckets.remove().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_canary_is_taken_out_once_for_the_whole_fleet() {
    let buckets = Buckets::new("canary", NATS);
    let settings = "rollback_min_calls = 20\nrollback_window = 40";
    let a = util::start(&["popularity"], &[], &buckets.toml_with("a", 10, settings)).await;
    let b = util::start(&["popularity"], &[], &buckets.toml_with("b", 10, settings)).await;
    assert_eq!(
        upload(&a, "nan-score", "0.1.0", relish_tests::guest_bytes("nan-score")).await.status,
        StatusCode::CREATED
    );
    let set = put_plan(&b, &plan(&[("popularity", 80.0), ("nan-score", 20.0)])).await;
    assert_eq!(set.status, StatusCode::OK, "{}", String::from_utf8_lossy(&set.body));
    let failing = set.json()["revision"].as_u64().unwrap();
    until(Duration::from_secs(10), "both serve the canary", async || surface(&a).await["revision"] == failing).await;
    // Both hosts see the canary fail; the first to write takes it out, the other's alarm is void.
    let mut user = 0;
    until(Duration::from_secs(60), "the canary is taken out on both hosts", async || {
        for server in [&a, &b] {
            for _ in 0..25 {
                let body = json!({"user": {"id": format!("u-{user}")}, "candidates": [{"id": "a"}, {"id": "b"}]});
                user += 1;
                assert_eq!(rank(server, "discovery", &body.to_string()).await.status, StatusCode::OK);
            }
        }
        let (x, y) = (surface(&a).await, surface(&b).await);
        x["revision"].as_u64() > Some(failing) && x["revision"] == y["revision"]
    })
    .await;
    // Let any late alarm land, then check that exactly one change was made, by the host itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = surface(&a).await;
    assert_eq!(status["revision"].as_u64(), Some(failing + 1), "one automatic change, not one per host: {status}");
    assert_eq!(history(&status), history(&surface(&b).await));
    let current = status["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(current["actor"], "relish");
    assert!(current["reason"].as_str().unwrap().contains("taken out automatically"), "{current}");
    assert_eq!(status["serving"], "popularity@0.1.0");
    a.stop().await;
    b.stop().await;
    buckets.remove().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleets_decision_log_is_one_stream_every_host_publishes_to() {
    let buckets = Buckets::new("stream", NATS);
    let stream = format!("{}-decisions", buckets.prefix);
    let subject = format!("{}.decisions", buckets.prefix.replace('-', "_"));
    let settings = format!(
        "log_sample = 1.0\n[decision_log]\nflush_ms = 20\nstream = \"{stream}\"\nstream_subject = \"{subject}\""
    );
    let a = util::start(&["popularity"], &[], &buckets.toml_with("a", 10, &settings)).await;
    let b = util::start(&["popularity"], &[], &buckets.toml_with("b", 10, &settings)).await;
    let mut ids = std::collections::HashSet::new();
    for user in 0..30 {
        for server in [&a, &b] {
            let body = json!({"user": {"id": format!("u-{user}")}, "candidates": [{"id": "a"}, {"id": "b"}]});
            let answer = rank(server, "discovery", &body.to_string()).await;
            ids.insert(answer.header("x-relish-decision-id").unwrap().to_owned());
        }
    }
    // A graceful stop waits until what was published is acknowledged.
    a.stop().await;
    b.stop().await;
    let js = async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap());
    let mut decisions = js.get_stream(&stream).await.unwrap();
    let info = decisions.info().await.unwrap().clone();
    assert_eq!(info.state.messages, 60, "every decision of both hosts, once");
    let mut seen = std::collections::HashSet::new();
    for sequence in info.state.first_sequence..=info.state.last_sequence {
        let message = decisions.get_raw_message(sequence).await.unwrap();
        assert_eq!(message.subject.as_str(), format!("{subject}.discovery"));
        let record: relish_host::decisions::record::Record = serde_json::from_slice(&message.payload).unwrap();
        seen.insert(record.id);
    }
    assert_eq!(seen, ids, "the stream holds exactly the decisions the hosts answered with");
    js.delete_stream(&stream).await.unwrap();
    buckets.remove().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_during_changes_restarts_consistent_and_catches_up() {
    let buckets = Buckets::new("kill", NATS);
    let a = host(&buckets, "a").await;
    assert_eq!(upload(&a, "ordered", "0.1.0", relish_tests::guest_bytes("ordered")).await.status, StatusCode::CREATED);

    // The second host is a real process, killed with SIGKILL while changes stream in.
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["popularity"], &[]);
    let toml = format!("[server]\nbundled_dir = {:?}\n{}", bundled.display().to_string(), buckets.toml("p", 10));
    std::fs::write(dir.path().join("relish.toml"), toml).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let process = || TestServer::at(port, admin_port);
    let mut child = spawn(dir.path(), port, admin_port);
    ready(&process(), &mut child).await;

    let changes = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (admin_url, changes, stop) = (a.admin.clone(), changes.clone(), stop.clone());
        tokio::spawn(async move {
            let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let weight = f64::from(1 + i % 98);
                let body = plan(&[("popularity", 100.0 - weight), ("ordered", weight)]).to_string();
                let request = hyper::Request::put(format!("{admin_url}/v1/surfaces/discovery/plan"))
                    .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                if let Ok(response) = client.request(request).await
                    && response.status() == StatusCode::OK
                {
                    changes.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        })
    };
    until(Duration::from_secs(30), "changes stream in", async || changes.load(Ordering::Relaxed) >= 15).await;
    child.kill();
    until(Duration::from_secs(30), "more changes while it is down", async || changes.load(Ordering::Relaxed) >= 30)
        .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let mut child = spawn(dir.path(), port, admin_port);
    let restarted = process();
    ready(&restarted, &mut child).await;
    let expected = surface(&a).await;
    let status = surface(&restarted).await;
    assert_eq!(status["revision"], expected["revision"], "caught up by the time it is ready");
    assert_eq!(status["current"]["plan"], expected["current"]["plan"]);
    assert_eq!(serving(&restarted).await.1, expected["revision"].as_u64().unwrap());
    // Consistent: every version it lists can be shown, and the plan it serves is the one it shows.
    let listed = admin(&restarted, "GET", "/v1/policies", "").await.json();
    for versions in listed["policies"].as_object().unwrap().values() {
        for version in versions.as_array().unwrap() {
            let path = format!(
                "/v1/policies/{}/versions/{}",
                version["policy"].as_str().unwrap(),
                version["version"].as_str().unwrap()
            );
            assert_eq!(admin(&restarted, "GET", &path, "").await.status, StatusCode::OK, "{path}");
        }
    }
    assert_eq!(status["serving"], "popularity@0.1.0, ordered@0.1.0");
    child.kill();
    a.stop().await;
    buckets.remove().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_stands_alone_has_no_fleet_and_a_bad_fleet_configuration_names_its_key() {
    let alone = util::start(&["popularity"], &[], "").await;
    let answer = admin(&alone, "GET", "/v1/fleet", "").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json()["error"]["code"], "no_fleet");
    alone.stop().await;

    for (toml, key) in [
        ("[fleet]\nnats = \"http://[::1\"", "fleet.nats"),
        ("[fleet]\nnats = \"nats://127.0.0.1:4222\"\nstate_bucket = \"a.b\"", "fleet.state_bucket"),
        ("[fleet]\nnats = \"nats://127.0.0.1:4222\"\nhistory = 1000", "fleet.history"),
        ("[fleet]\nnats = \"nats://127.0.0.1:4222\"\nbucket = \"x\"", "fleet"),
    ] {
        let error = relish_host::server::config::Config::from_toml(toml).unwrap_err();
        assert!(error.key.contains(key), "{toml}: {error:?}");
    }
    let mut config = relish_host::server::config::Config::default();
    let env = |name: &str| (name == "RELISH_FLEET_NATS").then(|| "nats://10.0.0.7:4222".to_owned());
    config.apply_env(env).unwrap();
    assert_eq!(config.fleet.unwrap().nats, "nats://10.0.0.7:4222");
    let mut config = relish_host::server::config::Config::default();
    let bad = |name: &str| (name == "RELISH_FLEET_NATS").then(|| "nats://[".to_owned());
    assert!(config.apply_env(bad).unwrap_err().key.starts_with("RELISH_FLEET_NATS"));
}
