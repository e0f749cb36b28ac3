//! Hot-swap and restart timings, measured end to end through the admin API.
//!
//! `cargo bench -p relish-host --bench lifecycle`
//!
//! - Upload to serving: `PUT` a bundled policy's component (checked, compiled, stored), `PUT` its
//!   activation, and the first rank answer from it.
//! - Restart to ready: a host over a data directory holding 20 versions, each active on its own
//!   surface, from `server::start` (a new engine, as after a process restart) until it is ready;
//!   with the stored artifacts (the normal case) and without them (a host upgrade recompiles).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use relish_host::builder::{self, BuildOptions};
use relish_host::server::config::{Config, Role, TokenConfig};
use relish_host::server::{self, Handle};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "bench-admin-token-0123456789";
const VERSIONS: usize = 20;

fn config(dir: &Path, surfaces: &str) -> Config {
    let mut config = Config::from_toml(surfaces).unwrap();
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    config.server.data_dir = dir.join("data");
    config.server.bundled_dir = Some(dir.join("bundled"));
    config.admin.tokens.push(TokenConfig {
        name: "bench".into(),
        secret: Some(TOKEN.into()),
        secret_env: None,
        role: Role::Deploy,
        surfaces: None,
    });
    config
}

async fn call(client: &Client<HttpConnector, Full<Bytes>>, method: &str, url: String, body: Vec<u8>) -> (u16, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Builds 20 versions (`1.0.0` … `1.0.19`) of a small policy named `bench`.
fn build_versions(work: &Path) -> Vec<std::path::PathBuf> {
    let root = relish_tests::root();
    let mut members = Vec::new();
    for i in 0..VERSIONS {
        let name = format!("v{i}");
        let krate = work.join(&name);
        std::fs::create_dir_all(krate.join("src")).unwrap();
        std::fs::write(
            krate.join("Cargo.toml"),
            format!(
                "[package]\nname = \"relish-policy-bench-{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n[dependencies]\nrelish-guest = {{ path = {:?} }}\n",
                root.join("guest").display().to_string()
            ),
        )
        .unwrap();
        std::fs::write(
            krate.join("src/lib.rs"),
            format!(
                "use relish_guest::{{Policy, RankError, Ranking, Request, Spec}};\n\
                 struct Bench;\n\
                 impl Policy for Bench {{\n\
                     const SPEC: &'static Spec = &Spec {{ name: \"bench\", version: \"1.0.{i}\", description: \"Input order.\",\n\
                         surfaces: &[\"*\"], params: &[], features: &[] }};\n\
                     fn rank(request: &Request) -> Result<Ranking, RankError> {{\n\
                         Ok(Ranking::from_scores(&vec![{i}.0; request.candidates().len()], request.limit()))\n\
                     }}\n\
                 }}\n\
                 relish_guest::export_policy!(Bench);\n"
            ),
        )
        .unwrap();
        members.push(format!("\"{name}\""));
    }
    std::fs::write(
        work.join("Cargo.toml"),
        format!("[workspace]\nresolver = \"3\"\nmembers = [{}]\n", members.join(", ")),
    )
    .unwrap();
    let options = BuildOptions { manifest_path: Some(work.join("Cargo.toml")), quiet: true, ..BuildOptions::default() };
    let mut built = builder::build(&options).expect("building the benchmark versions");
    built.sort_by_key(|b| b.name.trim_start_matches("bench-v").parse::<usize>().expect("bench-v<i>"));
    built.into_iter().map(|b| b.component).collect()
}

async fn upload_to_serving(client: &Client<HttpConnector, Full<Bytes>>) {
    let discovery = std::fs::read(&relish_tests::policies()["discovery"].component).unwrap();
    let body = relish_tests::fixture("discovery-evening.json");
    let (mut uploads, mut activations, mut firsts, mut totals) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bundled")).unwrap();
        std::fs::copy(&relish_tests::policies()["popularity"].component, dir.path().join("bundled/popularity.wasm"))
            .unwrap();
        let handle =
            server::start(config(dir.path(), "[surfaces.discovery]\npolicy = \"popularity\"\n")).await.unwrap();
        let (admin, data) = (format!("http://{}", handle.admin_addr), format!("http://{}", handle.addr));
        let start = Instant::now();
        let (status, _) =
            call(client, "PUT", format!("{admin}/v1/policies/discovery/versions/0.1.0"), discovery.clone()).await;
        assert_eq!(status, 201);
        let uploaded = Instant::now();
        let activation = br#"{"policy": "discovery", "version": "0.1.0"}"#.to_vec();
        let (status, _) = call(client, "PUT", format!("{admin}/v1/surfaces/discovery/activation"), activation).await;
        assert_eq!(status, 200);
        let activated = Instant::now();
        let (status, answer) =
            call(client, "POST", format!("{data}/v1/rank/discovery"), body.clone().into_bytes()).await;
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&answer).contains("\"name\":\"discovery\""));
        let served = Instant::now();
        uploads.push(uploaded - start);
        activations.push(activated - uploaded);
        firsts.push(served - activated);
        totals.push(served - start);
        handle.shutdown().await;
    }
    println!(
        "upload to serving (discovery, {} KB): {} median of 7 (upload {}, activation {}, first answer {})",
        discovery.len() / 1024,
        ms(median(totals)),
        ms(median(uploads)),
        ms(median(activations)),
        ms(median(firsts))
    );
}

async fn restart_to_ready(client: &Client<HttpConnector, Full<Bytes>>) {
    let work = tempfile::tempdir().unwrap();
    let versions = build_versions(work.path());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bundled")).unwrap();
    std::fs::copy(&relish_tests::policies()["popularity"].component, dir.path().join("bundled/popularity.wasm"))
        .unwrap();
    let surfaces: String = (0..VERSIONS).map(|i| format!("[surfaces.s{i}]\nfallback = \"popularity\"\n")).collect();
    let first: Handle = server::start(config(dir.path(), &surfaces)).await.unwrap();
    let admin = format!("http://{}", first.admin_addr);
    for (i, component) in versions.iter().enumerate() {
        let bytes = std::fs::read(component).unwrap();
        let (status, _) = call(client, "PUT", format!("{admin}/v1/policies/bench/versions/1.0.{i}"), bytes).await;
        assert_eq!(status, 201);
        let activation = format!(r#"{{"policy": "bench", "version": "1.0.{i}"}}"#).into_bytes();
        let (status, _) = call(client, "PUT", format!("{admin}/v1/surfaces/s{i}/activation"), activation).await;
        assert_eq!(status, 200);
    }
    first.shutdown().await;

    for (label, drop_artifacts) in
        [("from stored artifacts", false), ("after an upgrade (no artifacts: recompile)", true)]
    {
        let mut times = Vec::new();
        let mut compiles = 0;
        for _ in 0..5 {
            if drop_artifacts {
                let _ = std::fs::remove_dir_all(dir.path().join("data/artifacts"));
            }
            let start = Instant::now();
            let handle = server::start(config(dir.path(), &surfaces)).await.unwrap();
            times.push(start.elapsed());
            compiles = handle.state.runtime.compile_count();
            assert_eq!(handle.state.router.all().values().filter(|b| !b.arms.is_empty()).count(), VERSIONS);
            handle.shutdown().await;
        }
        println!(
            "restart to ready with {VERSIONS} active versions, {label}: {} median of 5 ({compiles} compiles)",
            ms(median(times))
        );
    }
}

fn main() {
    // Build everything first, so compile time of the fixtures is not measured.
    relish_tests::policies();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        upload_to_serving(&client).await;
        restart_to_ready(&client).await;
    });
}
