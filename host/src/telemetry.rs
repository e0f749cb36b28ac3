//! OpenTelemetry traces of rank requests, exported over OTLP/HTTP (protobuf).
//!
//! Each rank request is one server span, named by its route `POST /v1/rank/{surface}` (the surface
//! is its `relish.surface` attribute), with a child span per stage:
//! `decode`, `features` (when the surface looks features up), `policy` (surface, arm, policy,
//! version, plan revision, and the fallback's reason and policy when one answered) and `encode`.
//! A W3C `traceparent` (and `tracestate`) from the edge caller makes the request span its child,
//! in the caller's trace; the response carries the request span as `traceresponse`
//! (W3C Trace Context Level 2), so a caller can find the trace of any answer.
//!
//! The hot path stays as it is: a stage's span is made from two `Instant`s the request takes
//! anyway, when the stage is over; a finished span goes to the SDK's `BatchSpanProcessor`, a
//! bounded queue (`traces.queue_spans`) emptied by its own thread, which drops spans rather than
//! wait when it is full. With no endpoint configured none of this exists: the request path tests
//! one `Option`.
//!
//! Spans are counted by what became of them (`relish_trace_spans_total{outcome}`): `exported`,
//! `failed` (the endpoint refused them or did not answer) and `dropped` (the queue was full). The
//! queue's bound is kept here ([`Bounded`]), so that every dropped span is counted; the SDK's own
//! queue is made larger, so it never drops one unseen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use hyper::HeaderMap;
use hyper::header::HeaderValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use prometheus::{IntCounterVec, Opts};
use serde::Deserialize;

/// `[traces]`: where and how much to trace. No endpoint, no tracing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// The OTLP/HTTP traces URL, such as `http://127.0.0.1:4318/v1/traces` (also
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_EXPORTER_OTLP_ENDPOINT` plus `/v1/traces`).
    pub otlp_endpoint: Option<String>,
    /// The share of traces started here that are recorded, 0 to 1; a caller's `traceparent`
    /// decides for its own traces (sampled or not), as W3C Trace Context intends.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// How often queued spans are sent, in milliseconds.
    pub flush_ms: u64,
    /// Finished spans waiting to be sent; more are dropped (counted as `dropped`).
    pub queue_spans: usize,
    /// How long one export may take, in milliseconds.
    pub export_timeout_ms: u64,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            service_name: "relish".to_owned(),
            flush_ms: 1000,
            queue_spans: 8192,
            export_timeout_ms: 5000,
        }
    }
}

impl TracesConfig {
    /// Checks what serde cannot; the error names the key (under `traces.`) and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let uri: hyper::Uri =
                endpoint.parse().map_err(|e| ("otlp_endpoint", format!("`{endpoint}` is not a URL: {e}")))?;
            match uri.scheme_str() {
                Some("http") if uri.host().is_some() => {}
                Some("https") => {
                    return Err((
                        "otlp_endpoint",
                        format!(
                            "`{endpoint}`: this build exports over plain HTTP only; send to a collector agent on \
                             the machine or in the pod (http://127.0.0.1:4318/v1/traces), which forwards over TLS"
                        ),
                    ));
                }
                _ => {
                    return Err((
                        "otlp_endpoint",
                        format!("`{endpoint}` is not an http:// URL like http://127.0.0.1:4318/v1/traces"),
                    ));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(("sample_ratio", format!("{} is outside 0..=1", self.sample_ratio)));
        }
        if self.service_name.trim().is_empty() {
            return Err(("service_name", "must not be empty".to_owned()));
        }
        if !(10..=60_000).contains(&self.flush_ms) {
            return Err(("flush_ms", format!("{} is outside 10..=60000", self.flush_ms)));
        }
        if !(64..=1_000_000).contains(&self.queue_spans) {
            return Err(("queue_spans", format!("{} is outside 64..=1000000", self.queue_spans)));
        }
        if !(100..=60_000).contains(&self.export_timeout_ms) {
            return Err(("export_timeout_ms", format!("{} is outside 100..=60000", self.export_timeout_ms)));
        }
        Ok(())
    }

    /// The endpoint the standard OpenTelemetry variables name, if the configuration names none:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, else `OTEL_EXPORTER_OTLP_ENDPOINT` with
    /// `/v1/traces` (the OTLP exporter specification).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        if self.otlp_endpoint.is_some() {
            return;
        }
        let nonempty = |name| env(name).filter(|v: &String| !v.trim().is_empty());
        self.otlp_endpoint = nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            nonempty("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        });
    }
}

/// The tracer of a server, present when an endpoint is configured.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Tracing {
    /// Starts the exporter and its thread, if the configuration names an endpoint; spans
    /// exported and failed are counted in `registry`.
    pub fn start(config: &TracesConfig, registry: &prometheus::Registry) -> anyhow::Result<Option<Arc<Tracing>>> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_millis(config.export_timeout_ms))
            .build()
            .with_context(|| format!("the OTLP exporter for {endpoint}"))?;
        let spans = IntCounterVec::new(
            Opts::new(
                "relish_trace_spans_total",
                "Finished spans by outcome: exported, failed (the endpoint did not take them), dropped (the queue was full).",
            ),
            &["outcome"],
        )
        .expect("a valid metric");
        registry.register(Box::new(spans.clone())).context("registering relish_trace_spans_total")?;
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = Counted {
            inner: exporter,
            spans: spans.clone(),
            queued: queued.clone(),
            endpoint: endpoint.clone(),
            failing: AtomicBool::new(false),
        };
        // Room for a batch being exported beside a full queue: the SDK never drops a span itself.
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.queue_spans * 2 + 512)
            .with_scheduled_delay(Duration::from_millis(config.flush_ms))
            .build();
        let processor = Bounded {
            inner: BatchSpanProcessor::new(exporter, batch),
            queued,
            limit: config.queue_spans,
            dropped: spans.with_label_values(&["dropped"]),
        };
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
            .build();
        let tracer = provider.tracer("relish");
        tracing::info!(endpoint = %endpoint, sample_ratio = config.sample_ratio, "exporting traces over OTLP/HTTP");
        Ok(Some(Arc::new(Tracing { provider, tracer, propagator: TraceContextPropagator::new() })))
    }

    /// Starts the span of a rank request that arrived at `received`, as a child of the caller's
    /// `traceparent` if it sent one.
    pub fn begin(&self, surface: &str, headers: &HeaderMap, received: Instant) -> RequestTrace {
        let parent = self.propagator.extract(&Headers(headers));
        let start = SystemTime::now() - received.elapsed();
        let span = self
            .tracer
            // The route, not the path: a span name stays one of a few however many surface names
            // callers send (a backend indexes names; the surface is an attribute).
            .span_builder("POST /v1/rank/{surface}")
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", "/v1/rank/{surface}"),
                KeyValue::new("url.path", format!("/v1/rank/{surface}")),
                KeyValue::new("relish.surface", surface.to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        RequestTrace { tracer: self.tracer.clone(), context: parent.with_span(span), received, start }
    }

    /// Sends what is queued and stops the exporter's thread (at shutdown).
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!("stopping the trace exporter: {error}");
        }
    }
}

/// The spans of one rank request: the request span, and its stages as they end.
pub struct RequestTrace {
    tracer: SdkTracer,
    /// The caller's context with the request span in it.
    context: Context,
    received: Instant,
    start: SystemTime,
}

impl RequestTrace {
    fn time(&self, at: Instant) -> SystemTime {
        self.start + at.saturating_duration_since(self.received)
    }

    /// Records a stage that ran from `started` to now, with its attributes.
    pub fn stage(&self, name: &'static str, started: Instant, attributes: Vec<KeyValue>) {
        if !self.context.span().span_context().is_sampled() {
            return;
        }
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(self.time(started))
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.context);
        span.end_with_timestamp(SystemTime::now());
    }

    /// Adds attributes to the request span.
    pub fn annotate(&self, attributes: Vec<KeyValue>) {
        self.context.span().set_attributes(attributes);
    }

    /// Ends the request span with the response's status, and names it in the response's
    /// `traceresponse` header.
    pub fn finish(self, status: hyper::StatusCode, headers: &mut HeaderMap) {
        let span = self.context.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
        if status.is_server_error() {
            span.set_status(Status::error(status.canonical_reason().unwrap_or("server error")));
        }
        let context = span.span_context();
        let value = format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8() & opentelemetry::trace::TraceFlags::SAMPLED.to_u8()
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert("traceresponse", value);
        }
        span.end_with_timestamp(SystemTime::now());
    }
}

/// A request's headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The batch processor behind a bound of our own: a finished span beyond `limit` waiting to be
/// sent is dropped here and counted, never waited for.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans handed to the processor and not yet through an export.
    queued: Arc<AtomicUsize>,
    limit: usize,
    dropped: prometheus::IntCounter,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, counting what it sends and saying (once per outage) when the endpoint fails.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    spans: IntCounterVec,
    /// [`Bounded::queued`]: a batch leaves it once exported or failed.
    queued: Arc<AtomicUsize>,
    endpoint: String,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len() as u64;
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(count as usize, Ordering::Relaxed);
        match &result {
            Ok(()) => {
                self.spans.with_label_values(&["exported"]).inc_by(count);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "the OTLP endpoint takes spans again");
                }
            }
            Err(error) => {
                self.spans.with_label_values(&["failed"]).inc_by(count);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(endpoint = %self.endpoint, "exporting {count} spans failed: {error}");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        let bad = |f: fn(&mut TracesConfig)| {
            let mut config = TracesConfig::default();
            f(&mut config);
            config.validate().unwrap_err()
        };
        let (key, message) = bad(|c| c.otlp_endpoint = Some("collector:4318".into()));
        assert_eq!(key, "otlp_endpoint", "{message}");
        let (_, message) = bad(|c| c.otlp_endpoint = Some("https://collector.example/v1/traces".into()));
        assert!(message.contains("plain HTTP"), "{message}");
        let (_, message) = bad(|c| c.otlp_endpoint = Some("not a url".into()));
        assert!(message.contains("not a URL"), "{message}");
        assert_eq!(bad(|c| c.sample_ratio = 1.5).0, "sample_ratio");
        assert_eq!(bad(|c| c.service_name = " ".into()).0, "service_name");
        assert_eq!(bad(|c| c.flush_ms = 0).0, "flush_ms");
        assert_eq!(bad(|c| c.queue_spans = 1).0, "queue_spans");
        let good = TracesConfig { otlp_endpoint: Some("http://127.0.0.1:4318/v1/traces".into()), ..Default::default() };
        good.validate().unwrap();
    }

    #[test]
    fn the_standard_variables_name_the_endpoint_unless_the_file_does() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let mut config = TracesConfig::default();
        config.apply_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]));
        assert_eq!(config.otlp_endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        let mut config = TracesConfig::default();
        config.apply_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom"),
        ]));
        assert_eq!(config.otlp_endpoint.as_deref(), Some("http://traces:4318/custom"));
        let mut config =
            TracesConfig { otlp_endpoint: Some("http://file:4318/v1/traces".into()), ..Default::default() };
        config.apply_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]));
        assert_eq!(config.otlp_endpoint.as_deref(), Some("http://file:4318/v1/traces"));
        let mut config = TracesConfig::default();
        config.apply_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]));
        assert_eq!(config.otlp_endpoint, None);
    }
}
