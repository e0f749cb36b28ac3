//! `relish serve`: the ranking service edge proxies call on every page request.
//!
//! hyper 1 on tokio, HTTP/1.1 with keep-alive and HTTP/2 (prior-knowledge h2c) on the same port.
//! The data plane ([`http`]) answers `POST /v1/rank/{surface}`; the admin API ([`admin`]) listens on
//! its own address. Startup binds the listeners first (so `/healthz` answers and `/readyz` says
//! "starting"), then restores versions and plans from the registry, seeds configured policies on
//! surfaces that have no plan yet (through the control plane, like every change), and only then
//! turns ready. Answering itself is the serving pipeline's ([`crate::serving`]).

pub mod admin;
pub mod config;
pub mod conn;
pub mod grpc;
pub mod http;
pub mod ops;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use self::config::{Config, PolicyRef};
use crate::control::{Applied, Change, Control, ControlParts, PlanSpec};
use crate::decisions::DecisionLog;
use crate::features::Features;
use crate::fleet::{Fleet, FleetError, Membership};
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryOptions};
use crate::runtime::{Digest, Ranker, Runtime};
use crate::serving::Router;
use crate::serving::health::Alarm;

/// Everything the handlers share.
pub struct State {
    /// The configuration.
    pub config: Config,
    /// The wasm runtime.
    pub runtime: Arc<Runtime>,
    control: OnceLock<Arc<Control>>,
    /// The routing table (written by the control plane only).
    pub router: Arc<Router>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether startup finished.
    pub ready: AtomicBool,
    /// Rank requests in flight.
    pub inflight: AtomicUsize,
    alarms: mpsc::UnboundedSender<Alarm>,
    /// Native stand-ins by policy name: the load benchmark's baseline only.
    natives: HashMap<String, Arc<dyn Ranker>>,
    /// The feature stores, by name.
    pub stores: HashMap<String, Arc<Features>>,
    /// The fleet this host belongs to (`None`: it stands alone).
    pub fleet: Option<Arc<Fleet>>,
    /// The decision log (`None`: no surface logs).
    pub decisions: Option<Arc<DecisionLog>>,
    /// OpenTelemetry traces (`None`: no endpoint configured).
    pub tracing: Option<Arc<crate::telemetry::Tracing>>,
}

impl State {
    /// The control plane (present once startup has opened the registry).
    pub fn control(&self) -> anyhow::Result<&Arc<Control>> {
        self.control.get().ok_or_else(|| anyhow!("the registry is not open yet"))
    }

    /// The registry (present once startup has opened it).
    pub fn registry(&self) -> anyhow::Result<&Arc<Registry>> {
        Ok(self.control()?.registry())
    }
}

/// Makes sure a policy reference names a stored version, storing the bundled component of that
/// name first if the registry does not have it. Returns the version.
fn ensure_stored(state: &State, registry: &Registry, policy: &PolicyRef) -> anyhow::Result<String> {
    if let Some((bundled, bytes)) = state.config.server.bundled_policy(&policy.name) {
        let bytes = bytes?;
        let digest = Digest::of(&bytes);
        let stored = registry.versions().into_iter().find(|v| v.digest == digest);
        let version = match stored {
            Some(info) => Some(info.version),
            None => {
                let loaded = state.runtime.load(&bytes).with_context(|| format!("loading {bundled}"))?;
                let metadata = loaded.metadata();
                match registry.put_version(&metadata.name, &metadata.version, &bytes, "bundled") {
                    Ok(put) => Some(put.version().version.clone()),
                    Err(error) => {
                        tracing::warn!(
                            from = %bundled,
                            "not storing the bundled policy: {error} (bump its version to ship a change)"
                        );
                        None
                    }
                }
            }
        };
        if let Some(version) = version
            && policy.version.as_ref().is_none_or(|wanted| *wanted == version)
        {
            return Ok(version);
        }
    }
    if let Some(version) = &policy.version {
        registry.version(&policy.name, version)?;
        return Ok(version.clone());
    }
    registry
        .versions()
        .into_iter()
        .filter(|v| v.policy == policy.name)
        .max_by_key(|v| v.uploaded_at)
        .map(|v| v.version)
        .ok_or_else(|| {
            anyhow!(
                "no policy `{}` in the registry or in {} (run `relish build`, or push it with `relish policy push`)",
                policy.name,
                state.config.server.bundled_source()
            )
        })
}

/// Opens the registry, seeds configured policies where no plan serves, and binds every surface.
/// Blocking. A fleet host seeds nothing itself: it returns the configured plans, which the fleet
/// publishes for surfaces it has no plan for ([`Fleet::run`]).
fn initialise(state: &State) -> anyhow::Result<Vec<(String, PlanSpec)>> {
    let config = &state.config;
    let options = RegistryOptions {
        max_component_bytes: config.admin.max_upload_bytes,
        cache_capacity: NonZeroUsize::new(config.engine.cache_capacity).expect("validated"),
    };
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("creating the data directory {}", config.server.data_dir.display()))?;
    let registry = Registry::open(&config.server.data_dir, state.runtime.clone(), options)
        .with_context(|| format!("opening the registry in {}", config.server.data_dir.display()))?;
    let registry = Arc::new(registry);
    let control = Control::new(ControlParts {
        config: config.clone(),
        registry: registry.clone(),
        router: state.router.clone(),
        metrics: state.metrics.clone(),
        alarms: state.alarms.clone(),
        natives: state.natives.clone(),
        stores: state.stores.clone(),
    });

    let mut seeds = Vec::new();
    for surface in config.surfaces() {
        let key = format!("surfaces.{}", surface.name);
        if let Some(fallback) = &surface.fallback {
            ensure_stored(state, &registry, fallback).with_context(|| format!("{key}.fallback"))?;
        }
        let current = registry.surface(&surface.name).ok().and_then(|s| s.current().cloned());
        match (current, &surface.policy) {
            (Some(current), policy) => {
                let arms: Vec<&str> = current.plan.arms.iter().map(|a| a.name.as_str()).collect();
                tracing::info!(surface = %surface.name, revision = current.revision, arms = %arms.join(", "), "restored plan");
                if let Some(policy) = policy.as_ref().filter(|_| state.fleet.is_some()) {
                    // The fleet may have no plan for it yet: this host's own is published then.
                    let version = ensure_stored(state, &registry, policy).with_context(|| format!("{key}.policy"))?;
                    seeds
                        .push((surface.name.clone(), PlanSpec::single(&policy.name, &version, surface.params.clone())));
                }
            }
            (None, Some(policy)) => {
                let version = ensure_stored(state, &registry, policy).with_context(|| format!("{key}.policy"))?;
                let plan = PlanSpec::single(&policy.name, &version, surface.params.clone());
                if state.fleet.is_some() {
                    // Checked now, so that a bad configuration fails the start here as well.
                    control
                        .decide(Change::Seed { surface: surface.name.clone(), plan: plan.clone() })
                        .map_err(|e| anyhow!("{key}: activating {}@{version}: {e}", policy.name))?;
                } else {
                    control
                        .apply(Change::Seed { surface: surface.name.clone(), plan: plan.clone() })
                        .map_err(|e| anyhow!("{key}: activating {}@{version}: {e}", policy.name))?;
                }
                seeds.push((surface.name.clone(), plan));
            }
            (None, None) => {
                tracing::warn!(surface = %surface.name, "no policy configured and no plan: answered by the fallback")
            }
        }
    }
    control.bind_all()?;
    // The admin API listens already; it answers `not_ready` for changes until this is set.
    let _ = state.control.set(Arc::new(control));
    Ok(seeds)
}

/// Applies the configured plans here, for surfaces with no plan: what a fleet host does when
/// it cannot reach the fleet at startup, so that it serves the configured policies rather than
/// fallbacks. The fleet's plans replace them once it answers.
fn seed_locally(state: &State, seeds: Vec<(String, PlanSpec)>) {
    let Ok(control) = state.control() else { return };
    for (surface, plan) in seeds {
        if let Err(error) = control.apply(Change::Seed { surface: surface.clone(), plan }) {
            tracing::error!(surface, "could not apply the configured plan: {error}");
        }
    }
}

/// A running server.
pub struct Handle {
    /// The data-plane address actually bound.
    pub addr: SocketAddr,
    /// The admin address actually bound.
    pub admin_addr: SocketAddr,
    /// Shared state (for tests and embedding).
    pub state: Arc<State>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Handle {
    /// Stops accepting connections and waits for requests in flight (up to the configured grace
    /// period).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.stopped().await;
    }

    /// A trigger that starts a graceful shutdown when sent `true`.
    pub fn shutdown_trigger(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped (after a shutdown was triggered).
    pub async fn stopped(self) {
        for task in self.tasks {
            let _ = task.await;
        }
        // Requests have finished: what they logged is written, the last file finished.
        if let Some(log) = self.state.decisions.clone() {
            let stream = log.take_stream_task();
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
            if let Some(stream) = stream {
                let _ = stream.await;
            }
        }
        // And what they traced is sent (the exporter's thread blocks on the endpoint).
        if let Some(tracing) = self.state.tracing.clone() {
            let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
        }
    }
}

/// Binds the listeners, starts serving, restores state, and returns once the server is ready.
pub async fn start(config: Config) -> anyhow::Result<Handle> {
    let runtime = Runtime::new(config.runtime()).context("creating the wasm engine")?;
    start_with(config, runtime).await
}

/// [`start`] with an existing runtime (tests share one per process).
pub async fn start_with(config: Config, runtime: Arc<Runtime>) -> anyhow::Result<Handle> {
    start_with_natives(config, runtime, HashMap::new()).await
}

/// [`start_with`], but the policies named in `natives` rank with the given native stand-ins
/// instead of their components (names, versions and digests still come from the components).
/// This is the load benchmark's baseline: the same server, JSON handling and ranking algorithm,
/// compiled natively. Never use it to serve traffic: native code is not contained.
pub async fn start_with_natives(
    config: Config,
    runtime: Arc<Runtime>,
    natives: HashMap<String, Arc<dyn Ranker>>,
) -> anyhow::Result<Handle> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen / RELISH_LISTEN)", config.server.listen))?;
    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin.listen / RELISH_ADMIN_LISTEN)", config.admin.listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    if addr == admin_addr {
        bail!("the admin API and the data plane cannot share {addr}");
    }
    let tokens = admin::Tokens::from_config(&config.admin, |name| std::env::var(name).ok())?;
    let (alarms, alarm_receiver) = mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::new());
    let mut stores = HashMap::new();
    for (name, store) in &config.features.stores {
        let features = Features::new(name, store, metrics.registry())
            .with_context(|| format!("features.stores.{name}: opening the {} store", store.backend_name()))?;
        stores.insert(name.clone(), features);
    }
    let fleet = match &config.fleet {
        Some(fleet) => Some(
            Fleet::connect(
                fleet.clone(),
                Membership {
                    addr,
                    admin_addr,
                    data_dir: config.server.data_dir.clone(),
                    max_component_bytes: config.admin.max_upload_bytes,
                },
                metrics.registry(),
            )
            .await?,
        ),
        None => None,
    };
    let logs = config.defaults.log_sample.is_some_and(|s| s > 0.0) || config.surfaces().iter().any(|s| s.log.is_some());
    let decisions = match logs {
        true => {
            let dir = config.server.data_dir.join(&config.decision_log.dir);
            let log = &config.decision_log;
            let stream =
                fleet.as_ref().filter(|_| !log.stream.is_empty()).map(|fleet| crate::decisions::stream::StreamTarget {
                    jetstream: fleet.jetstream().clone(),
                    client: fleet.client().clone(),
                    stream: log.stream.clone(),
                    subject: log.stream_subject.clone(),
                    max_age: Duration::from_secs(log.stream_max_age_hours * 3600),
                });
            Some(DecisionLog::start(log, dir, metrics.registry(), stream)?)
        }
        false => None,
    };
    let tracing = crate::telemetry::Tracing::start(&config.traces, metrics.registry())?;
    let state = Arc::new(State {
        tracing,
        decisions,
        fleet,
        runtime,
        control: OnceLock::new(),
        router: Arc::new(Router::default()),
        metrics,
        stores,
        ready: AtomicBool::new(false),
        inflight: AtomicUsize::new(0),
        alarms,
        natives,
        config,
    });
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    let timeouts = Timeouts {
        read: Duration::from_secs(state.config.server.read_timeout_secs),
        idle: Duration::from_secs(state.config.server.idle_timeout_secs),
        grace,
    };

    let data_state = state.clone();
    let data = serve(listener, shutdown_receiver.clone(), timeouts, state.metrics.clone(), move |request| {
        let state = data_state.clone();
        async move { Ok::<_, Infallible>(http::handle(state, request).await) }
    });
    let series = ops::Series::start(state.metrics.registry().clone(), shutdown_receiver.clone());
    let admin_state = Arc::new(admin::Admin::new(state.clone(), tokens, series));
    let admin = serve(admin_listener, shutdown_receiver.clone(), timeouts, state.metrics.clone(), move |request| {
        let admin = admin_state.clone();
        async move { Ok::<_, Infallible>(admin::handle(admin, request).await) }
    });
    let rollbacks = tokio::spawn(roll_back_on_alarms(state.clone(), alarm_receiver, shutdown_receiver.clone()));
    let tasks = vec![tokio::spawn(data), tokio::spawn(admin), rollbacks];
    let mut handle = Handle { addr, admin_addr, state: state.clone(), shutdown, tasks };

    let init_state = state.clone();
    let initialised = tokio::task::spawn_blocking(move || initialise(&init_state)).await?;
    let initialised = match (initialised, &state.fleet) {
        (Ok(seeds), Some(fleet)) => {
            let control = state.control().expect("initialised").clone();
            let run = tokio::spawn(fleet.clone().run(control, seeds.clone(), shutdown_receiver));
            handle.tasks.push(run);
            let timeout = Duration::from_secs(fleet.config().startup_timeout_secs);
            if fleet.catch_up_at_start(timeout).await {
                Ok(())
            } else {
                tracing::error!(
                    host = fleet.host(),
                    nats = %fleet.config().redacted(),
                    "could not catch up with the fleet within {timeout:?}: serving this host's own state (admin \
                     writes are refused until the fleet answers)"
                );
                let seed_state = state.clone();
                tokio::task::spawn_blocking(move || seed_locally(&seed_state, seeds)).await?;
                Ok(())
            }
        }
        (result, _) => result.map(drop),
    };
    match initialised {
        Ok(()) => {
            state.ready.store(true, Ordering::Release);
            tracing::info!(%addr, %admin_addr, surfaces = state.router.all().len(), "relish is ready");
            Ok(handle)
        }
        Err(error) => {
            handle.shutdown().await;
            Err(error)
        }
    }
}

/// A listener's timeouts.
#[derive(Clone, Copy)]
struct Timeouts {
    /// For a request's head (from its first byte) and then its body; for a new connection's
    /// first byte.
    read: Duration,
    /// For a keep-alive connection between requests.
    idle: Duration,
    /// How long shutdown drains connections.
    grace: Duration,
}

/// Serves one listener until shutdown, then drains its connections for up to `grace`.
async fn serve<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    timeouts: Timeouts,
    metrics: Arc<Metrics>,
    handler: F,
) where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<http::HttpResponse, Infallible>> + Send + 'static,
{
    let Timeouts { read: read_timeout, idle, grace } = timeouts;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Slow-loris protection: a client must send its first byte (below) and then its headers
    // within the timeout (the body has its own timeout in the handlers); between requests a
    // connection may be idle for `idle` (the connection's own timer, `conn::HeadTimer`). HTTP/2
    // pings a quiet connection and closes it when the peer stops answering.
    builder.http1().header_read_timeout(read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (handler, mut builder, watcher) = (handler.clone(), builder.clone(), graceful.watcher());
                let read = Arc::new(conn::Bytes::default());
                builder.http1().timer(conn::HeadTimer::new(read.clone(), read_timeout, idle));
                let io = conn::ConnIo::new(stream, read, metrics.clone());
                tokio::spawn(async move {
                    // Telling HTTP/1 from HTTP/2 waits for the first bytes without a timeout of its
                    // own (hyper#3962): a connection that never speaks is closed here instead.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(read_timeout, io.get_ref().peek(&mut first)).await {
                        Ok(Ok(read)) if read > 0 => {}
                        _ => return,
                    }
                    let connection = builder.serve_connection(TokioIo::new(io), service_fn(handler)).into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!("connection ended with an error: {error}");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace period of {grace:?} ended with requests still in flight");
    }
}

/// Turns health alarms into changes of the control plane: a failing arm is taken out of its
/// plan, or a one-arm plan is rolled back.
async fn roll_back_on_alarms(
    state: Arc<State>,
    mut alarms: mpsc::UnboundedReceiver<Alarm>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let alarm = tokio::select! {
            alarm = alarms.recv() => match alarm { Some(alarm) => alarm, None => return },
            _ = shutdown.changed() => return,
        };
        let reason = format!(
            "{} of the last {} calls failed ({:.1} %, threshold {:.1} %)",
            alarm.failures,
            alarm.calls,
            100.0 * alarm.failures as f64 / alarm.calls as f64,
            100.0 * alarm.threshold
        );
        let change =
            Change::ArmFailed { surface: alarm.surface.clone(), revision: alarm.revision, arm: alarm.arm, reason };
        let Ok(control) = state.control().cloned() else { continue };
        let fleet = match &state.fleet {
            Some(fleet) => fleet.clone(),
            None => {
                let result =
                    tokio::task::spawn_blocking(move || control.apply(change).map_err(|e| e.to_string())).await;
                report_rollback(result);
                continue;
            }
        };
        // The fleet's hosts see the same failures: the first to write takes the arm out, and the
        // others' alarms then name a revision that no longer serves. While the fleet cannot be
        // reached the change is tried again (the fallback answers the failing calls meanwhile),
        // without holding up the next alarm.
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            for attempt in 0u32.. {
                let result = fleet.submit(&control, change.clone()).await;
                match result {
                    Err(error @ (FleetError::Unavailable { .. } | FleetError::Behind { .. })) if attempt < 300 => {
                        if attempt == 0 {
                            tracing::error!("automatic rollback waits for the fleet: {error}");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                            _ = shutdown.changed() => return,
                        }
                    }
                    result => return report_rollback(Ok(result.map_err(|e| e.to_string()))),
                }
            }
        });
    }
}

/// Logs what an automatic rollback came to.
fn report_rollback(result: Result<Result<Applied, String>, tokio::task::JoinError>) {
    match result {
        Ok(Ok(Applied::Ignored)) => tracing::info!("a health alarm about a plan that no longer serves was ignored"),
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::error!("automatic rollback failed: {error}"),
        Err(error) => tracing::error!("automatic rollback task failed: {error}"),
    }
}
