//! `relish serve`: the ranking service edge proxies call on every page request.
//!
//! hyper 1 on tokio, HTTP/1.1 with keep-alive and HTTP/2 (prior-knowledge h2c) on the same port.
//! The data plane ([`http`]) answers `POST /v1/rank/{surface}`; the admin API ([`admin`]) listens on
//! its own address. Startup binds the listeners first (so `/healthz` answers and `/readyz` says
//! "starting"), then restores versions and activations from the registry, activates configured
//! policies on surfaces that have none yet, and only then turns ready.

pub mod admin;
pub mod config;
pub mod health;
pub mod http;
pub mod metrics;
pub mod router;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use self::config::{Config, PolicyRef, ResolvedSurface};
use self::health::{Alarm, Health};
use self::metrics::Metrics;
use self::router::{Binding, Bound, Limiter, Router};
use crate::registry::{Registry, RegistryOptions};
use crate::runtime::{Digest, Ranker, Runtime};

/// Everything the handlers share.
pub struct State {
    /// The configuration.
    pub config: Config,
    /// The wasm runtime.
    pub runtime: Arc<Runtime>,
    registry: OnceLock<Arc<Registry>>,
    /// The routing table.
    pub router: Router,
    /// Metrics.
    pub metrics: Metrics,
    /// Whether startup finished.
    pub ready: AtomicBool,
    /// Rank requests in flight.
    pub inflight: AtomicUsize,
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    /// Held across every change of what serves a surface: checks, the registry write and the
    /// rebinding, so that the routing table always ends on the registry's latest state.
    changes: Mutex<()>,
    /// Fallback policies by reference (`name` or `name@version`), resolved once and kept: an
    /// upload or a delete later never changes which version answers as a surface's fallback.
    fallbacks: Mutex<HashMap<String, Arc<crate::runtime::PolicyPre>>>,
    alarms: mpsc::UnboundedSender<Alarm>,
    /// Native stand-ins by policy name: the load benchmark's baseline only.
    natives: HashMap<String, Arc<dyn Ranker>>,
}

impl State {
    /// The registry (present once startup has opened it).
    pub fn registry(&self) -> anyhow::Result<&Arc<Registry>> {
        self.registry.get().ok_or_else(|| anyhow!("the registry is not open yet"))
    }

    fn limiter(&self, surface: &ResolvedSurface) -> Option<Arc<Limiter>> {
        let max = surface.max_concurrency?;
        let mut limiters = self.limiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(limiters.entry(surface.name.clone()).or_insert_with(|| Arc::new(Limiter::new(max))).clone())
    }

    /// The resolved settings of a surface: configured, or defaults for a surface that exists only
    /// in the registry.
    pub fn surface_settings(&self, surface: &str) -> ResolvedSurface {
        self.config
            .surfaces()
            .into_iter()
            .find(|s| s.name == surface)
            .unwrap_or_else(|| self.config.resolve(surface, None))
    }

    /// Runs one change of what serves surfaces (an activation, a rollback, a delete) with the
    /// registry, serialised with every other change. Blocks: call from a blocking context, and
    /// never from inside another change.
    pub fn change<R>(&self, change: impl FnOnce(&Registry) -> anyhow::Result<R>) -> anyhow::Result<R> {
        let _serialised = self.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        change(self.registry()?)
    }

    /// Whether `policy@version` answers as some surface's fallback (and must stay stored).
    pub fn is_fallback(&self, policy: &str, version: &str) -> bool {
        let pinned = self.fallbacks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pinned.values().any(|p| (p.metadata().name.as_str(), p.metadata().version.as_str()) == (policy, version))
    }

    /// The fallback policy a reference names: resolved the first time, the same version after.
    fn fallback(&self, registry: &Registry, reference: &PolicyRef) -> anyhow::Result<Arc<crate::runtime::PolicyPre>> {
        let key = format!("{}@{}", reference.name, reference.version.as_deref().unwrap_or(""));
        let mut pinned = self.fallbacks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(policy) = pinned.get(&key) {
            return Ok(policy.clone());
        }
        let policy = resolve(registry, reference)?;
        pinned.insert(key, policy.clone());
        Ok(policy)
    }

    /// Rebuilds one surface's binding from the registry (after an activation, a rollback, or an
    /// automatic rollback), inside [`State::change`].
    pub fn rebind(&self, surface: &str) -> anyhow::Result<()> {
        let registry = self.registry()?;
        let settings = self.surface_settings(surface);
        let binding = self.binding(registry, &settings)?;
        self.router.set(binding);
        Ok(())
    }

    /// Why `policy` cannot serve `surface` within the surface's budget, if it cannot: a version
    /// whose memory starts larger than the surface's memory cap would fail every call.
    pub fn misfit(&self, surface: &str, policy: &crate::runtime::PolicyPre) -> Option<String> {
        let cap = self.surface_settings(surface).budget.memory_bytes;
        let metadata = policy.metadata();
        (policy.declared_memory() > cap as u64).then(|| {
            format!(
                "`{}@{}` declares {} of initial linear memory, more than surface `{surface}`'s memory cap of {} \
                 (memory_mb): every call would fail",
                metadata.name,
                metadata.version,
                crate::runtime::mib(policy.declared_memory()),
                crate::runtime::mib(cap as u64),
            )
        })
    }

    /// The native stand-in for a bound version, if one was given for its policy name.
    fn native(&self, bound: Bound) -> Bound {
        match self.natives.get(&bound.name) {
            Some(native) => Bound { ranker: native.clone(), ..bound },
            None => bound,
        }
    }

    fn binding(&self, registry: &Registry, settings: &ResolvedSurface) -> anyhow::Result<Binding> {
        let active =
            registry.active().get(&settings.name).map(|a| (Bound::new(a.policy.clone()), a.activation.clone()));
        let fallback = match &settings.fallback {
            Some(fallback) => Some(Bound::new(
                self.fallback(registry, fallback)
                    .with_context(|| format!("surface `{}`: fallback policy `{}`", settings.name, fallback.name))?,
            )),
            None => None,
        };
        let params = active
            .as_ref()
            .map(|(_, activation)| activation.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let health = active.as_ref().zip(settings.health).map(|((bound, _), policy)| {
            Arc::new(Health::new(policy, &settings.name, &bound.name, &bound.version, self.alarms.clone()))
        });
        // A version is no fallback for itself: it would fail the same way again.
        let fallback = fallback.filter(|f| active.as_ref().is_none_or(|(a, _)| a.digest != f.digest));
        let active = active.map(|(bound, _)| self.native(bound));
        let fallback = fallback.map(|bound| self.native(bound));
        let digest = active.as_ref().map(|b| b.digest.to_string());
        let labels = active.as_ref().zip(digest.as_deref()).map(|(b, d)| (b.name.as_str(), b.version.as_str(), d));
        self.metrics.set_active(&settings.name, labels);
        Ok(Binding::new(settings, active, params, fallback, self.limiter(settings), &self.metrics, health))
    }
}

/// The newest stored version of a policy reference (or the exact one it names).
fn resolve(registry: &Registry, policy: &PolicyRef) -> anyhow::Result<Arc<crate::runtime::PolicyPre>> {
    let version = match &policy.version {
        Some(version) => version.clone(),
        None => registry
            .versions()
            .into_iter()
            .filter(|v| v.policy == policy.name)
            .max_by_key(|v| v.uploaded_at)
            .map(|v| v.version)
            .ok_or_else(|| anyhow!("no version of `{}` is stored", policy.name))?,
    };
    Ok(registry.policy(&policy.name, &version)?)
}

/// Makes sure a policy reference names a stored version, storing the bundled component of that
/// name first if the registry does not have it. Returns the version.
fn ensure_stored(state: &State, registry: &Registry, policy: &PolicyRef) -> anyhow::Result<String> {
    let bundled = state.config.server.bundled_dir.join(format!("{}.wasm", policy.name));
    if let Ok(bytes) = std::fs::read(&bundled) {
        let digest = Digest::of(&bytes);
        let stored = registry.versions().into_iter().find(|v| v.digest == digest);
        let version = match stored {
            Some(info) => Some(info.version),
            None => {
                let loaded = state.runtime.load(&bytes).with_context(|| format!("loading {}", bundled.display()))?;
                let metadata = loaded.metadata();
                match registry.put_version(&metadata.name, &metadata.version, &bytes, "bundled") {
                    Ok(put) => Some(put.version().version.clone()),
                    Err(error) => {
                        tracing::warn!(
                            file = %bundled.display(),
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
                state.config.server.bundled_dir.display()
            )
        })
}

/// Opens the registry, activates configured policies where nothing is active, and binds every
/// surface. Blocking.
fn initialise(state: &State) -> anyhow::Result<()> {
    let config = &state.config;
    let options = RegistryOptions {
        max_component_bytes: config.admin.max_upload_bytes,
        cache_capacity: NonZeroUsize::new(config.engine.cache_capacity).expect("validated"),
    };
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("creating the data directory {}", config.server.data_dir.display()))?;
    let registry = Registry::open(&config.server.data_dir, state.runtime.clone(), options)
        .with_context(|| format!("opening the registry in {}", config.server.data_dir.display()))?;
    let registry = state.registry.get_or_init(|| Arc::new(registry));
    // The admin API listens already: its changes wait until the surfaces are bound.
    let _serialised = state.changes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);

    let surfaces = config.surfaces();
    for surface in &surfaces {
        let key = format!("surfaces.{}", surface.name);
        if let Some(fallback) = &surface.fallback {
            ensure_stored(state, registry, fallback).with_context(|| format!("{key}.fallback"))?;
        }
        let current = registry.surface(&surface.name).ok().and_then(|s| s.current().cloned());
        match (current, &surface.policy) {
            (Some(current), _) => {
                tracing::info!(surface = %surface.name, policy = %current.policy, version = %current.version, "restored activation");
            }
            (None, Some(policy)) => {
                let version = ensure_stored(state, registry, policy).with_context(|| format!("{key}.policy"))?;
                let loaded = registry.policy(&policy.name, &version)?;
                if let Some(misfit) = state.misfit(&surface.name, &loaded) {
                    bail!("{key}.policy: {misfit}");
                }
                registry
                    .activate(&surface.name, &policy.name, &version, surface.params.clone(), "config")
                    .with_context(|| format!("{key}: activating {}@{version}", policy.name))?;
            }
            (None, None) => {
                tracing::warn!(surface = %surface.name, "no policy configured or active: answered by the fallback")
            }
        }
    }
    let mut names: Vec<String> = surfaces.iter().map(|s| s.name.clone()).collect();
    names.extend(registry.surfaces().into_iter().map(|s| s.name).filter(|n| !surfaces.iter().any(|s| &s.name == n)));
    let bindings = names
        .iter()
        .map(|name| state.binding(registry, &state.surface_settings(name)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    state.router.replace(bindings);
    Ok(())
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
        for task in self.tasks {
            let _ = task.await;
        }
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
    let state = Arc::new(State {
        runtime,
        registry: OnceLock::new(),
        router: Router::default(),
        metrics: Metrics::new(),
        ready: AtomicBool::new(false),
        inflight: AtomicUsize::new(0),
        limiters: Mutex::new(HashMap::new()),
        changes: Mutex::new(()),
        fallbacks: Mutex::new(HashMap::new()),
        alarms,
        natives,
        config,
    });
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    let read_timeout = Duration::from_secs(state.config.server.read_timeout_secs);

    let data_state = state.clone();
    let data = serve(listener, shutdown_receiver.clone(), grace, read_timeout, move |request| {
        let state = data_state.clone();
        async move { Ok::<_, Infallible>(http::handle(state, request).await) }
    });
    let admin_state = Arc::new(admin::Admin::new(state.clone(), tokens));
    let admin = serve(admin_listener, shutdown_receiver.clone(), grace, read_timeout, move |request| {
        let admin = admin_state.clone();
        async move { Ok::<_, Infallible>(admin::handle(admin, request).await) }
    });
    let rollbacks = tokio::spawn(roll_back_on_alarms(state.clone(), alarm_receiver, shutdown_receiver));
    let tasks = vec![tokio::spawn(data), tokio::spawn(admin), rollbacks];
    let handle = Handle { addr, admin_addr, state: state.clone(), shutdown, tasks };

    let init_state = state.clone();
    match tokio::task::spawn_blocking(move || initialise(&init_state)).await? {
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

/// Serves one listener until shutdown, then drains its connections for up to `grace`.
async fn serve<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    read_timeout: Duration,
    handler: F,
) where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<http::HttpResponse, Infallible>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Slow-loris protection: a client must send its first byte (below) and then its headers
    // within the timeout (the body has its own timeout in the handlers). HTTP/2 pings a quiet
    // connection and closes it when the peer stops answering.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(read_timeout);
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
                let (handler, builder, watcher) = (handler.clone(), builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    // Telling HTTP/1 from HTTP/2 waits for the first bytes without a timeout of its
                    // own (hyper#3962): a connection that never speaks is closed here instead.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(read_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(read)) if read > 0 => {}
                        _ => return,
                    }
                    let connection = builder.serve_connection(TokioIo::new(stream), service_fn(handler)).into_owned();
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

/// Rolls a surface back when its active version's failure rate trips.
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
        let state = state.clone();
        let result = tokio::task::spawn_blocking(move || roll_back(&state, &alarm)).await;
        if let Ok(Err(error)) = result {
            tracing::error!("automatic rollback failed: {error:#}");
        }
    }
}

fn roll_back(state: &State, alarm: &Alarm) -> anyhow::Result<()> {
    state.change(|registry| {
        // Only roll back if the tripped version is still the active one (an operator may have acted).
        let current = registry.surface(&alarm.surface)?.current().cloned();
        if current.as_ref().is_none_or(|c| (c.policy.as_str(), c.version.as_str()) != (&alarm.policy, &alarm.version)) {
            return Ok(());
        }
        let reason = format!(
            "{} of the last {} calls failed ({:.1} %, threshold {:.1} %)",
            alarm.failures,
            alarm.calls,
            100.0 * alarm.failures as f64 / alarm.calls as f64,
            100.0 * alarm.threshold
        );
        let restored = registry.rollback(&alarm.surface, "relish", &reason, true)?;
        state.rebind(&alarm.surface)?;
        state.metrics.auto_rollback(&alarm.surface);
        tracing::error!(
            surface = %alarm.surface,
            from = %format!("{}@{}", alarm.policy, alarm.version),
            to = %format!("{}@{}", restored.policy, restored.version),
            "automatic rollback: {reason}"
        );
        Ok(())
    })
}
