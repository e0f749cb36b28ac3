//! The process-wide [`Runtime`]: the engine and its settings, the linker with the host's imports,
//! the epoch ticker, and loading a component (checks, compilation, pre-instantiation).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::RankerPre;
use super::contract::PreLegacy;
use super::imports::{self, CallState};
use super::policy::Pre;
use super::{Budget, Contract, Digest, LoadError, Metadata, PolicyPre};

#[cfg(doc)]
use super::CallError;

/// The size of a wasm memory page.
const WASM_PAGE: u64 = 64 << 10;

/// Process-wide engine settings. Per-call limits are in [`Budget`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// How many policy instances may be alive at once (one per in-flight call). Sizes the pooling
    /// allocator; a call beyond it fails with [`CallError::Capacity`] instead of allocating.
    pub max_instances: u32,
    /// The hard ceiling on any one linear memory, in bytes. Per-surface caps ([`Budget`]) are at
    /// most this.
    pub max_memory_bytes: usize,
    /// The epoch tick: how often the ticker thread advances the engine's epoch. Deadlines are
    /// enforced with this granularity.
    pub epoch_tick: Duration,
    /// How many bytes at the bottom of each linear memory stay resident between instances (reset
    /// in place instead of returned to the kernel). Covers a policy's stack, the copied request
    /// and its working heap for typical requests.
    pub keep_resident_bytes: usize,
    /// Whether to write `/tmp/perf-<pid>.map` so `perf` can name the functions of compiled
    /// policies (for profiling a policy on a live host).
    pub perf_map: bool,
    /// Whether fuel metering is compiled in, so a [`Budget`] may carry a deterministic instruction
    /// budget. Costs a few percent on every call, so it is off unless some surface asks for it.
    pub fuel: bool,
    /// Whether deadlines are enforced (epoch interruption compiled into every policy, and the
    /// ticker thread running). Always on in a server: turning it off exists only so the benchmark
    /// can measure what it costs; without it a looping policy is never stopped.
    pub epoch_interruption: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 256,
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(1),
            keep_resident_bytes: 4 << 20,
            fuel: false,
            perf_map: false,
            epoch_interruption: true,
        }
    }
}

/// The process's wasmtime engine, linker and epoch ticker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    config: RuntimeConfig,
    shadows: Arc<ShadowSide>,
    ticker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    compiles: AtomicU64,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Arc<Self>> {
        let (engine, linker) = build(&config, config.max_instances)?;
        let shadows = Arc::new(ShadowSide { config: config.clone(), engine: OnceLock::new() });

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = if config.epoch_interruption {
            let engine = engine.clone();
            let (stop, shadows) = (stop.clone(), shadows.clone());
            let tick = config.epoch_tick;
            // Fixed rate, not `sleep(tick)` in a loop: each sleep overshoots by the wake-up latency
            // (measured here: ~10 % of a 1 ms tick), and that drift would stretch every deadline
            // by as much. Ticks are never early, so a deadline is never cut short; after a stall
            // the ticker catches up to the schedule, never past it.
            Some(std::thread::Builder::new().name("relish-epoch".to_owned()).spawn(move || {
                let mut next = Instant::now() + tick;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    engine.increment_epoch();
                    if let Some(Ok(shadow)) = shadows.engine.get() {
                        shadow.engine.increment_epoch();
                    }
                    next += tick;
                }
            })?)
        } else {
            None
        };
        Ok(Arc::new(Runtime { engine, linker, config, shadows, ticker, stop, compiles: AtomicU64::new(0) }))
    }

    /// The engine settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// How many components this runtime has compiled from source (not from artifacts) so far.
    pub fn compile_count(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// A stable fingerprint of everything that makes a compiled artifact loadable by this engine
    /// (wasmtime version, target, settings). Artifacts are stored under it, so a host upgrade
    /// recompiles instead of loading a stale artifact.
    pub fn artifact_key(&self) -> String {
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut hasher);
        hex::encode(&hasher.0.finalize()[..12])
    }

    /// Checks, compiles and pre-instantiates a component, then reads its metadata.
    pub fn load(&self, bytes: &[u8]) -> Result<PolicyPre, LoadError> {
        check_header(bytes)?;
        let declared = declared_memory(bytes);
        if declared > self.config.max_memory_bytes as u64 {
            return Err(LoadError::MemoryTooLarge { declared, cap: self.config.max_memory_bytes });
        }
        let digest = Digest::of(bytes);
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        self.compiles.fetch_add(1, Ordering::Relaxed);
        self.prepare(component, digest, bytes.len())
    }

    /// Compiles a component to an artifact for [`Runtime::load_artifact`], after the same checks
    /// as [`Runtime::load`]; returns the loaded version too.
    pub fn load_and_serialize(&self, bytes: &[u8]) -> Result<(PolicyPre, Vec<u8>), LoadError> {
        let policy = self.load(bytes)?;
        let artifact = policy.component.serialize().map_err(|e| LoadError::Artifact(format!("{e:#}")))?;
        Ok((policy, artifact))
    }

    /// Loads a compiled artifact made by [`Runtime::load_and_serialize`] of this same engine.
    ///
    /// `digest` and `size` are those of the component it was compiled from.
    ///
    /// # Safety
    ///
    /// `artifact` is machine code that wasmtime maps and runs without validation. The caller must
    /// have produced it with this engine's [`Runtime::load_and_serialize`] and verified its bytes
    /// (for example by a stored content hash) since; never pass bytes from a third party.
    #[expect(unsafe_code, reason = "deserialising our own verified artifact is the point")]
    pub unsafe fn load_artifact(&self, artifact: &[u8], digest: Digest, size: usize) -> Result<PolicyPre, LoadError> {
        // SAFETY: the caller guarantees the artifact was produced by this engine and verified.
        let component = unsafe { Component::deserialize(&self.engine, artifact) }
            .map_err(|e| LoadError::Artifact(format!("{e:#}")))?;
        self.prepare(component, digest, size)
    }

    /// Lists a component's imports and exports without compiling it.
    pub fn inspect_interfaces(&self, bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), LoadError> {
        check_header(bytes)?;
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        let exports = ty.exports(&self.engine).map(|(name, _)| name.to_owned()).collect();
        Ok((imports, exports))
    }

    fn prepare(&self, component: Component, digest: Digest, size: usize) -> Result<PolicyPre, LoadError> {
        let placeholder = Arc::new(Metadata {
            name: String::new(),
            version: String::new(),
            description: String::new(),
            surfaces: Vec::new(),
            params: Vec::new(),
            features: Vec::new(),
        });
        let twin = Twin::new(Some(self.shadows.clone()));
        let mut policy =
            pre_instantiate(&self.engine, &self.linker, &self.config, component, digest, size, placeholder, twin)?;
        // Generous: a surface's own, smaller caps are checked when the version is activated there.
        let budget = Budget {
            deadline: Duration::from_secs(1),
            memory_bytes: self.config.max_memory_bytes,
            ..Budget::default()
        };
        let mut instance = policy.instance(&budget).map_err(|e| LoadError::Instantiate(e.to_string()))?;
        let raw = instance.metadata().map_err(|e| LoadError::Metadata(e.to_string()))?;
        drop(instance);
        policy.metadata = Arc::new(Metadata::from_raw(raw)?);
        Ok(policy)
    }
}

/// The wasmtime configuration of every engine of a runtime, with a pool of `instances` slots.
/// The serving engine and the shadow engine differ only in the pool's size, which is not part
/// of what makes an artifact loadable, so code compiled by one deserialises into the other.
fn build(config: &RuntimeConfig, instances: u32) -> anyhow::Result<(Engine, Linker<CallState>)> {
    let mut wasm = Config::new();
    // Components only: policies are components of the `ranker` world.
    wasm.wasm_component_model(true);
    // No async support: every call is synchronous and short. Leaving concurrency support on
    // would initialise per-store data structures for component-model async on every call.
    wasm.concurrency_support(false);
    // Deadlines: the generated code checks an epoch counter at function entries and loop
    // back-edges, a load and compare, which is far cheaper than fuel metering.
    wasm.epoch_interruption(config.epoch_interruption);
    wasm.consume_fuel(config.fuel);
    // Deep recursion traps cleanly at this depth instead of exhausting the host thread's stack
    // (the hostile-guest suite has a policy that recurses without end).
    wasm.max_wasm_stack(512 << 10);

    if config.perf_map {
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let mut pool = PoolingAllocationConfig::new();
    // Instantiation is on the hot path (one per request): the pooling allocator hands out a
    // pre-reserved slot and resets it copy-on-write, ~4 µs instead of mmap/munmap per call.
    pool.total_component_instances(instances);
    // A Rust policy built by wit-component is one main module plus small adapter modules for
    // the imports; 8 core instances and 2 tables per component leave headroom.
    pool.total_core_instances(instances * 8);
    pool.max_core_instances_per_component(8);
    pool.total_memories(instances);
    pool.max_memories_per_component(1);
    pool.total_tables(instances * 2);
    pool.max_tables_per_component(4);
    pool.table_elements(20_000);
    pool.max_memory_size(config.max_memory_bytes);
    // Resetting a slot with madvise drops its pages, so the next call faults every page it
    // touches back in (the policy's stack, the request copied in, its heap): measured here,
    // that was most of the cost of a fresh instance. Keeping the low pages resident and
    // resetting only the dirty ones (found with the PAGEMAP_SCAN ioctl on Linux 6.7+, else
    // a memset) makes a fresh instance nearly as cheap as a reused one.
    pool.linear_memory_keep_resident(config.keep_resident_bytes);
    pool.table_keep_resident(64 << 10);
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    // Every slot reserves address space (not memory): wasmtime's default 4 GiB reservation plus
    // guard pages per memory lets generated code skip explicit bounds checks. With 256 slots
    // that is ~1 TiB of the 128 TiB user address space on x86_64.
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

    let engine = Engine::new(&wasm)?;
    let mut linker = Linker::new(&engine);
    // One line per interface of the contract a policy may import (see `Contract::imports`),
    // each for every contract version served.
    imports::types::add_to_linker(&mut linker)?;
    imports::log::add_to_linker(&mut linker)?;
    Ok((engine, linker))
}

/// Checks a compiled component against the contracts and pre-instantiates it with `linker`.
#[expect(clippy::too_many_arguments, reason = "one call site per engine, each naming every part")]
fn pre_instantiate(
    engine: &Engine,
    linker: &Linker<CallState>,
    config: &RuntimeConfig,
    component: Component,
    digest: Digest,
    size: usize,
    metadata: Arc<Metadata>,
    twin: Twin,
) -> Result<PolicyPre, LoadError> {
    // The largest initial size, in 64 KiB wasm pages, of the memories its core modules define
    // (checked against the engine's cap from the bytes in `load`; kept for each surface's cap
    // at activation). `None` means the component imports core modules, which a policy cannot
    // (its imports are checked next).
    let pages = component.resources_required().and_then(|r| r.max_initial_memory_size).unwrap_or(0);
    let declared_memory = pages.saturating_mul(WASM_PAGE);
    let ty = component.component_type();
    // The contract is the one whose policy interface the component exports; every import must
    // belong to that same version.
    let Some(contract) = Contract::ALL.into_iter().find(|c| ty.get_export(engine, c.export()).is_some()) else {
        let exports: Vec<String> = ty.exports(engine).map(|(name, _)| format!("`{name}`")).collect();
        let exports = if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") };
        return Err(LoadError::WrongWorld { exports });
    };
    if let Some((name, _)) = ty.imports(engine).find(|(name, _)| !contract.imports().contains(name)) {
        return Err(LoadError::ForbiddenImport { name: name.to_owned(), contract });
    }
    let instance_pre =
        linker.instantiate_pre(&component).map_err(|e| LoadError::Mismatch(contract, format!("{e:#}")))?;
    let pre = match contract {
        Contract::V0_3 => RankerPre::new(instance_pre).map(Pre::Current),
        legacy => PreLegacy::new(instance_pre, legacy).map(Pre::Legacy),
    }
    .map_err(|e| LoadError::Mismatch(contract, format!("{e:#}")))?;
    Ok(PolicyPre {
        engine: engine.clone(),
        component,
        pre,
        contract,
        digest,
        size,
        tick: config.epoch_tick,
        epochs: config.epoch_interruption,
        metered: config.fuel,
        declared_memory,
        metadata,
        twin,
    })
}

/// The engine shadow calls run on, built on first use: the serving engine's settings with an
/// instance pool of its own, sized for the shadow threads.
///
/// Why a pool of its own: the pooling allocator takes a lock to hand out and take back a slot,
/// and shadow threads run under `SCHED_IDLE` (`serving::shadow`). On a busy host such a thread
/// can be preempted while it holds that lock and then wait for an idle core, for milliseconds,
/// while every response-path call that needs a slot waits behind it: a priority inversion that
/// would put the shadow's cost on the answers' tail latency. With pools of their own the two
/// share no lock.
pub(super) struct ShadowSide {
    config: RuntimeConfig,
    engine: OnceLock<Result<ShadowEngine, String>>,
}

struct ShadowEngine {
    engine: Engine,
    linker: Linker<CallState>,
}

impl ShadowSide {
    /// Shadow calls in flight at once: one per shadow thread, with room for as many again.
    fn instances() -> u32 {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        u32::try_from(threads * 2).unwrap_or(u32::MAX)
    }

    fn engine(&self) -> Result<&ShadowEngine, LoadError> {
        self.engine
            .get_or_init(|| {
                build(&self.config, Self::instances())
                    .map(|(engine, linker)| ShadowEngine { engine, linker })
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| LoadError::Artifact(format!("building the shadow engine: {e}")))
    }
}

/// A loaded version's copy on the shadow engine, made on first use and shared by its clones.
#[derive(Clone)]
pub(super) struct Twin {
    /// `None` on a copy that is itself on the shadow engine.
    side: Option<Arc<ShadowSide>>,
    made: Arc<OnceLock<Arc<PolicyPre>>>,
}

impl Twin {
    fn new(side: Option<Arc<ShadowSide>>) -> Self {
        Twin { side, made: Arc::default() }
    }

    /// `policy`'s copy on the shadow engine (`policy` itself if it is one).
    pub(super) fn of(policy: &PolicyPre) -> Result<Arc<PolicyPre>, LoadError> {
        let twin = &policy.twin;
        let Some(side) = &twin.side else { return Ok(Arc::new(policy.clone())) };
        if let Some(made) = twin.made.get() {
            return Ok(made.clone());
        }
        let shadow = side.engine()?;
        let artifact = policy.component.serialize().map_err(|e| LoadError::Artifact(format!("{e:#}")))?;
        // SAFETY: `artifact` was serialised just now, in this process, from code this runtime
        // compiled itself (or deserialised after verifying its stored hash), for an engine with
        // the same settings (`build`); it never left memory.
        #[expect(unsafe_code, reason = "deserialising code compiled by this process, never stored")]
        let component = unsafe { Component::deserialize(&shadow.engine, &artifact) }
            .map_err(|e| LoadError::Artifact(format!("{e:#}")))?;
        let copy = pre_instantiate(
            &shadow.engine,
            &shadow.linker,
            &side.config,
            component,
            policy.digest,
            policy.size,
            policy.metadata.clone(),
            Twin::new(None),
        )?;
        // Two threads may race to make it; both copies work, one is kept.
        Ok(twin.made.get_or_init(|| Arc::new(copy)).clone())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

/// Feeds `Hash` output into SHA-256, for a fingerprint that is stable across processes (unlike
/// `DefaultHasher`, which is randomly keyed).
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 state is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The largest initial size, in bytes, of the memories the core modules inside a component
/// define, read from the bytes without compiling them; 0 if none (or if the bytes do not parse,
/// which compiling them reports).
fn declared_memory(bytes: &[u8]) -> u64 {
    let mut largest = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(wasmparser::Payload::MemorySection(memories)) = payload else { continue };
        for memory in memories.into_iter().flatten() {
            let page = 1u64 << memory.page_size_log2.unwrap_or(16);
            largest = largest.max(memory.initial.saturating_mul(page));
        }
    }
    largest
}

fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.is_empty() {
        Err(LoadError::Empty)
    } else if wasmparser::Parser::is_component(bytes) {
        Ok(())
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        Err(LoadError::CoreModule)
    } else {
        Err(LoadError::NotWasm)
    }
}
