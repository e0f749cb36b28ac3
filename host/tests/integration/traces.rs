//! OpenTelemetry: the spans of rank requests reach an OTLP/HTTP endpoint the test runs, in the
//! caller's trace when it sent a `traceparent`, with the stages as children of the request span
//! and the attributes that say what served the request.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::util::{self, metric};

/// What the endpoint received: each span with its resource's `service.name`; and every
/// request's content type.
#[derive(Default)]
struct Received {
    spans: Vec<(String, Span)>,
    content_types: Vec<String>,
}

/// An OTLP/HTTP endpoint on a free port that keeps what it is sent; its traces URL.
async fn collector() -> (String, Arc<Mutex<Received>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Received::default()));
    let kept = received.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let kept = kept.clone();
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let kept = kept.clone();
                async move {
                    assert_eq!(request.uri().path(), "/v1/traces");
                    let content_type = request.headers()["content-type"].to_str().unwrap().to_owned();
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                    let mut kept = kept.lock().unwrap();
                    kept.content_types.push(content_type);
                    for resource in export.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            kept.spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
                        }
                    }
                    let answer = ExportTraceServiceResponse::default().encode_to_vec();
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/x-protobuf")
                            .body(Full::new(Bytes::from(answer)))
                            .unwrap(),
                    )
                }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    (url, received)
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// A span's attribute, as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
}

/// Waits until the endpoint has `count` spans of the trace `trace_id` (hex), and returns them.
async fn trace(received: &Mutex<Received>, trace_id: &str, count: usize) -> Vec<Span> {
    for _ in 0..400 {
        let spans: Vec<Span> = received
            .lock()
            .unwrap()
            .spans
            .iter()
            .filter(|(_, s)| hex::encode(&s.trace_id) == trace_id)
            .map(|(_, s)| s.clone())
            .collect();
        if spans.len() >= count {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the endpoint did not receive {count} spans of trace {trace_id} within 20 s");
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span `{name}` in {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>()))
}

async fn rank_traced(server: &util::TestServer, surface: &str, body: &str, headers: &[(&str, &str)]) -> util::Answer {
    let mut request =
        Request::post(format!("{}/v1/rank/{surface}", server.base)).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    util::send(request.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

/// `00-<trace id>-<span id>-<flags>`, split.
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((fields.len(), fields[0]), (4, "00"), "{traceparent}");
    (fields[1].to_owned(), fields[2].to_owned(), fields[3].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_otlp_endpoint_in_the_callers_trace_with_what_served_the_request() {
    let (endpoint, received) = collector().await;
    let features = relish_tests::root().join("tests/fixtures/features.jsonl");
    let toml = format!(
        "[traces]\notlp_endpoint = {endpoint:?}\nflush_ms = 50\nservice_name = \"relish-edge\"\n\
         [features.stores.bundled]\nbackend = \"memory\"\npath = {:?}\n\
         [surfaces.discovery]\npolicy = \"popularity\"\nfeatures = {{ source = \"both\", store = \"bundled\" }}\n\
         [surfaces.banners]\npolicy = \"declines\"\n",
        features.display().to_string()
    );
    let server = util::start(&["popularity"], &["declines"], &toml).await;

    // A caller's trace continues here: the request span is the child of its span.
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [("traceparent", caller), ("tracestate", "edge=7f")];
    let request = relish_tests::fixture("discovery-evening-ids.json");
    let candidates =
        serde_json::from_str::<serde_json::Value>(&request).unwrap()["candidates"].as_array().unwrap().len();
    let answer = rank_traced(&server, "discovery", &request, &headers).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let (trace_id, root_id, flags) = parts(answer.header("traceresponse").expect("the answer names its trace"));
    assert_eq!((trace_id.as_str(), flags.as_str()), ("4bf92f3577b34da6a3ce929d0e0e4736", "01"));

    let spans = trace(&received, &trace_id, 5).await;
    let root = named(&spans, "POST /v1/rank/{surface}");
    assert_eq!(hex::encode(&root.span_id), root_id, "traceresponse names the request span");
    assert_eq!(hex::encode(&root.parent_span_id), "00f067aa0ba902b7", "the caller's span is its parent");
    assert_eq!(root.trace_state, "edge=7f", "the caller's tracestate goes on");
    assert_eq!(root.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32);
    assert_eq!(attribute(root, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(root, "relish.surface").as_deref(), Some("discovery"));
    assert!(attribute(root, "relish.request_id").is_some_and(|id| !id.is_empty()));
    for stage in ["decode", "features", "policy", "encode"] {
        let span = named(&spans, stage);
        assert_eq!(hex::encode(&span.parent_span_id), root_id, "{stage} is a child of the request span");
        assert!(span.start_time_unix_nano >= root.start_time_unix_nano, "{stage} starts within the request");
        assert!(span.end_time_unix_nano <= root.end_time_unix_nano, "{stage} ends within the request");
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano, "{stage}");
    }
    let decode = named(&spans, "decode");
    assert_eq!(attribute(decode, "relish.candidates"), Some(candidates.to_string()), "{decode:?}");
    let lookup = named(&spans, "features");
    assert_eq!(attribute(lookup, "relish.feature_store").as_deref(), Some("bundled"));
    let policy = named(&spans, "policy");
    assert_eq!(attribute(policy, "relish.surface").as_deref(), Some("discovery"));
    assert_eq!(attribute(policy, "relish.policy").as_deref(), Some("popularity"));
    assert_eq!(attribute(policy, "relish.policy.version").as_deref(), Some("0.1.0"));
    assert_eq!(attribute(policy, "relish.arm").as_deref(), Some("popularity@0.1.0"));
    assert_eq!(attribute(policy, "relish.fallback"), None, "the policy answered");
    assert!(received.lock().unwrap().spans.iter().all(|(service, _)| service == "relish-edge"));

    // Without a traceparent (or with one that is not W3C), a trace starts here; a failing
    // policy's span says the fallback answered, and why.
    for headers in [&[][..], &[("traceparent", "00-not-a-trace-01")][..]] {
        let answer = rank_traced(&server, "banners", util::THREE, headers).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["fallback"]["reason"], "error");
        let (trace_id, root_id, _) = parts(answer.header("traceresponse").unwrap());
        assert_ne!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let spans = trace(&received, &trace_id, 4).await;
        let root = named(&spans, "POST /v1/rank/{surface}");
        assert_eq!(attribute(root, "relish.surface").as_deref(), Some("banners"));
        assert!(root.parent_span_id.is_empty(), "a root span: {headers:?}");
        let policy = named(&spans, "policy");
        assert_eq!(hex::encode(&policy.parent_span_id), root_id);
        assert_eq!(attribute(policy, "relish.policy").as_deref(), Some("declines"));
        assert_eq!(attribute(policy, "relish.fallback").as_deref(), Some("error"));
        assert_eq!(attribute(policy, "relish.fallback.answered_by").as_deref(), Some("popularity"));
    }

    // A refused request is traced too, with its status.
    let answer = rank_traced(&server, "discovery", "{\"candidates\": [", &[("traceparent", caller)]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let (trace_id, root_id, _) = parts(answer.header("traceresponse").unwrap());
    let spans = trace(&received, &trace_id, 6).await;
    let refused = spans.iter().find(|s| hex::encode(&s.span_id) == root_id).expect("the refused request's span");
    assert_eq!(attribute(refused, "http.response.status_code").as_deref(), Some("400"));

    let content_types = received.lock().unwrap().content_types.clone();
    assert!(content_types.iter().all(|c| c == "application/x-protobuf"), "OTLP/HTTP protobuf: {content_types:?}");
    let scrape = util::get(&server, "/metrics").await.text();
    assert!(metric(&scrape, "relish_trace_spans_total", &[("outcome", "exported")]) >= 14.0, "{scrape}");
    server.stop().await;
}

/// A bad `[traces]` setting stops startup naming the key, as every other setting does.
#[test]
fn a_bad_traces_setting_is_named() {
    use relish_host::server::config::Config;
    let cases = [
        ("[traces]\notlp_endpoint = \"localhost:4318\"\n", "traces.otlp_endpoint"),
        ("[traces]\notlp_endpoint = \"https://collector:4318/v1/traces\"\n", "traces.otlp_endpoint"),
        ("[traces]\nsample_ratio = 2.0\n", "traces.sample_ratio"),
        ("[traces]\nflush_ms = 0\n", "traces.flush_ms"),
    ];
    for (toml, key) in cases {
        let error = Config::from_toml(toml).unwrap_err();
        assert_eq!(error.key, key, "{toml}: {error}");
    }
    let error = Config::from_toml("[traces]\nendpoint = \"http://x\"\n").unwrap_err();
    assert!(error.to_string().contains("endpoint"), "{error}");
    Config::from_toml("[traces]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample_ratio = 0.1\n").unwrap();
}

/// An endpoint that is down costs the requests nothing: every one is answered (and still names
/// its trace); the spans beyond the queue are dropped and counted, and those that could not be
/// sent are counted as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_down_loses_spans_counted_and_no_request() {
    let down = format!("http://127.0.0.1:{}/v1/traces", util::free_port());
    // Nothing is sent before shutdown (a minute between exports, fewer spans than a batch): the
    // first 64 spans wait in the queue, the rest find it full.
    let toml = format!(
        "[traces]\notlp_endpoint = {down:?}\nflush_ms = 60000\nqueue_spans = 64\nexport_timeout_ms = 500\n\
         [surfaces.discovery]\npolicy = \"popularity\"\n"
    );
    let server = util::start(&["popularity"], &[], &toml).await;
    for _ in 0..100 {
        let answer = rank_traced(&server, "discovery", util::THREE, &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json()["fallback"], serde_json::Value::Null);
        assert!(answer.header("traceresponse").is_some());
    }
    // 100 requests of 4 spans (request, decode, policy, encode).
    let count = |scrape: &str, outcome| metric(scrape, "relish_trace_spans_total", &[("outcome", outcome)]);
    let scrape = util::get(&server, "/metrics").await.text();
    assert_eq!(count(&scrape, "dropped"), 400.0 - 64.0, "{scrape}");
    let state = server.handle.as_ref().unwrap().state.clone();
    server.stop().await;
    // Shutdown tried to send the queued ones, and could not.
    let scrape = prometheus::TextEncoder::new().encode_to_string(&state.metrics.registry().gather()).unwrap();
    assert_eq!((count(&scrape, "failed"), count(&scrape, "exported")), (64.0, 0.0), "{scrape}");
}
