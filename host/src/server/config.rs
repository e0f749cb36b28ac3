//! `relish serve` configuration: a TOML file, a few environment overrides, and defaults that serve
//! the bundled policies with no file at all.
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8080"
//! data_dir = "/var/lib/relish"
//!
//! [defaults]          # every surface, unless it says otherwise
//! deadline_ms = 5
//! fallback = "popularity"
//!
//! [surfaces.discovery]
//! policy = "discovery"            # or "discovery@0.1.0"
//! params = { diversity = "0.4" }
//!
//! [surfaces.banners]
//! policy = "banners"
//! deadline_ms = 2
//! max_concurrency = 8
//! rollback_failure_rate = 0.02   # roll back by itself past 2 % failures ...
//! rollback_min_calls = 500       # ... once 500 calls are seen
//!
//! [features.stores.main]          # a feature store (docs/operations.md, "Features")
//! backend = "redis"
//! url = "redis://127.0.0.1:6379/0"
//!
//! [defaults.features]             # every surface fills what its policies declare from it ...
//! source = "both"                 # ... inline values win over stored ones
//! store = "main"
//! deadline_ms = 2
//! ```
//!
//! Every mistake stops startup with a message naming the key (or environment variable) and the
//! problem: unknown keys are errors, not silently ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::runtime::{Budget, RuntimeConfig, is_identifier};
use crate::serving::health::HealthPolicy;

/// The surfaces of the app, served by default: each by the bundled policy of the same name if
/// there is one, else by `popularity`.
pub const STANDARD_SURFACES: [&str; 7] =
    ["discovery", "category", "venue-items", "cart-cross-sell", "banners", "brands", "food-categories"];

/// A configuration error: the key (or variable) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The TOML key path or environment variable, for example `surfaces.banners.deadline_ms`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn error(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, directories, limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The wasm engine.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Defaults for every surface.
    #[serde(default)]
    pub defaults: SurfaceSettings,
    /// Surfaces by name. Empty means the [`STANDARD_SURFACES`].
    #[serde(default)]
    pub surfaces: BTreeMap<String, SurfaceConfig>,
    /// Feature stores.
    #[serde(default)]
    pub features: FeaturesConfig,
    /// The fleet (absent: the host stands alone).
    #[serde(default)]
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// The decision log (written only for surfaces with a `log_sample`).
    #[serde(default)]
    pub decision_log: crate::decisions::LogConfig,
    /// OpenTelemetry traces (exported only with an endpoint).
    #[serde(default)]
    pub traces: crate::telemetry::TracesConfig,
}

/// `[features]`: the feature stores surfaces look features up in, by name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesConfig {
    /// `[features.stores.<name>]`.
    #[serde(default)]
    pub stores: BTreeMap<String, crate::features::StoreConfig>,
}

/// Where a surface's features come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureSource {
    /// Only from the request body (the default).
    #[default]
    Inline,
    /// Only from the feature store: a request carrying feature values is refused.
    Store,
    /// From the store, with values in the request winning over stored ones.
    Both,
}

/// `[surfaces.<name>.features]` (or `[defaults.features]`): field by field, a surface's own
/// setting wins over the default's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurfaceFeatures {
    /// `inline`, `store` or `both`.
    pub source: Option<FeatureSource>,
    /// The store's name (`[features.stores.<name>]`); may be left out when there is one store.
    pub store: Option<String>,
    /// The entity kind of the surface's candidates (for example `venue`): the middle of the key
    /// `{prefix}:{entity}:{id}`. The standard surfaces have defaults ([`candidate_entity`]).
    pub entity: Option<String>,
    /// The entity kind of users (default `user`).
    pub user_entity: Option<String>,
    /// How long a lookup may take before the policy is called with what has arrived (default 2).
    pub deadline_ms: Option<f64>,
}

/// The entity kind of a standard surface's candidates.
pub fn candidate_entity(surface: &str) -> Option<&'static str> {
    Some(match surface {
        "discovery" | "category" => "venue",
        "venue-items" | "cart-cross-sell" => "item",
        "banners" => "banner",
        "brands" => "brand",
        "food-categories" => "food-category",
        _ => return None,
    })
}

/// A surface's feature settings with defaults applied; only for surfaces that use a store.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFeatures {
    /// `store` or `both`.
    pub source: FeatureSource,
    /// The store's name.
    pub store: String,
    /// The candidates' entity kind.
    pub entity: String,
    /// The users' entity kind.
    pub user_entity: String,
    /// The lookup deadline.
    pub deadline: Duration,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The data-plane address (`RELISH_LISTEN`).
    pub listen: SocketAddr,
    /// Where the registry keeps versions and activations (`RELISH_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Where surfaces without a plan find their configured policies the first time, as
    /// `<name>.wasm` (what `relish build` writes to `target/policies`); unset, the policies built
    /// into this binary ([`crate::bundled`]).
    pub bundled_dir: Option<PathBuf>,
    /// The largest request body, in bytes (`413` beyond).
    pub max_body_bytes: usize,
    /// Rank requests in flight at once; beyond it the server answers `503` with `Retry-After`
    /// instead of queueing.
    pub max_concurrency: usize,
    /// How long shutdown waits for requests in flight, in seconds.
    pub shutdown_grace_secs: u64,
    /// Log format (`RELISH_LOG_FORMAT`): `human` or `json`.
    pub log_format: LogFormat,
    /// How long a client may take to send a request's headers, and then its body, in seconds
    /// (slow-client protection: a stalled upload never holds a slot for long).
    pub read_timeout_secs: u64,
    /// How long an idle keep-alive connection (no byte of a next request yet) stays open, in
    /// seconds: longer than a proxy's upstream keep-alive (nginx `keepalive_timeout`, 60 s by
    /// default), so that the proxy closes first and never sends on a connection closed under it.
    pub idle_timeout_secs: u64,
    /// Decisions that may hold a thread longer than this (their surface's deadline plus the
    /// preemption grace, twice with a fallback policy), in milliseconds, run on the blocking pool
    /// instead of the runtime's workers, so that a slow surface cannot occupy every worker and
    /// stall `/healthz`, the admin API and the other surfaces; shorter ones run inline, where a
    /// thread hand-off would cost more than they do. 0: every decision off the workers.
    pub inline_decision_ms: u64,
}

impl ServerConfig {
    /// The bundled policy `name` and where it came from (for messages): `bundled_dir/<name>.wasm`
    /// if a directory is set, else this binary's. `None` if there is no such policy.
    pub fn bundled_policy(&self, name: &str) -> Option<(String, anyhow::Result<Vec<u8>>)> {
        let Some(dir) = &self.bundled_dir else {
            return crate::bundled::component(name).map(|bytes| (format!("the bundled policy `{name}`"), bytes));
        };
        let path = dir.join(format!("{name}.wasm"));
        match std::fs::read(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            read => {
                let bytes = read.map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()));
                Some((path.display().to_string(), bytes))
            }
        }
    }

    /// Whether there is a bundled policy `name` ([`ServerConfig::bundled_policy`]).
    pub fn has_bundled_policy(&self, name: &str) -> bool {
        match &self.bundled_dir {
            Some(dir) => dir.join(format!("{name}.wasm")).exists(),
            None => crate::bundled::contains(name),
        }
    }

    /// Where bundled policies come from, for messages.
    pub fn bundled_source(&self) -> String {
        match &self.bundled_dir {
            Some(dir) => dir.display().to_string(),
            None => "the policies built into this binary".to_owned(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ([127, 0, 0, 1], 8080).into(),
            data_dir: PathBuf::from("relish-data"),
            bundled_dir: None,
            max_body_bytes: 8 << 20,
            max_concurrency: 512,
            shutdown_grace_secs: 30,
            log_format: LogFormat::Human,
            read_timeout_secs: 10,
            idle_timeout_secs: 75,
            inline_decision_ms: 25,
        }
    }
}

/// `[admin]`: the admin API's listener and tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The admin address (`RELISH_ADMIN_LISTEN`); never the data-plane port.
    pub listen: SocketAddr,
    /// Bearer tokens.
    pub tokens: Vec<TokenConfig>,
    /// The largest component upload, in bytes.
    pub max_upload_bytes: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: ([127, 0, 0, 1], 8081).into(), tokens: Vec::new(), max_upload_bytes: 16 << 20 }
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// List, show, status.
    Read,
    /// Everything `read` may, plus upload, activate, roll back, delete.
    Deploy,
}

/// One admin token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and the registry's `uploaded_by` (never the secret).
    pub name: String,
    /// The secret, inline. Prefer `secret_env`.
    pub secret: Option<String>,
    /// The environment variable holding the secret.
    pub secret_env: Option<String>,
    /// What the token may do.
    pub role: Role,
    /// The surfaces it may change; all if absent.
    pub surfaces: Option<Vec<String>>,
}

/// `[engine]`: process-wide wasm engine settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Policy instances alive at once (sizes the pooling allocator).
    pub max_instances: u32,
    /// The hard ceiling on one instance's memory, in MiB.
    pub max_memory_mb: usize,
    /// The epoch tick (deadline granularity), in microseconds.
    pub epoch_tick_us: u64,
    /// Compile fuel metering in, so surfaces can set `fuel`.
    pub fuel: bool,
    /// Write a perf map for profiling policies with `perf`.
    pub perf_map: bool,
    /// How many inactive versions stay loaded.
    pub cache_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let runtime = RuntimeConfig::default();
        EngineConfig {
            max_instances: runtime.max_instances,
            max_memory_mb: runtime.max_memory_bytes >> 20,
            epoch_tick_us: runtime.epoch_tick.as_micros() as u64,
            fuel: runtime.fuel,
            perf_map: runtime.perf_map,
            cache_capacity: 16,
        }
    }
}

/// Per-surface settings; in `[defaults]` they apply to every surface.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurfaceSettings {
    /// The call deadline in milliseconds, on the policy's CPU time.
    pub deadline_ms: Option<f64>,
    /// How much longer than the deadline, on the wall clock, a call whose thread was preempted
    /// may run before it is stopped as `preempted` (the host's fault), in milliseconds; default:
    /// the deadline again.
    pub preemption_grace_ms: Option<f64>,
    /// The memory cap per call in MiB.
    pub memory_mb: Option<usize>,
    /// A deterministic instruction budget (needs `engine.fuel`).
    pub fuel: Option<u64>,
    /// The policy answering when the active one fails: `name`, `name@version`, or `none`.
    pub fallback: Option<String>,
    /// The most candidates a request may carry (`413` beyond).
    pub max_candidates: Option<usize>,
    /// Calls in flight on this surface at once; beyond it the fallback answers.
    pub max_concurrency: Option<usize>,
    /// The most log lines one call may write.
    pub log_lines: Option<u32>,
    /// Shadow calls in flight on this surface at once; beyond it shadow calls are skipped and
    /// counted (default: the number of CPU cores).
    pub shadow_concurrency: Option<usize>,
    /// Whether the host rolls the surface back by itself when the active version fails too often
    /// (default `true`).
    pub auto_rollback: Option<bool>,
    /// Where features come from (default: only the request body).
    pub features: Option<SurfaceFeatures>,
    /// The share of failed calls, among the last `rollback_window`, that triggers an automatic
    /// rollback (default 0.05, 5 %).
    pub rollback_failure_rate: Option<f64>,
    /// Calls the active version must have answered before it is judged (default 100).
    pub rollback_min_calls: Option<usize>,
    /// How many of the latest calls are judged (default 200; at least `rollback_min_calls`).
    pub rollback_window: Option<usize>,
    /// The share of users whose decisions are logged, `0..=1` (default 0: none).
    pub log_sample: Option<f64>,
    /// What the decision log masks: field (`user.id`, `context.location`, ...) to `drop` or
    /// `hash`. A surface's own table replaces the default's.
    pub log_mask: Option<BTreeMap<String, crate::decisions::MaskRule>>,
}

/// `[surfaces.<name>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurfaceConfig {
    /// The policy to activate if the registry has no activation for the surface yet: `name` or
    /// `name@version`, from the registry or the bundled directory.
    pub policy: Option<String>,
    /// Its parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Limits and fallback for this surface.
    #[serde(flatten)]
    pub settings: SurfaceSettings,
}

/// A policy reference: `name` or `name@version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// The policy name.
    pub name: String,
    /// A version, or the latest one.
    pub version: Option<String>,
}

impl PolicyRef {
    /// Parses `name` or `name@version`.
    pub fn parse(key: &str, text: &str) -> Result<Self, ConfigError> {
        let (name, version) = match text.split_once('@') {
            Some((name, version)) => (name, Some(version)),
            None => (text, None),
        };
        if !is_identifier(name) || version.is_some_and(|v| !is_identifier(v)) {
            return Err(error(key, format!("`{text}` is not a policy name or `name@version`")));
        }
        Ok(PolicyRef { name: name.to_owned(), version: version.map(str::to_owned) })
    }
}

/// A surface's settings with every default filled in.
#[derive(Debug, Clone)]
pub struct ResolvedSurface {
    /// The surface name.
    pub name: String,
    /// The policy to activate when the registry has none.
    pub policy: Option<PolicyRef>,
    /// Its parameters.
    pub params: BTreeMap<String, String>,
    /// The fallback policy, if any.
    pub fallback: Option<PolicyRef>,
    /// The call budget.
    pub budget: Budget,
    /// The most candidates per request.
    pub max_candidates: usize,
    /// Concurrent calls on this surface; unlimited (beyond the server's) if `None`.
    pub max_concurrency: Option<usize>,
    /// Concurrent shadow calls on this surface.
    pub shadow_concurrency: usize,
    /// When to roll the surface back by itself; never if `None`.
    pub health: Option<HealthPolicy>,
    /// Where features come from, when a store is involved; `None`: only the request body.
    pub features: Option<ResolvedFeatures>,
    /// The decision log's sampling and masking; `None`: nothing logged.
    pub log: Option<std::sync::Arc<crate::decisions::LogSettings>>,
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| error(path.display().to_string(), e.to_string()))?;
        Self::from_toml(&text).map_err(|e| ConfigError { key: format!("{}: {}", path.display(), e.key), ..e })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let key = e.span().map(|span| locate(text, span.start)).unwrap_or_default();
            error(key, e.message().trim().to_owned())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Applies the environment overrides ops use most: `RELISH_LISTEN`, `RELISH_ADMIN_LISTEN`,
    /// `RELISH_DATA_DIR`, `RELISH_LOG_FORMAT`, `RELISH_FLEET_NATS` (joins the fleet on those
    /// NATS servers, with the other `[fleet]` settings as configured or at their defaults).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(listen) = env("RELISH_LISTEN") {
            self.server.listen = listen
                .parse()
                .map_err(|_| error("RELISH_LISTEN", format!("`{listen}` is not an address like 0.0.0.0:8080")))?;
        }
        if let Some(listen) = env("RELISH_ADMIN_LISTEN") {
            self.admin.listen = listen.parse().map_err(|_| {
                error("RELISH_ADMIN_LISTEN", format!("`{listen}` is not an address like 127.0.0.1:8081"))
            })?;
        }
        if let Some(dir) = env("RELISH_DATA_DIR") {
            self.server.data_dir = PathBuf::from(dir);
        }
        if let Some(nats) = env("RELISH_FLEET_NATS") {
            match &mut self.fleet {
                Some(fleet) => fleet.nats = nats,
                None => self.fleet = Some(crate::fleet::FleetConfig::new(nats)),
            }
            if let Some(fleet) = &self.fleet {
                fleet.validate().map_err(|e| error(format!("RELISH_FLEET_NATS (fleet.{})", e.field), e.message))?;
            }
        }
        if let Some(format) = env("RELISH_LOG_FORMAT") {
            self.server.log_format = match format.as_str() {
                "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                other => return Err(error("RELISH_LOG_FORMAT", format!("`{other}` is not `human` or `json`"))),
            };
        }
        self.traces.apply_env(&env);
        self.validate()
    }

    /// Checks values serde cannot: ranges, names, references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.traces.validate().map_err(|(key, message)| error(format!("traces.{key}"), message))?;
        let s = &self.server;
        if s.max_body_bytes < 1024 {
            return Err(error("server.max_body_bytes", "must be at least 1024"));
        }
        if s.read_timeout_secs == 0 {
            return Err(error("server.read_timeout_secs", "must be at least 1"));
        }
        if s.idle_timeout_secs < s.read_timeout_secs {
            return Err(error(
                "server.idle_timeout_secs",
                format!("must be at least server.read_timeout_secs ({})", s.read_timeout_secs),
            ));
        }
        if s.max_concurrency == 0 {
            return Err(error("server.max_concurrency", "must be at least 1"));
        }
        if self.admin.listen == s.listen && s.listen.port() != 0 {
            return Err(error(
                "admin.listen",
                "must differ from server.listen: the admin API never shares the data-plane port",
            ));
        }
        let e = &self.engine;
        if e.max_instances == 0 || e.max_instances > 100_000 {
            return Err(error("engine.max_instances", "must be between 1 and 100000"));
        }
        if e.max_memory_mb == 0 || e.max_memory_mb > 4096 {
            return Err(error("engine.max_memory_mb", "must be between 1 and 4096"));
        }
        if !(100..=1_000_000).contains(&e.epoch_tick_us) {
            return Err(error("engine.epoch_tick_us", "must be between 100 and 1000000"));
        }
        if e.cache_capacity == 0 {
            return Err(error("engine.cache_capacity", "must be at least 1"));
        }
        if let Some(fleet) = &self.fleet {
            fleet.validate().map_err(|e| error(format!("fleet.{}", e.field), e.message))?;
        }
        self.decision_log.validate().map_err(|(field, message)| error(format!("decision_log.{field}"), message))?;
        let hashes = std::iter::once(&self.defaults)
            .chain(self.surfaces.values().map(|s| &s.settings))
            .filter_map(|s| s.log_mask.as_ref())
            .any(|mask| mask.values().any(|rule| *rule == crate::decisions::MaskRule::Hash));
        if hashes && self.decision_log.hash_key.len() < 16 {
            return Err(error(
                "decision_log.hash_key",
                "a `hash` masking rule needs a secret key of at least 16 characters: without one, a hashed id is \
                 found by hashing candidate ids",
            ));
        }
        for (name, store) in &self.features.stores {
            let key = format!("features.stores.{name}");
            if !is_identifier(name) {
                return Err(error(key, "a store name is 1-64 characters of a-z, 0-9, `-`, `_` or `.`"));
            }
            store.validate().map_err(|e| error(format!("{key}.{}", e.field), e.message))?;
        }
        self.check_settings("defaults", &self.defaults)?;
        for name in self.surface_names() {
            let key = format!("surfaces.{name}.features");
            self.resolve_features(&key, &name, self.surfaces.get(&name).map(|s| &s.settings))?;
        }
        for (name, surface) in &self.surfaces {
            let key = format!("surfaces.{name}");
            if !is_identifier(name) {
                return Err(error(key, "a surface name is 1-64 characters of a-z, 0-9, `-`, `_` or `.`"));
            }
            if let Some(policy) = &surface.policy {
                PolicyRef::parse(&format!("{key}.policy"), policy)?;
            }
            self.check_settings(&key, &surface.settings)?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, token) in self.admin.tokens.iter().enumerate() {
            let key = format!("admin.tokens[{i}]");
            if !is_identifier(&token.name) {
                return Err(error(format!("{key}.name"), "1-64 characters of a-z, 0-9, `-`, `_` or `.`"));
            }
            if !names.insert(&token.name) {
                return Err(error(format!("{key}.name"), format!("`{}` is used by two tokens", token.name)));
            }
            if token.secret.is_some() == token.secret_env.is_some() {
                return Err(error(key, "set exactly one of `secret` and `secret_env`"));
            }
        }
        Ok(())
    }

    fn check_settings(&self, key: &str, settings: &SurfaceSettings) -> Result<(), ConfigError> {
        if let Some(sample) = settings.log_sample
            && !(0.0..=1.0).contains(&sample)
        {
            return Err(error(
                format!("{key}.log_sample"),
                format!("{sample} is not a share: use 0 to 1, for example 0.05"),
            ));
        }
        for name in settings.log_mask.iter().flat_map(BTreeMap::keys) {
            if !crate::decisions::MASK_FIELDS.iter().any(|(n, _)| n == name) {
                let known: Vec<&str> = crate::decisions::MASK_FIELDS.iter().map(|(n, _)| *n).collect();
                return Err(error(
                    format!("{key}.log_mask.{name}"),
                    format!("not a field masking knows (known: {})", known.join(", ")),
                ));
            }
        }
        if let Some(ms) = settings.deadline_ms
            && !(0.1..=10_000.0).contains(&ms)
        {
            return Err(error(format!("{key}.deadline_ms"), format!("{ms} is outside 0.1..=10000")));
        }
        if let Some(ms) = settings.preemption_grace_ms
            && !(0.0..=10_000.0).contains(&ms)
        {
            return Err(error(format!("{key}.preemption_grace_ms"), format!("{ms} is outside 0..=10000")));
        }
        if let Some(mb) = settings.memory_mb
            && (mb == 0 || mb > self.engine.max_memory_mb)
        {
            return Err(error(
                format!("{key}.memory_mb"),
                format!("{mb} is outside 1..={} (engine.max_memory_mb)", self.engine.max_memory_mb),
            ));
        }
        if settings.fuel.is_some() && !self.engine.fuel {
            return Err(error(format!("{key}.fuel"), "needs `engine.fuel = true`"));
        }
        if let Some(fallback) = &settings.fallback
            && fallback != "none"
        {
            PolicyRef::parse(&format!("{key}.fallback"), fallback)?;
        }
        if settings.max_candidates == Some(0) {
            return Err(error(format!("{key}.max_candidates"), "must be at least 1"));
        }
        if settings.max_concurrency == Some(0) {
            return Err(error(format!("{key}.max_concurrency"), "must be at least 1"));
        }
        if let Some(features) = &settings.features {
            if let Some(ms) = features.deadline_ms
                && !(0.05..=1_000.0).contains(&ms)
            {
                return Err(error(format!("{key}.features.deadline_ms"), format!("{ms} is outside 0.05..=1000")));
            }
            for (field, value) in [("entity", &features.entity), ("user_entity", &features.user_entity)] {
                if let Some(value) = value
                    && !is_identifier(value)
                {
                    return Err(error(
                        format!("{key}.features.{field}"),
                        format!("`{value}` is not 1-64 characters of a-z, 0-9, `-`, `_` or `.`"),
                    ));
                }
            }
            if let Some(store) = &features.store
                && !self.features.stores.contains_key(store)
            {
                let known: Vec<&str> = self.features.stores.keys().map(String::as_str).collect();
                return Err(error(
                    format!("{key}.features.store"),
                    format!("no store `{store}` in [features.stores] (known: {})", list_or_none(&known)),
                ));
            }
        }
        if settings.shadow_concurrency == Some(0) {
            return Err(error(format!("{key}.shadow_concurrency"), "must be at least 1"));
        }
        if let Some(rate) = settings.rollback_failure_rate
            && !(rate > 0.0 && rate <= 1.0)
        {
            return Err(error(format!("{key}.rollback_failure_rate"), format!("{rate} is outside 0 < rate <= 1")));
        }
        if settings.rollback_min_calls == Some(0) {
            return Err(error(format!("{key}.rollback_min_calls"), "must be at least 1"));
        }
        if let Some(window) = settings.rollback_window {
            let min_calls = settings.rollback_min_calls.or(self.defaults.rollback_min_calls);
            let min_calls = min_calls.unwrap_or(HealthPolicy::default().min_calls);
            if window < min_calls || window > 100_000 {
                return Err(error(
                    format!("{key}.rollback_window"),
                    format!("{window} is outside {min_calls}..=100000 (at least rollback_min_calls)"),
                ));
            }
        }
        Ok(())
    }

    /// The runtime configuration.
    pub fn runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            max_instances: self.engine.max_instances,
            max_memory_bytes: self.engine.max_memory_mb << 20,
            epoch_tick: Duration::from_micros(self.engine.epoch_tick_us),
            fuel: self.engine.fuel,
            perf_map: self.engine.perf_map,
            ..RuntimeConfig::default()
        }
    }

    /// The configuration without a file, plus the feature file shipped for the bundled fixtures
    /// (`tests/fixtures/features.jsonl`) as the memory store `bundled`, from which `discovery`
    /// fills what an ids-only request leaves out (`source = "both"`). What `relish serve` runs
    /// with no `--config` when that file is there.
    pub fn with_bundled_features(mut self, path: &Path) -> Self {
        self.features.stores.insert("bundled".to_owned(), crate::features::StoreConfig::memory(path));
        if self.surfaces.is_empty() {
            self.surfaces = self.standard_surfaces().into_iter().collect();
        }
        if let Some(discovery) = self.surfaces.get_mut("discovery") {
            discovery.settings.features = Some(SurfaceFeatures {
                source: Some(FeatureSource::Both),
                store: Some("bundled".to_owned()),
                ..SurfaceFeatures::default()
            });
        }
        self
    }

    /// The standard surfaces, each served by the bundled policy of its name if the bundled
    /// directory has one, else by `popularity`.
    fn standard_surfaces(&self) -> Vec<(String, SurfaceConfig)> {
        STANDARD_SURFACES
            .iter()
            .map(|&name| {
                let policy = if self.server.has_bundled_policy(name) { name } else { "popularity" };
                (name.to_owned(), SurfaceConfig { policy: Some(policy.to_owned()), ..SurfaceConfig::default() })
            })
            .collect()
    }

    /// The names of the configured surfaces (the standard ones when none are configured).
    fn surface_names(&self) -> Vec<String> {
        if self.surfaces.is_empty() {
            STANDARD_SURFACES.iter().map(|&s| s.to_owned()).collect()
        } else {
            self.surfaces.keys().cloned().collect()
        }
    }

    /// A surface's feature settings, its own over the defaults'; `None` when it takes features
    /// only from the request body. `key` names the table in errors.
    fn resolve_features(
        &self,
        key: &str,
        surface: &str,
        own: Option<&SurfaceSettings>,
    ) -> Result<Option<ResolvedFeatures>, ConfigError> {
        let empty = SurfaceFeatures::default();
        let own = own.and_then(|s| s.features.as_ref()).unwrap_or(&empty);
        let defaults = self.defaults.features.as_ref().unwrap_or(&empty);
        let source = own.source.or(defaults.source).unwrap_or_default();
        if source == FeatureSource::Inline {
            return Ok(None);
        }
        let store = match own.store.clone().or_else(|| defaults.store.clone()) {
            Some(store) => store,
            None if self.features.stores.len() == 1 => self.features.stores.keys().next().expect("one").clone(),
            None if self.features.stores.is_empty() => {
                return Err(error(
                    format!("{key}.source"),
                    "takes features from a store, but [features.stores] configures none",
                ));
            }
            None => {
                let known: Vec<&str> = self.features.stores.keys().map(String::as_str).collect();
                return Err(error(
                    format!("{key}.store"),
                    format!("name the store: there are several ({})", known.join(", ")),
                ));
            }
        };
        let entity = match own.entity.clone().or_else(|| candidate_entity(surface).map(str::to_owned)) {
            Some(entity) => entity,
            None => match &defaults.entity {
                Some(entity) => entity.clone(),
                None => {
                    return Err(error(
                        format!("{key}.entity"),
                        format!(
                            "`{surface}` is not a standard surface: name its candidates' entity kind (for example `venue`)"
                        ),
                    ));
                }
            },
        };
        let user_entity =
            own.user_entity.clone().or_else(|| defaults.user_entity.clone()).unwrap_or_else(|| "user".into());
        let ms = own.deadline_ms.or(defaults.deadline_ms).unwrap_or(2.0);
        Ok(Some(ResolvedFeatures {
            source,
            store,
            entity,
            user_entity,
            deadline: Duration::from_secs_f64(ms / 1000.0),
        }))
    }

    /// The configured surfaces (the standard ones when none are configured), with defaults
    /// applied. A standard surface's policy is the bundled policy of its name if the bundled
    /// directory has one, else `popularity`.
    pub fn surfaces(&self) -> Vec<ResolvedSurface> {
        let configured: Vec<(String, SurfaceConfig)> = if self.surfaces.is_empty() {
            self.standard_surfaces()
        } else {
            self.surfaces.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        configured.into_iter().map(|(name, surface)| self.resolve(&name, Some(&surface))).collect()
    }

    /// A surface's settings with defaults applied (`surface` is `None` for surfaces that exist
    /// only in the registry).
    pub fn resolve(&self, name: &str, surface: Option<&SurfaceConfig>) -> ResolvedSurface {
        let empty = SurfaceSettings::default();
        let own = surface.map_or(&empty, |s| &s.settings);
        let defaults = &self.defaults;
        let default_budget = Budget::default();
        let deadline_ms = own.deadline_ms.or(defaults.deadline_ms);
        let fallback =
            own.fallback.clone().or_else(|| defaults.fallback.clone()).unwrap_or_else(|| "popularity".into());
        let policy = surface.and_then(|s| s.policy.as_deref()).map(|p| PolicyRef::parse("", p).expect("validated"));
        let fallback = (fallback != "none").then(|| PolicyRef::parse("", &fallback).expect("validated"));
        ResolvedSurface {
            name: name.to_owned(),
            policy,
            params: surface.map(|s| s.params.clone()).unwrap_or_default(),
            fallback,
            budget: Budget {
                deadline: deadline_ms.map_or(default_budget.deadline, |ms| Duration::from_secs_f64(ms / 1000.0)),
                preemption_grace: own
                    .preemption_grace_ms
                    .or(defaults.preemption_grace_ms)
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
                memory_bytes: own.memory_mb.or(defaults.memory_mb).map_or(default_budget.memory_bytes, |mb| mb << 20),
                fuel: own.fuel.or(defaults.fuel),
                log_lines: own.log_lines.or(defaults.log_lines).unwrap_or(default_budget.log_lines),
                ..default_budget
            },
            max_candidates: own.max_candidates.or(defaults.max_candidates).unwrap_or(10_000),
            max_concurrency: own.max_concurrency.or(defaults.max_concurrency),
            shadow_concurrency: own
                .shadow_concurrency
                .or(defaults.shadow_concurrency)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from)),
            // Configured surfaces were checked by `validate`; a surface known only to the registry
            // whose defaults cannot work (a non-standard name without `entity`) serves inline.
            features: self
                .resolve_features(&format!("surfaces.{name}.features"), name, surface.map(|s| &s.settings))
                .unwrap_or_else(|error| {
                    tracing::warn!(surface = name, "features only from the request body: {error}");
                    None
                }),
            log: {
                let sample = own.log_sample.or(defaults.log_sample).unwrap_or(0.0);
                let mask = own.log_mask.as_ref().or(defaults.log_mask.as_ref());
                let mask = mask
                    .map(|rules| {
                        rules
                            .iter()
                            .filter_map(|(name, rule)| {
                                let field = crate::decisions::MASK_FIELDS.iter().find(|(n, _)| n == name)?.1;
                                Some((field, *rule))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (sample > 0.0).then(|| {
                    std::sync::Arc::new(crate::decisions::LogSettings {
                        threshold: (sample * 10_000.0).round() as u16,
                        mask,
                    })
                })
            },
            health: own.auto_rollback.or(defaults.auto_rollback).unwrap_or(true).then(|| {
                let default = HealthPolicy::default();
                let min_calls = own.rollback_min_calls.or(defaults.rollback_min_calls).unwrap_or(default.min_calls);
                HealthPolicy {
                    threshold: own
                        .rollback_failure_rate
                        .or(defaults.rollback_failure_rate)
                        .unwrap_or(default.threshold),
                    min_calls,
                    // A window smaller than min_calls would never be judged.
                    window: own.rollback_window.or(defaults.rollback_window).unwrap_or(default.window).max(min_calls),
                }
            }),
        }
    }
}

fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

/// The dotted key path at a byte offset of a TOML text, found by walking its tables: good enough to
/// point at `surfaces.banners` when toml's message names only the field.
fn locate(text: &str, offset: usize) -> String {
    // Up to the end of the line the error points into: an error on a whole table points at its
    // `[header]` line.
    let offset = offset.min(text.len());
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let before = &text[..end];
    let line = text[..offset].lines().count().max(1);
    let table = before
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.split(']').next()).map(str::trim))
        .unwrap_or("");
    if table.is_empty() { format!("line {line}") } else { format!("[{table}] (line {line})") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_serves_the_standard_surfaces() {
        let config = Config::default();
        let surfaces = config.surfaces();
        assert_eq!(surfaces.len(), STANDARD_SURFACES.len());
        assert!(surfaces.iter().all(|s| s.policy.is_some()));
    }

    #[test]
    fn a_full_file_parses_and_surface_settings_override_defaults() {
        let config = Config::from_toml(
            r#"
            [server]
            listen = "0.0.0.0:9000"
            [defaults]
            deadline_ms = 4
            fallback = "popularity"
            [surfaces.discovery]
            policy = "discovery@0.1.0"
            params = { diversity = "0.4" }
            [surfaces.banners]
            policy = "banners"
            deadline_ms = 2
            fallback = "none"
            max_concurrency = 8
            "#,
        )
        .unwrap();
        let surfaces = config.surfaces();
        let banners = surfaces.iter().find(|s| s.name == "banners").unwrap();
        assert_eq!(banners.budget.deadline, Duration::from_millis(2));
        assert_eq!(banners.fallback, None);
        assert_eq!(banners.max_concurrency, Some(8));
        let discovery = surfaces.iter().find(|s| s.name == "discovery").unwrap();
        assert_eq!(discovery.budget.deadline, Duration::from_millis(4));
        assert_eq!(discovery.policy.as_ref().unwrap().version.as_deref(), Some("0.1.0"));
        assert_eq!(discovery.fallback.as_ref().unwrap().name, "popularity");
        assert_eq!(discovery.params["diversity"], "0.4");
    }

    #[test]
    fn automatic_rollback_is_on_by_default_and_tuned_or_turned_off_per_surface() {
        let config = Config::from_toml(
            r#"
            [defaults]
            rollback_failure_rate = 0.1
            [surfaces.discovery]
            policy = "discovery"
            rollback_min_calls = 20
            [surfaces.banners]
            policy = "banners"
            auto_rollback = false
            [surfaces.brands]
            policy = "brands"
            rollback_min_calls = 1000
            "#,
        )
        .unwrap();
        let surfaces = config.surfaces();
        let find = |name: &str| surfaces.iter().find(|s| s.name == name).unwrap().health;
        assert_eq!(find("discovery"), Some(HealthPolicy { window: 200, min_calls: 20, threshold: 0.1 }));
        assert_eq!(find("banners"), None);
        assert_eq!(find("brands").unwrap().window, 1000, "the window covers at least min_calls");
        let error = Config::from_toml("[defaults]\nrollback_failure_rate = 1.5\n").unwrap_err();
        assert_eq!(error.key, "defaults.rollback_failure_rate", "{error}");
        let error = Config::from_toml("[surfaces.x]\nrollback_min_calls = 50\nrollback_window = 10\n").unwrap_err();
        assert_eq!(error.key, "surfaces.x.rollback_window", "{error}");
        assert!(error.message.contains("at least rollback_min_calls"), "{error}");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_table() {
        let error = Config::from_toml("[surfaces.banners]\npolicy = \"banners\"\ndeadlin_ms = 3\n").unwrap_err();
        assert!(error.message.contains("deadlin_ms"), "{error}");
        assert!(error.key.contains("surfaces.banners"), "{error}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let error = Config::from_toml("[surfaces.banners]\ndeadline_ms = 0\n").unwrap_err();
        assert_eq!(error.key, "surfaces.banners.deadline_ms", "{error}");
        let error = Config::from_toml("[surfaces.banners]\npreemption_grace_ms = -1\n").unwrap_err();
        assert_eq!(error.key, "surfaces.banners.preemption_grace_ms", "{error}");
        assert!(error.to_string().contains("0..=10000"), "{error}");
        let good = Config::from_toml("[surfaces.banners]\ndeadline_ms = 4\npreemption_grace_ms = 6\n").unwrap();
        let budget = good.resolve("banners", good.surfaces.get("banners")).budget;
        assert_eq!(budget.preemption_grace, Some(Duration::from_millis(6)));
        let error = Config::from_toml("[surfaces.banners]\npolicy = \"../evil\"\n").unwrap_err();
        assert_eq!(error.key, "surfaces.banners.policy", "{error}");
        let error = Config::from_toml("[defaults]\nfuel = 1000\n").unwrap_err();
        assert_eq!(error.key, "defaults.fuel", "{error}");
        let error = Config::from_toml("[server]\nread_timeout_secs = 20\nidle_timeout_secs = 15\n").unwrap_err();
        assert_eq!(error.key, "server.idle_timeout_secs", "{error}");
        assert!(error.to_string().contains("read_timeout_secs (20)"), "{error}");
        let good = Config::from_toml("[server]\nread_timeout_secs = 20\nidle_timeout_secs = 20\n").unwrap();
        assert_eq!(good.server.idle_timeout_secs, 20);
        let error = Config::from_toml("[server]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(error.to_string().contains("listen") || error.to_string().contains("address"), "{error}");
    }

    #[test]
    fn environment_overrides_name_the_variable_when_wrong() {
        let mut config = Config::default();
        let env = |name: &str| (name == "RELISH_LISTEN").then(|| "0.0.0.0:7000".to_owned());
        config.apply_env(env).unwrap();
        assert_eq!(config.server.listen.port(), 7000);
        let bad = |name: &str| (name == "RELISH_LOG_FORMAT").then(|| "xml".to_owned());
        assert_eq!(config.apply_env(bad).unwrap_err().key, "RELISH_LOG_FORMAT");
    }
}
