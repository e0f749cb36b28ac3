//! Prometheus metrics: one registry per server, scraped at `/metrics`.
//!
//! Per-request metrics are pre-resolved when a surface is bound ([`BindingMetrics`]), so the hot
//! path touches a few atomics and never hashes label values.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets from 25 µs to 1 s: a call is tens of µs, a request a few hundred.
const BUCKETS: &[f64] =
    &[0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    policy_seconds: HistogramVec,
    fallbacks: IntCounterVec,
    policy_errors: IntCounterVec,
    rejected: IntCounterVec,
    inflight: IntGauge,
    active: IntGaugeVec,
    compiles: IntGauge,
    auto_rollbacks: IntCounterVec,
    policy_logs_dropped: IntCounter,
    upload_rejections: IntCounterVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric")
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()), labels).expect("a valid metric")
}

impl Metrics {
    /// Creates and registers every metric, plus the process collector (CPU, memory, file
    /// descriptors, threads, start time).
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Metrics {
            requests: counter(
                "relish_requests_total",
                "Rank requests answered, by surface, active policy version and what answered.",
                &["surface", "policy", "version", "answered_by"],
            ),
            request_seconds: histogram(
                "relish_request_duration_seconds",
                "Time from receiving a rank request to its answer, by surface and active policy version.",
                &["surface", "policy", "version"],
            ),
            policy_seconds: histogram(
                "relish_policy_call_duration_seconds",
                "Time of the active policy's call (fresh instance, copy in, rank, copy out, validation).",
                &["surface", "policy", "version"],
            ),
            fallbacks: counter(
                "relish_fallbacks_total",
                "Answers not given by the active policy, by reason and by what answered instead.",
                &["surface", "policy", "version", "reason", "answered_by"],
            ),
            policy_errors: counter(
                "relish_policy_errors_total",
                "Failed policy calls (active or fallback policy), by reason.",
                &["policy", "version", "reason"],
            ),
            rejected: counter(
                "relish_rejected_requests_total",
                "Requests answered with an error status, by status and reason.",
                &["status", "reason"],
            ),
            inflight: IntGauge::new("relish_inflight_requests", "Rank requests being answered now.").expect("valid"),
            active: IntGaugeVec::new(
                Opts::new("relish_active_policy", "1 for the policy version active on each surface."),
                &["surface", "policy", "version", "digest"],
            )
            .expect("valid"),
            compiles: IntGauge::new(
                "relish_compiles_total",
                "Components compiled from source since start (not loaded from artifacts).",
            )
            .expect("valid"),
            auto_rollbacks: counter(
                "relish_auto_rollbacks_total",
                "Automatic rollbacks of a failing version, by surface.",
                &["surface"],
            ),
            policy_logs_dropped: IntCounter::new(
                "relish_policy_log_limit_total",
                "Calls stopped for logging past their budget.",
            )
            .expect("valid"),
            upload_rejections: counter(
                "relish_upload_rejections_total",
                "Uploads refused because the component is not a usable policy, by reason.",
                &["reason"],
            ),
            registry,
        };
        let r = &metrics.registry;
        let register = |c: Box<dyn prometheus::core::Collector>| r.register(c).expect("a metric registered once");
        register(Box::new(metrics.requests.clone()));
        register(Box::new(metrics.request_seconds.clone()));
        register(Box::new(metrics.policy_seconds.clone()));
        register(Box::new(metrics.fallbacks.clone()));
        register(Box::new(metrics.policy_errors.clone()));
        register(Box::new(metrics.rejected.clone()));
        register(Box::new(metrics.inflight.clone()));
        register(Box::new(metrics.active.clone()));
        register(Box::new(metrics.compiles.clone()));
        register(Box::new(metrics.auto_rollbacks.clone()));
        register(Box::new(metrics.policy_logs_dropped.clone()));
        register(Box::new(metrics.upload_rejections.clone()));
        #[cfg(target_os = "linux")]
        register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        metrics
    }

    /// The handles one surface binding updates per request.
    pub fn binding(&self, surface: &str, policy: &str, version: &str) -> BindingMetrics {
        let labels = [surface, policy, version];
        BindingMetrics {
            answered: self.requests.with_label_values(&[surface, policy, version, "policy"]),
            request_seconds: self.request_seconds.with_label_values(&labels),
            policy_seconds: self.policy_seconds.with_label_values(&labels),
        }
    }

    /// Counts an answer that did not come from the active policy.
    pub fn fallback(&self, surface: &str, policy: &str, version: &str, reason: &str, answered_by: &str) {
        self.requests.with_label_values(&[surface, policy, version, answered_by]).inc();
        self.fallbacks.with_label_values(&[surface, policy, version, reason, answered_by]).inc();
    }

    /// Counts a failed policy call.
    pub fn policy_error(&self, policy: &str, version: &str, reason: &str) {
        self.policy_errors.with_label_values(&[policy, version, reason]).inc();
        if reason == "log-limit" {
            self.policy_logs_dropped.inc();
        }
    }

    /// Counts a request answered with an error status.
    pub fn rejected(&self, status: u16, reason: &str) {
        self.rejected.with_label_values(&[&status.to_string(), reason]).inc();
    }

    /// The in-flight gauge.
    pub fn inflight(&self) -> &IntGauge {
        &self.inflight
    }

    /// Records which version is active on a surface (replacing the surface's previous entry).
    pub fn set_active(&self, surface: &str, active: Option<(&str, &str, &str)>) {
        use prometheus::core::Collector as _;
        let stale: Vec<Vec<String>> = self
            .active
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .map(|m| m.get_label().iter().map(|l| l.value().to_owned()).collect::<Vec<_>>())
            .filter(|labels| labels.first().map(String::as_str) == Some(surface))
            .collect();
        for labels in stale {
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            let _ = self.active.remove_label_values(&labels);
        }
        if let Some((policy, version, digest)) = active {
            self.active.with_label_values(&[surface, policy, version, digest]).set(1);
        }
    }

    /// Counts an upload refused for the reason `reason` ([`crate::runtime::LoadError::code`]).
    pub fn upload_rejected(&self, reason: &str) {
        self.upload_rejections.with_label_values(&[reason]).inc();
    }

    /// Counts an automatic rollback.
    pub fn auto_rollback(&self, surface: &str) {
        self.auto_rollbacks.with_label_values(&[surface]).inc();
    }

    /// The Prometheus text exposition of every metric; `compiles` is read at scrape time.
    pub fn encode(&self, compiles: u64) -> Vec<u8> {
        self.compiles.set(compiles as i64);
        let mut out = Vec::with_capacity(16 << 10);
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding never fails");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Pre-resolved per-binding metric handles.
#[derive(Clone)]
pub struct BindingMetrics {
    /// Requests answered by the active policy.
    pub answered: IntCounter,
    /// Whole-request latency.
    pub request_seconds: Histogram,
    /// Active-policy call latency.
    pub policy_seconds: Histogram,
}
