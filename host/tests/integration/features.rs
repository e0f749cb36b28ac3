//! Features from a store: ids-only requests answered exactly as inline ones (memory store and
//! Redis), a Zipf workload's cache hit rate and round trips, Redis stopped and restarted under
//! load, bad values in the store, and refusals that name their field.
//!
//! Redis tests use the machine's Redis (127.0.0.1:6379) under a key prefix of their own, and
//! delete their keys; the fault test starts its own `redis-server` on a free port.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper::StatusCode;
use relish_host::features::{self, LoadOptions};
use relish_tests::synthetic;
use serde_json::{Value, json};

use crate::util::{self, TestServer, get, metric, rank};

const REDIS: &str = "redis://127.0.0.1:6379/0";

/// A key prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    format!("relish-test-{test}-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

/// Deletes every key under `prefix` (SCAN, so that a million keys never block Redis).
async fn clean(url: &str, prefix: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    // Unlinking 10,000 keys on the shared Redis of a busy machine can take longer than the
    // client's default 500 ms response timeout; a cleanup may wait.
    connection.set_response_timeout(std::time::Duration::from_secs(60));
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut connection)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK").arg(&keys).query_async(&mut connection).await.unwrap();
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

async fn load(path: &Path, url: &str, prefix: &str) -> features::LoadReport {
    features::load(path, url, prefix, LoadOptions::default()).await.expect("the loader loads the file")
}

/// `discovery` (served by `discovery`, which is made for it) with the given `features` settings
/// (empty: inline only), and two stores: `file` (the memory store of `memory`) and `online`
/// (Redis under `prefix`).
fn config(memory: &Path, prefix: &str, features: &str) -> String {
    let features = if features.is_empty() { String::new() } else { format!("features = {{ {features} }}") };
    format!(
        r#"
[features.stores.file]
backend = "memory"
path = {memory:?}

[features.stores.online]
backend = "redis"
url = "{REDIS}"
prefix = "{prefix}"

[surfaces.discovery]
policy = "discovery"
{features}
"#
    )
}

async fn serve(memory: &Path, prefix: &str, features: &str) -> TestServer {
    util::start(&["discovery", "popularity"], &[], &config(memory, prefix, features)).await
}

/// `discovery` with features only from Redis under `prefix` (the store `online`), with the
/// given `[features.stores.online.cache]` settings.
async fn online(prefix: &str, cache: &str) -> TestServer {
    let toml = format!(
        r#"
[features.stores.online]
backend = "redis"
url = "{REDIS}"
prefix = "{prefix}"
[features.stores.online.cache]
{cache}

[surfaces.discovery]
policy = "discovery"
features = {{ source = "store", deadline_ms = 1000 }}
"#
    );
    util::start(&["discovery", "popularity"], &[], &toml).await
}

/// The request without its `surface` (each test surface has its own name).
fn body(request: &Value) -> String {
    let mut request = request.clone();
    request.as_object_mut().unwrap().remove("surface");
    request.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_only_requests_rank_exactly_as_inline_ones_from_memory_and_from_redis() {
    let request = synthetic::venues(500, 11, false);
    let ids = synthetic::ids_only(&request);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("features.jsonl");
    std::fs::write(&file, synthetic::entities_jsonl(&request, "venue")).unwrap();
    let prefix = prefix("parity");
    let report = load(&file, REDIS, &prefix).await;
    assert_eq!(report.entities, 501, "the user and 500 venues");

    let server = serve(&file, &prefix, "").await;
    let inline = rank(&server, "discovery", &body(&request)).await;
    assert_eq!(inline.status, StatusCode::OK);
    let inline = inline.json();
    assert!(inline.get("features").is_none(), "an inline surface reports no lookup");
    assert!(inline["fallback"].is_null());
    server.stop().await;
    for store in ["file", "online"] {
        let server =
            serve(&file, &prefix, &format!("source = \"store\", store = \"{store}\", deadline_ms = 1000")).await;
        let answer = rank(&server, "discovery", &body(&ids)).await;
        assert_eq!(answer.status, StatusCode::OK, "{store}: {}", String::from_utf8_lossy(&answer.body));
        let timing = answer.header("server-timing").unwrap().to_owned();
        assert!(timing.contains("features;dur="), "{store}: {timing}");
        let answer = answer.json();
        assert_eq!(answer["items"], inline["items"], "{store}: the same ids and scores as inline");
        let report = &answer["features"];
        assert!(report.get("error").is_none(), "{store}: {report}");
        assert_eq!(report["round_trips"], 1, "{store}: {report}");
        // The synthetic venues leave `rating` out for some venues (as callers do): reported,
        // exactly as the inline request leaves it out.
        let rating_missing =
            request["candidates"].as_array().unwrap().iter().filter(|c| c["features"].get("rating").is_none()).count();
        assert_eq!(report["missing"]["candidates"]["rating"], rating_missing, "{store}: {report}");
        assert!(report["missing"].get("unknown_ids").is_none(), "{store}: {report}");
        // Again: from the cache now, no round trip.
        let again = rank(&server, "discovery", &body(&ids)).await.json();
        assert_eq!(again["items"], inline["items"]);
        assert_eq!(again["features"]["round_trips"], 0, "{store}: {}", again["features"]);
        assert_eq!(again["features"]["hits"], 501);

        // `store` refuses feature values in the body, naming the field.
        let refused = rank(&server, "discovery", &body(&request)).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        let error = refused.json();
        assert_eq!(error["error"]["code"], "inline_features");
        assert_eq!(error["error"]["path"], "candidates");
        server.stop().await;
    }

    // `both`: the body's values win over the store's.
    let mut overridden = request.clone();
    for candidate in overridden["candidates"].as_array_mut().unwrap() {
        candidate["features"]["is_open"] = json!(0.0);
    }
    overridden["candidates"][7]["features"]["is_open"] = json!(1.0);
    let mut partial = synthetic::ids_only(&overridden);
    for (i, candidate) in partial["candidates"].as_array_mut().unwrap().iter_mut().enumerate() {
        candidate["features"] = json!({"is_open": overridden["candidates"][i]["features"]["is_open"]});
    }
    let server = serve(&file, &prefix, "").await;
    let expected = rank(&server, "discovery", &body(&overridden)).await.json();
    server.stop().await;
    let server = serve(&file, &prefix, "source = \"both\", store = \"file\", deadline_ms = 1000").await;
    let mixed = rank(&server, "discovery", &body(&partial)).await.json();
    assert_eq!(mixed["items"], expected["items"], "values in the body win over stored ones");
    assert_ne!(mixed["items"], inline["items"], "and they changed the answer");
    server.stop().await;
    clean(REDIS, &prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bundled_feature_file_answers_the_ids_only_fixture_as_the_inline_one() {
    let root = relish_tests::root();
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["discovery", "popularity"], &[]);
    let mut config =
        util::config(dir.path(), &bundled, "").with_bundled_features(&root.join("tests/fixtures/features.jsonl"));
    config.defaults.deadline_ms = Some(5_000.0);
    let server = util::start_config(dir, config).await;
    let inline = rank(&server, "discovery", &relish_tests::fixture("discovery-evening.json")).await.json();
    let ids = rank(&server, "discovery", &relish_tests::fixture("discovery-evening-ids.json")).await.json();
    assert_eq!(ids["items"], inline["items"]);
    assert!(ids["features"]["missing"].get("unknown_ids").is_none(), "{}", ids["features"]);
    server.stop().await;
}

/// SplitMix64: a seeded generator for the workload.
struct SplitMix(u64);

impl SplitMix {
    fn f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    }
}

/// A Zipf sampler over `0..n` (exponent `s`), by inverse transform over the cumulative weights.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|k| {
                total += 1.0 / (k as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut SplitMix) -> usize {
        let target = rng.f64() * self.cumulative.last().unwrap();
        self.cumulative.partition_point(|&c| c < target).min(self.cumulative.len() - 1)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zipf_workload_over_a_million_users_hits_the_cache_and_never_makes_two_round_trips() {
    const VENUES: usize = 100_000;
    const USERS: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entities.csv");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        writeln!(out, "entity,id,is_open,rating,eta_min,orders_7d,affinity.pizza,affinity.sushi,tags").unwrap();
        for v in 0..VENUES {
            let tag = synthetic::CUISINES[v % synthetic::CUISINES.len()];
            writeln!(out, "venue,v-{v},1,{},{},{},,,{tag}", 5 + v % 5, 10 + v % 40, v % 700).unwrap();
        }
        for u in 0..USERS {
            writeln!(out, "user,u-{u},,,,,0.{},0.{},", u % 10, (u / 10) % 10).unwrap();
        }
    }
    let prefix = prefix("zipf");
    let loaded = load(&file, REDIS, &prefix).await;
    assert_eq!(loaded.entities, (VENUES + USERS) as u64);
    eprintln!("loaded {} entities into Redis in {:.1} s", loaded.entities, loaded.elapsed.as_secs_f64());

    let server = online(&prefix, "max_entries = 50000").await;
    let (venues, users) = (Zipf::new(VENUES, 1.0), Zipf::new(USERS, 1.0));
    let mut rng = SplitMix(7);
    let (requests, mut round_trips, mut hits, mut misses) = (400, 0u64, 0u64, 0u64);
    for i in 0..requests {
        let mut candidates: Vec<usize> = (0..50).map(|_| venues.sample(&mut rng)).collect();
        candidates.sort_unstable();
        candidates.dedup();
        let body = json!({
            "request_id": format!("zipf-{i}"),
            "user": {"id": format!("u-{}", users.sample(&mut rng))},
            "candidates": candidates.iter().map(|v| json!({"id": format!("v-{v}")})).collect::<Vec<_>>(),
        });
        let answer = rank(&server, "discovery", &body.to_string()).await;
        assert_eq!(answer.status, StatusCode::OK);
        let report = answer.json()["features"].clone();
        let trips = report["round_trips"].as_u64().unwrap();
        assert!(trips <= 1, "request {i} made {trips} round trips: {report}");
        assert!(report.get("error").is_none(), "request {i}: {report}");
        assert!(report["missing"].get("unknown_ids").is_none(), "every id is in the store: {report}");
        round_trips += trips;
        hits += report["hits"].as_u64().unwrap();
        misses += report["misses"].as_u64().unwrap();
    }
    let hit_rate = hits as f64 / (hits + misses) as f64;
    eprintln!(
        "Zipf(1.0) over {VENUES} venues and {USERS} users, {requests} requests of up to 50 venues: \
         cache hit rate {:.1} %, {:.2} Redis round trips per request",
        100.0 * hit_rate,
        round_trips as f64 / requests as f64
    );
    // The head of a Zipf distribution repeats: most lookups after the first requests hit.
    assert!(hit_rate > 0.45, "hit rate {hit_rate}");
    let scrape = String::from_utf8_lossy(&get(&server, "/metrics").await.body).into_owned();
    assert_eq!(
        metric(&scrape, "relish_feature_round_trips_total", &[("store", "online")]),
        round_trips as f64,
        "the metric counts what the answers say"
    );
    server.stop().await;
    clean(REDIS, &prefix).await;
}

/// A `redis-server` of the test's own, on a free port, keeping nothing on disk.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start(port: u16, dir: &Path) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let own = OwnRedis { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return own;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_stopped_mid_run_fails_no_request_and_lookups_resume_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = util::free_port();
    let redis = OwnRedis::start(port, dir.path());
    let request = synthetic::venues(50, 3, false);
    let file = dir.path().join("features.jsonl");
    std::fs::write(&file, synthetic::entities_jsonl(&request, "venue")).unwrap();
    load(&file, &redis.url(), "fault").await;
    let toml = format!(
        r#"
[features.stores.online]
backend = "redis"
url = "{}"
prefix = "fault"
timeout_ms = 200
[features.stores.online.cache]
ttl_secs = 0.05
negative_ttl_secs = 0.05

[surfaces.discovery]
policy = "discovery"
features = {{ source = "store", deadline_ms = 50 }}
"#,
        redis.url()
    );
    let server = Arc::new(util::start(&["discovery", "popularity"], &[], &toml).await);
    let ids = synthetic::ids_only(&request).to_string();
    let healthy = rank(&server, "discovery", &ids).await.json();
    assert!(healthy["features"].get("error").is_none(), "{}", healthy["features"]);

    // A client keeps sending while Redis goes away and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed, degraded) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = tokio::spawn({
        let (server, stop, ids) = (server.clone(), stop.clone(), ids.clone());
        let (sent, failed, degraded) = (sent.clone(), failed.clone(), degraded.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = rank(&server, "discovery", &ids).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if answer.status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if answer.json()["features"].get("error").is_some() {
                    degraded.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop();
    // Past the cache's TTL, every lookup has to go to the store, which is gone.
    let mut down = Value::Null;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let answer = rank(&server, "discovery", &ids).await;
        assert_eq!(answer.status, StatusCode::OK, "a page never fails because the store did");
        down = answer.json();
        if down["features"].get("error").is_some() && down["features"]["stale"] == 0 {
            break;
        }
    }
    let report = &down["features"];
    assert!(matches!(report["error"].as_str(), Some("unavailable" | "timeout")), "{report}");
    assert!(down["fallback"].is_null(), "the policy still answers, with what it has: {down}");
    assert!(report["missing"]["candidates"].as_object().is_some_and(|m| !m.is_empty()), "{report}");
    let scrape = String::from_utf8_lossy(&get(&server, "/metrics").await.body).into_owned();
    let counted = metric(
        &scrape,
        "relish_feature_incomplete_answers_total",
        &[("surface", "discovery"), ("reason", "unavailable")],
    ) + metric(
        &scrape,
        "relish_feature_incomplete_answers_total",
        &[("surface", "discovery"), ("reason", "timeout")],
    );
    assert!(counted >= 1.0, "degraded answers are counted");

    // Back on the same port: lookups resume without restarting Relish.
    let redis = OwnRedis::start(port, dir.path());
    load(&file, &redis.url(), "fault").await;
    let mut resumed = false;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let answer = rank(&server, "discovery", &ids).await.json();
        if answer["features"].get("error").is_none() && answer["features"]["round_trips"] == 1 {
            assert_eq!(answer["items"], healthy["items"]);
            resumed = true;
            break;
        }
    }
    assert!(resumed, "lookups resumed after Redis came back");
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {} requests", sent.load(Ordering::Relaxed));
    assert!(degraded.load(Ordering::Relaxed) > 0, "the client saw answers marked degraded");
    redis.stop();
    Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_values_in_the_store_are_refused_one_by_one_and_counted() {
    let prefix = prefix("bad");
    let client = redis::Client::open(REDIS).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let hset = |key: String, fields: Vec<(String, String)>| {
        let mut command = redis::cmd("HSET");
        command.arg(key);
        for (field, value) in fields {
            command.arg(field).arg(value);
        }
        command
    };
    let good = |rating: &str| vec![("is_open".to_owned(), "1".to_owned()), ("rating".to_owned(), rating.to_owned())];
    for (id, rating) in [("ok", "9.5"), ("text", "banana"), ("huge", "1e39"), ("nan", "NaN")] {
        let _: () = hset(format!("{prefix}:venue:{id}"), good(rating)).query_async(&mut connection).await.unwrap();
    }
    // A user hash with far more fields than any user has: refused as a whole, never fetched.
    let many: Vec<(String, String)> = (0..20_000).map(|i| (format!("affinity.t{i}"), "0.5".to_owned())).collect();
    let _: () = hset(format!("{prefix}:user:u-huge"), many).query_async(&mut connection).await.unwrap();

    let server = online(&prefix, "").await;
    let body =
        json!({"user": {"id": "u-huge"}, "candidates": [{"id": "ok"}, {"id": "text"}, {"id": "huge"}, {"id": "nan"}]});
    for round in 0..2 {
        let answer = rank(&server, "discovery", &body.to_string()).await;
        assert_eq!(answer.status, StatusCode::OK, "round {round}");
        let answer = answer.json();
        assert!(answer["fallback"].is_null(), "{answer}");
        assert_eq!(answer["items"].as_array().unwrap().len(), 4, "every venue is still ranked");
        // Three venues have no usable rating; `is_open` came through for all four.
        assert_eq!(answer["features"]["missing"]["candidates"]["rating"], 3, "round {round}: {}", answer["features"]);
        assert!(answer["features"]["missing"]["candidates"].get("is_open").is_none());
    }
    let scrape = String::from_utf8_lossy(&get(&server, "/metrics").await.body).into_owned();
    for reason in ["not-a-number", "out-of-range", "not-finite"] {
        let refused = metric(
            &scrape,
            "relish_feature_values_refused_total",
            &[("store", "online"), ("entity", "venue"), ("reason", reason)],
        );
        // Counted when fetched, once: the second round answered from the cache, which keeps the
        // good values only.
        assert_eq!(refused, 1.0, "{reason}");
    }
    let too_large = metric(
        &scrape,
        "relish_feature_values_refused_total",
        &[("store", "online"), ("entity", "user"), ("reason", "too-large")],
    );
    assert!(too_large >= 1.0, "the huge hash is refused");
    server.stop().await;
    clean(REDIS, &prefix).await;
}

#[test]
fn feature_settings_that_cannot_work_are_refused_naming_the_key() {
    let cases = [
        ("[surfaces.d]\npolicy = \"x\"\nfeatures = { source = \"store\" }\n", "surfaces.d.features.source"),
        (
            "[features.stores.a]\nbackend = \"memory\"\npath = \"f.jsonl\"\n[surfaces.d]\npolicy = \"x\"\nfeatures = { source = \"store\" }\n",
            "surfaces.d.features.entity",
        ),
        (
            "[features.stores.a]\nbackend = \"memory\"\npath = \"f.jsonl\"\n[surfaces.discovery]\nfeatures = { source = \"both\", store = \"b\" }\n",
            "surfaces.discovery.features.store",
        ),
        (
            "[features.stores.a]\nbackend = \"memory\"\npath = \"f.jsonl\"\n[surfaces.discovery]\nfeatures = { source = \"both\", deadline_ms = 0 }\n",
            "surfaces.discovery.features.deadline_ms",
        ),
        ("[features.stores.a]\nbackend = \"redis\"\n", "features.stores.a.url"),
        ("[features.stores.a]\nbackend = \"memory\"\n", "features.stores.a.path"),
    ];
    for (toml, key) in cases {
        let error = relish_host::server::config::Config::from_toml(toml).expect_err(toml);
        assert_eq!(error.key, key, "{toml}: {error}");
    }
    let ok = "[features.stores.a]\nbackend = \"memory\"\npath = \"f.jsonl\"\n[surfaces.discovery]\nfeatures = { source = \"both\" }\n";
    let config = relish_host::server::config::Config::from_toml(ok).unwrap();
    let features = config.surfaces()[0].features.clone().unwrap();
    assert_eq!(
        (features.store.as_str(), features.entity.as_str()),
        ("a", "venue"),
        "one store and a standard surface need no names"
    );
}
