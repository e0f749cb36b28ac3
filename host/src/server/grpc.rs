//! gRPC on the data-plane port: `relish.v1.Ranker/Rank` (`host/wire/proto/relish/v1/rank.proto`),
//! a unary call whose message is the protobuf body of `POST /v1/rank/{surface}` and whose answer
//! is the protobuf response, with the same checks, errors (as gRPC statuses) and headers (as
//! metadata). `tonic` does the framing and statuses; the message is decoded by `relish-wire` into
//! the same request the HTTP API decodes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tracing::Instrument;

use super::State;
use super::http::{Body, Caller, Form, HttpResponse, Refusal, answer, caller_request_id, serving, slot};
use crate::serving::enrich::FeatureReport;
use crate::wire;

/// The one method's path.
pub const RANK: &str = "/relish.v1.Ranker/Rank";

/// Whether a request is a gRPC call (`content-type: application/grpc`, `+proto` and the like).
pub fn is_grpc(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.get(..16).is_some_and(|p| p.eq_ignore_ascii_case("application/grpc")))
}

/// Answers a gRPC call.
pub async fn handle(state: Arc<State>, request: Request<Incoming>) -> HttpResponse {
    if request.uri().path() != RANK {
        let message = format!("no method `{}`: the service is `relish.v1.Ranker/Rank`", request.uri().path());
        return collected(Status::unimplemented(message).into_http()).await;
    }
    let limit = state.config.server.max_body_bytes;
    let mut grpc =
        tonic::server::Grpc::new(BytesCodec).max_decoding_message_size(limit).max_encoding_message_size(usize::MAX);
    let timeout = Duration::from_secs(state.config.server.read_timeout_secs);
    let reached = Arc::new(AtomicBool::new(false));
    let call = Rank { state: state.clone(), received: Instant::now(), reached: reached.clone() };
    let unary = grpc.unary(call, request);
    tokio::pin!(unary);
    // The read timeout is for the message to arrive: once tonic has handed it over, the
    // decision runs to its own deadlines, however long the surface's are.
    let answered = tokio::select! {
        response = &mut unary => Some(response),
        () = tokio::time::sleep(timeout) => None,
    };
    let mut response = match answered {
        Some(response) => response,
        None if reached.load(Ordering::Relaxed) => unary.await,
        None => {
            state.metrics.rejected(StatusCode::REQUEST_TIMEOUT.as_u16(), "request_timeout");
            let message = format!("the request did not arrive within {timeout:?}");
            return collected(Status::deadline_exceeded(message).into_http()).await;
        }
    };
    if !reached.load(Ordering::Relaxed) {
        refused_by_tonic(&state, &mut response);
    }
    collected(response).await
}

/// A call tonic refused before it reached [`Rank`] (a message over `server.max_body_bytes`, a
/// compressed message, broken framing): counted as the HTTP API counts its refusals, with its
/// code in `relish-error-code`, as [`status`] gives every other refusal. Such an answer is
/// trailers-only: the status is in its headers.
fn refused_by_tonic(state: &State, response: &mut Response<tonic::body::Body>) {
    let code = match response.headers().get("grpc-status").map(HeaderValue::as_bytes) {
        None | Some(b"0") => return,
        Some(b"11") => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        Some(_) => (StatusCode::BAD_REQUEST, "unreadable_body"),
    };
    state.metrics.rejected(code.0.as_u16(), code.1);
    response.headers_mut().insert("relish-error-code", HeaderValue::from_static(code.1));
}

/// A unary answer (one message, then the trailers with the status) as the data plane's body.
async fn collected(response: Response<tonic::body::Body>) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            Body::with_trailers(collected.to_bytes(), trailers)
        }
        Err(status) => Body::with_trailers(Bytes::new(), Some(status_trailers(&status))),
    };
    Response::from_parts(parts, body)
}

fn status_trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status.code() as i32));
    if let Ok(message) = HeaderValue::from_str(status.message()) {
        trailers.insert("grpc-message", message);
    }
    trailers
}

/// The status a refusal is in gRPC, with the HTTP API's `code` and `path` in its trailers
/// (`relish-error-code`, `relish-error-path`).
fn status(state: &State, refusal: &Refusal) -> Status {
    state.metrics.rejected(refusal.status.as_u16(), refusal.code);
    let code = match refusal.status {
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => Code::OutOfRange,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
        _ => Code::Internal,
    };
    let message = match &refusal.path {
        Some(path) if !path.is_empty() => format!("{} (at `{path}`)", refusal.message),
        _ => refusal.message.clone(),
    };
    let mut metadata = MetadataMap::new();
    metadata.insert("relish-error-code", refusal.code.parse().expect("codes are ASCII"));
    if let Some(path) = refusal.path.as_deref().filter(|p| !p.is_empty())
        && let Ok(value) = path.parse()
    {
        metadata.insert("relish-error-path", value);
    }
    Status::with_metadata(code, message, metadata)
}

struct Rank {
    state: Arc<State>,
    received: Instant,
    /// Set once tonic has read the message and handed it over.
    reached: Arc<AtomicBool>,
}

impl tonic::server::UnaryService<Bytes> for Rank {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let (state, received) = (self.state.clone(), self.received);
        self.reached.store(true, Ordering::Relaxed);
        Box::pin(async move {
            let (metadata, _, body) = request.into_parts();
            let headers = metadata.into_headers();
            let surface = match wire::protobuf_surface(&body) {
                Ok(Some(surface)) => surface,
                Ok(None) => {
                    let refusal = Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "malformed_request",
                        "a gRPC call names its surface in `RankRequest.surface`",
                    )
                    .at("surface");
                    return Err(status(&state, &refusal));
                }
                Err(e) => {
                    let refusal = Refusal::new(StatusCode::BAD_REQUEST, "malformed_request", e.message);
                    return Err(status(&state, &refusal));
                }
            };
            // The caller's deadline counts from when the call arrived, as the caller's does
            // from when it sent it.
            let until = match grpc_timeout(&headers) {
                // A timeout past what an `Instant` holds (eight digits of hours) is no deadline.
                Ok(timeout) => timeout.and_then(|timeout| received.checked_add(timeout)),
                Err(message) => {
                    let refusal = Refusal::new(StatusCode::BAD_REQUEST, "malformed_request", message);
                    return Err(status(&state, &refusal));
                }
            };
            let caller_id = caller_request_id(&headers);
            let span = tracing::info_span!("rank", surface = %surface, request_id = tracing::field::Empty);
            if let Some(id) = &caller_id {
                span.record("request_id", id.as_str());
            }
            let trace = state.tracing.as_ref().map(|tracing| tracing.begin(&surface, &headers, received));
            let answered = async {
                let id = caller_id.as_deref();
                let binding = serving(&state, &surface)?;
                let _inflight = slot(&state)?;
                let caller = Caller { id, trace: trace.as_ref(), until };
                let answered = answer(&state, &binding, &body, Form::Protobuf, &surface, caller).await?;
                let encode_started = Instant::now();
                let features = answered.decision.features.as_ref().map(FeatureReport::to_protobuf);
                let response = answered.decision.response(received.elapsed().as_micros() as u64);
                let message = Bytes::from(response.to_protobuf_bytes(features));
                let mut headers = HeaderMap::new();
                answered.headers(id, encode_started.elapsed().as_micros() as u64, &mut headers);
                answered.done(received);
                Ok::<_, Refusal>((message, headers))
            }
            .instrument(span)
            .await;
            match answered {
                Ok((message, mut headers)) => {
                    if let Some(trace) = trace {
                        trace.finish(StatusCode::OK, &mut headers);
                    }
                    let metadata = MetadataMap::from_headers(headers);
                    Ok(tonic::Response::from_parts(metadata, message, tonic::Extensions::default()))
                }
                Err(refusal) => {
                    if let Some(trace) = trace {
                        trace.finish(refusal.status, &mut HeaderMap::new());
                    }
                    Err(status(&state, &refusal))
                }
            }
        })
    }
}

/// The call's `grpc-timeout`, if it has one: at most eight digits and a unit, `H`, `M`, `S`,
/// `m` (milliseconds), `u` (microseconds) or `n` (nanoseconds), as the gRPC protocol over HTTP/2
/// spells it. Anything else is refused, naming the header.
fn grpc_timeout(headers: &HeaderMap) -> Result<Option<Duration>, String> {
    let Some(value) = headers.get("grpc-timeout") else { return Ok(None) };
    let bad = || {
        format!(
            "`grpc-timeout: {}` is not a timeout: at most 8 digits and a unit (H, M, S, m, u or n), as in `250m`",
            String::from_utf8_lossy(value.as_bytes())
        )
    };
    let (digits, unit) = value.as_bytes().split_at_checked(value.len().saturating_sub(1)).ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let amount: u64 = std::str::from_utf8(digits).map_err(|_| bad())?.parse().map_err(|_| bad())?;
    Ok(Some(match unit {
        b"H" => Duration::from_secs(amount * 3600),
        b"M" => Duration::from_secs(amount * 60),
        b"S" => Duration::from_secs(amount),
        b"m" => Duration::from_millis(amount),
        b"u" => Duration::from_micros(amount),
        b"n" => Duration::from_nanos(amount),
        _ => return Err(bad()),
    }))
}

/// A gRPC message as its bytes, unencoded and undecoded: the server's codec (decoding is
/// `relish-wire`'s, with the HTTP API's checks and errors), and a client's for `tonic`'s generic
/// client (`tonic::client::Grpc::unary`) with messages encoded by `prost`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> BytesCodec {
        BytesCodec
    }

    fn decoder(&mut self) -> BytesCodec {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let length = src.remaining();
        Ok(Some(src.copy_to_bytes(length)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::header::{HeaderMap, HeaderValue};

    use super::grpc_timeout;

    fn timeout(value: &str) -> Result<Option<Duration>, String> {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", HeaderValue::from_str(value).unwrap());
        grpc_timeout(&headers)
    }

    #[test]
    fn a_grpc_timeout_is_read_in_each_unit() {
        assert_eq!(grpc_timeout(&HeaderMap::new()), Ok(None));
        assert_eq!(timeout("2H"), Ok(Some(Duration::from_secs(7200))));
        assert_eq!(timeout("3M"), Ok(Some(Duration::from_secs(180))));
        assert_eq!(timeout("1S"), Ok(Some(Duration::from_secs(1))));
        assert_eq!(timeout("250m"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(timeout("99999999u"), Ok(Some(Duration::from_micros(99_999_999))));
        assert_eq!(timeout("99999999H"), Ok(Some(Duration::from_secs(99_999_999 * 3600))));
        assert_eq!(timeout("0n"), Ok(Some(Duration::ZERO)));
    }

    #[test]
    fn a_malformed_grpc_timeout_is_refused_naming_it() {
        for bad in ["", "m", "5", "5x", "-5m", "123456789m", "1.5S", "5 m"] {
            let error = timeout(bad).expect_err(bad);
            assert!(error.contains(&format!("`grpc-timeout: {bad}`")), "{error}");
        }
    }
}
