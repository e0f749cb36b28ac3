//! The data plane: `POST /v1/rank/{surface}` and the operations endpoints `/healthz`, `/readyz`,
//! `/metrics`.
//!
//! A rank request is decoded, answered and encoded on the connection's task: the work is tens to
//! hundreds of microseconds of CPU, which a thread hand-off would only add to. A surface whose
//! decisions may take longer than `server.inline_decision_ms` (a long deadline) is decided on the
//! blocking pool, so that its calls never hold every worker. Every error answer
//! is JSON naming the problem; a policy failure is never an error answer (see [`crate::serving`]).
//! A request's body is JSON or protobuf, and so is its answer (`accept`); gRPC calls on the same
//! port go to [`super::grpc`], which shares everything between reading the body and encoding
//! the answer ([`answer`]) with `POST /v1/rank/{surface}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use opentelemetry::KeyValue;
use serde::Serialize;
use tracing::Instrument;

use super::State;
use crate::serving::enrich::FeatureReport;
use crate::serving::{Binding, Decision, shadow};
use crate::telemetry::RequestTrace;
use crate::wire::{self, DecodeErrorKind, DecodeOptions};

/// The response type of every handler.
pub type HttpResponse = Response<Body>;

/// The body of every answer: the bytes, whole, and for a gRPC answer the trailers after them.
#[derive(Debug, Default)]
pub struct Body {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body {
    /// A body of these bytes.
    pub fn full(data: impl Into<Bytes>) -> Self {
        Body::with_trailers(data.into(), None)
    }

    /// A body of these bytes, then these trailers.
    pub fn with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Body { data: Some(data).filter(|d| !d.is_empty()), trailers }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match (this.data.take(), this.trailers.take()) {
            (Some(data), trailers) => {
                this.trailers = trailers;
                Some(http_body::Frame::data(data))
            }
            (None, Some(trailers)) => Some(http_body::Frame::trailers(trailers)),
            (None, None) => None,
        };
        std::task::Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// The header carrying the request id, echoed on every answer.
pub const REQUEST_ID: &str = "x-request-id";
/// The header naming the plan arm that was asked to answer (its name, `policy@version` unless the
/// plan names it), so a proxy can log exposures without parsing the body.
pub const ARM: &str = "x-relish-arm";
/// The header naming a logged decision's id (what a rewards file joins on).
pub const DECISION_ID: &str = "x-relish-decision-id";
/// The header with the surface's plan revision that answered.
pub const PLAN_REVISION: &str = "x-relish-plan-revision";

/// An error answer: `{"error": {"status", "code", "message", "path"?}, "request_id"?}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct ErrorDetail<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
}

/// A JSON answer with the given status.
pub fn json(status: StatusCode, body: Vec<u8>) -> HttpResponse {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON error answer, counted in `relish_rejected_requests_total`.
pub fn error(
    state: &State,
    status: StatusCode,
    code: &str,
    message: &str,
    path: Option<&str>,
    request_id: Option<&str>,
) -> HttpResponse {
    state.metrics.rejected(status.as_u16(), code);
    let body = ErrorBody {
        error: ErrorDetail { status: status.as_u16(), code, message, path: path.filter(|p| !p.is_empty()) },
        request_id,
    };
    let mut response = json(status, serde_json::to_vec(&body).expect("an error body serialises"));
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

/// Routes one data-plane request.
pub async fn handle(state: Arc<State>, request: Request<Incoming>) -> HttpResponse {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    if super::grpc::is_grpc(&request) {
        return super::grpc::handle(state, request).await;
    }
    match (path.as_str(), path.strip_prefix("/v1/rank/")) {
        (_, Some(surface)) => {
            if method != Method::POST {
                return method_not_allowed(&state, "POST");
            }
            let surface = surface.to_owned();
            rank(state, request, surface).await
        }
        ("/healthz", _) => {
            get_only(&state, &method).unwrap_or_else(|| json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec()))
        }
        ("/readyz", _) => get_only(&state, &method).unwrap_or_else(|| readyz(&state)),
        ("/metrics", _) => get_only(&state, &method).unwrap_or_else(|| metrics(&state)),
        _ => error(&state, StatusCode::NOT_FOUND, "not_found", &format!("no endpoint `{path}`"), None, None),
    }
}

fn get_only(state: &State, method: &Method) -> Option<HttpResponse> {
    (method != Method::GET && method != Method::HEAD).then(|| method_not_allowed(state, "GET, HEAD"))
}

fn method_not_allowed(state: &State, allow: &'static str) -> HttpResponse {
    let mut response = error(
        state,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this endpoint takes {allow}"),
        None,
        None,
    );
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn readyz(state: &State) -> HttpResponse {
    #[derive(Serialize)]
    struct Ready<'a> {
        ready: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        surfaces: std::collections::BTreeMap<String, Option<String>>,
    }
    let bindings = state.router.all();
    let surfaces: std::collections::BTreeMap<String, Option<String>> = bindings
        .values()
        .map(|b| (b.surface.clone(), (!b.arms.is_empty()).then(|| b.arm_versions().join(", "))))
        .collect();
    let started = state.ready.load(Ordering::Acquire);
    let unbound = surfaces.values().any(Option::is_none);
    let reason = if !started {
        Some("starting: restoring policy versions and activations")
    } else if unbound {
        Some("a surface has no plan")
    } else {
        None
    };
    let ready = reason.is_none();
    let body = serde_json::to_vec(&Ready { ready, reason, surfaces }).expect("serialises");
    json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}

fn metrics(state: &State) -> HttpResponse {
    let body = state.metrics.encode(state.runtime.compile_count());
    let mut response = Response::new(Body::full(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// A caller's request id, if usable ([`wire::is_request_id`]).
pub(super) fn caller_request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(REQUEST_ID)?.to_str().ok()?;
    wire::is_request_id(value).then(|| value.to_owned())
}

/// The request forms the data plane reads, by media type.
#[derive(Clone, Copy)]
pub(super) enum Form {
    /// `application/json`: either JSON shape.
    Json,
    /// `application/x-protobuf` (or `application/protobuf`): a `relish.v1.RankRequest`.
    Protobuf,
}

fn is_protobuf(media: &str) -> bool {
    media.eq_ignore_ascii_case("application/x-protobuf") || media.eq_ignore_ascii_case("application/protobuf")
}

fn form(headers: &HeaderMap) -> Option<Form> {
    let media = headers.get(header::CONTENT_TYPE)?.to_str().ok()?.split(';').next()?.trim();
    if media.eq_ignore_ascii_case("application/json") {
        Some(Form::Json)
    } else if is_protobuf(media) {
        Some(Form::Protobuf)
    } else {
        None
    }
}

/// Whether the caller asks for the answer in protobuf (`accept: application/x-protobuf`, or
/// `application/protobuf`, among the media types it lists); otherwise it is JSON.
fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|value| value.to_str().ok()).any(|value| {
        value.split(',').any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            is_protobuf(media) && !refused
        })
    })
}

/// Releases one global in-flight slot when dropped.
pub(super) struct Inflight<'a>(&'a State);

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Release);
        self.0.metrics.inflight().dec();
    }
}

/// A rank request refused before it was answered: what the error answer says, in either
/// protocol (HTTP here, gRPC in [`super::grpc`]).
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) path: Option<String>,
    /// Worth retrying shortly (`retry-after: 1`).
    retry: bool,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal { status, code, message: message.into(), path: None, retry: false }
    }

    pub(super) fn at(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    fn retry(mut self) -> Self {
        self.retry = true;
        self
    }

    /// The HTTP error answer.
    fn answer(&self, state: &State, request_id: Option<&str>) -> HttpResponse {
        let mut response = error(state, self.status, self.code, &self.message, self.path.as_deref(), request_id);
        if self.retry {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The surface's binding, if the host is ready and serves it.
pub(super) fn serving(state: &State, surface: &str) -> Result<Arc<Binding>, Refusal> {
    if !state.ready.load(Ordering::Acquire) {
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is starting").retry());
    }
    state.router.get(surface).ok_or_else(|| {
        let mut known: Vec<String> = state.router.all().keys().cloned().collect();
        known.sort();
        let message = format!("no surface `{surface}` (known: {})", known.join(", "));
        Refusal::new(StatusCode::NOT_FOUND, "unknown_surface", message)
    })
}

/// A global in-flight slot, unless every one is taken: past the limit the host sheds load
/// instead of queueing, and the caller retries.
pub(super) fn slot(state: &State) -> Result<Inflight<'_>, Refusal> {
    if state.inflight.fetch_add(1, Ordering::Acquire) >= state.config.server.max_concurrency {
        state.inflight.fetch_sub(1, Ordering::Release);
        let message = format!("{} requests in flight, the limit", state.config.server.max_concurrency);
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message).retry());
    }
    state.metrics.inflight().inc();
    Ok(Inflight(state))
}

async fn rank(state: Arc<State>, request: Request<Incoming>, surface: String) -> HttpResponse {
    let received = Instant::now();
    let caller_id = caller_request_id(request.headers());
    let span = tracing::info_span!("rank", surface = %surface, request_id = tracing::field::Empty);
    if let Some(id) = &caller_id {
        span.record("request_id", id.as_str());
    }
    let trace = state.tracing.as_ref().map(|tracing| tracing.begin(&surface, request.headers(), received));
    let mut response =
        rank_in_span(&state, request, &surface, caller_id, received, trace.as_ref()).instrument(span).await;
    if let Some(trace) = trace {
        trace.finish(response.status(), response.headers_mut());
    }
    response
}

async fn rank_in_span(
    state: &State,
    request: Request<Incoming>,
    surface: &str,
    caller_id: Option<String>,
    received: Instant,
    trace: Option<&RequestTrace>,
) -> HttpResponse {
    let id = caller_id.as_deref();
    let binding = match serving(state, surface) {
        Ok(binding) => binding,
        Err(refusal) => return refusal.answer(state, id),
    };
    let Some(form) = form(request.headers()) else {
        let message = "send the request as `content-type: application/json` (or `application/x-protobuf` with a \
                       serialized `relish.v1.RankRequest`)";
        return error(state, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message, None, id);
    };
    let limit = state.config.server.max_body_bytes;
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        let message = format!("the body is larger than {limit} bytes");
        return error(state, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", &message, None, id);
    }
    let protobuf_answer = wants_protobuf(request.headers());
    let _inflight = match slot(state) {
        Ok(slot) => slot,
        Err(refusal) => return refusal.answer(state, id),
    };

    let timeout = Duration::from_secs(state.config.server.read_timeout_secs);
    let body = match tokio::time::timeout(timeout, Limited::new(request.into_body(), limit).collect()).await {
        Err(_) => {
            let message = format!("the body did not arrive within {timeout:?}");
            return error(state, StatusCode::REQUEST_TIMEOUT, "request_timeout", &message, None, id);
        }
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            let message = format!("the body is larger than {limit} bytes");
            return error(state, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", &message, None, id);
        }
        Ok(Err(e)) => {
            let message = format!("could not read the body: {e}");
            return error(state, StatusCode::BAD_REQUEST, "unreadable_body", &message, None, id);
        }
    };

    let answered = match answer(state, &binding, &body, form, surface, Caller { id, trace, until: None }).await {
        Ok(answered) => answered,
        Err(refusal) => return refusal.answer(state, id),
    };
    let encode_started = Instant::now();
    let response = answered.decision.response(received.elapsed().as_micros() as u64);
    let (body, media) = if protobuf_answer {
        let features = answered.decision.features.as_ref().map(FeatureReport::to_protobuf);
        (response.to_protobuf_bytes(features), "application/x-protobuf")
    } else {
        (response.to_json(), "application/json")
    };
    let encode_us = encode_started.elapsed().as_micros() as u64;
    if let Some(trace) = trace {
        trace.stage("encode", encode_started, vec![KeyValue::new("http.response.body.size", body.len() as i64)]);
    }
    let mut http = Response::new(Body::full(body));
    http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    answered.headers(id, encode_us, http.headers_mut());
    answered.done(received);
    http
}

/// A rank request decided: the decision, ready to encode in the caller's form.
pub(super) struct Answered {
    pub(super) decision: Decision,
    /// The decision log's record id, when the decision was logged.
    logged: Option<String>,
    parse_us: u64,
    /// The shadow threads' wake-ups, owed once the answer is written.
    wakes: Option<shadow::Wakes>,
}

/// What a rank request says of its caller, beside its body.
#[derive(Clone, Copy, Default)]
pub(super) struct Caller<'a> {
    /// The caller's `x-request-id`, if valid.
    pub(super) id: Option<&'a str>,
    /// The request's trace, when it is traced.
    pub(super) trace: Option<&'a RequestTrace>,
    /// When the caller gives up (a gRPC call's `grpc-timeout`): no policy runs past it.
    pub(super) until: Option<Instant>,
}

/// Decodes `body` (as `form`), looks its features up, decides it on `binding` and hands it to the
/// decision log: everything a rank request does between reading its body and encoding its answer,
/// in either protocol.
pub(super) async fn answer(
    state: &State,
    binding: &Arc<Binding>,
    body: &[u8],
    form: Form,
    surface: &str,
    caller: Caller<'_>,
) -> Result<Answered, Refusal> {
    let Caller { id, trace, until } = caller;
    let parse_started = Instant::now();
    let now_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let options = DecodeOptions {
        surface: Some(surface),
        now_unix_ms,
        max_candidates: binding.max_candidates,
        request_id: id,
        ..DecodeOptions::default()
    };
    let decoded = match form {
        Form::Json => wire::decode(body, &options),
        Form::Protobuf => wire::decode_protobuf(body, &options),
    };
    let mut decoded = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            let (status, code) = match e.kind {
                DecodeErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
                DecodeErrorKind::Invalid => (StatusCode::BAD_REQUEST, "malformed_request"),
            };
            tracing::debug!(path = %e.path, "rejected: {}", e.message);
            return Err(Refusal::new(status, code, e.message).at(e.path));
        }
    };
    if id.is_none() {
        tracing::Span::current().record("request_id", decoded.request.request_id.as_str());
    }
    let parse_us = parse_started.elapsed().as_micros() as u64;
    if let Some(trace) = trace {
        trace.annotate(vec![KeyValue::new("relish.request_id", decoded.request.request_id.clone())]);
        let candidates = decoded.request.candidates.ids.offsets.len().saturating_sub(1) as i64;
        let attributes = vec![
            KeyValue::new("http.request.body.size", body.len() as i64),
            KeyValue::new("relish.candidates", candidates),
        ];
        trace.stage("decode", parse_started, attributes);
    }
    let features = match &binding.features {
        Some(source) => {
            if let Some(field) = source.refuses(&decoded.request) {
                let message = format!(
                    "surface `{surface}` takes its features from the feature store `{}` (features.source = \"store\"): \
                     send ids only, or configure source = \"both\" to let values in the body win",
                    source.store_name
                );
                return Err(Refusal::new(StatusCode::BAD_REQUEST, "inline_features", message).at(field));
            }
            let lookup_started = Instant::now();
            let report = source.fill(&mut decoded.request).await;
            if let Some(reason) = report.incomplete() {
                state.metrics.feature_incomplete(surface, reason);
            }
            if let Some(trace) = trace {
                let mut attributes = vec![
                    KeyValue::new("relish.feature_store", report.store.clone()),
                    KeyValue::new("relish.features.hits", i64::from(report.hits)),
                    KeyValue::new("relish.features.misses", i64::from(report.misses)),
                    KeyValue::new("relish.features.stale", i64::from(report.stale)),
                ];
                if let Some(error) = report.error {
                    attributes.push(KeyValue::new("relish.features.error", error));
                }
                trace.stage("features", lookup_started, attributes);
            }
            Some(report)
        }
        None => None,
    };
    // A signed-in user's id assigns the arm; else the caller's `bucket_key`; else the seed.
    let key = decoded.request.context.user_id().map(str::to_owned).or_else(|| decoded.bucket_key.take());

    let mut wakes = None;
    let decide_started = Instant::now();
    let mut decision = if binding.longest_decision() > Duration::from_millis(state.config.server.inline_decision_ms) {
        // A slow surface's calls leave the workers free for everything else.
        let (worker, metrics, key) = (binding.clone(), state.metrics.clone(), key.clone());
        let request = decoded.request;
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || {
            span.in_scope(|| worker.decide_until(request, key.as_deref(), &metrics, until))
        })
        .await
        {
            Ok(decision) => decision,
            Err(failed) => {
                let message = format!("the decision failed: {failed}");
                return Err(Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message));
            }
        }
    } else {
        let (decision, owed) =
            shadow::deferring_wakes(|| binding.decide_until(decoded.request, key.as_deref(), &state.metrics, until));
        wakes = Some(owed);
        decision
    };
    decision.features = features;
    if let Some(trace) = trace {
        trace.stage("policy", decide_started, policy_attributes(&decision));
    }
    let logged = log_decision(state, &decision, key.as_deref());
    Ok(Answered { decision, logged, parse_us, wakes })
}

impl Answered {
    /// The answer's headers (gRPC: its metadata): `x-request-id` (the caller's, else the
    /// request's), `x-relish-arm`, `x-relish-plan-revision`, `x-relish-decision-id` and
    /// `server-timing`.
    pub(super) fn headers(&self, caller_id: Option<&str>, encode_us: u64, headers: &mut HeaderMap) {
        let decision = &self.decision;
        let echoed = caller_id.unwrap_or(&decision.request.request_id);
        if let Ok(value) = HeaderValue::from_str(echoed) {
            headers.insert(REQUEST_ID, value);
        }
        if let Some(arm) = decision.arm()
            && let Ok(value) = HeaderValue::from_str(&arm.name)
        {
            headers.insert(ARM, value);
        }
        headers.insert(PLAN_REVISION, HeaderValue::from(decision.binding.revision));
        if let Some(id) = self.logged.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert(DECISION_ID, id);
        }
        // The phases in the order they ran; `features` only on surfaces that look features up.
        let ms = |us: u64| us as f64 / 1000.0;
        let (parse, policy, encode) = (ms(self.parse_us), ms(decision.policy_us), ms(encode_us));
        let timing = match &decision.features {
            Some(report) => format!(
                "parse;dur={parse:.3}, features;dur={:.3}, policy;dur={policy:.3}, encode;dur={encode:.3}",
                ms(report.took_us)
            ),
            None => format!("parse;dur={parse:.3}, policy;dur={policy:.3}, encode;dur={encode:.3}"),
        };
        headers.insert("server-timing", HeaderValue::from_str(&timing).expect("ASCII"));
    }

    /// Once the answer is built: its time observed, and the shadow threads woken by a task of
    /// their own, which runs once this connection's task has written the answer.
    pub(super) fn done(self, received: Instant) {
        let decision = &self.decision;
        let metrics = decision.arm().map_or(&decision.binding.unplanned, |arm| &arm.metrics);
        metrics.request_seconds.observe(received.elapsed().as_secs_f64());
        if let Some(wakes) = self.wakes.filter(shadow::Wakes::owed) {
            tokio::spawn(async move { drop(wakes) });
        }
    }
}

/// The `policy` span's attributes: what served the request, and the fallback if one answered.
fn policy_attributes(decision: &Decision) -> Vec<KeyValue> {
    let binding = &decision.binding;
    let mut attributes = vec![
        KeyValue::new("relish.surface", binding.surface.clone()),
        KeyValue::new("relish.plan.revision", binding.revision as i64),
        KeyValue::new("relish.policy.call_us", decision.policy_us as i64),
    ];
    if let Some(arm) = decision.arm() {
        attributes.push(KeyValue::new("relish.arm", arm.name.clone()));
        attributes.push(KeyValue::new("relish.policy", arm.bound.name.clone()));
        attributes.push(KeyValue::new("relish.policy.version", arm.bound.version.clone()));
    }
    if let Some(failure) = &decision.failure {
        attributes.push(KeyValue::new("relish.fallback", failure.reason));
        attributes.push(KeyValue::new("relish.fallback.answered_by", failure.answered_by.clone()));
    }
    attributes.push(KeyValue::new("relish.shadows", decision.shadows as i64));
    attributes
}

/// Hands a sampled decision to the decision log (off the response path: the request is shared,
/// not copied); returns its id.
fn log_decision(state: &State, decision: &Decision, key: Option<&str>) -> Option<String> {
    let log = state.decisions.as_ref()?;
    let settings = decision.binding.log.as_ref()?;
    let binding = &decision.binding;
    if !settings.sampled(&binding.surface, key, decision.request.seed) {
        return None;
    }
    let id = uuid::Uuid::new_v4().to_string();
    crate::decisions::Entry::new(decision, id.clone(), settings.clone()).log(decision, log);
    Some(id)
}
