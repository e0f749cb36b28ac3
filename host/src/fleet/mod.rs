//! The fleet: every host serves the same versions and plans, through NATS JetStream.
//!
//! Without `[fleet]` a host stands alone: its registry in its data directory is the only truth,
//! and the admin API applies changes to it directly. With `[fleet]`, three JetStream buckets hold
//! the fleet's truth and every host's registry is a replica of it:
//!
//! ```text
//! relish-components (object store)  sha256/<hex>              component bytes, named by digest
//! relish-state      (KV, history)    versions.<policy>/<ver>   VersionRecord (JSON)
//!                                    plans.<surface>           PlanRecord: the current plan revision
//! relish-hosts      (KV, max age)    <host>                    HostReport: a heartbeat
//! ```
//!
//! **Writes.** An admin call on any host decides its change with the host's own control plane
//! ([`Control::decide`]: the same validation, buckets and rollback targets as a stand-alone host)
//! and writes the result to the state bucket, never to its own registry:
//!
//! - an upload is compiled and checked first, its bytes stored as an object named by their
//!   digest (immutable: a name is never reused for other bytes), then its record created with
//!   `create` (so two uploads of one version with different bytes cannot both win);
//! - a plan is written with a compare-and-swap on the key's revision (`update(key, value,
//!   revision)`), after this host has applied that revision itself, so it decides on the
//!   current plan; when another write came first the change is decided again on the new plan, or
//!   refused with `409` and the current revision if the caller named the revision it expected.
//!   Two admins writing at once never lose an update.
//!
//! The call returns once this host has applied its own write from the watch ([`Fleet::run`]): what the
//! caller reads next on this host includes it.
//!
//! **Every host applies** what the watch of the state bucket delivers, in the bucket's order:
//! version records by fetching and verifying the object and storing it (the compiled artifact
//! goes to the data directory like any upload's), plan records through the control plane
//! ([`Change::Replicate`]) under the revision number the deciding host gave them. A delivery
//! applied already is recognised and skipped, so replaying is harmless: a restart resumes from
//! the position kept in `fleet.json` (a little before, at worst), and a periodic reconcile
//! re-reads every key and restarts a watch that stopped delivering.
//!
//! **NATS down.** Serving never touches NATS: hosts answer from what they applied last, and a host
//! restarted meanwhile serves its data directory. Admin writes are refused with `503` naming the
//! fleet store; nothing is half-applied (an object without a record is only unreferenced bytes).

mod config;
mod hosts;
mod metrics;
pub mod record;
mod sync;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store};
use tokio::io::AsyncReadExt as _;
use tokio::sync::{OnceCell, watch};

pub use self::config::{FleetConfig, FleetConfigError, default_host, is_host_name};
pub use self::hosts::{FleetStatus, HostReport};
use self::metrics::FleetMetrics;
use self::record::{PlanRecord, VersionRecord, object_name, plan_key, version_key};
use crate::control::plan::Revision;
use crate::control::{Applied, Change, ChangeError, Control, Decided};
use crate::registry::{self, Prepare, Prepared, Put, Registry, VersionInfo};
use crate::runtime::Digest;

/// Why a write to the fleet was refused or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// NATS or JetStream cannot be reached: `503`.
    #[error("the fleet store (NATS JetStream at {nats}) is unreachable: {detail}; nothing was changed")]
    Unavailable {
        /// The servers.
        nats: String,
        /// What failed.
        detail: String,
    },
    /// The change was refused by the control plane.
    #[error(transparent)]
    Change(#[from] ChangeError),
    /// The upload was refused by the registry.
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// Another write came first: `409`.
    #[error("{message}")]
    Conflict {
        /// What happened.
        message: String,
        /// The surface's current plan revision.
        current: Option<Revision>,
    },
    /// This host has not caught up with the fleet, so it cannot decide a change on the current
    /// state: `503`.
    #[error(
        "this host has applied revision {applied} of the fleet's {head} and did not catch up within {waited:?}; \
         nothing was changed (try again, or another host)"
    )]
    Behind {
        /// What this host applied.
        applied: u64,
        /// The fleet's latest revision.
        head: u64,
        /// How long the call waited.
        waited: Duration,
    },
    /// The fleet took the write, but this host did not apply it in time: `504`.
    #[error("written to the fleet at revision {revision}, but this host has not applied it within {waited:?}")]
    NotApplied {
        /// The state bucket's revision of the write.
        revision: u64,
        /// How long the call waited.
        waited: Duration,
    },
    /// The fleet took the write, and this host refused to apply it: `500`.
    #[error("written to the fleet at revision {revision}, but this host refused to apply it: {reason}")]
    Refused {
        /// The state bucket's revision of the write.
        revision: u64,
        /// Why.
        reason: String,
    },
}

impl FleetError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            FleetError::Unavailable { .. } | FleetError::Behind { .. } => 503,
            FleetError::Change(error) => error.status(),
            FleetError::Registry(error) => error.status(),
            FleetError::Conflict { .. } => 409,
            FleetError::NotApplied { .. } => 504,
            FleetError::Refused { .. } => 500,
        }
    }
}

/// The three buckets, opened (or created) once NATS answers.
#[derive(Clone)]
struct Buckets {
    state: kv::Store,
    components: object_store::ObjectStore,
    hosts: kv::Store,
}

/// What the watch has done, for writers waiting on their own write and for readiness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    /// The last revision of the state bucket processed (applied or refused).
    applied: u64,
    /// Whether the watch has caught up with the bucket as it was when the host started.
    caught_up: bool,
}

/// One host's membership in the fleet. See the [module documentation](self).
pub struct Fleet {
    config: FleetConfig,
    host: String,
    /// The data-plane and admin addresses, for the heartbeat.
    addrs: (SocketAddr, SocketAddr),
    data_dir: PathBuf,
    max_component_bytes: usize,
    client: async_nats::Client,
    js: jetstream::Context,
    buckets: OnceCell<Buckets>,
    progress: watch::Sender<Progress>,
    state: Mutex<sync::SyncState>,
    /// Uploads this host checked and compiled, waiting for the watch to deliver them back.
    prepared: Mutex<HashMap<Digest, Prepared>>,
    metrics: FleetMetrics,
    started: chrono::DateTime<chrono::Utc>,
}

/// The time now.
fn now() -> chrono::DateTime<chrono::Utc> {
    std::time::SystemTime::now().into()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the fleet host runs.
pub struct Membership {
    /// The data-plane address.
    pub addr: SocketAddr,
    /// The admin address.
    pub admin_addr: SocketAddr,
    /// The data directory (for `fleet.json`).
    pub data_dir: PathBuf,
    /// The largest component accepted.
    pub max_component_bytes: usize,
}

impl Fleet {
    /// Connects to the fleet's NATS. Returns at once: the connection is made (and remade after
    /// any outage) in the background, so a host whose NATS is down still starts and serves.
    pub async fn connect(
        config: FleetConfig,
        membership: Membership,
        metrics: &prometheus::Registry,
    ) -> anyhow::Result<Arc<Fleet>> {
        let host = config.host.clone().unwrap_or_else(|| default_host(membership.addr.port()));
        let metrics = FleetMetrics::new(metrics)?;
        let connected = metrics.connected.clone();
        let name = host.clone();
        let mut options = match (&config.credentials, &config.nkey_seed) {
            (Some(path), _) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| anyhow::anyhow!("fleet.credentials: reading {}: {e}", path.display()))?,
            (None, Some(path)) => {
                let seed = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("fleet.nkey_seed: reading {}: {e}", path.display()))?;
                async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
            }
            (None, None) => async_nats::ConnectOptions::new(),
        };
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let write_timeout = Duration::from_millis(config.write_timeout_ms);
        let client = options
            .require_tls(config.tls_required)
            .name(format!("relish {host}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(write_timeout))
            .event_callback(move |event| {
                let (connected, name) = (connected.clone(), name.clone());
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            connected.set(1);
                            tracing::info!(host = %name, "connected to the fleet's NATS");
                        }
                        async_nats::Event::Disconnected => {
                            connected.set(0);
                            tracing::error!(host = %name, "lost the fleet's NATS: serving what was applied last");
                        }
                        other => tracing::warn!(host = %name, "fleet NATS: {other}"),
                    }
                }
            })
            .connect(config.servers())
            .await
            .map_err(|e| anyhow::anyhow!("fleet.nats: {e}"))?;
        let js = jetstream::new(client.clone());
        Ok(Arc::new(Fleet {
            host,
            addrs: (membership.addr, membership.admin_addr),
            data_dir: membership.data_dir,
            max_component_bytes: membership.max_component_bytes,
            client,
            js,
            buckets: OnceCell::new(),
            progress: watch::Sender::new(Progress::default()),
            state: Mutex::new(sync::SyncState::default()),
            prepared: Mutex::new(HashMap::new()),
            metrics,
            started: now(),
            config,
        }))
    }

    /// This host's name in the fleet.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The fleet's JetStream (the decision log publishes to it).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.config.write_timeout_ms)
    }

    fn unavailable(&self, detail: impl std::fmt::Display) -> FleetError {
        FleetError::Unavailable { nats: self.config.redacted(), detail: detail.to_string() }
    }

    /// Runs a NATS call with the write timeout; a timeout or an error is [`FleetError::Unavailable`].
    async fn call<T, E: std::fmt::Display>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(self.write_timeout(), call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.unavailable(format!("{what}: {error}"))),
            Err(_) => Err(self.unavailable(format!("{what}: no answer within {:?}", self.write_timeout()))),
        }
    }

    /// Fails fast while the connection is down, instead of waiting for a timeout.
    fn connected(&self) -> Result<(), FleetError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(self.unavailable(format!("the connection is {state:?}").to_lowercase())),
        }
    }

    /// The buckets, opened (created if missing) on first use.
    async fn buckets(&self) -> Result<Buckets, FleetError> {
        self.connected()?;
        self.buckets.get_or_try_init(|| self.open_buckets()).await.cloned()
    }

    async fn open_buckets(&self) -> Result<Buckets, FleetError> {
        let c = &self.config;
        let state = kv::Config {
            bucket: c.state_bucket.clone(),
            description: "Relish: version records and plans".to_owned(),
            history: c.history,
            num_replicas: c.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let state = self.key_value(state).await?;
        let hosts = kv::Config {
            bucket: c.hosts_bucket.clone(),
            description: "Relish: host heartbeats".to_owned(),
            history: 1,
            max_age: Duration::from_secs(3 * c.heartbeat_secs),
            num_replicas: c.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let hosts = self.key_value(hosts).await?;
        let name = c.components_bucket.clone();
        let components = match self.call("opening the components bucket", self.js.get_object_store(&name)).await {
            Ok(store) => store,
            Err(_) => {
                let config = object_store::Config {
                    bucket: name.clone(),
                    description: Some("Relish: component bytes by digest".to_owned()),
                    num_replicas: c.replicas,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                };
                match self.call("creating the components bucket", self.js.create_object_store(config)).await {
                    Ok(store) => store,
                    // Another host created it in between.
                    Err(error) => self
                        .call("opening the components bucket", self.js.get_object_store(&name))
                        .await
                        .map_err(|_| error)?,
                }
            }
        };
        tracing::info!(host = %self.host, state = %c.state_bucket, components = %c.components_bucket, hosts = %c.hosts_bucket, "fleet buckets open");
        Ok(Buckets { state, components, hosts })
    }

    async fn key_value(&self, config: kv::Config) -> Result<kv::Store, FleetError> {
        let name = config.bucket.clone();
        if let Ok(store) = self.call("opening a bucket", self.js.get_key_value(&name)).await {
            return Ok(store);
        }
        // The stream a KV bucket is, as `create_key_value` makes it: that call first reads the
        // account's JetStream limits, whose answer from servers before 2.10 (Debian's 2.9)
        // async-nats cannot parse, so the stream is created directly.
        let stream = jetstream::stream::Config {
            name: format!("KV_{name}"),
            description: Some(config.description),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: config.history,
            max_age: config.max_age,
            storage: config.storage,
            num_replicas: config.num_replicas,
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        let created = self.call(&format!("creating the bucket `{name}`"), self.js.get_or_create_stream(stream)).await;
        match self.call("opening a bucket", self.js.get_key_value(&name)).await {
            Ok(store) => Ok(store),
            Err(error) => Err(created.err().unwrap_or(error)),
        }
    }

    /// Waits until the watch has reached the state bucket's latest revision, so that a change is
    /// decided on everything the fleet holds.
    async fn catch_up(&self, buckets: &Buckets) -> Result<(), FleetError> {
        let head = self.head(buckets).await?;
        let mut progress = self.progress.subscribe();
        let waited = self.write_timeout();
        match tokio::time::timeout(waited, progress.wait_for(|p| p.applied >= head)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(FleetError::Behind { applied: self.progress.borrow().applied, head, waited }),
        }
    }

    /// Waits until the watch has processed `revision` of the state bucket, this host's own write.
    async fn wait_applied(&self, revision: u64) -> Result<(), FleetError> {
        let mut progress = self.progress.subscribe();
        let waited = self.write_timeout();
        match tokio::time::timeout(waited, progress.wait_for(|p| p.applied >= revision)).await {
            Ok(Ok(_)) => match self.refusal(revision) {
                Some(reason) => Err(FleetError::Refused { revision, reason }),
                None => Ok(()),
            },
            _ => Err(FleetError::NotApplied { revision, waited }),
        }
    }

    /// Waits until the watch has caught up with the state bucket as it was at startup; false if
    /// `timeout` passed first.
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        let mut progress = self.progress.subscribe();
        tokio::time::timeout(timeout, progress.wait_for(|p| p.caught_up)).await.is_ok()
    }

    /// Waits at startup until the watch has caught up with the state bucket as it was when the
    /// host started. Gives up after `timeout` only while no progress is made (NATS unreachable, or
    /// stuck): a long replay that keeps applying entries is waited for, so that the host never
    /// turns ready half caught up while the fleet answers.
    pub async fn catch_up_at_start(&self, timeout: Duration) -> bool {
        let start = tokio::time::Instant::now();
        let mut last = self.progress.borrow().applied;
        loop {
            if self.caught_up(Duration::from_secs(1).min(timeout)).await {
                return true;
            }
            let applied = self.progress.borrow().applied;
            let progressing = applied > last;
            last = applied;
            if start.elapsed() >= timeout && !progressing {
                return false;
            }
        }
    }

    /// Applies a change through the fleet: decided here, written to the state bucket, applied by
    /// every host from its watch (this one included, before this returns).
    pub async fn submit(&self, control: &Arc<Control>, change: Change) -> Result<Applied, FleetError> {
        let result = self.submit_inner(control, change).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(FleetError::Conflict { .. }) => "conflict",
            Err(FleetError::Unavailable { .. } | FleetError::Behind { .. }) => "unavailable",
            Err(FleetError::NotApplied { .. }) => "not-applied",
            Err(_) => "refused",
        };
        self.metrics.writes.with_label_values(&[outcome]).inc();
        result
    }

    async fn submit_inner(&self, control: &Arc<Control>, change: Change) -> Result<Applied, FleetError> {
        let buckets = self.buckets().await?;
        if let Change::DeleteVersion { policy, version, .. } = &change {
            let key = version_key(policy, version);
            self.catch_up(&buckets).await?;
            let info = control.registry().version(policy, version).map_err(ChangeError::from)?;
            match decide(control, change.clone()).await? {
                Decided::Delete { .. } => {}
                Decided::Nothing(applied) => return Ok(applied),
                Decided::Plan(_) => unreachable!("a deletion decides a deletion"),
            }
            self.call("deleting the version", buckets.state.delete(&key)).await?;
            // The delete marker's revision is the bucket's next: wait for the watch to pass it.
            let head = self.head(&buckets).await?;
            self.wait_applied(head).await?;
            return Ok(Applied::Deleted(info));
        }
        let surface = match &change {
            Change::SetPlan { surface, .. }
            | Change::Seed { surface, .. }
            | Change::Rollback { surface, .. }
            | Change::ArmFailed { surface, .. } => surface.clone(),
            Change::Replicate(_) | Change::DeleteVersion { .. } => {
                unreachable!("replicas come from the fleet; deletions are handled above")
            }
        };
        let expected = match &change {
            Change::SetPlan { expected_revision, .. } => *expected_revision,
            _ => None,
        };
        let key = plan_key(&surface);
        // A write that lost the race is decided again on the plan that won, a few times.
        for _ in 0..8 {
            // Decided on everything the fleet holds now (a version uploaded through another host
            // a moment ago included), then written only if the plan did not move meanwhile.
            let entry = self.call("reading the plan", buckets.state.entry(key.clone())).await?;
            let last = entry.as_ref().map(|e| e.revision);
            self.catch_up(&buckets).await?;
            let new = match decide(control, change.clone()).await? {
                Decided::Plan(new) => new,
                Decided::Nothing(applied) => return Ok(applied),
                Decided::Delete { .. } => unreachable!("a plan change decides a plan"),
            };
            let record = PlanRecord::decided(new, &self.host);
            let number = record.revision;
            let value = serde_json::to_vec(&record).expect("a plan record serialises").into();
            let written = match last {
                Some(last) => tokio::time::timeout(self.write_timeout(), buckets.state.update(&key, value, last))
                    .await
                    .map(|r| r.map_err(|e| (e.kind() == kv::UpdateErrorKind::WrongLastRevision, e.to_string()))),
                None => tokio::time::timeout(self.write_timeout(), buckets.state.create(&key, value))
                    .await
                    .map(|r| r.map_err(|e| (e.kind() == kv::CreateErrorKind::AlreadyExists, e.to_string()))),
            };
            match written {
                Ok(Ok(revision)) => {
                    self.wait_applied(revision).await?;
                    let current = control.registry().surface(&surface).map_err(ChangeError::from)?;
                    let stored = current.get(number).or_else(|| current.current()).cloned();
                    let revision = stored.ok_or_else(|| FleetError::Refused {
                        revision,
                        reason: format!("surface `{surface}` has no plan after applying it"),
                    })?;
                    return Ok(Applied::Plan { revision, changed: true });
                }
                Ok(Err((true, _))) => {
                    // Another host wrote first. With an expected revision, that is a conflict,
                    // unless what it wrote is the revision the caller expected (this host read
                    // the plan a moment before it): then decide again on it.
                    if let Some(expected) = expected {
                        let current = self.current_revision(&buckets, &key).await?;
                        if current == expected {
                            continue;
                        }
                        return Err(FleetError::Conflict {
                            message: format!(
                                "surface `{surface}`: expected revision {expected}, but another admin changed it to \
                                 revision {current} first"
                            ),
                            current: Some(current),
                        });
                    }
                }
                Ok(Err((false, error))) => return Err(self.unavailable(format!("writing the plan: {error}"))),
                Err(_) => {
                    return Err(
                        self.unavailable(format!("writing the plan: no answer within {:?}", self.write_timeout()))
                    );
                }
            }
        }
        Err(FleetError::Conflict {
            message: format!("surface `{surface}` keeps changing under this write; try again"),
            current: Some(control.latest(&surface)),
        })
    }

    /// The plan revision number the state bucket holds for a plan key.
    async fn current_revision(&self, buckets: &Buckets, key: &str) -> Result<Revision, FleetError> {
        let entry = self.call("reading the plan", buckets.state.entry(key.to_owned())).await?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| record::decode::<PlanRecord>(key, &e.value).ok())
            .map_or(0, |r| r.revision))
    }

    /// The state bucket's latest revision.
    async fn head(&self, buckets: &Buckets) -> Result<u64, FleetError> {
        let mut stream = buckets.state.stream.clone();
        let info = self.call("reading the state bucket", stream.info()).await?;
        Ok(info.state.last_sequence)
    }

    /// Stores a version in the fleet: checked and compiled here, bytes as an object named by
    /// digest, then its record; every host (this one before this returns) stores it from the watch.
    pub async fn upload(
        &self,
        registry: &Arc<Registry>,
        policy: &str,
        version: &str,
        bytes: bytes::Bytes,
        uploader: &str,
    ) -> Result<Put, FleetError> {
        let buckets = self.buckets().await?;
        let key = version_key(policy, version);
        let digest = Digest::of(&bytes);
        // Names first: a bad name is the caller's error even while NATS is fine.
        if !crate::runtime::is_identifier(policy) || !crate::runtime::is_identifier(version) {
            return Err(registry.prepare_version(policy, version, &bytes).expect_err("a bad name is refused").into());
        }
        if let Some(existing) = self.version_record(&buckets, &key).await? {
            return self.stored_already(registry, existing, digest).await;
        }
        let prepared = {
            let (registry, policy, version, bytes) =
                (registry.clone(), policy.to_owned(), version.to_owned(), bytes.clone());
            tokio::task::spawn_blocking(move || registry.prepare_version(&policy, &version, &bytes))
                .await
                .map_err(|e| FleetError::Refused { revision: 0, reason: format!("the upload task failed: {e}") })??
        };
        let size = bytes.len();
        match prepared {
            Prepare::Ready(prepared) => {
                lock(&self.prepared).insert(digest, *prepared);
            }
            // Stored here already (a bundled policy, or a version this host had before it joined
            // the fleet): publish it.
            Prepare::Stored(_) => {}
        }
        self.put_object(&buckets, digest, &bytes).await?;
        let record = VersionRecord {
            format: record::FORMAT,
            policy: policy.to_owned(),
            version: version.to_owned(),
            digest,
            size,
            uploaded_by: uploader.to_owned(),
            uploaded_at: now(),
            host: self.host.clone(),
        };
        let value = serde_json::to_vec(&record).expect("a version record serialises").into();
        match tokio::time::timeout(self.write_timeout(), buckets.state.create(&key, value)).await {
            Ok(Ok(revision)) => {
                self.wait_applied(revision).await?;
                Ok(Put::Created(registry.version(policy, version)?))
            }
            Ok(Err(error)) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                lock(&self.prepared).remove(&digest);
                let existing = self.version_record(&buckets, &key).await?.ok_or_else(|| {
                    self.unavailable(format!("`{key}` exists and does not: the bucket changed under the write"))
                })?;
                self.stored_already(registry, existing, digest).await
            }
            Ok(Err(error)) => {
                lock(&self.prepared).remove(&digest);
                Err(self.unavailable(format!("writing the version: {error}")))
            }
            Err(_) => {
                lock(&self.prepared).remove(&digest);
                Err(self.unavailable(format!("writing the version: no answer within {:?}", self.write_timeout())))
            }
        }
    }

    /// The answer to an upload of a version the fleet has: the same bytes are unchanged, other
    /// bytes a conflict.
    async fn stored_already(
        &self,
        registry: &Arc<Registry>,
        (revision, existing): (u64, VersionRecord),
        digest: Digest,
    ) -> Result<Put, FleetError> {
        if existing.digest != digest {
            return Err(registry::Error::VersionConflict {
                policy: existing.policy,
                version: existing.version,
                existing: existing.digest,
                uploaded: digest,
            }
            .into());
        }
        self.wait_applied(revision).await?;
        Ok(Put::Unchanged(registry.version(&existing.policy, &existing.version)?))
    }

    /// The record of a version in the state bucket, with its revision.
    async fn version_record(&self, buckets: &Buckets, key: &str) -> Result<Option<(u64, VersionRecord)>, FleetError> {
        let entry = self.call("reading the version", buckets.state.entry(key.to_owned())).await?;
        match entry.filter(|e| e.operation == kv::Operation::Put) {
            None => Ok(None),
            Some(entry) => match record::decode::<VersionRecord>(key, &entry.value) {
                Ok(record) => Ok(Some((entry.revision, record))),
                Err(reason) => Err(FleetError::Refused { revision: entry.revision, reason }),
            },
        }
    }

    /// Stores component bytes as the object named by their digest, unless it is there already.
    async fn put_object(&self, buckets: &Buckets, digest: Digest, bytes: &[u8]) -> Result<(), FleetError> {
        let name = object_name(digest);
        if let Ok(Ok(info)) = tokio::time::timeout(self.write_timeout(), buckets.components.info(&name)).await
            && info.size == bytes.len()
            && !info.deleted
        {
            return Ok(());
        }
        let mut reader = bytes;
        self.call("storing the component", buckets.components.put(name.as_str(), &mut reader)).await?;
        Ok(())
    }

    /// Fetches component bytes by digest and checks them against it.
    async fn fetch_object(&self, buckets: &Buckets, digest: Digest, size: usize) -> Result<Vec<u8>, String> {
        if size > self.max_component_bytes {
            return Err(format!(
                "{size} bytes is over this host's limit of {} (admin.max_upload_bytes)",
                self.max_component_bytes
            ));
        }
        let name = object_name(digest);
        let read = async {
            let object = buckets.components.get(&name).await.map_err(|e| format!("fetching `{name}`: {e}"))?;
            let mut bytes = Vec::with_capacity(size);
            object
                .take(self.max_component_bytes as u64 + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| format!("reading `{name}`: {e}"))?;
            Ok::<_, String>(bytes)
        };
        let bytes = tokio::time::timeout(self.write_timeout() * 4, read)
            .await
            .map_err(|_| format!("fetching `{name}`: no answer within {:?}", self.write_timeout() * 4))??;
        if Digest::of(&bytes) != digest {
            return Err(format!("the object `{name}` does not match its digest ({} bytes)", bytes.len()));
        }
        Ok(bytes)
    }

    /// The reason this host refused an entry, if it did.
    fn refusal(&self, revision: u64) -> Option<String> {
        lock(&self.state).refused.iter().find(|r| r.revision == revision).map(|r| r.reason.clone())
    }

    /// Publishes a version this host stores to the fleet (a bundled policy a configured surface
    /// starts with), if the fleet does not have it.
    async fn publish_version(
        &self,
        buckets: &Buckets,
        registry: &Arc<Registry>,
        info: &VersionInfo,
    ) -> Result<(), String> {
        let key = version_key(&info.policy, &info.version);
        match self.version_record(buckets, &key).await.map_err(|e| e.to_string())? {
            Some((_, existing)) if existing.digest == info.digest => return Ok(()),
            Some((_, existing)) => {
                return Err(format!(
                    "{}@{} is in the fleet with {}, but this host stores {}",
                    info.policy, info.version, existing.digest, info.digest
                ));
            }
            None => {}
        }
        let bytes = registry.component(&info.policy, &info.version).map_err(|e| e.to_string())?;
        self.put_object(buckets, info.digest, &bytes).await.map_err(|e| e.to_string())?;
        let value = serde_json::to_vec(&VersionRecord::of(info, &self.host)).expect("a version record serialises");
        match tokio::time::timeout(self.write_timeout(), buckets.state.create(&key, value.into())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer".to_owned()),
        }
    }
}

/// Decides a change on the blocking pool (it may load versions and probe parameters).
async fn decide(control: &Arc<Control>, change: Change) -> Result<Decided, FleetError> {
    let control = control.clone();
    tokio::task::spawn_blocking(move || control.decide(change))
        .await
        .map_err(|e| FleetError::Refused { revision: 0, reason: format!("the change task failed: {e}") })?
        .map_err(FleetError::from)
}
