//! Crash safety: the host process is killed (SIGKILL) in the middle of uploads and activations,
//! restarted, and the registry is consistent.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::util::{self, ADMIN_TOKEN, TestServer, admin, free_port, rank, ready, spawn};

const TWO: &str = r#"{"candidates": [{"id": "a"}, {"id": "b"}]}"#;

/// Uploads, activates, switches back and deletes, round after round, until the host dies;
/// returns how many changes completed.
async fn churn(admin_url: String) -> usize {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let v2 = Bytes::from(relish_tests::guest_bytes("tagger-v2"));
    let steps: [(&str, &str, Bytes); 4] = [
        ("PUT", "/v1/policies/tagger/versions/2.0.0", v2),
        ("PUT", "/v1/surfaces/swap/activation", Bytes::from_static(br#"{"policy": "tagger", "version": "2.0.0"}"#)),
        ("PUT", "/v1/surfaces/swap/activation", Bytes::from_static(br#"{"policy": "tagger", "version": "1.0.0"}"#)),
        ("DELETE", "/v1/policies/tagger/versions/2.0.0", Bytes::new()),
    ];
    let mut completed = 0;
    loop {
        for (method, path, body) in &steps {
            let request = hyper::Request::builder()
                .method(*method)
                .uri(format!("{admin_url}{path}"))
                .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                .body(Full::new(body.clone()))
                .unwrap();
            match client.request(request).await {
                Ok(response) => {
                    if response.into_body().collect().await.is_err() {
                        return completed;
                    }
                    completed += 1;
                }
                Err(_) => return completed, // the host is gone
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_change_restarts_with_a_consistent_registry() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["popularity"], &["tagger=tagger-v1"]);
    let toml = format!(
        "[server]\nbundled_dir = {:?}\n[defaults]\ndeadline_ms = 5000\n\
         [surfaces.swap]\npolicy = \"tagger\"\n[surfaces.discovery]\npolicy = \"popularity\"\n",
        bundled.display().to_string()
    );
    std::fs::write(dir.path().join("relish.toml"), toml).unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let server = || TestServer::at(port, admin_port);

    // Kill points spread over the churn: early, in the middle of compiles and fsyncs, late.
    let mut changes = 0;
    for (round, delay_ms) in [30u64, 90, 160, 240, 330, 450, 600, 800].into_iter().enumerate() {
        let mut child = spawn(dir.path(), port, admin_port);
        ready(&server(), &mut child).await;
        check_consistent(&server(), &dir.path().join("data"), round).await;
        let churning = tokio::spawn(churn(server().admin));
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        child.kill(); // SIGKILL
        changes += churning.await.unwrap();
    }
    assert!(changes >= 8, "the kills interrupted a busy registry ({changes} changes completed)");
    let mut child = spawn(dir.path(), port, admin_port);
    ready(&server(), &mut child).await;
    check_consistent(&server(), &dir.path().join("data"), 99).await;
    child.kill();
}

/// Every stored version is whole, and every surface's activation names a stored version that
/// answers.
async fn check_consistent(server: &TestServer, data: &std::path::Path, round: usize) {
    let listed = admin(server, "GET", "/v1/policies", "").await;
    assert_eq!(listed.status, StatusCode::OK);
    let listed = listed.json();
    let mut stored = Vec::new();
    for versions in listed["policies"].as_object().unwrap().values() {
        for version in versions.as_array().unwrap() {
            let (name, v) = (version["policy"].as_str().unwrap(), version["version"].as_str().unwrap());
            let shown = admin(server, "GET", &format!("/v1/policies/{name}/versions/{v}"), "").await;
            assert_eq!(shown.status, StatusCode::OK, "round {round}: {name}@{v} is listed but cannot be shown");
            stored.push(format!("{name}@{v}"));
        }
    }
    let surfaces = admin(server, "GET", "/v1/surfaces", "").await.json();
    for surface in surfaces["surfaces"].as_array().unwrap() {
        let current = &surface["current"]["plan"]["arms"][0];
        let active = format!("{}@{}", current["policy"].as_str().unwrap(), current["version"].as_str().unwrap());
        assert!(
            stored.contains(&active),
            "round {round}: {} activates {active}, which is not stored",
            surface["surface"]
        );
        assert_eq!(surface["serving"].as_str(), Some(active.as_str()), "round {round}: serving what is activated");
    }
    let answer = rank(server, "swap", TWO).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["fallback"], serde_json::Value::Null, "round {round}: the active version answers");
    let leftovers = temporaries(data);
    assert!(leftovers.is_empty(), "round {round}: interrupted writes were not cleaned up: {leftovers:?}");
}

/// Temporary files (writes in progress) anywhere under `dir`.
fn temporaries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(temporaries(&path));
        } else if entry.file_name().to_string_lossy().starts_with(".tmp") {
            found.push(path);
        }
    }
    found
}
