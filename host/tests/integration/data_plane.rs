//! The data plane: both request shapes, every error status, request ids, metrics, HTTP/2, load
//! shedding.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::{self, get, ids, metric, rank};

const TWO: &str = r#"{"request_id": "r-2", "candidates": [
    {"id": "a", "features": {"rating": 6.0, "orders_7d": 10}, "tags": ["pizza"]},
    {"id": "b", "features": {"rating": 9.0, "orders_7d": 300}, "tags": ["sushi"]}]}"#;

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let server = util::start(&["popularity"], &[], "").await;
    let health = get(&server, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = get(&server, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.json());
    assert_eq!(ready.json()["surfaces"]["discovery"], "popularity@0.1.0");
    let metrics = get(&server, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    let scrape = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(scrape.contains("process_resident_memory_bytes"), "process metrics are exported");
    assert_eq!(metric(&scrape, "relish_active_policy", &[("surface", "discovery"), ("policy", "popularity")]), 1.0);
    server.stop().await;
}

#[tokio::test]
async fn the_row_and_columnar_shapes_get_the_same_answer() {
    let server = util::start(&["popularity", "discovery"], &[], "").await;
    let rows = rank(&server, "discovery", &relish_tests::fixture("discovery-evening.json")).await;
    assert_eq!(rows.status, StatusCode::OK);
    let rows = rows.json();
    let columns = rank(&server, "discovery", &to_columnar(&relish_tests::fixture("discovery-evening.json"))).await;
    assert_eq!(columns.status, StatusCode::OK, "{}", String::from_utf8_lossy(&columns.body));
    let columns = columns.json();
    assert_eq!(rows["items"], columns["items"]);
    assert_eq!(rows["policy"]["name"], "discovery");
    assert_eq!(rows["policy"]["version"], "0.1.0");
    assert!(rows["policy"]["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(rows["fallback"], serde_json::Value::Null);
    assert_eq!(rows["request_id"], "r-evening-1");
    assert!(rows["took_us"].as_u64().is_some());
    assert_eq!(ids(&rows)[0], "venue-pizza-1");
    server.stop().await;
}

/// Rewrites a row-shape request into the columnar shape.
fn to_columnar(json: &str) -> String {
    let mut request: serde_json::Value = serde_json::from_str(json).unwrap();
    let rows = request["candidates"].as_array().unwrap().clone();
    let mut names: Vec<String> = Vec::new();
    for row in &rows {
        for name in row["features"].as_object().unwrap().keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let values: Vec<serde_json::Value> = rows
        .iter()
        .flat_map(|row| names.iter().map(|n| row["features"].get(n).cloned().unwrap_or(serde_json::Value::Null)))
        .collect();
    request["candidates"] = serde_json::json!({
        "ids": rows.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(),
        "feature_names": names,
        "features": values,
        "tags": rows.iter().map(|r| r.get("tags").cloned().unwrap_or(serde_json::json!([]))).collect::<Vec<_>>(),
    });
    request.to_string()
}

#[tokio::test]
async fn every_error_status_names_the_problem() {
    let server =
        util::start(&["popularity"], &[], "[defaults]\nmax_candidates = 3\n[server]\nmax_body_bytes = 4096\n").await;

    let malformed =
        rank(&server, "discovery", r#"{"candidates": [{"id": "a", "features": {"rating": "high"}}]}"#).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let error = &malformed.json()["error"];
    assert_eq!(error["path"], "candidates[0].features.rating");
    assert!(error["message"].as_str().unwrap().contains("expected a number"), "{error}");

    let not_json = rank(&server, "discovery", "{\"candidates\": [").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);

    let missing = rank(&server, "discovery", "{}").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.json()["error"]["message"].as_str().unwrap().contains("candidates"));

    let unknown = rank(&server, "checkout", TWO).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.json()["error"]["message"].as_str().unwrap().contains("checkout"));
    assert_eq!(get(&server, "/v2/whatever").await.status, StatusCode::NOT_FOUND);

    let too_many = r#"{"candidates": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}]}"#;
    let too_many = rank(&server, "discovery", too_many).await;
    assert_eq!(too_many.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(too_many.json()["error"]["message"].as_str().unwrap().contains("at most 3"));
    let huge = format!(r#"{{"candidates": [], "request_id": "{}"}}"#, "x".repeat(5000));
    assert_eq!(rank(&server, "discovery", &huge).await.status, StatusCode::PAYLOAD_TOO_LARGE);

    let wrong_method = get(&server, "/v1/rank/discovery").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
    let post_metrics =
        util::send(Request::post(format!("{}/metrics", server.base)).body(Full::default()).unwrap()).await;
    assert_eq!(post_metrics.status, StatusCode::METHOD_NOT_ALLOWED);

    let form = Request::post(format!("{}/v1/rank/discovery", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(TWO)))
        .unwrap();
    let form = util::send(form).await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let message = form.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("application/json") && message.contains("application/x-protobuf"), "{message}");

    let scrape = String::from_utf8(get(&server, "/metrics").await.body.to_vec()).unwrap();
    for (status, count) in [("400", 3.0), ("404", 2.0), ("413", 2.0), ("405", 2.0), ("415", 1.0)] {
        assert_eq!(metric(&scrape, "relish_rejected_requests_total", &[("status", status)]), count, "status {status}");
    }
    // The server is unharmed.
    assert_eq!(rank(&server, "discovery", TWO).await.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn the_request_id_is_echoed_or_generated() {
    let server = util::start(&["popularity"], &[], "").await;
    let with_header = Request::post(format!("{}/v1/rank/discovery", server.base))
        .header("content-type", "application/json")
        .header("x-request-id", "edge-123")
        .body(Full::new(Bytes::from(TWO)))
        .unwrap();
    let answer = util::send(with_header).await;
    assert_eq!(answer.header("x-request-id"), Some("edge-123"));
    assert_eq!(answer.json()["request_id"], "r-2", "the body's own id stays in the body");

    let body_only = rank(&server, "discovery", TWO).await;
    assert_eq!(body_only.header("x-request-id"), Some("r-2"));

    let neither = rank(&server, "discovery", r#"{"candidates": [{"id": "a"}]}"#).await;
    let generated = neither.header("x-request-id").unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    assert_eq!(neither.json()["request_id"], generated.as_str());

    let header_only = Request::post(format!("{}/v1/rank/discovery", server.base))
        .header("content-type", "application/json")
        .header("x-request-id", "edge-456")
        .body(Full::new(Bytes::from(r#"{"candidates": [{"id": "a"}]}"#)))
        .unwrap();
    assert_eq!(util::send(header_only).await.json()["request_id"], "edge-456");

    let timing = rank(&server, "discovery", TWO).await;
    let timing = timing.header("server-timing").unwrap();
    for part in ["parse;dur=", "policy;dur=", "encode;dur="] {
        assert!(timing.contains(part), "{timing}");
    }
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_as_they_are_made() {
    let server = util::start(&["popularity"], &[], "").await;
    let scrape = || async { String::from_utf8(get(&server, "/metrics").await.body.to_vec()).unwrap() };
    let labels = [("surface", "brands"), ("policy", "popularity"), ("answered_by", "policy")];
    let before = metric(&scrape().await, "relish_requests_total", &labels);
    for _ in 0..5 {
        assert_eq!(rank(&server, "brands", TWO).await.status, StatusCode::OK);
    }
    let after = scrape().await;
    assert_eq!(metric(&after, "relish_requests_total", &labels) - before, 5.0);
    assert_eq!(
        metric(&after, "relish_request_duration_seconds_count", &[("surface", "brands")]),
        5.0,
        "the latency histogram counts the same requests"
    );
    server.stop().await;
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_on_the_same_port() {
    let server = util::start(&["popularity"], &[], "").await;
    let h2 = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let request = Request::post(format!("{}/v1/rank/discovery", server.base))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(TWO)))
        .unwrap();
    let answer = util::send_with(&h2, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(ids(&answer.json()), ["b", "a"]);
    let health =
        util::send_with(&h2, Request::get(format!("{}/healthz", server.base)).body(Full::default()).unwrap()).await;
    assert_eq!(health.status, StatusCode::OK);
    server.stop().await;
}

/// Opens a connection and sends a rank request's headers and the first part of its body, so the
/// request is in flight until the rest is sent.
pub async fn partial_rank(addr: std::net::SocketAddr, surface: &str, body: &str) -> (tokio::net::TcpStream, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/rank/{surface} HTTP/1.1\r\nhost: relish\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(first.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    (stream, rest.to_owned())
}

/// Sends the rest of a partial request and reads the whole answer.
pub async fn finish(mut stream: tokio::net::TcpStream, rest: &str) -> String {
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_are_shed_with_retry_after() {
    let server = util::start(&["popularity"], &[], "[server]\nmax_concurrency = 1\n").await;
    let addr = server.handle.as_ref().unwrap().addr;
    let (held, rest) = partial_rank(addr, "discovery", TWO).await;
    // Wait until the held request has taken the one slot.
    let mut shed = None;
    for _ in 0..200 {
        let answer = rank(&server, "discovery", TWO).await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            shed = Some(answer);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let shed = shed.expect("a second request is shed while the first is in flight");
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(shed.json()["error"]["code"], "overloaded");
    let held = finish(held, &rest).await;
    assert!(held.starts_with("HTTP/1.1 200"), "{held}");
    assert_eq!(rank(&server, "discovery", TWO).await.status, StatusCode::OK, "the slot is free again");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed() {
    let server = util::start(&["popularity"], &[], "[server]\nread_timeout_secs = 1\n").await;
    let addr = server.handle.as_ref().unwrap().addr;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), silent.read_to_end(&mut received)).await;
    assert!(matches!(read, Ok(Ok(0))), "the server closes the connection: {read:?}");
    assert_eq!(rank(&server, "discovery", TWO).await.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_frees_its_slot() {
    let server = util::start(&["popularity"], &[], "[server]\nread_timeout_secs = 1\nmax_concurrency = 1\n").await;
    let addr = server.handle.as_ref().unwrap().addr;
    let (mut stalled, _rest) = partial_rank(addr, "discovery", TWO).await;
    let mut answer = String::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stalled.read_to_string(&mut answer)).await;
    assert!(read.is_ok(), "the server gives up on the body instead of waiting forever");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_eq!(rank(&server, "discovery", TWO).await.status, StatusCode::OK, "the slot is free again");
    server.stop().await;
}

/// Reads one HTTP/1.1 answer with a `content-length` from a kept-alive connection.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse().unwrap());
            if received.len() >= end + 4 + length {
                return String::from_utf8_lossy(&received[..end + 4 + length]).into_owned();
            }
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("an answer within 30 s")
            .unwrap();
        assert!(n > 0, "the connection closed before a whole answer: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the server closes `stream` (reads to its end) within 30 s.
async fn closes(stream: &mut tokio::net::TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(tokio::time::timeout(std::time::Duration::from_secs(30), stream.read_to_end(&mut rest)).await, Ok(Ok(_)))
}

/// A kept-alive connection survives the header timeout while idle (an nginx upstream pool keeps
/// it for 60 s), and is closed after the idle timeout; a request head that has started must
/// still be complete within the header timeout.
#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_timeout() {
    let toml = "[server]\nread_timeout_secs = 1\nidle_timeout_secs = 6\n";
    let server = util::start(&["popularity"], &[], toml).await;
    let addr = server.handle.as_ref().unwrap().addr;
    let health = b"GET /healthz HTTP/1.1\r\nhost: relish\r\n\r\n";

    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    kept.write_all(health).await.unwrap();
    assert!(read_answer(&mut kept).await.starts_with("HTTP/1.1 200"));
    // Idle for twice the header timeout, then the next request on the same connection.
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    kept.write_all(health).await.unwrap();
    assert!(read_answer(&mut kept).await.starts_with("HTTP/1.1 200"), "the idle connection was kept");

    // A head that starts and stalls is closed after the header timeout, long before the idle one.
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    trickle.write_all(health).await.unwrap();
    assert!(read_answer(&mut trickle).await.starts_with("HTTP/1.1 200"));
    trickle.write_all(b"GET /healthz HTTP/1.1\r\nhost: re").await.unwrap();
    let started = std::time::Instant::now();
    assert!(closes(&mut trickle).await, "a stalled head is closed");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "by the header timeout, not the idle one");

    // Past the idle timeout the kept connection is closed.
    assert!(closes(&mut kept).await, "an idle connection is closed after idle_timeout_secs");
    server.stop().await;
}

/// What hyper refuses before the host sees a request (a bad header byte, a huge target) is
/// answered with the host's JSON error, counted, on both listeners.
#[tokio::test]
async fn requests_hyper_cannot_parse_get_json_errors() {
    let server = util::start(&["popularity"], &[], "").await;
    let handle = server.handle.as_ref().unwrap();
    let long = format!("GET /{} HTTP/1.1\r\nhost: relish\r\n\r\n", "a".repeat(100_000));
    let cases: [(&[u8], &str, &str); 3] = [
        (b"GET /healthz HTTP/1.1\r\nhost: relish\r\nx-bad: a\x01b\r\n\r\n", "400", "malformed_http"),
        (b"GET /healthz HTTP/1.1\r\nhost: relish\r\nbad header: x\r\n\r\n", "400", "malformed_http"),
        (long.as_bytes(), "414", "uri_too_long"),
    ];
    for addr in [handle.addr, handle.admin_addr] {
        for (request, status, code) in cases {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(request).await.unwrap();
            let answer = read_answer(&mut stream).await;
            assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
            assert!(answer.contains("content-type: application/json"), "{answer}");
            let body: serde_json::Value = serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].as_str().unwrap().len() > 20);
            assert!(closes(&mut stream).await, "the connection closes after it");
        }
    }
    let scrape = get(&server, "/metrics").await.text();
    assert_eq!(metric(&scrape, "relish_rejected_requests_total", &[("reason", "malformed_http")]), 4.0);
    assert_eq!(metric(&scrape, "relish_rejected_requests_total", &[("reason", "uri_too_long")]), 2.0);
    // Well-formed requests on the same server are untouched, including a refused one of its own.
    assert_eq!(get(&server, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(&server, "/nowhere").await.json()["error"]["code"], "not_found");
    server.stop().await;
}

/// `POST /v1/rank/{surface}` with a protobuf body.
async fn rank_protobuf(server: &util::TestServer, surface: &str, body: Vec<u8>) -> util::Answer {
    let request = Request::post(format!("{}/v1/rank/{surface}", server.base))
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    util::send(request).await
}

/// The protobuf form of a JSON body (the same content, as `relish_wire` converts it).
fn protobuf_of(json: &str) -> Vec<u8> {
    use prost::Message as _;
    let options = relish_wire::DecodeOptions::default();
    relish_wire::decode(json.as_bytes(), &options).expect("a valid fixture").to_protobuf().encode_to_vec()
}

/// `POST /v1/rank/{surface}` with a protobuf body, asking for a protobuf answer.
async fn rank_protobuf_answer(server: &util::TestServer, surface: &str, body: Vec<u8>) -> util::Answer {
    let request = Request::post(format!("{}/v1/rank/{surface}", server.base))
        .header("content-type", "application/x-protobuf")
        .header("accept", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    util::send(request).await
}

/// A JSON answer with every score as the bits of its `f32` (what a protobuf answer carries), so
/// that the two forms compare exactly.
fn canonical(mut answer: serde_json::Value) -> serde_json::Value {
    let answer_object = answer.as_object_mut().unwrap();
    answer_object.remove("took_us");
    for item in answer_object.get_mut("items").and_then(|i| i.as_array_mut()).into_iter().flatten() {
        let score = item["score"].as_f64().unwrap() as f32;
        item["score"] = score.to_bits().into();
    }
    answer
}

/// A protobuf answer in the JSON answer's terms (see [`canonical`]).
fn canonical_protobuf(body: &[u8]) -> serde_json::Value {
    use prost::Message as _;
    let answer = relish_wire::protobuf::RankResponse::decode(body).expect("a RankResponse");
    let items: Vec<serde_json::Value> = answer
        .items
        .iter()
        .map(|item| {
            let mut value = serde_json::json!({"id": item.id, "score": item.score.to_bits()});
            if let Some(reason) = &item.reason {
                value["reason"] = reason.clone().into();
            }
            value
        })
        .collect();
    let policy = answer.policy.map(|p| serde_json::json!({"name": p.name, "version": p.version, "digest": p.digest}));
    let arm = answer.arm.map(|a| {
        serde_json::json!({"index": a.index, "name": a.name, "revision": a.revision, "bucket": a.bucket, "sticky": a.sticky})
    });
    let fallback = answer
        .fallback
        .map(|f| serde_json::json!({"reason": f.reason, "answered_by": f.answered_by, "detail": f.detail}));
    assert!(answer.features.is_none(), "no surface here looks features up");
    serde_json::json!({"request_id": answer.request_id, "items": items, "policy": policy, "arm": arm, "fallback": fallback})
}

/// Calls `path` (`/relish.v1.Ranker/Rank`) over gRPC (HTTP/2 without TLS) with `message`.
async fn grpc_call(
    server: &util::TestServer,
    path: &'static str,
    message: Vec<u8>,
) -> Result<tonic::Response<Bytes>, tonic::Status> {
    grpc_call_with(server, path, tonic::Request::new(Bytes::from(message))).await
}

/// A gRPC call of `request` (its metadata as given: the generic client enforces no timeout).
async fn grpc_call_with(
    server: &util::TestServer,
    path: &'static str,
    request: tonic::Request<Bytes>,
) -> Result<tonic::Response<Bytes>, tonic::Status> {
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<tonic::body::Body>();
    let mut grpc = tonic::client::Grpc::with_origin(client, server.base.parse().unwrap());
    grpc.ready().await.expect("the client is ready");
    let path = hyper::http::uri::PathAndQuery::from_static(path);
    let codec = relish_host::server::grpc::BytesCodec;
    let call = grpc.unary(request, path, codec);
    tokio::time::timeout(std::time::Duration::from_secs(60), call).await.expect("the server answers within a minute")
}

/// `relish.v1.Ranker/Rank` over gRPC.
async fn grpc_rank(server: &util::TestServer, message: Vec<u8>) -> Result<tonic::Response<Bytes>, tonic::Status> {
    grpc_call(server, "/relish.v1.Ranker/Rank", message).await
}

/// Every fixture, sent as protobuf, gets the answer its JSON form gets, byte for byte but for
/// the time it took, from every surface's own policy: as JSON, as a protobuf answer
/// (`accept: application/x-protobuf`), and over gRPC.
#[tokio::test]
async fn every_fixture_gets_the_same_answer_as_protobuf_and_over_grpc() {
    let surfaces = relish_host::server::config::STANDARD_SURFACES;
    let toml: String = surfaces.iter().map(|s| format!("[surfaces.{s}]\npolicy = \"{s}\"\n")).collect();
    // `popularity` is every surface's fallback.
    let policies: Vec<&str> = surfaces.iter().copied().chain(["popularity"]).collect();
    let server = util::start(&policies, &[], &toml).await;
    let fixtures = std::fs::read_dir(relish_tests::root().join("tests/fixtures")).unwrap();
    let mut compared = 0;
    for entry in fixtures {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // The ids-only fixture is for a surface fed by a feature store.
        if !name.ends_with(".json") || name.ends_with("-ids.json") {
            continue;
        }
        let json = std::fs::read_to_string(&path).unwrap();
        let surface = serde_json::from_str::<serde_json::Value>(&json).unwrap()["surface"].as_str().unwrap().to_owned();
        let mut answers = Vec::new();
        for answer in [rank(&server, &surface, &json).await, rank_protobuf(&server, &surface, protobuf_of(&json)).await]
        {
            assert_eq!(answer.status, StatusCode::OK, "{name}: {:?}", answer.body);
            assert_eq!(answer.header("content-type"), Some("application/json"));
            let answer = canonical(answer.json());
            assert_eq!(answer["fallback"], serde_json::Value::Null, "{name}: {answer}");
            answers.push(answer);
        }
        let binary = rank_protobuf_answer(&server, &surface, protobuf_of(&json)).await;
        assert_eq!(binary.status, StatusCode::OK, "{name}");
        assert_eq!(binary.header("content-type"), Some("application/x-protobuf"));
        let arm = binary.header("x-relish-arm").map(str::to_owned);
        answers.push(canonical_protobuf(&binary.body));
        let called = grpc_rank(&server, protobuf_of(&json)).await.unwrap_or_else(|s| panic!("{name}: {s:?}"));
        let metadata = called.metadata();
        assert_eq!(metadata.get("x-relish-arm").and_then(|v| v.to_str().ok()).map(str::to_owned), arm, "{name}");
        assert!(metadata.get("server-timing").is_some(), "{name}");
        answers.push(canonical_protobuf(called.get_ref()));
        for (form, answer) in ["protobuf", "protobuf answer", "gRPC"].iter().zip(&answers[1..]) {
            assert_eq!(&answers[0], answer, "{name}: {form}");
        }
        compared += 1;
    }
    assert_eq!(compared, 10, "every fixture but the ids-only one");
    server.stop().await;
}

/// The read timeout bounds the message's arrival, not the decision: a call on a surface whose
/// deadline is longer than it (a looping policy stopped at 1.5 s, past a 1 s read timeout) is
/// answered, by the fallback, as over HTTP.
#[tokio::test]
async fn a_grpc_call_decided_past_the_read_timeout_is_answered() {
    use prost::Message as _;
    let toml = "[server]\nread_timeout_secs = 1\n[surfaces.stuck]\npolicy = \"infinite-loop\"\n\
                fallback = \"popularity\"\ndeadline_ms = 1500\n";
    let server = util::start(&["popularity"], &["infinite-loop"], toml).await;
    let mut message =
        relish_wire::decode(TWO.as_bytes(), &relish_wire::DecodeOptions::default()).unwrap().to_protobuf();
    message.surface = Some("stuck".to_owned());
    let called = grpc_rank(&server, message.encode_to_vec()).await.expect("answered");
    let answer = relish_wire::protobuf::RankResponse::decode(called.get_ref().clone()).unwrap();
    let fallback = answer.fallback.expect("the fallback answered");
    assert!(matches!(fallback.reason.as_str(), "timeout" | "preempted"), "{fallback:?}");
    assert_eq!(fallback.answered_by, "popularity");
    assert_eq!(answer.items.len(), 2);
    server.stop().await;
}

/// A gRPC call's `grpc-timeout` bounds its policies: a policy still running when the caller
/// gives up is stopped there, long before the surface's own deadline, and the call is answered
/// with the fallback order, reason `caller-deadline`, counted apart from the policy's own
/// timeouts. A malformed `grpc-timeout` is refused, naming the header.
#[tokio::test]
async fn a_grpc_call_is_answered_within_its_grpc_timeout() {
    use prost::Message as _;
    let toml = "[surfaces.stuck]\npolicy = \"infinite-loop\"\nfallback = \"popularity\"\ndeadline_ms = 5000\n";
    let server = util::start(&["popularity"], &["infinite-loop"], toml).await;
    let mut message =
        relish_wire::decode(TWO.as_bytes(), &relish_wire::DecodeOptions::default()).unwrap().to_protobuf();
    message.surface = Some("stuck".to_owned());
    let with_timeout = |timeout: &str| {
        let mut request = tonic::Request::new(Bytes::from(message.encode_to_vec()));
        request.metadata_mut().insert("grpc-timeout", timeout.parse().unwrap());
        request
    };

    let called = grpc_call_with(&server, "/relish.v1.Ranker/Rank", with_timeout("300m")).await.expect("answered");
    let answer = relish_wire::protobuf::RankResponse::decode(called.get_ref().clone()).unwrap();
    let fallback = answer.fallback.expect("the fallback answered");
    assert_eq!(fallback.reason, "caller-deadline", "{fallback:?}");
    // Nothing is left of the caller's time for the fallback policy: the input order answers.
    assert_eq!(fallback.answered_by, "input-order", "{fallback:?}");
    assert_eq!(answer.items.len(), 2);
    let scrape = get(&server, "/metrics").await.text();
    let errors =
        |reason| metric(&scrape, "relish_policy_errors_total", &[("policy", "infinite-loop"), ("reason", reason)]);
    assert_eq!(errors("caller-deadline"), 1.0, "{scrape}");
    assert_eq!(errors("timeout"), 0.0, "not the policy's own timeout");

    let refused = grpc_call_with(&server, "/relish.v1.Ranker/Rank", with_timeout("5x")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("`grpc-timeout: 5x` is not a timeout"), "{refused:?}");
    server.stop().await;
}

/// A gRPC call is refused with the status its HTTP form's error maps to, naming the field, and
/// counted like it; a method the service does not have is `UNIMPLEMENTED`.
#[tokio::test]
async fn a_bad_grpc_call_gets_a_status_naming_the_field() {
    use prost::Message as _;
    let toml = "[server]\nmax_body_bytes = 4096\n[defaults]\nmax_candidates = 3\n";
    let server = util::start(&["popularity"], &[], toml).await;
    let options = relish_wire::DecodeOptions::default();
    let message = |json: &str| relish_wire::decode(json.as_bytes(), &options).unwrap().to_protobuf();
    let with_surface = |surface: &str, json: &str| {
        let mut message = message(json);
        message.surface = Some(surface.to_owned());
        message
    };
    let trailer =
        |status: &tonic::Status, key: &str| status.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);

    let no_surface = grpc_rank(&server, message(TWO).encode_to_vec()).await.unwrap_err();
    assert_eq!(no_surface.code(), tonic::Code::InvalidArgument, "{no_surface:?}");
    assert!(no_surface.message().contains("RankRequest.surface"), "{no_surface:?}");
    assert_eq!(trailer(&no_surface, "relish-error-path").as_deref(), Some("surface"));

    let unknown = grpc_rank(&server, with_surface("nowhere", TWO).encode_to_vec()).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    assert!(unknown.message().contains("no surface `nowhere`"), "{unknown:?}");
    assert_eq!(trailer(&unknown, "relish-error-code").as_deref(), Some("unknown_surface"));

    let mut broken = with_surface("discovery", TWO);
    broken.candidates.as_mut().unwrap().ids.as_mut().unwrap().offsets[1] = 9;
    let broken = grpc_rank(&server, broken.encode_to_vec()).await.unwrap_err();
    assert_eq!(broken.code(), tonic::Code::InvalidArgument, "{broken:?}");
    assert!(broken.message().contains("past the end of `data`"), "{broken:?}");
    assert_eq!(trailer(&broken, "relish-error-path").as_deref(), Some("candidates.ids.offsets[1]"));
    assert_eq!(trailer(&broken, "relish-error-code").as_deref(), Some("malformed_request"));

    let garbage = grpc_rank(&server, vec![0xff, 0xff, 0xff]).await.unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument, "{garbage:?}");
    assert!(garbage.message().contains("not a protobuf `relish.v1.RankRequest`"), "{garbage:?}");

    let four = r#"{"candidates": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}]}"#;
    let too_many = grpc_rank(&server, with_surface("discovery", four).encode_to_vec()).await.unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::OutOfRange, "{too_many:?}");
    assert_eq!(trailer(&too_many, "relish-error-code").as_deref(), Some("too_large"));

    // Past `server.max_body_bytes` (4 KiB here): refused by tonic before it is read, counted too.
    let mut large = with_surface("discovery", TWO);
    large.request_id = Some("r".repeat(5000));
    let large = grpc_rank(&server, large.encode_to_vec()).await.unwrap_err();
    assert_eq!(large.code(), tonic::Code::OutOfRange, "{large:?}");
    assert!(large.message().contains("4096"), "the message names the limit: {large:?}");
    assert_eq!(trailer(&large, "relish-error-code").as_deref(), Some("payload_too_large"));

    let elsewhere = grpc_call(&server, "/relish.v1.Ranker/Explain", message(TWO).encode_to_vec()).await.unwrap_err();
    assert_eq!(elsewhere.code(), tonic::Code::Unimplemented, "{elsewhere:?}");

    // Counted as the HTTP API counts its refusals.
    let scrape = get(&server, "/metrics").await.text();
    assert_eq!(metric(&scrape, "relish_rejected_requests_total", &[("reason", "malformed_request")]), 3.0);
    assert_eq!(metric(&scrape, "relish_rejected_requests_total", &[("reason", "unknown_surface")]), 1.0);
    assert_eq!(metric(&scrape, "relish_rejected_requests_total", &[("reason", "too_large")]), 1.0);
    assert_eq!(metric(&scrape, "relish_rejected_requests_total", &[("reason", "payload_too_large")]), 1.0);

    // The same call with its surface is answered, as its HTTP form is.
    let good = grpc_rank(&server, with_surface("discovery", TWO).encode_to_vec()).await.expect("answered");
    let answer = relish_wire::protobuf::RankResponse::decode(good.get_ref().clone()).unwrap();
    let grpc_ids: Vec<String> = answer.items.into_iter().map(|i| i.id).collect();
    assert_eq!(grpc_ids, ids(&rank(&server, "discovery", TWO).await.json()));
    server.stop().await;
}

/// A protobuf body that is not a `RankRequest`, or one whose columns are broken, is a `400`
/// naming the field, as for JSON; past a limit, a `413`.
#[tokio::test]
async fn a_bad_protobuf_request_is_refused_naming_the_field() {
    use prost::Message as _;
    let server = util::start(&["popularity"], &[], "[defaults]\nmax_candidates = 3\n").await;
    let garbage = rank_protobuf(&server, "discovery", vec![0xff, 0xff, 0xff]).await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    let error = &garbage.json()["error"];
    assert_eq!(error["code"], "malformed_request");
    assert!(error["message"].as_str().unwrap().contains("not a protobuf `relish.v1.RankRequest`"), "{error}");

    let options = relish_wire::DecodeOptions::default();
    let mut message = relish_wire::decode(TWO.as_bytes(), &options).unwrap().to_protobuf();
    message.candidates.as_mut().unwrap().ids.as_mut().unwrap().offsets[1] = 9;
    let broken = rank_protobuf(&server, "discovery", message.encode_to_vec()).await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    let error = &broken.json()["error"];
    assert_eq!(error["path"], "candidates.ids.offsets[1]", "{error}");
    assert!(error["message"].as_str().unwrap().contains("past the end of `data`"), "{error}");

    let four = r#"{"candidates": [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}]}"#;
    let too_many = rank_protobuf(&server, "discovery", protobuf_of(four)).await;
    assert_eq!(too_many.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_many.json()["error"]["path"], "candidates.ids[3]");

    // The JSON form of the same two candidates is answered, and so is the protobuf one.
    let good = rank_protobuf(&server, "discovery", protobuf_of(TWO)).await;
    assert_eq!(good.status, StatusCode::OK, "{:?}", good.body);
    assert_eq!(ids(&good.json()), ids(&rank(&server, "discovery", TWO).await.json()));
    server.stop().await;
}
