//! Heartbeats: every host reports what it has applied in the hosts bucket (entries expire when a
//! host stops reporting), and `GET /v1/fleet` lists them with how far each is behind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::sync::Refusal;
use super::{Fleet, FleetError, lock, now, record};
use crate::control::Control;
use crate::control::plan::Revision;

/// What a host reports about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostReport {
    /// [`record::FORMAT`].
    pub format: u32,
    /// The host's name.
    pub host: String,
    /// Its data-plane address.
    pub addr: String,
    /// Its admin address.
    pub admin_addr: String,
    /// The Relish version it runs.
    pub relish: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it sent this report.
    pub reported_at: DateTime<Utc>,
    /// The last revision of the state bucket it applied.
    pub applied_revision: u64,
    /// The bucket's latest revision as it last saw it.
    pub head_revision: u64,
    /// Whether it has caught up with the fleet since it started.
    pub caught_up: bool,
    /// When it last applied a change.
    pub last_applied_at: Option<DateTime<Utc>>,
    /// From the last applied change's write to the fleet to this host applying it.
    pub lag_ms: Option<f64>,
    /// Why its last watch session failed, if it did.
    pub last_error: Option<String>,
    /// Entries it refused to apply, latest last.
    pub refused: Vec<Refusal>,
    /// The plan revision each surface serves here.
    pub surfaces: BTreeMap<String, Revision>,
}

/// A host in `GET /v1/fleet`.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    /// Its report.
    #[serde(flatten)]
    pub report: HostReport,
    /// Revisions of the state bucket it has not applied yet.
    pub behind: u64,
    /// Whether its last report is older than two heartbeats (it may be gone, or cut off).
    pub stale: bool,
}

/// `GET /v1/fleet`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// The NATS servers (without credentials).
    pub nats: String,
    /// The buckets.
    pub buckets: BTreeMap<&'static str, String>,
    /// The host that answers.
    pub host: String,
    /// The state bucket's latest revision.
    pub head_revision: u64,
    /// Every host that reported within the hosts bucket's age limit, by name.
    pub hosts: Vec<HostStatus>,
}

impl Fleet {
    /// What this host reports now.
    pub fn report(&self, control: Option<&Arc<Control>>) -> HostReport {
        let progress = *self.progress.borrow();
        let state = lock(&self.state);
        let surfaces = control
            .map(|c| c.registry().surfaces().into_iter().map(|s| (s.name.clone(), s.revision())).collect())
            .unwrap_or_default();
        HostReport {
            format: record::FORMAT,
            host: self.host.clone(),
            addr: self.addrs.0.to_string(),
            admin_addr: self.addrs.1.to_string(),
            relish: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started,
            reported_at: now(),
            applied_revision: progress.applied,
            head_revision: state.head,
            caught_up: progress.caught_up,
            last_applied_at: state.last_applied_at,
            lag_ms: state.last_lag_ms,
            last_error: state.last_error.clone(),
            refused: state.refused.iter().cloned().collect(),
            surfaces,
        }
    }

    /// Puts this host's report every `heartbeat_secs` until shutdown.
    pub(super) async fn heartbeat(self: Arc<Self>, control: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.config.heartbeat_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let Ok(buckets) = self.buckets().await else { continue };
            let value = serde_json::to_vec(&self.report(Some(&control))).expect("a report serialises");
            if let Err(error) = self.call("reporting to the fleet", buckets.hosts.put(&self.host, value.into())).await {
                tracing::debug!(host = %self.host, "heartbeat: {error}");
            }
        }
    }

    /// Every host of the fleet with its report, and how far behind it is.
    pub async fn status(&self) -> Result<FleetStatus, FleetError> {
        let buckets = self.buckets().await?;
        let head = self.head(&buckets).await?;
        let keys =
            async { buckets.hosts.keys().await?.try_collect::<Vec<String>>().await.map_err(async_nats::Error::from) };
        let keys = self.call("listing the hosts", keys).await?;
        let mut hosts = Vec::with_capacity(keys.len());
        let stale_after = chrono::Duration::seconds(2 * self.config.heartbeat_secs as i64);
        for key in keys {
            let Some(value) = self.call("reading a host", buckets.hosts.get(key.clone())).await? else { continue };
            match serde_json::from_slice::<HostReport>(&value) {
                Ok(report) => hosts.push(HostStatus {
                    behind: head.saturating_sub(report.applied_revision),
                    stale: now() - report.reported_at > stale_after,
                    report,
                }),
                Err(error) => tracing::warn!(host = %key, "an unreadable heartbeat: {error}"),
            }
        }
        hosts.sort_by(|a, b| a.report.host.cmp(&b.report.host));
        let c = &self.config;
        Ok(FleetStatus {
            nats: c.redacted(),
            buckets: BTreeMap::from([
                ("state", c.state_bucket.clone()),
                ("components", c.components_bucket.clone()),
                ("hosts", c.hosts_bucket.clone()),
            ]),
            host: self.host.clone(),
            head_revision: head,
            hosts,
        })
    }
}
