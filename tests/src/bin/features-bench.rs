//! The feature-lookup benchmark: ids-only requests (features from the store, warm cache) against
//! the same requests with every feature inline, under `wrk`, in one run; then what a cold cache
//! costs with Redis.
//!
//! ```sh
//! cargo run --release -p relish-tests --bin features-bench            # 10 s per case
//! cargo run --release -p relish-tests --bin features-bench -- 30      # 30 s per case
//! ```
//!
//! For 50 and 500 venues (20 features and tags each, the row shape), `relish serve` in this
//! process serves `discovery` three ways, one after the other: `inline` (the body carries
//! everything), `memory` and `redis` (`source = "store"`: the body carries ids only; the
//! machine's Redis at 127.0.0.1:6379, under a key prefix of the benchmark's own, deleted at the
//! end). Each case runs `wrk -t1 -c32`
//! and reports requests/s, p50, p99 and the server's CPU per request (this process's user +
//! system time over the run, divided by the requests answered; `wrk` is another process). Then the
//! cold cache: sequential requests against a Redis store whose cache holds one entry, so every
//! lookup goes to Redis, with the `features` phase of `server-timing` against the warm one's.
//! Needs `wrk` (Debian: `apt-get install wrk`) and Redis.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relish_host::features::{self, LoadOptions};
use relish_host::runtime::{Runtime, RuntimeConfig};
use relish_host::server::{self, config::Config};
use relish_tests::{bench, synthetic};
use serde_json::Value;

// The same allocator as the `relish` binary: the server runs in this process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REDIS: &str = "redis://127.0.0.1:6379/0";

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).map_or(Ok(10), |s| s.parse())?;
    bench::check_wrk()?;
    let (dir, bundled) = bench::bundled(&["discovery", "popularity"])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let wasm_runtime = Runtime::new(RuntimeConfig::default())?;
    let prefix = format!("relish-bench-{}", std::process::id());
    let result = runtime.block_on(run(dir.path(), &bundled, wasm_runtime, &prefix, seconds));
    runtime.block_on(clean(&prefix))?;
    result
}

struct Case {
    report: bench::WrkReport,
    cpu_us: f64,
}

async fn run(
    dir: &std::path::Path,
    bundled: &std::path::Path,
    wasm_runtime: Arc<Runtime>,
    prefix: &str,
    seconds: u64,
) -> anyhow::Result<()> {
    println!("| venues | features | body KB | requests/s | p50 ms | p99 ms | server CPU µs/request |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    let mut summary = Vec::new();
    let mut cold = Vec::new();
    for n in [50, 500] {
        let request = synthetic::venues(n, 7, false);
        let mut inline = request.clone();
        inline.as_object_mut().expect("an object").remove("surface");
        let ids = synthetic::ids_only(&inline);
        let file = dir.join(format!("features-{n}.jsonl"));
        std::fs::write(&file, synthetic::entities_jsonl(&request, "venue"))?;
        features::load(&file, REDIS, prefix, LoadOptions::default()).await?;
        let mut cases = Vec::new();
        for (mode, features, body) in [
            ("inline", "", &inline),
            ("memory", "source = \"store\", store = \"file\", deadline_ms = 50", &ids),
            ("redis", "source = \"store\", store = \"online\", deadline_ms = 50", &ids),
        ] {
            let handle =
                server::start_with(config(dir, bundled, &file, prefix, features)?, wasm_runtime.clone()).await?;
            let url = format!("http://{}/v1/rank/discovery", handle.addr);
            let body_path = dir.join(format!("{mode}-{n}.json"));
            let text = body.to_string();
            std::fs::write(&body_path, &text)?;
            // Warm the cache (and check the answer) before measuring.
            let answer = post(&url, &text).await?;
            anyhow::ensure!(answer["fallback"].is_null(), "{mode}: a fallback answered: {answer}");
            let before = bench::process_cpu_seconds();
            let report = tokio::task::spawn_blocking({
                let (dir, url) = (dir.to_path_buf(), url.clone());
                move || bench::wrk(&dir, &body_path, &url, 32, seconds)
            })
            .await??;
            let cpu_us = (bench::process_cpu_seconds() - before) * 1e6 / report.requests.max(1) as f64;
            println!(
                "| {n} | {mode} | {} | {:.0} | {:.2} | {:.2} | {cpu_us:.0} |",
                text.len() / 1024,
                report.requests_per_second,
                report.p50_ms,
                report.p99_ms
            );
            if mode == "redis" {
                let (warm_us, total_us) = timing(&url, &text, 200).await?;
                cold.push((warm_us, total_us));
            }
            handle.shutdown().await;
            cases.push(Case { report, cpu_us });
        }
        let (inline_case, memory, redis) = (&cases[0], &cases[1], &cases[2]);
        summary.push(format!(
            "{n} venues: ids-only with a warm cache gives requests/s x{:.2} (memory) and x{:.2} (Redis), \
             server CPU per request x{:.2} and x{:.2}, against inline features",
            memory.report.requests_per_second / inline_case.report.requests_per_second,
            redis.report.requests_per_second / inline_case.report.requests_per_second,
            memory.cpu_us / inline_case.cpu_us,
            redis.cpu_us / inline_case.cpu_us,
        ));

        // Cold: a cache of one entry, so every lookup goes to Redis.
        let features = "source = \"store\", store = \"cold\", deadline_ms = 50";
        let handle = server::start_with(config(dir, bundled, &file, prefix, features)?, wasm_runtime.clone()).await?;
        let url = format!("http://{}/v1/rank/discovery", handle.addr);
        let (cold_us, cold_total_us) = timing(&url, &ids.to_string(), 200).await?;
        handle.shutdown().await;
        let (warm_us, warm_total_us) = cold.pop().expect("the redis case ran");
        summary.push(format!(
            "{n} venues, sequential requests: the features phase takes {warm_us:.0} µs with a warm cache and \
             {cold_us:.0} µs cold (one Redis round trip for {} entities); the whole request {warm_total_us:.0} µs \
             warm, {cold_total_us:.0} µs cold",
            n + 1
        ));
    }
    println!();
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

/// `discovery` served by `discovery` with the given `features` settings (empty: inline only),
/// and three stores: `file` (memory), `online` (Redis) and `cold` (Redis behind a one-entry cache).
fn config(
    dir: &std::path::Path,
    bundled: &std::path::Path,
    file: &std::path::Path,
    prefix: &str,
    features: &str,
) -> anyhow::Result<Config> {
    let features = if features.is_empty() { String::new() } else { format!("features = {{ {features} }}") };
    let mut config = Config::from_toml(&format!(
        r#"
[server]
max_concurrency = 4096
[defaults]
deadline_ms = 200
[features.stores.file]
backend = "memory"
path = {file:?}
[features.stores.online]
backend = "redis"
url = "{REDIS}"
prefix = "{prefix}"
[features.stores.cold]
backend = "redis"
url = "{REDIS}"
prefix = "{prefix}"
[features.stores.cold.cache]
max_entries = 1
[surfaces.discovery]
policy = "discovery"
{features}
"#
    ))?;
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    config.server.data_dir = dir.join("data");
    config.server.bundled_dir = Some(bundled.to_path_buf());
    Ok(config)
}

async fn post(url: &str, body: &str) -> anyhow::Result<Value> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))?;
    let response = client.request(request).await?;
    anyhow::ensure!(response.status() == 200, "{url} answered {}", response.status());
    Ok(serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?)
}

/// Mean `features` phase and mean whole request (µs, from `server-timing` and the client) over
/// `count` sequential requests.
async fn timing(url: &str, body: &str, count: usize) -> anyhow::Result<(f64, f64)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let (mut features, mut total) = (0.0, 0.0);
    for _ in 0..count {
        let request = hyper::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))?;
        let started = std::time::Instant::now();
        let response = client.request(request).await?;
        let header = response.headers()["server-timing"].to_str()?.to_owned();
        response.into_body().collect().await?;
        total += started.elapsed().as_secs_f64() * 1e6;
        let phase = header
            .split(", ")
            .find_map(|part| part.strip_prefix("features;dur="))
            .ok_or_else(|| anyhow::anyhow!("no features phase in `{header}`"))?;
        features += phase.parse::<f64>()? * 1000.0;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((features / count as f64, total / count as f64))
}

async fn clean(prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(REDIS)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut connection).await?;
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut connection).await?;
    }
    Ok(())
}
