//! Startup, readiness and graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use hyper::StatusCode;

use crate::data_plane::{finish, partial_rank};
use crate::util::{self, rank};

const ONE: &str = r#"{"candidates": [{"id": "only"}]}"#;

#[tokio::test]
async fn shutdown_drains_a_request_in_flight_and_refuses_new_connections() {
    let server = util::start(&["popularity"], &[], "").await;
    let handle = server.handle.as_ref().unwrap();
    let addr = handle.addr;
    let (held, rest) = partial_rank(addr, "discovery", ONE).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let trigger = handle.shutdown_trigger();
    trigger.send(true).unwrap();
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener closes on shutdown");
    // The request in flight still gets its answer.
    let answer = finish(held, &rest).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"only\""), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_configuration_naming_a_missing_policy_stops_startup_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["popularity"], &[]);
    let config = util::config(dir.path(), &bundled, "[surfaces.banners]\npolicy = \"banners-v9\"\n");
    let error = relish_host::server::start_with(config, relish_tests::runtime()).await.err().expect("startup fails");
    let message = format!("{error:#}");
    assert!(message.contains("surfaces.banners.policy") && message.contains("banners-v9"), "{message}");
}

/// The real binary: SIGTERM drains the request in flight, then the process exits cleanly.
#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = util::bundled(dir.path(), &["popularity"], &[]);
    let port = free_port();
    let admin_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_relish"))
        .arg("serve")
        .env("RELISH_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELISH_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("RELISH_DATA_DIR", dir.path().join("data"))
        .env("RELISH_LOG_FORMAT", "json")
        .current_dir(dir.path())
        .env("RELISH_CONFIG", write_config(dir.path(), &bundled))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(addr).await;
    let (held, rest) = partial_rank(addr, "discovery", ONE).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = finish(held, &rest).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "exit status {exit}");
}

fn write_config(dir: &std::path::Path, bundled: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("relish.toml");
    let toml = format!("[server]\nbundled_dir = {:?}\n[defaults]\ndeadline_ms = 5000\n", bundled.display().to_string());
    std::fs::write(&path, toml).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_ready(addr: std::net::SocketAddr) {
    let server = util::TestServer {
        handle: None,
        base: format!("http://{addr}"),
        admin: String::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && util::get(&server, "/readyz").await.status == StatusCode::OK
        {
            assert_eq!(rank(&server, "discovery", ONE).await.status, StatusCode::OK);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not become ready within a minute");
}
