//! The load benchmark: `relish serve`'s data plane under `wrk`, wasm policies against the same
//! server with the same policies compiled natively, in one run.
//!
//! ```sh
//! cargo run --release -p relish-tests --bin load-bench            # 10 s per case
//! cargo run --release -p relish-tests --bin load-bench -- 30      # 30 s per case
//! ```
//!
//! For 50 and 500 candidates (20 features each, the row shape), it starts the server in wasm mode
//! and in native mode (the same hyper server and JSON decoder; only the ranking differs), runs
//! `wrk` against `POST /v1/rank/discovery`, and prints requests/s, p50 and p99 and the wasm/native
//! ratio, then where a request's time goes (the `server-timing` parse / policy / encode split).
//! Then, with headroom (`wrk -c1`: one connection keeps one of two cores free), the wasm server without and with a 100 % shadow of the same
//! version (`PUT /v1/surfaces/discovery/plan` with `shadow`): what shadow evaluation costs the
//! caller. Needs `wrk` (Debian: `apt-get install wrk`).

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relish_host::runtime::{Ranker, Runtime, RuntimeConfig};
use relish_host::server::{self, config::Config};
use relish_policy_discovery::Discovery;
use relish_policy_popularity::Popularity;
use relish_tests::{Native, synthetic};

// The same allocator as the `relish` binary: the server runs in this process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Run {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    parse_us: f64,
    policy_us: f64,
    encode_us: f64,
    bytes: usize,
}

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).map_or(Ok(10), |s| s.parse())?;
    if Command::new("wrk").arg("--version").output().is_err() {
        anyhow::bail!("wrk is not installed: `apt-get install wrk` (Debian) or see https://github.com/wg/wrk");
    }
    let policies = relish_tests::policies();
    let dir = tempfile::tempdir()?;
    let bundled = dir.path().join("bundled");
    std::fs::create_dir_all(&bundled)?;
    for name in ["discovery", "popularity"] {
        std::fs::copy(&policies[name].component, bundled.join(format!("{name}.wasm")))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let wasm_runtime = Runtime::new(RuntimeConfig::default())?;
    println!("| candidates | mode | requests/s | p50 ms | p99 ms | parse µs | policy µs | encode µs |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut summary = Vec::new();
    for candidates in [50, 500] {
        let body = synthetic::venues(candidates, 7, false).to_string();
        let body_path = dir.path().join(format!("body-{candidates}.json"));
        std::fs::write(&body_path, &body)?;
        let mut runs = HashMap::new();
        for mode in ["native", "wasm"] {
            let natives: HashMap<String, Arc<dyn Ranker>> = if mode == "native" {
                HashMap::from([
                    ("discovery".to_owned(), Arc::new(Native::<Discovery>::new()) as Arc<dyn Ranker>),
                    ("popularity".to_owned(), Arc::new(Native::<Popularity>::new()) as Arc<dyn Ranker>),
                ])
            } else {
                HashMap::new()
            };
            let run = runtime.block_on(measure(
                dir.path(),
                &bundled,
                wasm_runtime.clone(),
                natives,
                &body,
                &body_path,
                seconds,
                mode,
                Load { connections: 32, shadow: false },
            ))?;
            println!(
                "| {candidates} | {mode} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
                run.requests_per_second, run.p50_ms, run.p99_ms, run.parse_us, run.policy_us, run.encode_us
            );
            runs.insert(mode, run);
        }
        for (mode, shadow) in [("wasm, -c1", false), ("wasm + 100 % shadow, -c1", true)] {
            let run = runtime.block_on(measure(
                dir.path(),
                &bundled,
                wasm_runtime.clone(),
                HashMap::new(),
                &body,
                &body_path,
                seconds,
                mode,
                Load { connections: 1, shadow },
            ))?;
            println!(
                "| {candidates} | {mode} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
                run.requests_per_second, run.p50_ms, run.p99_ms, run.parse_us, run.policy_us, run.encode_us
            );
            runs.insert(if shadow { "shadow" } else { "light" }, run);
        }
        let (light, shadow) = (&runs["light"], &runs["shadow"]);
        summary.push(format!(
            "{candidates} candidates, with headroom: a 100 % shadow gives p50 x{:.2}, p99 x{:.2}, requests/s x{:.2}",
            shadow.p50_ms / light.p50_ms,
            shadow.p99_ms / light.p99_ms,
            shadow.requests_per_second / light.requests_per_second
        ));
        let (wasm, native) = (&runs["wasm"], &runs["native"]);
        summary.push(format!(
            "{candidates} candidates ({} KB body): wasm/native requests/s = {:.2}; policy call {:.0} µs wasm vs {:.0} µs native; \
             parse {:.0} µs = {:.0} % of the wasm server's handler time",
            wasm.bytes / 1024,
            wasm.requests_per_second / native.requests_per_second,
            wasm.policy_us,
            native.policy_us,
            wasm.parse_us,
            100.0 * wasm.parse_us / (wasm.parse_us + wasm.policy_us + wasm.encode_us)
        ));
    }
    println!();
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

/// How a case loads the server.
struct Load {
    /// wrk connections.
    connections: u32,
    /// Whether the surface's plan runs a 100 % shadow of its own version.
    shadow: bool,
}

#[expect(clippy::too_many_arguments, reason = "one benchmark case, spelled out")]
async fn measure(
    dir: &std::path::Path,
    bundled: &std::path::Path,
    wasm_runtime: Arc<Runtime>,
    natives: HashMap<String, Arc<dyn Ranker>>,
    body: &str,
    body_path: &std::path::Path,
    seconds: u64,
    mode: &str,
    load: Load,
) -> anyhow::Result<Run> {
    let mut config = Config::from_toml(
        "[surfaces.discovery]\npolicy = \"discovery\"\n\
         [defaults]\ndeadline_ms = 200\n[server]\nmax_concurrency = 4096\n",
    )?;
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    config.server.data_dir = dir.join(format!("data-{}", mode.replace([' ', ',', '%', '+'], "")));
    config.server.bundled_dir = bundled.to_path_buf();
    const TOKEN: &str = "load-bench-token-0123456789";
    config.admin.tokens.push(relish_host::server::config::TokenConfig {
        name: "bench".into(),
        secret: Some(TOKEN.into()),
        secret_env: None,
        role: relish_host::server::config::Role::Deploy,
        surfaces: None,
    });
    let handle = server::start_with_natives(config, wasm_runtime, natives).await?;
    let url = format!("http://{}/v1/rank/discovery", handle.addr);
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    if load.shadow {
        let plan = serde_json::json!({
            "arms": [{"policy": "discovery", "version": "0.1.0", "weight": 100}],
            "shadow": [{"name": "same", "policy": "discovery", "version": "0.1.0", "sample": 1.0}],
        });
        let request = hyper::Request::put(format!("http://{}/v1/surfaces/discovery/plan", handle.admin_addr))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Full::new(Bytes::from(plan.to_string())))?;
        let response = client.request(request).await?;
        anyhow::ensure!(response.status() == 200, "setting the shadow plan answered {}", response.status());
    }

    // Where the time goes: the server-timing split of sequential requests (after a warm-up).
    let mut split = [0.0f64; 3];
    let samples = 300;
    for i in 0..samples + 50 {
        let request = hyper::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))?;
        let response = client.request(request).await?;
        anyhow::ensure!(response.status() == 200, "the server answered {}", response.status());
        let timing = response.headers()["server-timing"].to_str()?.to_owned();
        let answer = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            !answer.windows(13).any(|w| w == b"\"fallback\":{"),
            "a fallback answered: the benchmark is invalid"
        );
        if i >= 50 {
            for (slot, part) in split.iter_mut().zip(timing.split(", ")) {
                *slot += part.split("dur=").nth(1).unwrap_or("0").parse::<f64>()? * 1000.0 / samples as f64;
            }
        }
    }

    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"content-type\"] = \"application/json\"\n\
             local f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*all\")\nf:close()\n",
            body_path.display()
        ),
    )?;
    let output = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            Command::new("wrk")
                .args(["-t1", &format!("-c{}", load.connections), &format!("-d{seconds}s"), "--latency", "-s"])
                .arg(&script)
                .arg(&url)
                .output()
        }
    })
    .await??;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(!text.contains("Non-2xx"), "wrk saw error answers:\n{text}");
    let field = |prefix: &str| -> Option<String> {
        text.lines().map(str::trim).find(|l| l.starts_with(prefix)).map(|l| l[prefix.len()..].trim().to_owned())
    };
    let requests_per_second: f64 =
        field("Requests/sec:").ok_or_else(|| anyhow::anyhow!("no rate in:\n{text}"))?.parse()?;
    let p50_ms = latency_ms(&field("50%").unwrap_or_default());
    let p99_ms = latency_ms(&field("99%").unwrap_or_default());
    handle.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Run {
        requests_per_second,
        p50_ms,
        p99_ms,
        parse_us: split[0],
        policy_us: split[1],
        encode_us: split[2],
        bytes: body.len(),
    })
}

/// `1.23ms`, `812.00us`, `1.02s` → milliseconds.
fn latency_ms(text: &str) -> f64 {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len()));
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => f64::NAN,
    }
}
