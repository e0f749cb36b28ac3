//! Shared helpers for Relish's end-to-end tests and benchmarks: building the bundled policies and
//! the test guests, decoding fixtures, synthetic requests, and the native/wasm bridge.
//!
//! Guests and policies are built by the test setup itself (through the same builder as
//! `relish build`), once per process, so a clean checkout needs nothing but `cargo test`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use relish_host::builder::{self, BuildOptions, Built};
use relish_host::runtime::{Budget, PolicyPre, Runtime, RuntimeConfig, types};
use relish_host::wire::{self, DecodeOptions};

pub mod bench;
pub mod synthetic;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A fixture file under `tests/fixtures`.
pub fn fixture(name: &str) -> String {
    let path = root().join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn index(built: Vec<Built>) -> HashMap<String, Built> {
    built.into_iter().map(|b| (b.name.clone(), b)).collect()
}

/// The bundled policies, built into `target/policies` (once per process).
pub fn policies() -> &'static HashMap<String, Built> {
    static POLICIES: OnceLock<HashMap<String, Built>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let options =
            BuildOptions { manifest_path: Some(root().join("Cargo.toml")), quiet: true, ..BuildOptions::default() };
        index(builder::build(&options).expect("building the bundled policies"))
    })
}

/// Test guests (each misbehaving in one way), built into `target/test-guests` (once per process).
/// `wasi-import` is built for `wasm32-wasip2`, so that it really imports WASI; the rest for
/// `wasm32-unknown-unknown`.
pub fn guests() -> &'static HashMap<String, Built> {
    static GUESTS: OnceLock<HashMap<String, Built>> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let manifest = root().join("tests/guests/Cargo.toml");
        let out_dir = root().join("target/test-guests");
        let metadata = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
            .arg(&manifest)
            .output()
            .expect("running cargo metadata");
        let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).expect("cargo metadata JSON");
        let names: Vec<String> = metadata["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_owned())
            .collect();
        let (wasi, plain): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| n.ends_with("wasi-import"));
        let build = |packages: Vec<String>, target: Option<&str>| {
            builder::build(&BuildOptions {
                manifest_path: Some(manifest.clone()),
                packages,
                out_dir: Some(out_dir.clone()),
                target: target.map(str::to_owned),
                quiet: true,
            })
            .expect("building the test guests")
        };
        let mut built = build(plain, None);
        built.extend(build(wasi, Some("wasm32-wasip2")));
        index(built)
    })
}

/// The bytes of a test guest's component.
pub fn guest_bytes(name: &str) -> Vec<u8> {
    let built = guests().get(name).unwrap_or_else(|| panic!("no test guest `{name}`"));
    std::fs::read(&built.component).expect("reading a test guest")
}

/// The bytes of a bundled policy's component.
pub fn policy_bytes(name: &str) -> Vec<u8> {
    let built = policies().get(name).unwrap_or_else(|| panic!("no bundled policy `{name}`"));
    std::fs::read(&built.component).expect("reading a policy")
}

/// The budget tests call policies with: the default limits but a generous deadline, because
/// tests assert behaviour, never speed, and CI machines are shared and noisy.
pub fn budget() -> Budget {
    Budget { deadline: std::time::Duration::from_secs(10), ..Budget::default() }
}

/// One runtime shared by a test process (an engine per test would reserve a pool each).
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            // `RELISH_PERF_MAP=1` names compiled policy functions for `perf` (profiling a benchmark).
            let config =
                RuntimeConfig { perf_map: std::env::var_os("RELISH_PERF_MAP").is_some(), ..RuntimeConfig::default() };
            Runtime::new(config).expect("creating the runtime")
        })
        .clone()
}

/// A bundled policy, loaded (compiled once per process).
pub fn policy(name: &str) -> PolicyPre {
    static LOADED: OnceLock<std::sync::Mutex<HashMap<String, PolicyPre>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    let mut loaded = loaded.lock().expect("the policy cache lock");
    loaded
        .entry(name.to_owned())
        .or_insert_with(|| runtime().load(&policy_bytes(name)).expect("loading a bundled policy"))
        .clone()
}

/// A test guest, loaded.
pub fn guest(name: &str) -> PolicyPre {
    runtime().load(&guest_bytes(name)).unwrap_or_else(|e| panic!("loading test guest `{name}`: {e}"))
}

/// Decodes a JSON request at a fixed clock (2026-11-28 12:00 UTC), so fixtures are deterministic.
pub fn decode(json: &str) -> types::Request {
    let options = DecodeOptions { now_unix_ms: 1_795_867_200_000, ..DecodeOptions::default() };
    wire::decode(json.as_bytes(), &options).unwrap_or_else(|e| panic!("decoding a fixture: {e}")).request
}

/// The candidate ids of a ranking, in order.
pub fn ids(request: &types::Request, order: &[u32]) -> Vec<String> {
    let column = &request.candidates.ids;
    order
        .iter()
        .map(|&i| column.data[column.offsets[i as usize] as usize..column.offsets[i as usize + 1] as usize].to_owned())
        .collect()
}

/// The same request as the guest SDK sees it, for running a policy natively.
pub fn to_guest(request: &types::Request) -> relish_guest::RawRequest {
    use relish_guest::bindings::relish::policy::types as g;
    let tags = |t: &types::TagColumn| g::TagColumn { offsets: t.offsets.clone(), indices: t.indices.clone() };
    let strings = |s: &types::StringColumn| g::StringColumn { data: s.data.clone(), offsets: s.offsets.clone() };
    let span = |s: Option<types::Span>| s.map(|s| g::Span { start: s.start, end: s.end });
    let c = &request.context;
    g::Request {
        surface: request.surface.clone(),
        request_id: request.request_id.clone(),
        time_unix_ms: request.time_unix_ms,
        local_minute_of_day: request.local_minute_of_day,
        local_weekday: match request.local_weekday {
            types::Weekday::Monday => g::Weekday::Monday,
            types::Weekday::Tuesday => g::Weekday::Tuesday,
            types::Weekday::Wednesday => g::Weekday::Wednesday,
            types::Weekday::Thursday => g::Weekday::Thursday,
            types::Weekday::Friday => g::Weekday::Friday,
            types::Weekday::Saturday => g::Weekday::Saturday,
            types::Weekday::Sunday => g::Weekday::Sunday,
        },
        seed: request.seed,
        context: g::Context {
            text: c.text.clone(),
            user_id: span(c.user_id),
            country: span(c.country),
            city: span(c.city),
            locale: span(c.locale),
            latitude: c.latitude,
            longitude: c.longitude,
            device: span(c.device),
            cart: g::Cart { item_ids: strings(&c.cart.item_ids), tags: tags(&c.cart.tags) },
        },
        user_features: g::Features {
            names: strings(&request.user_features.names),
            values: request.user_features.values.clone(),
        },
        tag_vocabulary: strings(&request.tag_vocabulary),
        candidates: g::Candidates {
            ids: strings(&request.candidates.ids),
            feature_names: strings(&request.candidates.feature_names),
            features: request.candidates.features.clone(),
            tags: tags(&request.candidates.tags),
        },
        limit: request.limit,
        params: g::Params { keys: strings(&request.params.keys), values: strings(&request.params.values) },
    }
}

/// A policy compiled natively, ranking through the host's [`Ranker`](relish_host::runtime::Ranker)
/// interface: the request is copied into the guest SDK's types (as the component's call copies it
/// into linear memory) and the answer validated like a component's. The baseline of the load and
/// call benchmarks; never a way to serve traffic.
pub struct Native<P>(std::marker::PhantomData<fn() -> P>);

impl<P> Native<P> {
    /// The native stand-in for policy `P`.
    pub fn new() -> Self {
        Native(std::marker::PhantomData)
    }
}

impl<P> Default for Native<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: relish_guest::Policy> relish_host::runtime::Ranker for Native<P> {
    fn rank(
        &self,
        request: &types::Request,
        budget: &Budget,
    ) -> Result<relish_host::runtime::Ranking, relish_host::runtime::CallError> {
        use relish_host::runtime::{CallError, PolicyError};
        let raw = relish_guest::rank_raw::<P>(to_guest(request)).map_err(|error| {
            CallError::Policy(match error {
                relish_guest::RankError::InvalidRequest(m) => PolicyError::InvalidRequest(m),
                relish_guest::RankError::Internal(m) => PolicyError::Internal(m),
            })
        })?;
        let raw = types::Ranking {
            order: raw.order,
            scores: raw.scores,
            reasons: raw.reasons,
            reason_codes: raw.reason_codes,
            propensities: raw.propensities,
        };
        relish_host::runtime::Ranking::validate(raw, request, budget)
    }
}
