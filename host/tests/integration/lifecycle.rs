//! Startup, readiness and graceful shutdown.

use std::time::Duration;

use crate::data_plane::{finish, partial_rank};
use crate::util::{self, TestServer, free_port, get, metric, ready, spawn};

const ONE: &str = r#"{"candidates": [{"id": "only"}]}"#;

/// Waits until the server counts one rank request in flight (the held one has been accepted and
/// is being read), so that shutdown really finds a request to drain.
async fn until_in_flight(server: &TestServer) {
    for _ in 0..600 {
        let scrape = String::from_utf8(get(server, "/metrics").await.body.to_vec()).unwrap();
        if metric(&scrape, "relish_inflight_requests", &[]) >= 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the held request never reached the server");
}

/// Waits until new connections are refused: the server has begun shutting down.
async fn until_refused(addr: std::net::SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the listener did not close on shutdown");
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight_and_refuses_new_connections() {
    let server = util::start(&["popularity"], &[], "").await;
    let handle = server.handle.as_ref().unwrap();
    let addr = handle.addr;
    let (held, rest) = partial_rank(addr, "discovery", ONE).await;
    until_in_flight(&server).await;
    handle.shutdown_trigger().send(true).unwrap();
    until_refused(addr).await;
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
    write_config(dir.path(), &bundled);
    let (port, admin_port) = (free_port(), free_port());
    let mut host = spawn(dir.path(), port, admin_port);
    let server = TestServer {
        handle: None,
        base: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
        dir,
    };
    ready(&server, &mut host).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (held, rest) = partial_rank(addr, "discovery", ONE).await;
    until_in_flight(&server).await;
    let status = std::process::Command::new("kill").args(["-TERM", &host.id().to_string()]).status().unwrap();
    assert!(status.success());
    until_refused(addr).await;
    let answer = finish(held, &rest).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let exit = tokio::task::spawn_blocking(move || host.wait()).await.unwrap();
    assert!(exit.success(), "exit status {exit}");
}

/// `dir/relish.toml`, as [`spawn`] reads it.
fn write_config(dir: &std::path::Path, bundled: &std::path::Path) {
    let toml = format!("[server]\nbundled_dir = {:?}\n[defaults]\ndeadline_ms = 5000\n", bundled.display().to_string());
    std::fs::write(dir.join("relish.toml"), toml).unwrap();
}
