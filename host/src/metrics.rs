//! Prometheus metrics: one registry per server, scraped at `/metrics`.
//!
//! Per-request metrics are pre-resolved when a surface is bound ([`BindingMetrics`]), so the hot
//! path touches a few atomics and never hashes label values.

use std::collections::BTreeMap;

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
    shadow_calls: IntCounterVec,
    shadow_skipped: IntCounterVec,
    shadow_agreement: HistogramVec,
    shadow_seconds: HistogramVec,
    plan_revision: IntGaugeVec,
    arm_weight: IntGaugeVec,
    feature_incomplete: IntCounterVec,
}

/// Agreement buckets: Kendall's tau runs from -1, the other measures from 0, all to 1.
const AGREEMENT_BUCKETS: &[f64] = &[-0.5, 0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0];

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric")
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()), labels).expect("a valid metric")
}

impl Metrics {
    /// The registry, for parts that register metrics of their own (the feature stores).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Creates and registers every metric, plus the process collector (CPU, memory, file
    /// descriptors, threads, start time).
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Metrics {
            requests: counter(
                "relish_requests_total",
                "Rank requests answered, by surface, plan arm, its policy version and what answered.",
                &["surface", "arm", "policy", "version", "answered_by"],
            ),
            request_seconds: histogram(
                "relish_request_duration_seconds",
                "Time from receiving a rank request to its answer, by surface, plan arm and its policy version.",
                &["surface", "arm", "policy", "version"],
            ),
            policy_seconds: histogram(
                "relish_policy_call_duration_seconds",
                "Time of the arm's policy call (fresh instance, copy in, rank, copy out, validation).",
                &["surface", "arm", "policy", "version"],
            ),
            fallbacks: counter(
                "relish_fallbacks_total",
                "Answers not given by the arm's policy, by reason and by what answered instead.",
                &["surface", "arm", "policy", "version", "reason", "answered_by"],
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
                Opts::new("relish_active_policy", "1 for each arm (policy version) of each surface's plan."),
                &["surface", "arm", "policy", "version", "digest"],
            )
            .expect("valid"),
            compiles: IntGauge::new(
                "relish_compiles_total",
                "Components compiled from source since start (not loaded from artifacts).",
            )
            .expect("valid"),
            auto_rollbacks: counter(
                "relish_auto_rollbacks_total",
                "Automatic changes of a failing plan (an arm taken out, or a rollback), by surface.",
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
            shadow_calls: counter(
                "relish_shadow_calls_total",
                "Shadow calls, by surface, the arm compared with, shadow, and outcome (`ok` or the failure reason).",
                &["surface", "arm", "shadow", "outcome"],
            ),
            shadow_skipped: counter(
                "relish_shadow_skipped_total",
                "Shadow calls skipped because the surface's shadow calls were at their concurrency limit.",
                &["surface", "shadow"],
            ),
            shadow_agreement: HistogramVec::new(
                HistogramOpts::new(
                    "relish_shadow_agreement",
                    "Agreement of a shadow's answer with the answer sent: measure `top1`, `overlap` (overlap@k), \
                     `rbo` (rank-biased overlap, p = 0.9) or `kendall_tau`.",
                )
                .buckets(AGREEMENT_BUCKETS.to_vec()),
                &["surface", "arm", "shadow", "measure"],
            )
            .expect("a valid metric"),
            shadow_seconds: histogram(
                "relish_shadow_call_duration_seconds",
                "Time of a shadow's call, off the response path.",
                &["surface", "shadow"],
            ),
            plan_revision: IntGaugeVec::new(
                Opts::new("relish_plan_revision", "The plan revision each surface serves."),
                &["surface"],
            )
            .expect("valid"),
            arm_weight: IntGaugeVec::new(
                Opts::new(
                    "relish_plan_arm_weight",
                    "The weight, in basis points of 10000, of each arm of each surface's plan.",
                ),
                &["surface", "arm"],
            )
            .expect("valid"),
            feature_incomplete: counter(
                "relish_feature_incomplete_answers_total",
                "Answers whose policy found declared features missing after the feature lookup, by why: \
                 the store's failure (timeout, unavailable, ...), unknown-ids, or missing-values.",
                &["surface", "reason"],
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
        register(Box::new(metrics.shadow_calls.clone()));
        register(Box::new(metrics.shadow_skipped.clone()));
        register(Box::new(metrics.shadow_agreement.clone()));
        register(Box::new(metrics.shadow_seconds.clone()));
        register(Box::new(metrics.plan_revision.clone()));
        register(Box::new(metrics.arm_weight.clone()));
        register(Box::new(metrics.feature_incomplete.clone()));
        #[cfg(target_os = "linux")]
        register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        metrics
    }

    /// The handles one arm of a surface's plan updates per request.
    pub fn binding(&self, surface: &str, arm: &str, policy: &str, version: &str) -> BindingMetrics {
        let labels = [surface, arm, policy, version];
        BindingMetrics {
            answered: self.requests.with_label_values(&[surface, arm, policy, version, "policy"]),
            request_seconds: self.request_seconds.with_label_values(&labels),
            policy_seconds: self.policy_seconds.with_label_values(&labels),
        }
    }

    /// Counts an answer that did not come from the arm's policy.
    pub fn fallback(&self, surface: &str, arm: &str, policy: &str, version: &str, reason: &str, answered_by: &str) {
        self.requests.with_label_values(&[surface, arm, policy, version, answered_by]).inc();
        self.fallbacks.with_label_values(&[surface, arm, policy, version, reason, answered_by]).inc();
    }

    /// Counts a skipped shadow call.
    pub fn shadow_skipped(&self, surface: &str, shadow: &str) {
        self.shadow_skipped.with_label_values(&[surface, shadow]).inc();
    }

    /// Records one shadow call: its time, and its agreement with the answer sent or why it failed.
    pub fn shadow_call(
        &self,
        surface: &str,
        arm: &str,
        shadow: &str,
        seconds: f64,
        outcome: Result<crate::serving::compare::Agreement, &'static str>,
    ) {
        self.shadow_seconds.with_label_values(&[surface, shadow]).observe(seconds);
        match outcome {
            Ok(agreement) => {
                self.shadow_calls.with_label_values(&[surface, arm, shadow, "ok"]).inc();
                for (measure, value) in [
                    ("top1", agreement.top1),
                    ("overlap", agreement.overlap),
                    ("rbo", agreement.rbo),
                    ("kendall_tau", agreement.tau),
                ] {
                    self.shadow_agreement.with_label_values(&[surface, arm, shadow, measure]).observe(value);
                }
            }
            Err(reason) => self.shadow_calls.with_label_values(&[surface, arm, shadow, reason]).inc(),
        }
    }

    /// Drops every series of `surface` whose arm or shadow (by name and version) the surface no
    /// longer serves, so that label cardinality follows what serves, not every deploy ever made.
    /// `arms` and `shadows` are (name, policy, version).
    pub fn retain(&self, surface: &str, arms: &[(&str, &str, &str)], shadows: &[&str]) {
        let keep_arm = |labels: &BTreeMap<String, String>| {
            let get = |key: &str| labels.get(key).map_or("", String::as_str);
            let arm = get("arm");
            arm == "none"
                || arms.iter().any(|&(name, policy, version)| {
                    arm == name
                        && (!labels.contains_key("policy") || (get("policy"), get("version")) == (policy, version))
                })
        };
        let keep_shadow = |labels: &BTreeMap<String, String>| {
            labels.get("shadow").is_some_and(|s| shadows.contains(&s.as_str()))
                && labels.get("arm").is_none_or(|a| arms.iter().any(|(name, _, _)| a == name))
        };
        forget(&self.requests, surface, keep_arm);
        forget(&self.request_seconds, surface, keep_arm);
        forget(&self.policy_seconds, surface, keep_arm);
        forget(&self.fallbacks, surface, keep_arm);
        forget(&self.active, surface, keep_arm);
        forget(&self.arm_weight, surface, keep_arm);
        forget(&self.shadow_calls, surface, keep_shadow);
        forget(&self.shadow_skipped, surface, keep_shadow);
        forget(&self.shadow_agreement, surface, keep_shadow);
        forget(&self.shadow_seconds, surface, keep_shadow);
    }

    /// Records a surface's plan revision.
    pub fn set_revision(&self, surface: &str, revision: u64) {
        self.plan_revision.with_label_values(&[surface]).set(revision as i64);
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

    /// Records the arms of a surface's plan, with their weights.
    pub fn set_arms(&self, surface: &str, arms: &[(&str, &str, &str, &str, u16)]) {
        for &(name, policy, version, digest, weight) in arms {
            self.active.with_label_values(&[surface, name, policy, version, digest]).set(1);
            self.arm_weight.with_label_values(&[surface, name]).set(i64::from(weight));
        }
    }

    /// Counts an answer given with declared features missing, for `reason`.
    pub fn feature_incomplete(&self, surface: &str, reason: &str) {
        self.feature_incomplete.with_label_values(&[surface, reason]).inc();
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

/// Removes the series of `vec` labelled with `surface` that `keep` refuses.
fn forget<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    surface: &str,
    keep: impl Fn(&BTreeMap<String, String>) -> bool,
) {
    use prometheus::core::Collector as _;
    let families = vec.collect();
    let Some(family) = families.first() else { return };
    for metric in family.get_metric() {
        let labels: BTreeMap<String, String> =
            metric.get_label().iter().map(|l| (l.name().to_owned(), l.value().to_owned())).collect();
        if labels.get("surface").map(String::as_str) != Some(surface) || keep(&labels) {
            continue;
        }
        let by_name: std::collections::HashMap<&str, &str> =
            labels.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        let _ = vec.remove(&by_name);
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
