//! The ops page in a real browser: headless Chromium driven over WebDriver (`chromedriver`)
//! signs in, sees the surfaces, watches a plot move while a client sends requests, sets a
//! canary's weight to 0 and rolls a surface back through the page's confirmation, and a read-only
//! token gets no action buttons. The page's screenshot is written to `target/ops-page.png`
//! (`docs/ops-page.png` is one of those).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::util::{self, ADMIN_TOKEN, THREE, admin, rank};

const VIEWER_TOKEN: &str = "viewer-token-0123456789";

/// `chromedriver` on a free port, stopped when dropped.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Chromium and its driver: Debian's `chromium` and `chromium-driver`, installed here if they
/// are missing and this is a Debian machine where we may (as `.ci/run` does).
fn chromium() -> (String, String) {
    let (browser, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
    if !std::path::Path::new(driver).exists() {
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        let install = ["install", "-y", "--no-install-recommends", "chromium", "chromium-driver"];
        let installed = apt(&install) || (apt(&["update", "-qq"]) && apt(&install));
        assert!(
            installed && std::path::Path::new(driver).exists(),
            "the ops page test needs Chromium and chromedriver: apt-get install chromium chromium-driver"
        );
    }
    (browser.to_owned(), driver.to_owned())
}

async fn start_driver(driver: &str) -> Driver {
    let port = util::free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let driver = Driver(child, port);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

async fn browser(driver: &Driver, binary: &str) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1800", "--force-device-scale-factor=1"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a WebDriver session")
}

/// Waits (up to 30 s) until `check` of the page is true; `what` says what was awaited.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("waited 30 s for: {what}");
}

async fn text(page: &Client, css: &str) -> String {
    match page.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn count(page: &Client, css: &str) -> usize {
    page.find_all(Locator::Css(css)).await.map_or(0, |all| all.len())
}

async fn sign_in(page: &Client, base: &str, token: &str) {
    page.goto(base).await.unwrap();
    let field = page.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("#token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    page.find(Locator::Css("#sign-in")).await.unwrap().click().await.unwrap();
}

async fn confirm(page: &Client, reason: &str) {
    let dialog = page.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("#confirm[open]")).await;
    dialog.expect("the action asks for confirmation");
    let field = page.find(Locator::Css("#confirm-reason")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(reason).await.unwrap();
    page.find(Locator::Css("#confirm-yes")).await.unwrap().click().await.unwrap();
}

async fn surface(server: &util::TestServer) -> Value {
    admin(server, "GET", "/v1/surfaces/discovery", "").await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_watches_a_canary_and_rolls_back_in_a_real_browser() {
    let (binary, driver) = chromium();
    let toml = format!(
        "[[admin.tokens]]\nname = \"viewer\"\nsecret = \"{VIEWER_TOKEN}\"\nrole = \"read\"\n\
         [surfaces.discovery]\npolicy = \"discovery\"\n[surfaces.banners]\npolicy = \"popularity\"\n"
    );
    let server = util::start(&["discovery", "popularity"], &[], &toml).await;
    // A 10 % canary of `popularity` on `discovery`: revision 2.
    let plan = r#"{"arms": [{"policy": "discovery", "version": "0.1.0", "weight": 90},
                            {"policy": "popularity", "version": "0.1.0", "weight": 10}], "reason": "canary"}"#;
    let planned = admin(&server, "PUT", "/v1/surfaces/discovery/plan", plan).await;
    assert_eq!(planned.status, StatusCode::OK, "{}", planned.text());
    assert_eq!(surface(&server).await["revision"], 2);

    // The page is public and locked down; the API behind it is not public.
    let page = util::send(hyper::Request::get(&server.admin).body(Default::default()).unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.header("content-security-policy").unwrap_or_default().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let anonymous =
        util::send(hyper::Request::get(format!("{}/v1/ops/series", server.admin)).body(Default::default()).unwrap())
            .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let driver = start_driver(&driver).await;
    let page = browser(&driver, &binary).await;

    // A wrong token gets nothing.
    sign_in(&page, &server.admin, "not-a-token-0123456789").await;
    until("the refusal", || async { text(&page, "#status").await.contains("refused") }).await;
    assert_eq!(count(&page, "section.surface").await, 0);

    // The deploy token sees every surface with its plan, and its actions.
    page.goto(&server.admin).await.unwrap();
    page.execute("sessionStorage.clear()", vec![]).await.unwrap();
    sign_in(&page, &server.admin, ADMIN_TOKEN).await;
    until("who is signed in", || async {
        let who = text(&page, "#whoami").await;
        who.contains("test") && who.contains("deploy")
    })
    .await;
    let discovery = r#"section.surface[data-surface="discovery"]"#;
    until("both surfaces", || async { count(&page, "section.surface").await == 2 }).await;
    assert_eq!(text(&page, &format!("{discovery} .revision")).await.trim(), "2");
    assert_eq!(count(&page, &format!("{discovery} .arm")).await, 2);
    assert_eq!(count(&page, &format!("{discovery} button.rollback")).await, 1);
    let zero = format!(r#"{discovery} button.zero-weight[data-arm="popularity@0.1.0"]"#);
    assert_eq!(count(&page, &zero).await, 1, "the canary can be set to 0");
    let url = page.current_url().await.unwrap();
    assert!(!url.as_str().contains(ADMIN_TOKEN), "the token is never in the URL: {url}");

    // Traffic moves the requests-per-second plot.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, base) = (stop.clone(), server.base.clone());
        tokio::spawn(async move {
            let server =
                util::TestServer { handle: None, base, admin: String::new(), dir: tempfile::tempdir().unwrap() };
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(rank(&server, "discovery", THREE).await.status, StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let plot = format!(r#"{discovery} canvas.plot[data-series="rps"]"#);
    let reading = |attribute: &'static str| {
        let (page, plot) = (&page, plot.clone());
        async move {
            let canvas = page.find(Locator::Css(&plot)).await.ok()?;
            canvas.attr(attribute).await.ok()??.parse::<f64>().ok()
        }
    };
    until("requests on the plot", || async { reading("data-last").await.is_some_and(|rps| rps > 0.0) }).await;
    let points = reading("data-points").await.unwrap();
    until("the plot to move on", || async { reading("data-points").await.is_some_and(|now| now > points) }).await;
    for css in [r#"canvas.plot[data-series="latency"]"#, r#"canvas.plot[data-series="fallbacks"]"#] {
        assert_eq!(count(&page, &format!("{discovery} {css}")).await, 1, "{css}");
    }
    // The canary's surface, with the plots the traffic moved, is what the screenshot shows.
    page.execute(&format!("document.querySelector('{discovery}').scrollIntoView()"), vec![]).await.unwrap();
    let screenshot = page.screenshot().await.unwrap();
    let target = relish_tests::root().join("target/ops-page.png");
    std::fs::write(&target, &screenshot).unwrap();
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("every request was answered");

    // The canary's weight to 0, confirmed in the page: revision 3 sends it nobody.
    page.find(Locator::Css(&zero)).await.unwrap().click().await.unwrap();
    confirm(&page, "canary hurts p99").await;
    until("revision 3 on the page", || async { text(&page, &format!("{discovery} .revision")).await.trim() == "3" })
        .await;
    let status = surface(&server).await;
    let canary = status["arms"].as_array().unwrap().iter().find(|a| a["policy"] == "popularity").cloned();
    assert_eq!(canary.map(|a| a["weight"].clone()), Some(json!(0)), "{status}");
    let latest = |status: &Value| status["history"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(latest(&status)["reason"], "canary hurts p99", "{status}");

    // Rolled back from the page: the plan before it serves again, with the reason given.
    page.find(Locator::Css(&format!("{discovery} button.rollback"))).await.unwrap().click().await.unwrap();
    confirm(&page, "back to yesterday").await;
    until("the rollback on the page", || async { text(&page, &format!("{discovery} .revision")).await.trim() == "4" })
        .await;
    let status = surface(&server).await;
    assert_eq!(latest(&status)["restores"], 2, "{status}");
    assert_eq!(latest(&status)["reason"], "back to yesterday", "{status}");

    // A read-only token sees the same and may do nothing.
    page.find(Locator::Css("#sign-out")).await.unwrap().click().await.unwrap();
    sign_in(&page, &server.admin, VIEWER_TOKEN).await;
    until("the viewer", || async { text(&page, "#whoami").await.contains("read") }).await;
    until("both surfaces", || async { count(&page, "section.surface").await == 2 }).await;
    assert_eq!(count(&page, "button.rollback").await, 0, "no rollback for a read-only token");
    assert_eq!(count(&page, "button.zero-weight").await, 0);

    page.close().await.unwrap();
    server.stop().await;
}

/// The series behind the plots, and the page's documents, without a browser: the points carry
/// the requests sent; a bad query is named; the page is served without a token, the data not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_counts_the_requests_and_a_bad_query_is_named() {
    let toml = format!(
        "[[admin.tokens]]\nname = \"viewer\"\nsecret = \"{VIEWER_TOKEN}\"\nrole = \"read\"\nsurfaces = [\"banners\"]\n\
         [surfaces.discovery]\npolicy = \"popularity\"\n"
    );
    let server = util::start(&["popularity"], &[], &toml).await;
    let with = |token: &str, path: &str| {
        let request = hyper::Request::get(format!("{}{path}", server.admin))
            .header("authorization", format!("Bearer {token}"))
            .body(Default::default())
            .unwrap();
        util::send(request)
    };
    let who = with(VIEWER_TOKEN, "/v1/whoami").await.json();
    assert_eq!(who, json!({"name": "viewer", "role": "read", "surfaces": ["banners"]}));
    assert_eq!(with(ADMIN_TOKEN, "/v1/whoami").await.json()["role"], "deploy");

    // Requests for a few seconds: the points after the first read count them.
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(5) {
        assert_eq!(rank(&server, "discovery", THREE).await.status, StatusCode::OK);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut counted = 0.0;
    for _ in 0..100 {
        let series = with(VIEWER_TOKEN, "/v1/ops/series").await.json();
        assert_eq!((series["interval_ms"].as_u64(), series["window_ms"].as_u64()), (Some(2000), Some(900_000)));
        let points = series["points"].as_array().cloned().unwrap_or_default();
        // Requests per second over 2 s intervals: twice that is the requests of each point.
        counted = points
            .iter()
            .filter_map(|p| p["surfaces"]["discovery"]["arms"]["popularity@0.1.0"]["requests_per_second"].as_f64())
            .sum::<f64>()
            * 2.0;
        if counted > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(counted > 0.0, "a point counted the requests");
    assert!(counted <= sent as f64 * 1.5, "{counted} counted for {sent} sent");
    let series = with(VIEWER_TOKEN, "/v1/ops/series").await.json();
    let last = series["points"].as_array().unwrap().last().unwrap()["at"].as_i64().unwrap();
    let after = with(VIEWER_TOKEN, &format!("/v1/ops/series?after={last}")).await.json();
    assert!(after["points"].as_array().unwrap().iter().all(|p| p["at"].as_i64().unwrap() > last));

    for (query, named) in
        [("after=yesterday", "`after` is `yesterday`"), ("since=1", "unknown query parameter `since`")]
    {
        let refused = with(VIEWER_TOKEN, &format!("/v1/ops/series?{query}")).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{query}");
        let error = refused.json()["error"].clone();
        assert_eq!(error["code"], "bad_query");
        assert!(error["message"].as_str().unwrap().contains(named), "{error}");
    }
    let anonymous =
        util::send(hyper::Request::get(format!("{}/v1/whoami", server.admin)).body(Default::default()).unwrap()).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    for (path, media) in [("/", "text/html"), ("/ops.js", "text/javascript"), ("/ops.css", "text/css")] {
        let document =
            util::send(hyper::Request::get(format!("{}{path}", server.admin)).body(Default::default()).unwrap()).await;
        assert_eq!(document.status, StatusCode::OK, "{path}");
        assert!(document.header("content-type").unwrap().starts_with(media), "{path}");
        assert_eq!(document.header("x-content-type-options"), Some("nosniff"));
    }
    let posted = util::send(hyper::Request::post(format!("{}/", server.admin)).body(Default::default()).unwrap()).await;
    assert_eq!(posted.status, StatusCode::UNAUTHORIZED, "only GET serves the page");
    // The page is the admin listener's alone.
    let on_data_plane = util::get(&server, "/").await;
    assert_eq!(on_data_plane.status, StatusCode::NOT_FOUND, "{}", on_data_plane.text());
    assert_eq!(util::get(&server, "/ops.js").await.status, StatusCode::NOT_FOUND);

    // The page's actions with a read-only or a wrong token: refused, nothing changed.
    let before = admin(&server, "GET", "/v1/surfaces/discovery", "").await.json()["revision"].clone();
    let act = |token: &str, method: &str, path: &str, body: &'static str| {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", server.admin))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(body.as_bytes())))
            .unwrap();
        util::send(request)
    };
    let plan = r#"{"arms": [{"policy": "popularity", "version": "0.1.0", "weight": 100}], "reason": "x"}"#;
    for (token, status) in [(VIEWER_TOKEN, StatusCode::FORBIDDEN), ("wrong-token-0123456789", StatusCode::UNAUTHORIZED)]
    {
        let refused = act(token, "POST", "/v1/surfaces/discovery/rollback", r#"{"reason": "ops page"}"#).await;
        assert_eq!(refused.status, status, "{}", refused.text());
        let refused = act(token, "PUT", "/v1/surfaces/discovery/plan", plan).await;
        assert_eq!(refused.status, status, "{}", refused.text());
    }
    let after = admin(&server, "GET", "/v1/surfaces/discovery", "").await.json()["revision"].clone();
    assert_eq!(after, before, "nothing changed");
    server.stop().await;
}
