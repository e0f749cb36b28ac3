//! Starting test servers and talking to them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use relish_host::server::config::Config;
use relish_host::server::{self, Handle};
use serde_json::Value;

/// Three candidates that `popularity` orders `second, third, first`, and the input order leaves
/// as they are.
pub const THREE: &str = r#"{"candidates": [
    {"id": "first", "features": {"rating": 5.0}},
    {"id": "second", "features": {"rating": 9.0, "orders_7d": 500}},
    {"id": "third", "features": {"rating": 7.0}}]}"#;

/// The admin token every test server accepts (deploy role, every surface).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A server running in this process on ephemeral ports, with its own data directory.
pub struct TestServer {
    pub handle: Option<Handle>,
    pub base: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

/// Copies bundled policies and test guests into a fresh bundled directory. A guest given as
/// `file=guest` is stored as `file.wasm` (bundled files are named by policy name).
pub fn bundled(dir: &Path, policies: &[&str], guests: &[&str]) -> PathBuf {
    let bundled = dir.join("bundled");
    std::fs::create_dir_all(&bundled).unwrap();
    for name in policies {
        std::fs::write(bundled.join(format!("{name}.wasm")), relish_tests::policy_bytes(name)).unwrap();
    }
    for entry in guests {
        let (file, guest) = entry.split_once('=').unwrap_or((entry, entry));
        std::fs::write(bundled.join(format!("{file}.wasm")), relish_tests::guest_bytes(guest)).unwrap();
    }
    bundled
}

/// A configuration for a test server: `toml` plus ephemeral listeners, a temporary data directory
/// and the bundled directory.
pub fn config(dir: &Path, bundled: &Path, toml: &str) -> Config {
    let mut config = Config::from_toml(toml).expect("a valid test configuration");
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.admin.listen = ([127, 0, 0, 1], 0).into();
    config.server.data_dir = dir.join("data");
    config.server.bundled_dir = Some(bundled.to_path_buf());
    config.server.shutdown_grace_secs = 10;
    config.admin.tokens.push(relish_host::server::config::TokenConfig {
        name: "test".into(),
        secret: Some(ADMIN_TOKEN.into()),
        secret_env: None,
        role: relish_host::server::config::Role::Deploy,
        surfaces: None,
    });
    // Tests assert behaviour, not speed: generous deadlines unless a test sets its own.
    if config.defaults.deadline_ms.is_none() {
        config.defaults.deadline_ms = Some(5_000.0);
    }
    config
}

/// Starts a server with the given bundled policies, test guests and configuration.
pub async fn start(policies: &[&str], guests: &[&str], toml: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let bundled = bundled(dir.path(), policies, guests);
    let config = config(dir.path(), &bundled, toml);
    start_config(dir, config).await
}

/// Starts a server with a prepared configuration.
pub async fn start_config(dir: tempfile::TempDir, config: Config) -> TestServer {
    let handle = server::start_with(config, relish_tests::runtime()).await.expect("the server starts");
    TestServer {
        base: format!("http://{}", handle.addr),
        admin: format!("http://{}", handle.admin_addr),
        handle: Some(handle),
        dir,
    }
}

impl TestServer {
    /// A server in another process (see [`spawn`]) on these ports.
    pub fn at(port: u16, admin_port: u16) -> TestServer {
        TestServer {
            handle: None,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and reads the whole answer.
pub async fn send(request: Request<Full<Bytes>>) -> Answer {
    send_with(&client(), request).await
}

/// Sends with a given client (for HTTP/2).
pub async fn send_with(client: &Client<HttpConnector, Full<Bytes>>, request: Request<Full<Bytes>>) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
        .await
        .expect("the server answers within a minute")
        .expect("the request reaches the server");
    let (parts, body) = response.into_parts();
    Answer { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
}

/// `POST /v1/rank/{surface}` with a JSON body.
pub async fn rank(server: &TestServer, surface: &str, body: &str) -> Answer {
    let request = Request::post(format!("{}/v1/rank/{surface}", server.base))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send(request).await
}

/// `GET` on the data plane.
pub async fn get(server: &TestServer, path: &str) -> Answer {
    send(Request::get(format!("{}{path}", server.base)).body(Full::default()).unwrap()).await
}

/// An admin call with the test token.
pub async fn admin(server: &TestServer, method: &str, path: &str, body: impl Into<Bytes>) -> Answer {
    admin_as(server, Some(ADMIN_TOKEN), method, path, body).await
}

/// An admin call with the given token (or none).
pub async fn admin_as(
    server: &TestServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: impl Into<Bytes>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(format!("{}{path}", server.admin));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(request.body(Full::new(body.into())).unwrap()).await
}

/// The value of a counter or gauge in a `/metrics` scrape (summed over matching series), where
/// every label in `labels` must match.
pub fn metric(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The ids of a rank answer's items.
pub fn ids(answer: &Value) -> Vec<String> {
    answer["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()).collect()
}

/// A `relish` process started by [`spawn`]. It is killed (SIGKILL) when dropped, so a test that
/// fails half-way leaves no host running.
pub struct Host(pub Child);

impl Host {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Waits for it to exit by itself, and returns how.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real `relish` binary on the given ports, with `dir/relish.toml` as its configuration
/// and `dir/data` as its data directory; its log goes to `dir/relish.log`.
pub fn spawn(dir: &Path, port: u16, admin_port: u16) -> Host {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("relish.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_relish"))
        .arg("serve")
        .env("RELISH_CONFIG", dir.join("relish.toml"))
        .env("RELISH_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELISH_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("RELISH_DATA_DIR", dir.join("data"))
        .env("RELISH_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Host(child)
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until a spawned host answers `/readyz` with `200`; fails at once if it exits instead
/// (a port taken in between, a bad configuration: see its `relish.log`).
pub async fn ready(server: &TestServer, host: &mut Host) {
    for _ in 0..600 {
        assert!(host.is_running(), "the host exited before it was ready");
        let probe = tokio::time::timeout(Duration::from_secs(2), async {
            let addr = server.base.trim_start_matches("http://").to_owned();
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return false;
            }
            get(server, "/readyz").await.status == StatusCode::OK
        });
        if probe.await == Ok(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the host did not become ready");
}
