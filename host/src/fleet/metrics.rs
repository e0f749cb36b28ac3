//! The fleet's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Metrics of this host's part in the fleet.
pub struct FleetMetrics {
    /// 1 while the NATS connection is up.
    pub connected: IntGauge,
    /// The last revision of the state bucket this host applied.
    pub applied: IntGauge,
    /// The state bucket's latest revision, as last seen.
    pub head: IntGauge,
    /// Entries of the state bucket this host processed, by kind and outcome.
    pub entries: IntCounterVec,
    /// Seconds from an entry's write to this host applying it.
    pub lag: Histogram,
    /// Watches started again after they stopped delivering (or ended).
    pub watch_restarts: IntCounter,
    /// Admin writes to the fleet, by outcome.
    pub writes: IntCounterVec,
}

impl FleetMetrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let connected = IntGauge::new("relish_fleet_connected", "1 while this host's NATS connection is up")?;
        let applied = IntGauge::new(
            "relish_fleet_applied_revision",
            "The last revision of the fleet's state bucket applied here",
        )?;
        let head =
            IntGauge::new("relish_fleet_head_revision", "The fleet state bucket's latest revision, as last seen")?;
        let entries = IntCounterVec::new(
            Opts::new("relish_fleet_entries_total", "Entries of the fleet's state bucket processed by this host"),
            &["kind", "outcome"],
        )?;
        let lag = Histogram::with_opts(
            HistogramOpts::new(
                "relish_fleet_apply_lag_seconds",
                "From an entry's write to the fleet to this host applying it",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0]),
        )?;
        let watch_restarts = IntCounter::new(
            "relish_fleet_watch_restarts_total",
            "Watches of the fleet started again after they stopped",
        )?;
        let writes = IntCounterVec::new(
            Opts::new("relish_fleet_writes_total", "Admin writes to the fleet, by outcome"),
            &["outcome"],
        )?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(applied.clone()))?;
        registry.register(Box::new(head.clone()))?;
        registry.register(Box::new(entries.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(watch_restarts.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        Ok(FleetMetrics { connected, applied, head, entries, lag, watch_restarts, writes })
    }
}
