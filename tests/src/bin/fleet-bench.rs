//! The fleet benchmark: how long a plan change takes to reach every host.
//!
//! ```sh
//! cargo run --release -p relish-tests --bin fleet-bench            # 50 changes
//! cargo run --release -p relish-tests --bin fleet-bench -- 200     # 200 changes
//! ```
//!
//! Three hosts run in this process (own ports and data directories) against the machine's NATS
//! at 127.0.0.1:4222, on buckets of the benchmark's own (deleted at the end). A version is uploaded
//! to the first host; then plan changes alternate the surface's single arm between two versions,
//! written through the hosts in turn. For each change the clock starts when the admin call has
//! answered and stops when all three hosts answer a rank request with the new arm (each host is
//! polled over HTTP, request after request, from its own task). Prints p50, p99 and the maximum,
//! and the admin call's own time (it answers once the writing host has applied the change).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use relish_host::runtime::{Runtime, RuntimeConfig};
use relish_host::server::config::{Config, Role, TokenConfig};
use relish_host::server::{self, Handle};
use relish_tests::bench;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NATS: &str = "nats://127.0.0.1:4222";
const TOKEN: &str = "fleet-bench-token-0123456789";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn main() -> anyhow::Result<()> {
    let changes: usize = std::env::args().nth(1).map_or(Ok(50), |s| s.parse())?;
    let (dir, bundled) = bench::bundled(&["popularity"])?;
    let prefix = format!("relish-bench-{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(dir.path(), &bundled, &prefix, changes));
    runtime.block_on(clean(&prefix));
    result
}

fn config(dir: &std::path::Path, bundled: &std::path::Path, prefix: &str, host: &str) -> anyhow::Result<Config> {
    let mut config = Config::from_toml(&format!(
        r#"
[surfaces.discovery]
policy = "popularity"
[fleet]
nats = "{NATS}"
host = "{host}"
state_bucket = "{prefix}-state"
components_bucket = "{prefix}-components"
hosts_bucket = "{prefix}-hosts"
"#
    ))?;
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    config.server.data_dir = dir.join(format!("data-{host}"));
    config.server.bundled_dir = Some(bundled.to_path_buf());
    config.admin.tokens.push(TokenConfig {
        name: "bench".into(),
        secret: Some(TOKEN.into()),
        secret_env: None,
        role: Role::Deploy,
        surfaces: None,
    });
    Ok(config)
}

async fn run(dir: &std::path::Path, bundled: &std::path::Path, prefix: &str, changes: usize) -> anyhow::Result<()> {
    let wasm = Runtime::new(RuntimeConfig::default())?;
    let mut hosts: Vec<Handle> = Vec::new();
    for name in ["a", "b", "c"] {
        hosts.push(server::start_with(config(dir, bundled, prefix, name)?, wasm.clone()).await?);
    }
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let admin = |i: usize| format!("http://{}", hosts[i % 3].admin_addr);
    let ordered = Bytes::from(relish_tests::guest_bytes("ordered"));
    let status = call(&client, "PUT", &format!("{}/v1/policies/ordered/versions/0.1.0", admin(0)), ordered).await?;
    anyhow::ensure!(status == 201, "the upload answered {status}");

    let bases: Arc<Vec<String>> = Arc::new(hosts.iter().map(|h| format!("http://{}", h.addr)).collect());
    let mut took = Vec::with_capacity(changes);
    let mut calls = Vec::with_capacity(changes);
    for change in 0..changes {
        let arm = if change % 2 == 0 { "ordered" } else { "popularity" };
        let body = format!(r#"{{"arms": [{{"policy": "{arm}", "version": "0.1.0", "weight": 100}}]}}"#);
        let url = format!("{}/v1/surfaces/discovery/plan", admin(change + 1));
        let sent = Instant::now();
        let status = call(&client, "PUT", &url, Bytes::from(body)).await?;
        anyhow::ensure!(status == 200, "change {change}: the plan answered {status}");
        let answered = Instant::now();
        calls.push(answered - sent);
        let wanted = format!("{arm}@0.1.0");
        let mut waits = Vec::new();
        for base in bases.iter() {
            let (client, base, wanted) = (client.clone(), base.clone(), wanted.clone());
            waits.push(tokio::spawn(async move { serves(&client, &base, &wanted).await }));
        }
        for wait in waits {
            wait.await??;
        }
        took.push(answered.elapsed());
    }
    took.sort();
    calls.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |v: &[Duration], q: f64| ms(v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]);
    println!("| changes | answer to all three serving: p50 ms | p99 ms | max ms | the admin call: p50 ms | p99 ms |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        took.len(),
        at(&took, 0.5),
        at(&took, 0.99),
        at(&took, 1.0),
        at(&calls, 0.5),
        at(&calls, 0.99)
    );
    for host in hosts {
        host.shutdown().await;
    }
    Ok(())
}

/// Sends rank requests to `base` until one is answered by `wanted`.
async fn serves(client: &HttpClient, base: &str, wanted: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let request = hyper::Request::post(format!("{base}/v1/rank/discovery"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"candidates": [{"id": "a"}, {"id": "b"}]}"#)))?;
        let response = client.request(request).await?;
        let arm = response.headers().get("x-relish-arm").and_then(|v| v.to_str().ok()).map(str::to_owned);
        response.into_body().collect().await?;
        if arm.as_deref() == Some(wanted) {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(10), "{base} did not serve {wanted} within 10 s");
    }
}

async fn call(client: &HttpClient, method: &str, url: &str, body: Bytes) -> anyhow::Result<u16> {
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(body))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    if status >= 300 {
        eprintln!("{method} {url}: {}", String::from_utf8_lossy(&body));
    }
    Ok(status)
}

/// Deletes the benchmark's buckets.
async fn clean(prefix: &str) {
    let Ok(client) = async_nats::connect(NATS).await else { return };
    let js = async_nats::jetstream::new(client);
    let _ = js.delete_key_value(format!("{prefix}-state")).await;
    let _ = js.delete_key_value(format!("{prefix}-hosts")).await;
    let _ = js.delete_object_store(format!("{prefix}-components")).await;
}
