//! The watch of the state bucket: what every host of the fleet applies, in the bucket's order,
//! and the periodic reconcile that catches what a watch missed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::record::{self, Key, PlanRecord, Position, VersionRecord, version_key};
use super::{Buckets, Fleet, lock, now};
use crate::control::{Applied, Change, ChangeError, Control, PlanSpec};
use crate::registry::{self, Prepare, Registry};

/// The most refusals a host remembers (and reports).
const REFUSALS: usize = 16;

/// An entry of the state bucket this host did not apply, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The bucket revision.
    pub revision: u64,
    /// The key.
    pub key: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What the watch knows besides its progress.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// The latest refusals, oldest first.
    pub refused: VecDeque<Refusal>,
    /// The last revision processed per key (by the watch or the reconcile).
    pub per_key: HashMap<String, u64>,
    /// The bucket's latest revision, as last seen.
    pub head: u64,
    /// The revision the watch must reach to have caught up (the head when the host started).
    pub target: Option<u64>,
    /// When the watch last applied an entry.
    pub last_applied_at: Option<DateTime<Utc>>,
    /// From the last entry's write to applying it.
    pub last_lag_ms: Option<f64>,
    /// The bucket's creation time: a bucket made again starts its revisions over.
    pub created: Option<i128>,
    /// Why the last watch session ended, if it failed.
    pub last_error: Option<String>,
}

/// What processing one entry did.
enum Outcome {
    Applied,
    Unchanged,
    Ignored,
}

impl Fleet {
    /// Follows the fleet until shutdown: watches the state bucket (resuming from `fleet.json`),
    /// reconciles periodically, reports heartbeats, and once caught up publishes the configured
    /// plans of surfaces the fleet has none for (`seeds`).
    pub async fn run(
        self: Arc<Self>,
        control: Arc<Control>,
        seeds: Vec<(String, PlanSpec)>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let heartbeat = tokio::spawn(self.clone().heartbeat(control.clone(), shutdown.clone()));
        let mut seeded = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(&control, &seeds, &mut seeded, &mut shutdown).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(host = %self.host, "fleet watch: {error}; starting again in {backoff:?}");
                    lock(&self.state).last_error = Some(error);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => break,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        self.save_position();
        let _ = heartbeat.await;
    }

    async fn session(
        &self,
        control: &Arc<Control>,
        seeds: &[(String, PlanSpec)],
        seeded: &mut bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), String> {
        let buckets = self.buckets().await.map_err(|e| e.to_string())?;
        let mut stream = buckets.state.stream.clone();
        let info = self.call("reading the state bucket", stream.info()).await.map_err(|e| e.to_string())?;
        let head = info.state.last_sequence;
        let created = info.created.unix_timestamp_nanos();
        let mut applied = self.progress.borrow().applied;
        {
            let mut state = lock(&self.state);
            if state.created.is_some_and(|c| c != created) {
                tracing::warn!(host = %self.host, "the fleet's state bucket was made again: replaying it");
                applied = 0;
                state.per_key.clear();
            } else if state.created.is_none() {
                let saved = Position::read(&self.data_dir)
                    .filter(|p| p.bucket == self.config.state_bucket && p.created == created);
                applied = applied.max(saved.map_or(0, |p| p.applied));
            }
            state.created = Some(created);
            state.head = head;
            state.target.get_or_insert(head);
        }
        self.progress.send_modify(|p| p.applied = applied);
        self.metrics.head.set(head as i64);
        self.metrics.applied.set(applied as i64);
        self.check_caught_up(control, &buckets, seeds, seeded).await;

        let mut watch = self
            .call("watching the state bucket", buckets.state.watch_all_from_revision(applied + 1))
            .await
            .map_err(|e| e.to_string())?;
        lock(&self.state).last_error = None;
        tracing::info!(host = %self.host, from = applied + 1, head, "watching the fleet");
        let period = Duration::from_secs(self.config.reconcile_secs);
        let mut reconcile = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut last_seen = applied;
        loop {
            tokio::select! {
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => {
                        let revision = entry.revision;
                        let pending = entry.delta;
                        self.process(&buckets, control, entry).await;
                        self.progress.send_modify(|p| p.applied = p.applied.max(revision));
                        self.metrics.applied.set(self.progress.borrow().applied as i64);
                        if pending == 0 || revision % 32 == 0 {
                            self.save_position();
                        }
                        self.check_caught_up(control, &buckets, seeds, seeded).await;
                    }
                    Some(Err(error)) => return Err(format!("the watch failed: {error}")),
                    None => return Err("the watch ended".to_owned()),
                },
                _ = reconcile.tick() => {
                    let head = self.head(&buckets).await.map_err(|e| e.to_string())?;
                    lock(&self.state).head = head;
                    self.metrics.head.set(head as i64);
                    let applied = self.progress.borrow().applied;
                    if head > applied && applied == last_seen {
                        // A watch that silently stops delivering (async-nats#1596): start it again.
                        self.metrics.watch_restarts.inc();
                        return Err(format!("the watch stopped delivering at revision {applied} of {head}"));
                    }
                    last_seen = applied;
                    self.reconcile(&buckets, control).await?;
                    self.check_caught_up(control, &buckets, seeds, seeded).await;
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    /// Marks the watch caught up once it has reached the revision the bucket had at startup, and
    /// then publishes the seeds (once).
    async fn check_caught_up(
        &self,
        control: &Arc<Control>,
        buckets: &Buckets,
        seeds: &[(String, PlanSpec)],
        seeded: &mut bool,
    ) {
        let target = lock(&self.state).target.unwrap_or(0);
        if !self.progress.borrow().caught_up && self.progress.borrow().applied >= target {
            tracing::info!(host = %self.host, revision = self.progress.borrow().applied, "caught up with the fleet");
            if !*seeded {
                *seeded = true;
                for (surface, plan) in seeds {
                    if let Err(error) = self.seed(control, buckets, surface, plan).await {
                        tracing::error!(host = %self.host, surface, "could not publish the surface's configured plan: {error}");
                    }
                }
            }
            self.progress.send_modify(|p| p.caught_up = true);
        }
    }

    /// Publishes a configured surface's plan if the fleet has none for it: the plan this host
    /// serves already (a host that stood alone before it joined keeps serving what it served), or
    /// else the configured policy. Another host seeding at the same time wins or loses the
    /// `create`; both outcomes are fine.
    async fn seed(
        &self,
        control: &Arc<Control>,
        buckets: &Buckets,
        surface: &str,
        plan: &PlanSpec,
    ) -> Result<(), String> {
        let key = record::plan_key(surface);
        let entry = self.call("reading the plan", buckets.state.entry(key.clone())).await.map_err(|e| e.to_string())?;
        if entry.is_some() {
            return Ok(());
        }
        let registry = control.registry().clone();
        let record = match registry.surface(surface).ok().and_then(|s| s.current().cloned()) {
            Some(current) => PlanRecord {
                format: record::FORMAT,
                surface: surface.to_owned(),
                revision: current.revision,
                plan: current.plan,
                actor: current.actor,
                at: current.at,
                reason: current.reason,
                restores: current.restores,
                rolled_back: None,
                failed: None,
                host: self.host.clone(),
            },
            None => {
                let change = Change::Seed { surface: surface.to_owned(), plan: plan.clone() };
                match super::decide(control, change).await.map_err(|e| e.to_string())? {
                    crate::control::Decided::Plan(new) => PlanRecord::decided(new, &self.host),
                    _ => return Ok(()),
                }
            }
        };
        for (policy, version, _) in record.plan.versions() {
            let info = registry.version(policy, version).map_err(|e| e.to_string())?;
            self.publish_version(buckets, &registry, &info).await?;
        }
        let value = serde_json::to_vec(&record).expect("a plan record serialises");
        match self.call("seeding the plan", buckets.state.create(&key, value.into())).await {
            Ok(_) => {
                tracing::info!(host = %self.host, surface, revision = record.revision, "published the surface's plan to the fleet");
                // Applied from the fleet now rather than when the watch gets there, so that the
                // host serves it by the time it turns ready; the watch then skips it.
                let entry = self.call("reading the plan", buckets.state.entry(key)).await.map_err(|e| e.to_string())?;
                if let Some(entry) = entry {
                    self.process(buckets, control, entry).await;
                }
                Ok(())
            }
            // Another host seeded it first: its plan arrives through the watch.
            Err(_) if self.current_revision(buckets, &key).await.is_ok_and(|r| r > 0) => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Re-reads every key and applies what the watch has not delivered (yet): a safety net for a
    /// watch that skipped or stopped, independent of the watch's position.
    async fn reconcile(&self, buckets: &Buckets, control: &Arc<Control>) -> Result<(), String> {
        let keys =
            async { buckets.state.keys().await?.try_collect::<Vec<String>>().await.map_err(async_nats::Error::from) };
        let keys = self.call("listing the state bucket", keys).await.map_err(|e| e.to_string())?;
        let mut behind = 0;
        for key in keys {
            let Some(entry) =
                self.call("reading an entry", buckets.state.entry(key.clone())).await.map_err(|e| e.to_string())?
            else {
                continue;
            };
            let seen = lock(&self.state).per_key.get(&key).copied().unwrap_or(0);
            if entry.revision > seen {
                behind += 1;
                self.process(buckets, control, entry).await;
            }
        }
        if behind > 0 {
            tracing::info!(host = %self.host, keys = behind, "reconcile applied entries the watch had not delivered yet");
        }
        Ok(())
    }

    /// Applies one entry (once: an entry whose key has been processed at this revision or later
    /// is skipped). A failure is a refusal: logged, counted, reported, and the watch goes on.
    async fn process(&self, buckets: &Buckets, control: &Arc<Control>, entry: kv::Entry) {
        let revision = entry.revision;
        if lock(&self.state).per_key.get(&entry.key).is_some_and(|&seen| seen >= revision) {
            return;
        }
        let key = Key::parse(&entry.key);
        let kind = match &key {
            Some(Key::Version { .. }) if entry.operation == kv::Operation::Put => "version",
            Some(Key::Version { .. }) => "delete",
            Some(Key::Plan(_)) => "plan",
            None => "other",
        };
        let outcome = match key {
            Some(Key::Version { policy, version }) => match entry.operation {
                kv::Operation::Put => self.apply_version(buckets, control.registry(), &entry.key, &entry.value).await,
                kv::Operation::Delete | kv::Operation::Purge => self.apply_delete(control, policy, version).await,
            },
            Some(Key::Plan(surface)) => match entry.operation {
                kv::Operation::Put => self.apply_plan(buckets, control, &surface, &entry.key, &entry.value).await,
                _ => {
                    tracing::warn!(host = %self.host, surface, "the fleet's plan of the surface was deleted; this host keeps serving it");
                    Ok(Outcome::Ignored)
                }
            },
            None => {
                tracing::warn!(host = %self.host, key = %entry.key, "a key of the state bucket that Relish does not write: ignored");
                Ok(Outcome::Ignored)
            }
        };
        let label = match &outcome {
            Ok(Outcome::Applied) => "applied",
            Ok(Outcome::Unchanged) => "unchanged",
            Ok(Outcome::Ignored) => "ignored",
            Err(_) => "refused",
        };
        self.metrics.entries.with_label_values(&[kind, label]).inc();
        let now = now();
        let written: DateTime<Utc> =
            DateTime::from_timestamp_nanos(i64::try_from(entry.created.unix_timestamp_nanos()).unwrap_or(i64::MAX));
        let lag = (now - written).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        let mut state = lock(&self.state);
        state.per_key.insert(entry.key.clone(), revision);
        if let Err(reason) = outcome {
            tracing::error!(host = %self.host, key = %entry.key, revision, "refused an entry of the fleet: {reason}");
            if state.refused.len() == REFUSALS {
                state.refused.pop_front();
            }
            state.refused.push_back(Refusal { revision, key: entry.key, reason, at: now });
        } else if matches!(label, "applied") {
            self.metrics.lag.observe(lag);
            state.last_applied_at = Some(now);
            state.last_lag_ms = Some(lag * 1000.0);
        }
    }

    async fn apply_version(
        &self,
        buckets: &Buckets,
        registry: &Arc<Registry>,
        key: &str,
        value: &[u8],
    ) -> Result<Outcome, String> {
        let record: VersionRecord = record::decode(key, value)?;
        if version_key(&record.policy, &record.version) != key {
            return Err(format!("`{key}` holds the record of {}@{}", record.policy, record.version));
        }
        self.ensure_version(buckets, registry, &record).await
    }

    /// Stores a version of the fleet here, unless it is stored already: the bytes this host
    /// compiled for its own upload, or else fetched and checked against the digest.
    async fn ensure_version(
        &self,
        buckets: &Buckets,
        registry: &Arc<Registry>,
        record: &VersionRecord,
    ) -> Result<Outcome, String> {
        match registry.version(&record.policy, &record.version) {
            Ok(info) if info.digest == record.digest => return Ok(Outcome::Unchanged),
            Ok(info) => {
                return Err(format!(
                    "{}@{} is stored here with {}, but the fleet's is {}",
                    record.policy, record.version, info.digest, record.digest
                ));
            }
            Err(_) => {}
        }
        let prepared = lock(&self.prepared)
            .remove(&record.digest)
            .filter(|p| p.policy == record.policy && p.version == record.version);
        let bytes = match prepared {
            Some(_) => None,
            None => Some(self.fetch_object(buckets, record.digest, record.size).await?),
        };
        let (registry, record) = (registry.clone(), record.clone());
        tokio::task::spawn_blocking(move || {
            let prepared = match (prepared, bytes) {
                (Some(prepared), _) => prepared,
                (None, Some(bytes)) => match registry.prepare_version(&record.policy, &record.version, &bytes)? {
                    Prepare::Stored(_) => return Ok(Outcome::Unchanged),
                    Prepare::Ready(prepared) => *prepared,
                },
                (None, None) => unreachable!("either prepared or fetched"),
            };
            registry.store_version(prepared, &record.uploaded_by, Some(record.uploaded_at))?;
            Ok::<_, registry::Error>(Outcome::Applied)
        })
        .await
        .map_err(|e| format!("the storing task failed: {e}"))?
        .map_err(|e| e.to_string())
    }

    async fn apply_delete(&self, control: &Arc<Control>, policy: String, version: String) -> Result<Outcome, String> {
        let control = control.clone();
        let change = Change::DeleteVersion { policy, version, actor: "fleet".to_owned(), own_only: false };
        match tokio::task::spawn_blocking(move || control.apply(change)).await {
            Ok(Ok(_)) => Ok(Outcome::Applied),
            Ok(Err(ChangeError::Registry(registry::Error::UnknownVersion { .. }))) => Ok(Outcome::Unchanged),
            Ok(Err(error)) => Err(format!("kept here: {error}")),
            Err(error) => Err(format!("the deleting task failed: {error}")),
        }
    }

    async fn apply_plan(
        &self,
        buckets: &Buckets,
        control: &Arc<Control>,
        surface: &str,
        key: &str,
        value: &[u8],
    ) -> Result<Outcome, String> {
        let record: PlanRecord = record::decode(key, value)?;
        if record.surface != surface {
            return Err(format!("`{key}` holds a plan of surface `{}`", record.surface));
        }
        // The versions first: a host that missed their records (or never had them, for a plan
        // older than its watch) fetches them now.
        let registry = control.registry();
        for (policy, version, digest) in record.plan.versions() {
            if registry.version(policy, version).is_ok_and(|v| v.digest == digest) {
                continue;
            }
            let version_key = version_key(policy, version);
            let stored = self.version_record(buckets, &version_key).await.map_err(|e| e.to_string())?;
            let version_record = match stored {
                Some((_, stored)) if stored.digest == digest => stored,
                _ => {
                    let info = self
                        .call("reading the component", buckets.components.info(record::object_name(digest)))
                        .await
                        .map_err(|e| format!("{policy}@{version} ({digest}) is not in the fleet: {e}"))?;
                    VersionRecord {
                        format: record::FORMAT,
                        policy: policy.to_owned(),
                        version: version.to_owned(),
                        digest,
                        size: info.size,
                        uploaded_by: "fleet".to_owned(),
                        uploaded_at: now(),
                        host: self.host.clone(),
                    }
                }
            };
            self.ensure_version(buckets, registry, &version_record).await?;
        }
        let control = control.clone();
        let change = Change::Replicate(Box::new(record.into_revision()));
        match tokio::task::spawn_blocking(move || control.apply(change)).await {
            Ok(Ok(Applied::Plan { changed: true, .. })) => Ok(Outcome::Applied),
            Ok(Ok(_)) => Ok(Outcome::Unchanged),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(format!("the applying task failed: {error}")),
        }
    }

    /// Keeps the watch's position in the data directory.
    fn save_position(&self) {
        let Some(created) = lock(&self.state).created else { return };
        let position = Position {
            format: record::FORMAT,
            bucket: self.config.state_bucket.clone(),
            created,
            applied: self.progress.borrow().applied,
        };
        if let Err(error) = position.write(&self.data_dir) {
            tracing::warn!(host = %self.host, "could not keep the fleet position in fleet.json: {error}");
        }
    }
}
