//! The load benchmark: `relish serve`'s data plane under `wrk`, wasm policies against the same
//! server with the same policies compiled natively, in one run.
//!
//! ```sh
//! cargo run --release -p relish-tests --bin load-bench            # 10 s per case
//! cargo run --release -p relish-tests --bin load-bench -- 30      # 30 s per case
//! cargo run --release -p relish-tests --bin load-bench -- 10 50   # only 50 candidates
//! ```
//!
//! For 50 and 500 candidates (20 features each, the row shape), it starts the server in wasm mode
//! and in native mode (the same hyper server and JSON decoder; only the ranking differs), runs
//! `wrk` against `POST /v1/rank/discovery`, and prints requests/s, p50 and p99 and the wasm/native
//! ratio, then where a request's time goes (the `server-timing` parse / policy / encode split).
//! The surface has the product's default deadline, as `relish serve` with the bundled policies
//! does, so its decisions run inline on the runtime's workers; one case gives it a 200 ms
//! deadline instead (a slow surface, whose decisions run on the blocking pool: what that hand-off
//! costs). Each case counts the answers a fallback gave while the load ran.
//! Protobuf is measured three ways: under `wrk` (HTTP/1.1), and from one in-process client
//! thread over one HTTP/2 connection ([`h2_loop`]) both as `POST`s with a protobuf answer and as
//! gRPC calls: the last two tell what gRPC's framing costs the server.
//! Then, with headroom, the wasm server without and with a 100 % shadow of the same version
//! (`PUT /v1/surfaces/discovery/plan` with `shadow`): what shadow evaluation costs the caller.
//! These two cases use an open-loop client ([`open_loop`], in the manner of wrk2) rather than
//! `wrk`: requests are due at a fixed rate (a third of what one core answers sequentially, so the
//! machine has headroom with the shadow's calls too), and a request delayed behind a slow answer
//! is timed from when it was due, so a slow answer cannot hide the requests queued behind it
//! (coordinated omission). A closed loop (`wrk -c1`) keeps one request in flight and the server busy all the time: beside
//! `wrk` and the shadow thread, that is three busy threads on two cores, no headroom at all.
//! Then, the same way, the wasm server exporting a trace of every request over OTLP/HTTP to an
//! endpoint in this process that takes and drops them ([`otlp_sink`]): what tracing costs.
//! Then the *floor server* ([`floor_server`]): the same hyper (auto HTTP/1 and HTTP/2, the same
//! runtime and allocator) reading the same body, skimming it with serde_json into `IgnoredAny`
//! and answering a fixed 1 KB response: the cheapest server that still reads the request. Its
//! requests/s under the same `wrk` is what `relish serve` is measured against, and at 70 % of it
//! both are measured open loop for p50 and p99.
//! Needs `wrk` (Debian: `apt-get install wrk`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use relish_host::runtime::{Ranker, Runtime, RuntimeConfig};
use relish_host::server::{self, config::Config};
use relish_policy_discovery::Discovery;
use relish_policy_popularity::Popularity;
use relish_tests::{Native, bench, synthetic};

// The same allocator as the `relish` binary: the server runs in this process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Run {
    logged: f64,
    /// Answers given by a fallback while the load ran (`relish_fallbacks_total`).
    fallbacks: f64,
    dropped: f64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    parse_us: f64,
    policy_us: f64,
    encode_us: f64,
    bytes: usize,
}

impl Run {
    /// The table's cells of a run, from requests/s to fallbacks.
    fn cells(&self) -> String {
        format!(
            "{:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0}",
            self.requests_per_second,
            self.p50_ms,
            self.p99_ms,
            self.parse_us,
            self.policy_us,
            self.encode_us,
            self.fallbacks
        )
    }
}

fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args().nth(1).map_or(Ok(10), |s| s.parse())?;
    let sizes: Vec<usize> = std::env::args().skip(2).map(|s| s.parse()).collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() { vec![50, 500] } else { sizes };
    bench::check_wrk()?;
    let (dir, bundled) = bench::bundled(&["discovery", "popularity"])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let wasm_runtime = Runtime::new(RuntimeConfig::default())?;
    let (sink, exports) = runtime.block_on(otlp_sink())?;
    println!("| candidates | mode | requests/s | p50 ms | p99 ms | parse µs | policy µs | encode µs | fallbacks |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut summary = Vec::new();
    for candidates in sizes {
        let body = synthetic::venues(candidates, 7, false).to_string();
        let body_path = dir.path().join(format!("body-{candidates}.json"));
        std::fs::write(&body_path, &body)?;
        // The same request as protobuf (`relish.v1.RankRequest`).
        let protobuf = {
            use prost::Message as _;
            let options = relish_wire::DecodeOptions::default();
            // With its surface, which a gRPC call must name (a `POST` may).
            let mut message = relish_wire::decode(body.as_bytes(), &options)?.to_protobuf();
            message.surface = Some("discovery".to_owned());
            message.encode_to_vec()
        };
        let protobuf_path = dir.path().join(format!("body-{candidates}.pb"));
        std::fs::write(&protobuf_path, &protobuf)?;
        let mut runs = HashMap::new();
        for mode in [
            "native",
            "wasm",
            "wasm, protobuf",
            "wasm, protobuf over HTTP/2",
            "wasm, gRPC",
            "wasm, slow surface (off the workers)",
            "wasm + decision log 100 %",
            "wasm + traces 100 %",
        ] {
            let natives: HashMap<String, Arc<dyn Ranker>> = if mode == "native" {
                HashMap::from([
                    ("discovery".to_owned(), Arc::new(Native::<Discovery>::new()) as Arc<dyn Ranker>),
                    ("popularity".to_owned(), Arc::new(Native::<Popularity>::new()) as Arc<dyn Ranker>),
                ])
            } else {
                HashMap::new()
            };
            let (sent, sent_path) = if mode.contains("protobuf") || mode.contains("gRPC") {
                (Sent { bytes: &protobuf, media: "application/x-protobuf" }, &protobuf_path)
            } else {
                (Sent { bytes: body.as_bytes(), media: "application/json" }, &body_path)
            };
            let run = runtime.block_on(measure(
                dir.path(),
                &bundled,
                wasm_runtime.clone(),
                natives,
                sent,
                sent_path,
                seconds,
                mode,
                Load {
                    client: match mode {
                        "wasm, gRPC" => Client::H2 { grpc: true, calls: 32 },
                        "wasm, protobuf over HTTP/2" => Client::H2 { grpc: false, calls: 32 },
                        _ => Client::Wrk { connections: 32 },
                    },
                    shadow: None,
                    log: mode.contains("log"),
                    traces: mode.contains("traces").then_some(sink.as_str()),
                    slow: mode.contains("slow"),
                },
            ))?;
            println!("| {candidates} | {mode} | {} |", run.cells());
            runs.insert(mode, run);
        }
        // The wasm server with the JSON body, open loop.
        let open_loop_case = |mode: &str, load: Load<'_>| {
            let sent = Sent { bytes: body.as_bytes(), media: "application/json" };
            let natives = HashMap::new();
            runtime.block_on(measure(
                dir.path(),
                &bundled,
                wasm_runtime.clone(),
                natives,
                sent,
                &body_path,
                seconds,
                mode,
                load,
            ))
        };
        // A third of one core's sequential rate: the shadow's calls fit beside the answers.
        let wasm_us = runs["wasm"].parse_us + runs["wasm"].policy_us + runs["wasm"].encode_us;
        let rate = (1e6 / wasm_us / 3.0).round();
        // Alternated, three times each: on a shared machine a neighbour's burst or the state the
        // previous case left decides one run's tail; the median of three alternated runs does not
        // favour either mode.
        let mut open: [Vec<Run>; 5] = Default::default();
        for round in 0..3 {
            for (index, mode, shadow, log, traces) in [
                (0, "wasm, open loop", None, false, false),
                (1, "wasm + 100 % shadow, open loop", Some("discovery"), false, false),
                (2, "wasm + decision log 100 %, open loop", None, true, false),
                (3, "wasm + traces 100 %, open loop", None, false, true),
                // A shadow that costs next to nothing: what dispatching it costs the answer,
                // apart from the CPU its call takes beside the answers.
                (4, "wasm + 100 % shadow of popularity, open loop", Some("popularity"), false, false),
            ] {
                let traces = traces.then_some(sink.as_str());
                let load = Load { client: Client::OpenLoop { rate }, shadow, log, traces, slow: false };
                let run = open_loop_case(mode, load)?;
                println!("| {candidates} | {mode}, {rate} req/s, round {} | {} |", round + 1, run.cells());
                open[index].push(run);
            }
        }
        let [light, shadow, light_logged, light_traced, cheap_shadow] = open.map(|mut runs| {
            let median = |runs: &mut Vec<Run>, key: fn(&Run) -> f64| {
                runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
                key(&runs[runs.len() / 2])
            };
            let p50_ms = median(&mut runs, |r| r.p50_ms);
            let p99_ms = median(&mut runs, |r| r.p99_ms);
            let requests_per_second = median(&mut runs, |r| r.requests_per_second);
            Run { requests_per_second, p50_ms, p99_ms, ..runs.swap_remove(0) }
        });
        runs.insert("light", light);
        runs.insert("shadow", shadow);
        runs.insert("cheap shadow", cheap_shadow);
        runs.insert("light, logged", light_logged);
        runs.insert("light, traced", light_traced);
        // The floor: the same `wrk` against a server that only reads and skims the body.
        let floor = runtime.block_on(async {
            let (addr, stop) = floor_server().await?;
            let url = format!("http://{addr}/v1/rank/discovery");
            let (dir, body_path, wrk_url) = (dir.path().to_path_buf(), body_path.clone(), url.clone());
            let report =
                tokio::task::spawn_blocking(move || bench::wrk(&dir, &body_path, &wrk_url, 32, seconds)).await??;
            let rate = (report.requests_per_second * 0.7).round();
            let (url, open_body) = (url.clone(), Bytes::from(body.clone()));
            let at_70 = tokio::task::spawn_blocking(move || open_loop(&url, open_body, rate, seconds)).await??;
            let _ = stop.send(());
            anyhow::Ok((report, rate, at_70))
        })?;
        let (floor_report, floor_rate, floor_at_70) = floor;
        println!(
            "| {candidates} | floor server (skim, fixed 1 KB answer) | {:.0} | {:.2} | {:.2} | | | | |",
            floor_report.requests_per_second, floor_report.p50_ms, floor_report.p99_ms
        );
        println!(
            "| {candidates} | floor server, open loop at {floor_rate} req/s (70 % of its wrk rate) | {:.0} | {:.2} | {:.2} | | | | |",
            floor_at_70.0, floor_at_70.1, floor_at_70.2
        );
        let at_70 =
            Load { client: Client::OpenLoop { rate: floor_rate }, shadow: None, log: false, traces: None, slow: false };
        let wasm_at_70 = open_loop_case("wasm, open loop at 70 % of the floor", at_70)
            .inspect_err(|error| {
                println!("| {candidates} | wasm, open loop at {floor_rate} req/s: {error} | | | | | | | |")
            })
            .ok();
        if let Some(wasm_at_70) = wasm_at_70 {
            println!(
                "| {candidates} | wasm, open loop at {floor_rate} req/s (70 % of the floor's) | {} |",
                wasm_at_70.cells()
            );
            summary.push(format!(
            "{candidates} candidates: relish serve (wasm) / floor server requests/s = {:.2} ({:.0} vs {:.0}); at {floor_rate} \
             req/s (70 % of the floor) p50 {:.2} vs {:.2} ms, p99 {:.2} vs {:.2} ms, {:.0} vs {:.0} answered/s",
            runs["wasm"].requests_per_second / floor_report.requests_per_second,
            runs["wasm"].requests_per_second,
            floor_report.requests_per_second,
            wasm_at_70.p50_ms,
            floor_at_70.1,
            wasm_at_70.p99_ms,
            floor_at_70.2,
            wasm_at_70.requests_per_second,
            floor_at_70.0,
        ));
        }
        let (light, shadow, light_logged) = (&runs["light"], &runs["shadow"], &runs["light, logged"]);
        let light_traced = &runs["light, traced"];
        summary.push(format!(
            "{candidates} candidates, with headroom (medians of 3 alternated runs): tracing every request (5 spans, \
             OTLP/HTTP) gives p50 x{:.2}, p99 x{:.2}, requests/s x{:.2}",
            light_traced.p50_ms / light.p50_ms,
            light_traced.p99_ms / light.p99_ms,
            light_traced.requests_per_second / light.requests_per_second,
        ));
        summary.push(format!(
            "{candidates} candidates, with headroom (medians of 3 alternated runs): logging every decision gives p50 x{:.2}, \
             p99 x{:.2}, requests/s x{:.2} ({:.0} records written, {:.0} dropped, in one of the runs)",
            light_logged.p50_ms / light.p50_ms,
            light_logged.p99_ms / light.p99_ms,
            light_logged.requests_per_second / light.requests_per_second,
            light_logged.logged,
            light_logged.dropped,
        ));
        summary.push(format!(
            "{candidates} candidates, with headroom (medians of 3 alternated runs): a 100 % shadow gives p50 x{:.2}, p99 x{:.2}, requests/s x{:.2}",
            shadow.p50_ms / light.p50_ms,
            shadow.p99_ms / light.p99_ms,
            shadow.requests_per_second / light.requests_per_second
        ));
        let cheap_shadow = &runs["cheap shadow"];
        summary.push(format!(
            "{candidates} candidates, with headroom (medians of 3 alternated runs): a 100 % shadow of popularity (a cheap \
             policy) gives p50 x{:.2}, p99 x{:.2}",
            cheap_shadow.p50_ms / light.p50_ms,
            cheap_shadow.p99_ms / light.p99_ms,
        ));
        let (wasm, native, logged) = (&runs["wasm"], &runs["native"], &runs["wasm + decision log 100 %"]);
        let slow = &runs["wasm, slow surface (off the workers)"];
        summary.push(format!(
            "{candidates} candidates: a slow surface (200 ms deadline: every decision on the blocking pool) / the default \
             deadline (decisions inline on the workers) requests/s = {:.2} ({:.0} vs {:.0}); fallbacks under load {:.0} \
             and {:.0}",
            slow.requests_per_second / wasm.requests_per_second,
            slow.requests_per_second,
            wasm.requests_per_second,
            slow.fallbacks,
            wasm.fallbacks,
        ));
        let protobuf = &runs["wasm, protobuf"];
        summary.push(format!(
            "{candidates} candidates: protobuf ({} KB) / JSON ({} KB) requests/s = {:.2} ({:.0} vs {:.0}); parse {:.0} µs vs {:.0} µs",
            protobuf.bytes / 1024,
            wasm.bytes / 1024,
            protobuf.requests_per_second / wasm.requests_per_second,
            protobuf.requests_per_second,
            wasm.requests_per_second,
            protobuf.parse_us,
            wasm.parse_us,
        ));
        let (grpc, h2) = (&runs["wasm, gRPC"], &runs["wasm, protobuf over HTTP/2"]);
        summary.push(format!(
            "{candidates} candidates: gRPC / protobuf POST over HTTP/2 (the same one-thread client, 32 in flight) \
             requests/s = {:.2} ({:.0} vs {:.0}); p50 {:.2} vs {:.2} ms, p99 {:.2} vs {:.2} ms",
            grpc.requests_per_second / h2.requests_per_second,
            grpc.requests_per_second,
            h2.requests_per_second,
            grpc.p50_ms,
            h2.p50_ms,
            grpc.p99_ms,
            h2.p99_ms,
        ));
        let traced = &runs["wasm + traces 100 %"];
        summary.push(format!(
            "{candidates} candidates: tracing every request gives requests/s x{:.2}, p99 x{:.2} against no endpoint",
            traced.requests_per_second / wasm.requests_per_second,
            traced.p99_ms / wasm.p99_ms,
        ));
        summary.push(format!(
            "{candidates} candidates: logging every decision gives requests/s x{:.2}, p99 x{:.2} against no logging \
             ({:.0} records written by the end of the run, {:.0} dropped at the queue)",
            logged.requests_per_second / wasm.requests_per_second,
            logged.p99_ms / wasm.p99_ms,
            logged.logged,
            logged.dropped,
        ));
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
    println!("{} OTLP exports received by the sink", exports.load(std::sync::atomic::Ordering::Relaxed));
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

/// How a case loads the server.
struct Load<'a> {
    /// What sends the requests.
    client: Client,
    /// The policy of a 100 % shadow the surface's plan runs, if any (`discovery`: its own
    /// version).
    shadow: Option<&'static str>,
    /// Whether every decision is logged (`log_sample = 1.0`).
    log: bool,
    /// The OTLP endpoint every request is traced to, if any.
    traces: Option<&'a str>,
    /// A slow surface: a 200 ms deadline, so that every decision may hold a thread longer than
    /// `server.inline_decision_ms` and runs on the blocking pool. Otherwise the surface has the
    /// product's default deadline, and its decisions run inline on the runtime's workers.
    slow: bool,
}

/// What sends a case's requests.
#[derive(Clone, Copy)]
enum Client {
    /// `wrk -t1` with this many connections (a closed loop: each sends its next request when the
    /// last one is answered).
    Wrk { connections: u32 },
    /// [`open_loop`] at this many requests per second.
    OpenLoop { rate: f64 },
    /// [`h2_loop`]: protobuf over HTTP/2, `calls` in flight, as gRPC calls or as `POST`s.
    H2 { grpc: bool, calls: usize },
}

#[expect(clippy::too_many_arguments, reason = "one benchmark case, spelled out")]
async fn measure(
    dir: &std::path::Path,
    bundled: &std::path::Path,
    wasm_runtime: Arc<Runtime>,
    natives: HashMap<String, Arc<dyn Ranker>>,
    body: Sent<'_>,
    body_path: &std::path::Path,
    seconds: u64,
    mode: &str,
    load: Load<'_>,
) -> anyhow::Result<Run> {
    let log = if load.log { "log_sample = 1.0\n" } else { "" };
    let deadline = if load.slow { "deadline_ms = 200\n" } else { "" };
    let mut config = Config::from_toml(&format!(
        "[surfaces.discovery]\npolicy = \"discovery\"\n{log}{deadline}[server]\nmax_concurrency = 4096\n"
    ))?;
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    config.server.data_dir = dir.join(format!("data-{}", mode.replace([' ', ',', '%', '+'], "")));
    config.server.bundled_dir = Some(bundled.to_path_buf());
    config.traces.otlp_endpoint = load.traces.map(str::to_owned);
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
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    if let Some(shadow) = load.shadow {
        let plan = serde_json::json!({
            "arms": [{"policy": "discovery", "version": "0.1.0", "weight": 100}],
            "shadow": [{"name": "same", "policy": shadow, "version": "0.1.0", "sample": 1.0}],
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
            .header("content-type", body.media)
            .body(Full::new(Bytes::from(body.bytes.to_owned())))?;
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

    let (requests_per_second, p50_ms, p99_ms) = match load.client {
        Client::Wrk { connections } => {
            let (dir, body_path, url) = (dir.to_path_buf(), body_path.to_path_buf(), url.clone());
            let report =
                tokio::task::spawn_blocking(move || bench::wrk(&dir, &body_path, &url, connections, seconds)).await??;
            (report.requests_per_second, report.p50_ms, report.p99_ms)
        }
        Client::OpenLoop { rate } => {
            let (url, body) = (url.clone(), Bytes::from(body.bytes.to_owned()));
            tokio::task::spawn_blocking(move || open_loop(&url, body, rate, seconds)).await??
        }
        Client::H2 { grpc, calls } => {
            let (addr, body) = (handle.addr, Bytes::from(body.bytes.to_owned()));
            tokio::task::spawn_blocking(move || h2_loop(addr, body, grpc, calls, seconds)).await??
        }
    };
    // What the decision log kept and dropped (counted before the shutdown writes the rest).
    let scrape = prometheus::TextEncoder::new().encode_to_string(&handle.state.metrics.registry().gather())?;
    let counter = |name: &str| -> f64 {
        0.0 + scrape
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (logged, dropped) = (counter("relish_decisions_logged_total"), counter("relish_decisions_dropped_total"));
    let fallbacks = counter("relish_fallbacks_total");
    handle.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Run {
        logged,
        fallbacks,
        dropped,
        requests_per_second,
        p50_ms,
        p99_ms,
        parse_us: split[0],
        policy_us: split[1],
        encode_us: split[2],
        bytes: body.bytes.len(),
    })
}

/// A request body and its media type.
#[derive(Clone, Copy)]
struct Sent<'a> {
    bytes: &'a [u8],
    media: &'static str,
}

/// The floor server on a free port, until the sender is used or dropped: hyper's auto builder
/// (HTTP/1 and HTTP/2, as `relish serve`), each request's body read whole (at most 8 MiB, the
/// default `max_body_bytes`), skimmed by serde_json into `IgnoredAny` (syntax checked, no value
/// kept) and answered with the same 1 KB JSON body; `400` if the body is not JSON.
async fn floor_server() -> anyhow::Result<(std::net::SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let answer = Bytes::from(format!(
        r#"{{"request_id":"floor","items":[{}]}}"#,
        vec![r#"{"id":"venue-00","score":1.0}"#; 32].join(",")
    ));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted { Ok(accepted) => accepted, Err(_) => continue },
                _ = &mut stopped => return,
            };
            let _ = stream.set_nodelay(true);
            let (builder, answer) = (builder.clone(), answer.clone());
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let answer = answer.clone();
                async move {
                    let body = http_body_util::Limited::new(request.into_body(), 8 << 20)
                        .collect()
                        .await
                        .map_err(std::io::Error::other)?
                        .to_bytes();
                    let status = match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                        Ok(_) => 200,
                        Err(_) => 400,
                    };
                    let response = hyper::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(answer))
                        .expect("a valid answer");
                    Ok::<_, std::io::Error>(response)
                }
            });
            tokio::spawn(async move {
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    Ok((addr, stop))
}

/// An OTLP/HTTP endpoint that reads each export whole and answers `200` (an empty
/// `ExportTraceServiceResponse`), counting exports; its traces URL.
async fn otlp_sink() -> anyhow::Result<(String, Arc<std::sync::atomic::AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/traces", listener.local_addr()?);
    let exports = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = exports.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let counted = counted.clone();
                async move {
                    request.into_body().collect().await?;
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let answer = hyper::Response::builder()
                        .header("content-type", "application/x-protobuf")
                        .body(Full::new(Bytes::new()))
                        .expect("a valid answer");
                    Ok::<_, hyper::Error>(answer)
                }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Ok((url, exports))
}

/// An open-loop client on a thread of its own (a single-threaded tokio runtime, so it takes at
/// most one core), in the manner of wrk2: request `i` is due at `start + i / rate`, and the
/// requests are dealt round-robin to enough keep-alive HTTP/1.1 connections that each sends at
/// most [`PER_CONNECTION_RATE`] a second. A connection sends its next request when it is due,
/// or as soon as the previous answer arrives if that was later, so a slow answer delays the
/// requests behind it; their latency runs from when they were due (the time they waited counts:
/// no coordinated omission), and a request sent on time runs from when it was sent (tokio's
/// 1 ms timer may wake a connection late, and that is the client's delay, not the server's).
/// Requests still waiting when the run ends count with what they had waited by then, a lower
/// bound, so a server that cannot keep up shows it in its p99 and its requests/s.
///
/// The requests are written as prebuilt bytes and the answers read with `httparse` (status and
/// `content-length`), so the client costs a few microseconds per request and holds the floor
/// server's rates on this machine, which a pooled `hyper` client did not past ~4,000/s. The
/// first second is a warm-up and not counted. Returns requests/s answered, p50 and p99 in ms.
fn open_loop(url: &str, body: Bytes, rate: f64, seconds: u64) -> anyhow::Result<(f64, f64, f64)> {
    let uri: hyper::Uri = url.parse()?;
    let authority = uri.authority().ok_or_else(|| anyhow::anyhow!("{url} has no host"))?.as_str().to_owned();
    let addr: std::net::SocketAddr = authority.parse()?;
    let mut request = format!(
        "POST {} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        uri.path(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let request: Arc<[u8]> = request.into();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let connections = ((rate / PER_CONNECTION_RATE).ceil() as usize).max(4);
        let interval = Duration::from_secs_f64(1.0 / rate);
        let warm_up = (rate as usize).max(1);
        let total = warm_up + (rate * seconds as f64) as usize;
        // Every connection is open before the first request is due.
        let mut streams = Vec::with_capacity(connections);
        for _ in 0..connections {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            streams.push(stream);
        }
        let start = tokio::time::Instant::now() + Duration::from_millis(10);
        let end = start + interval.mul_f64(total as f64);
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(first, stream)| {
                let request = request.clone();
                tokio::spawn(connection(
                    stream,
                    request,
                    Schedule { start, end, interval, first, stride: connections, total, warm_up },
                ))
            })
            .collect();
        let mut latencies = Vec::with_capacity(total);
        let mut answered = 0;
        for task in tasks {
            let (times, count) = task.await??;
            latencies.extend(times);
            answered += count;
        }
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
        Ok((answered as f64 / seconds as f64, at(0.50), at(0.99)))
    })
}

/// What one connection of [`open_loop`] sends when.
struct Schedule {
    start: tokio::time::Instant,
    /// When the last request was due: nothing is sent after it.
    end: tokio::time::Instant,
    interval: Duration,
    /// The connection's first request, and the step to its next one.
    first: usize,
    stride: usize,
    total: usize,
    warm_up: usize,
}

/// The most requests a second one connection of [`open_loop`] is given: a request every 4 ms,
/// so that a connection is free again long before its next one is due at the latencies measured
/// here, and the waiting a request does behind the one before it is the server's.
const PER_CONNECTION_RATE: f64 = 250.0;

/// One connection of [`open_loop`]: its requests' latencies (those after the warm-up) and how
/// many of them were answered.
async fn connection(
    mut stream: tokio::net::TcpStream,
    request: Arc<[u8]>,
    schedule: Schedule,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Schedule { start, end, interval, first, stride, total, warm_up } = schedule;
    let mut latencies = Vec::with_capacity(total / stride + 1);
    let mut answered = 0;
    let mut buffer = Vec::with_capacity(64 << 10);
    let mut free = tokio::time::Instant::now();
    let mut i = first;
    while i < total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let sent = tokio::time::Instant::now();
        if sent > end + Duration::from_millis(1) {
            // The run is over: this request and the rest of this connection's never left.
            break;
        }
        let from = if free > due { due } else { sent };
        stream.write_all(&request).await?;
        buffer.clear();
        let status = loop {
            if stream.read_buf(&mut buffer).await? == 0 {
                anyhow::bail!("the server closed the connection");
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&buffer)? {
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .ok_or_else(|| anyhow::anyhow!("an answer without content-length"))?;
                let status = response.code.unwrap_or(0);
                while buffer.len() < head + length {
                    if stream.read_buf(&mut buffer).await? == 0 {
                        anyhow::bail!("the server closed the connection mid-answer");
                    }
                }
                anyhow::ensure!(buffer.len() == head + length, "the server sent more than one answer");
                break status;
            }
        };
        anyhow::ensure!(status == 200, "the server answered {status}");
        free = tokio::time::Instant::now();
        if i >= warm_up {
            latencies.push(free - from);
            answered += 1;
        }
        i += stride;
    }
    // What was due and never sent waited from when it was due until the end, at least.
    let over = tokio::time::Instant::now().max(end);
    while i < total {
        let due = start + interval.mul_f64(i as f64);
        if i >= warm_up {
            latencies.push(over.saturating_duration_since(due));
        }
        i += stride;
    }
    Ok((latencies, answered))
}

/// A closed loop from one thread over one HTTP/2 connection, `calls` requests in flight: the
/// protobuf `body` as gRPC calls of `relish.v1.Ranker/Rank` (framed by hand, so the client does
/// the same work either way) or as `POST /v1/rank/discovery` asking for a protobuf answer. What
/// tells the cost of gRPC's framing and trailers on the server from the HTTP API's.
fn h2_loop(
    addr: std::net::SocketAddr,
    body: Bytes,
    grpc: bool,
    calls: usize,
    seconds: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = HttpClient::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<Bytes>>();
        let (url, body) = if grpc {
            let mut framed = Vec::with_capacity(5 + body.len());
            framed.push(0);
            framed.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
            framed.extend_from_slice(&body);
            (format!("http://{addr}/relish.v1.Ranker/Rank"), Bytes::from(framed))
        } else {
            (format!("http://{addr}/v1/rank/discovery"), body)
        };
        let call = move |client: HttpClient<_, Full<Bytes>>, url: String, body: Bytes| async move {
            let request = if grpc {
                hyper::Request::post(&url).header("content-type", "application/grpc").header("te", "trailers")
            } else {
                hyper::Request::post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("accept", "application/x-protobuf")
            }
            .body(Full::new(body))?;
            let response = client.request(request).await?;
            anyhow::ensure!(response.status() == 200, "the server answered {}", response.status());
            let collected = response.into_body().collect().await?;
            if grpc {
                let status = collected.trailers().and_then(|t| t.get("grpc-status")).map(|v| v.as_bytes().to_vec());
                anyhow::ensure!(status.as_deref() == Some(b"0"), "the call answered grpc-status {status:?}");
            }
            anyhow::Ok(())
        };
        // Warm-up: the connection and the server's first calls.
        for _ in 0..50 {
            call(client.clone(), url.clone(), body.clone()).await?;
        }
        let start = tokio::time::Instant::now();
        let until = start + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..calls)
            .map(|_| {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while tokio::time::Instant::now() < until {
                        let sent = tokio::time::Instant::now();
                        call(client.clone(), url.clone(), body.clone()).await?;
                        latencies.push(sent.elapsed());
                    }
                    anyhow::Ok(latencies)
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??);
        }
        let elapsed = start.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
        Ok((latencies.len() as f64 / elapsed, at(0.50), at(0.99)))
    })
}
