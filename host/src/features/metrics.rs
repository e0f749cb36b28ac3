//! A feature store's Prometheus metrics, registered on the server's registry.
//!
//! Every series carries the store's name as a constant `store` label, so several stores register
//! the same metric names on one registry side by side. Per-entity handles are resolved once per
//! entity kind ([`EntityMetrics`]), so the hot path touches a few atomics and hashes no label.

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Lookup latency buckets, 50 µs to 100 ms: a warm lookup is tens of µs, a Redis round trip
/// a few hundred, a deadline a few ms.
const BUCKETS: &[f64] = &[0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1];

/// The metrics of one store.
pub(super) struct StoreMetrics {
    store: String,
    lookups: IntCounterVec,
    errors: IntCounterVec,
    pub(super) refused: IntCounterVec,
    pub(super) duration: Histogram,
    pub(super) round_trips: IntCounter,
    pub(super) entries: IntGauge,
    pub(super) bytes: IntGauge,
    pub(super) reloads: IntCounterVec,
}

/// A store's lookup counters for one entity kind, one per outcome.
pub(super) struct EntityMetrics {
    /// Answered from a fresh cache entry.
    pub(super) hit: IntCounter,
    /// Answered from a fresh negative entry: the store has no such id.
    pub(super) absent: IntCounter,
    /// Went to the store (or waited for another lookup's fetch of it).
    pub(super) miss: IntCounter,
    /// Went to the store, which failed, and an expired entry answered.
    pub(super) stale: IntCounter,
}

fn opts(store: &str, name: &str, help: &str) -> Opts {
    Opts::new(name, help).const_label("store", store)
}

pub(super) fn refused_counter(store: &str) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(
        opts(
            store,
            "relish_feature_values_refused_total",
            "Stored feature values refused (missing to the policy), by entity kind and reason.",
        ),
        &["entity", "reason"],
    )
}

impl StoreMetrics {
    /// Creates the metrics of `store` and registers them on `registry`.
    pub(super) fn new(store: &str, registry: &Registry) -> anyhow::Result<Self> {
        let metrics = StoreMetrics {
            store: store.to_owned(),
            lookups: IntCounterVec::new(
                opts(
                    store,
                    "relish_feature_lookups_total",
                    "Entities looked up, by entity kind and outcome (hit, absent: fresh in the cache; \
                     miss: from the store; stale: the store failed and an expired entry answered).",
                ),
                &["entity", "outcome"],
            )?,
            errors: IntCounterVec::new(
                opts(
                    store,
                    "relish_feature_errors_total",
                    "Lookups the store did not fully answer, by reason (timeout, unavailable, store-error).",
                ),
                &["reason"],
            )?,
            refused: refused_counter(store)?,
            duration: Histogram::with_opts(
                HistogramOpts::new("relish_feature_lookup_duration_seconds", "Time of a feature lookup.")
                    .const_label("store", store)
                    .buckets(BUCKETS.to_vec()),
            )?,
            round_trips: IntCounter::with_opts(opts(
                store,
                "relish_feature_round_trips_total",
                "Fetches from the store (one per lookup at most).",
            ))?,
            entries: IntGauge::with_opts(opts(store, "relish_feature_cache_entries", "Entries in the feature cache."))?,
            bytes: IntGauge::with_opts(opts(
                store,
                "relish_feature_cache_bytes",
                "Estimated bytes of the entries in the feature cache.",
            ))?,
            reloads: IntCounterVec::new(
                opts(
                    store,
                    "relish_feature_reloads_total",
                    "Reloads of a memory store's file, by outcome (ok, error).",
                ),
                &["outcome"],
            )?,
        };
        let collectors: [Box<dyn Collector>; 8] = [
            Box::new(metrics.lookups.clone()),
            Box::new(metrics.errors.clone()),
            Box::new(metrics.refused.clone()),
            Box::new(metrics.duration.clone()),
            Box::new(metrics.round_trips.clone()),
            Box::new(metrics.entries.clone()),
            Box::new(metrics.bytes.clone()),
            Box::new(metrics.reloads.clone()),
        ];
        for collector in collectors {
            registry.register(collector).map_err(|e| {
                anyhow::anyhow!(
                    "cannot register the metrics of feature store `{store}` (a store of that name is already open?): {e}"
                )
            })?;
        }
        Ok(metrics)
    }

    /// The counters of `entity`.
    pub(super) fn entity(&self, entity: &str) -> EntityMetrics {
        let outcome = |outcome: &str| self.lookups.with_label_values(&[entity, outcome]);
        EntityMetrics { hit: outcome("hit"), absent: outcome("absent"), miss: outcome("miss"), stale: outcome("stale") }
    }

    /// Counts a lookup the store did not fully answer.
    pub(super) fn error(&self, reason: &str) {
        self.errors.with_label_values(&[reason]).inc();
    }

    /// The store's name.
    pub(super) fn store(&self) -> &str {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_stores_register_side_by_side_and_one_name_twice_is_refused() {
        let registry = Registry::new();
        let main = StoreMetrics::new("main", &registry).unwrap();
        let local = StoreMetrics::new("local", &registry).unwrap();
        main.entity("venue").hit.inc();
        local.entity("venue").hit.inc_by(2);
        local.error("timeout");
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(r#"relish_feature_lookups_total{entity="venue",outcome="hit",store="main"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"relish_feature_lookups_total{entity="venue",outcome="hit",store="local"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"relish_feature_errors_total{reason="timeout",store="local"} 1"#), "{text}");
        let again = StoreMetrics::new("main", &registry).err().unwrap();
        assert!(again.to_string().contains("feature store `main`"), "{again}");
    }
}
