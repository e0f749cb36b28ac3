//! A loaded policy version ([`PolicyPre`]), the per-call store and instance it runs on
//! ([`PolicyInstance`]), and how a failed call is told apart (`classify`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Engine, Store, Trap};

use super::bindings::relish::policy::host::LogLevel;
use super::bindings::{Ranker as RankerWorld, RankerPre};
use super::contract::{ExportsLegacy, PreLegacy};
use super::deadline::Stop;
use super::engine::Twin;
use super::imports::CallState;
use super::imports::log::bounded;
use super::{Budget, CallError, Contract, Digest, LoadError, Metadata, PolicyError, Ranking, types};

/// A component pre-instantiated for the contract version it was built against.
#[derive(Clone)]
pub(super) enum Pre {
    /// The current contract, through the generated bindings.
    Current(RankerPre<CallState>),
    /// An older contract (see [`super::contract`]).
    Legacy(PreLegacy),
}

/// An instance's exports.
enum Exports {
    Current(RankerWorld),
    Legacy(ExportsLegacy),
}

/// A loaded policy version: compiled, pre-instantiated, its metadata read. Cheap to clone (the
/// compiled code is shared); share it behind an `Arc` across threads.
#[derive(Clone)]
pub struct PolicyPre {
    pub(super) engine: Engine,
    pub(super) component: Component,
    pub(super) pre: Pre,
    pub(super) contract: Contract,
    pub(super) digest: Digest,
    pub(super) size: usize,
    pub(super) tick: Duration,
    pub(super) epochs: bool,
    pub(super) metered: bool,
    pub(super) declared_memory: u64,
    pub(super) metadata: Arc<Metadata>,
    pub(super) twin: Twin,
}

impl fmt::Debug for PolicyPre {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyPre")
            .field("name", &self.metadata.name)
            .field("version", &self.metadata.version)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl PolicyPre {
    /// What the policy says about itself.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The contract version the component was built against.
    pub fn contract(&self) -> Contract {
        self.contract
    }

    /// The digest of the component's bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The component's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The initial size of the component's largest linear memory, in bytes: the least memory
    /// every call takes, before the policy allocates anything.
    pub fn declared_memory(&self) -> u64 {
        self.declared_memory
    }

    /// This version on the shadow engine: the same compiled code, instantiated from an instance
    /// pool of its own, for shadow calls (see `runtime::engine::ShadowSide` for why). Made on
    /// first use from this version's compiled code (no compilation), then kept with it.
    pub fn for_shadows(&self) -> Result<Arc<PolicyPre>, LoadError> {
        Twin::of(self)
    }

    /// The compiled artifact, for storing beside the component.
    pub fn serialize(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.component.serialize()?)
    }

    /// Ranks one request on a fresh pooled instance, under `budget`, and validates the answer.
    ///
    /// The policy's log lines are emitted as `tracing` events in the caller's span.
    pub fn rank(&self, request: &types::Request, budget: &Budget) -> Result<Ranking, CallError> {
        let mut instance = self.instance(budget)?;
        let result = instance.rank(request);
        instance.flush_logs();
        result
    }

    /// A live instance for several calls. Only for benchmarks and tools: state left in the
    /// instance by one call is visible to the next, which a server must never allow between users.
    pub fn instance(&self, budget: &Budget) -> Result<PolicyInstance, CallError> {
        let mut store = Store::new(&self.engine, CallState::new(budget, self.tick));
        store.limiter(|state| &mut state.limits);
        if self.epochs {
            store.epoch_deadline_callback(|mut store| match store.data_mut().clock.check() {
                Ok(ticks) => Ok(wasmtime::UpdateDeadline::Continue(ticks)),
                Err(_) => Err(Trap::Interrupt.into()),
            });
            store.set_epoch_deadline(self.ticks(budget));
        }
        // With metering compiled in, a budget without fuel runs unmetered (the deadline still
        // holds); a budget with fuel on an engine without metering is a configuration error.
        match (budget.fuel, self.metered) {
            (Some(fuel), _) => {
                store.set_fuel(fuel).map_err(|e| CallError::Capacity(format!("fuel is not enabled: {e}")))?;
            }
            (None, true) => store.set_fuel(u64::MAX).expect("fuel is enabled"),
            (None, false) => {}
        }
        let exports = match &self.pre {
            Pre::Current(pre) => pre.instantiate(&mut store).map(Exports::Current),
            Pre::Legacy(pre) => pre.instantiate(&mut store).map(Exports::Legacy),
        };
        let ranker = match exports {
            Ok(ranker) => ranker,
            Err(error) => return Err(classify(error, &store, budget)),
        };
        Ok(PolicyInstance { policy: self.clone(), store, ranker, budget: budget.clone(), fresh: true })
    }

    fn ticks(&self, budget: &Budget) -> u64 {
        // The current tick is partly over when the call starts, so one extra tick makes the
        // effective deadline at least `deadline`.
        let tick = self.tick.as_nanos().max(1);
        (budget.deadline.as_nanos().div_ceil(tick) + 1) as u64
    }
}

/// Something that ranks a request under a budget and returns a validated answer: a loaded
/// component ([`PolicyPre`]), or, for the load benchmark's native baseline only, the same policy
/// compiled into the host.
pub trait Ranker: Send + Sync {
    /// Ranks one request.
    fn rank(&self, request: &types::Request, budget: &Budget) -> Result<Ranking, CallError>;
}

impl Ranker for PolicyPre {
    fn rank(&self, request: &types::Request, budget: &Budget) -> Result<Ranking, CallError> {
        PolicyPre::rank(self, request, budget)
    }
}

/// A live policy instance (see [`PolicyPre::instance`]). Call it on the thread that made it:
/// its deadline counts that thread's CPU time (see `runtime::deadline`); the first call's
/// deadline runs from when the instance was made, instantiation included.
pub struct PolicyInstance {
    policy: PolicyPre,
    store: Store<CallState>,
    ranker: Exports,
    budget: Budget,
    /// No call yet: the deadline and its clocks started with the store, just now.
    fresh: bool,
}

impl PolicyInstance {
    /// Calls `rank` and validates the answer.
    pub fn rank(&mut self, request: &types::Request) -> Result<Ranking, CallError> {
        self.restart_deadline();
        let answer = match &self.ranker {
            Exports::Current(ranker) => ranker.relish_policy_policy().call_rank(&mut self.store, request),
            Exports::Legacy(exports) => exports.call_rank(&mut self.store, request),
        };
        match answer {
            Ok(Ok(ranking)) => Ranking::validate(ranking, request, &self.budget),
            Ok(Err(types::RankError::InvalidRequest(message))) => {
                Err(CallError::Policy(PolicyError::InvalidRequest(bounded(message, self.budget.log_line_bytes))))
            }
            Ok(Err(types::RankError::Internal(message))) => {
                Err(CallError::Policy(PolicyError::Internal(bounded(message, self.budget.log_line_bytes))))
            }
            Err(error) => Err(classify(error, &self.store, &self.budget)),
        }
    }

    /// Calls `metadata`.
    pub fn metadata(&mut self) -> Result<types::Metadata, CallError> {
        self.restart_deadline();
        let answer = match &self.ranker {
            Exports::Current(ranker) => ranker.relish_policy_policy().call_describe(&mut self.store),
            Exports::Legacy(exports) => exports.call_describe(&mut self.store),
        };
        self.flush_logs();
        answer.map_err(|error| classify(error, &self.store, &self.budget))
    }

    fn restart_deadline(&mut self) {
        // The first call runs on the deadline the store started with (one read of the CPU clock
        // per call, not two).
        if std::mem::take(&mut self.fresh) {
            return;
        }
        if self.policy.epochs {
            let ticks = self.policy.ticks(&self.budget);
            self.store.data_mut().clock.restart();
            self.store.set_epoch_deadline(ticks);
        }
    }

    /// Emits buffered policy log lines as `tracing` events.
    pub fn flush_logs(&mut self) {
        let metadata = &self.policy.metadata;
        for (level, message) in self.store.data_mut().log.logs.drain(..) {
            let (policy, version) = (metadata.name.as_str(), metadata.version.as_str());
            match level {
                LogLevel::Debug => tracing::debug!(policy, version, "policy log: {message}"),
                LogLevel::Info => tracing::info!(policy, version, "policy log: {message}"),
                LogLevel::Warn => tracing::warn!(policy, version, "policy log: {message}"),
                LogLevel::Error => tracing::error!(policy, version, "policy log: {message}"),
            }
        }
    }
}

fn classify(error: wasmtime::Error, store: &Store<CallState>, budget: &Budget) -> CallError {
    let state = store.data();
    if state.log.log_overflow {
        return CallError::LogLimit(budget.log_lines);
    }
    match (state.clock.stopped, error.downcast_ref::<Trap>()) {
        (Some(Stop::Preempted { cpu, wall }), _) => return CallError::Preempted { cpu, wall },
        (Some(Stop::Deadline), _) | (_, Some(Trap::Interrupt)) => return CallError::Timeout(budget.deadline),
        (_, Some(Trap::OutOfFuel)) => return CallError::OutOfFuel(budget.fuel.unwrap_or(0)),
        _ => {}
    }
    let detail = describe_trap(&error);
    if state.limits.memory_refused {
        return CallError::Memory { cap: budget.memory_bytes, detail };
    }
    // By type, never by message: the message carries the guest's own function names.
    if error.chain().any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>()) {
        return CallError::Capacity(detail);
    }
    let panic = state.log.last_error_log.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
    CallError::Trap(format!("{detail}{panic}"))
}

/// A trap in one line: what happened and in which policy function, e.g. "wasm `unreachable`
/// instruction executed in `discovery::rank`". (The SDK turns a panic into an `unreachable` trap
/// after logging the panic message, which [`classify`] appends.)
fn describe_trap(error: &wasmtime::Error) -> String {
    let what = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    let what = what.strip_prefix("wasm trap: ").unwrap_or(&what).to_owned();
    // The innermost frame that is the policy's own code, not the panic or allocation machinery.
    let place = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|trace| {
            trace
                .frames()
                .iter()
                .filter_map(|frame| frame.func_name())
                .map(|name| format!("{:#}", rustc_demangle::demangle(name)))
                .find(|name| {
                    !["std::", "core::", "alloc::", "<alloc::", "<core::", "__rust", "rust_panic", "__rustc::"]
                        .iter()
                        .any(|prefix| name.starts_with(prefix))
                })
        })
        .map(|name| format!(" in `{name}`"))
        .unwrap_or_default();
    format!("{what}{place}")
}
