//! Why a component could not be loaded ([`LoadError`]) or a call gave no usable answer
//! ([`CallError`], [`PolicyError`]).

use std::time::Duration;

use super::contract::served;
use super::{CONTRACT, Contract, InvalidOutput};

/// Why a component could not be loaded. Each message names the problem and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Zero bytes.
    #[error("the file is empty, not a WebAssembly component")]
    Empty,
    /// Not WebAssembly at all.
    #[error("not a WebAssembly component: the file does not start with the `\\0asm` magic number")]
    NotWasm,
    /// A core module instead of a component.
    #[error(
        "a core WebAssembly module, not a component: build the policy with `relish build`, which \
         encodes the module as a component with wit-component"
    )]
    CoreModule,
    /// Invalid or uncompilable WebAssembly.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// Declares more initial linear memory than an instance may ever have.
    #[error(
        "the component declares {} of initial linear memory, beyond this host's cap of {} per \
         instance (engine.max_memory_mb): shrink its static data",
        mib(*.declared),
        mib(*.cap as u64)
    )]
    MemoryTooLarge {
        /// Bytes the component's largest memory starts with.
        declared: u64,
        /// The host's cap in bytes.
        cap: usize,
    },
    /// Instantiation itself failed (a trapping start function or initialiser), so no call could
    /// ever run.
    #[error("instantiating the component fails, so no call could ever run: {0}")]
    Instantiate(String),
    /// An import outside the contract.
    #[error("{}", import_message(.name, *.contract))]
    ForbiddenImport {
        /// The import's name, for example `wasi:cli/environment@0.2.6`.
        name: String,
        /// The contract version the component's export names.
        contract: Contract,
    },
    /// Not the `ranker` world.
    #[error(
        "the component does not target the `ranker` world: it exports none of `relish:policy/policy@0.3.0` \
         ({CONTRACT}), `relish:policy/policy@0.2.0` and `relish:policy/policy@0.1.0` (it exports: {exports})"
    )]
    WrongWorld {
        /// What it exports instead.
        exports: String,
    },
    /// Right names, wrong types: usually a component built against another version of the WIT.
    #[error("the component's imports or exports do not match {0}: {1}")]
    Mismatch(Contract, String),
    /// The metadata call failed.
    #[error("the component's `describe` call failed: {0}")]
    Metadata(String),
    /// The metadata is unusable.
    #[error("the component's metadata is invalid: {0}")]
    BadMetadata(String),
    /// A precompiled artifact could not be loaded.
    #[error("the compiled artifact cannot be loaded: {0}")]
    Artifact(String),
}

/// Bytes in MiB for messages, e.g. `320 MiB` or `0.5 MiB`.
pub fn mib(bytes: u64) -> String {
    let mib = bytes as f64 / f64::from(1 << 20);
    if mib.fract() == 0.0 { format!("{mib} MiB") } else { format!("{mib:.1} MiB") }
}

impl LoadError {
    /// A short code for metrics: `empty`, `not-wasm`, `core-module`, `compile`, `memory`,
    /// `forbidden-import`, `wrong-world`, `mismatch`, `instantiate`, `metadata`, `artifact`.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Empty => "empty",
            LoadError::NotWasm => "not-wasm",
            LoadError::CoreModule => "core-module",
            LoadError::Compile(_) => "compile",
            LoadError::MemoryTooLarge { .. } => "memory",
            LoadError::ForbiddenImport { .. } => "forbidden-import",
            LoadError::WrongWorld { .. } => "wrong-world",
            LoadError::Mismatch(..) => "mismatch",
            LoadError::Instantiate(_) => "instantiate",
            LoadError::Metadata(_) | LoadError::BadMetadata(_) => "metadata",
            LoadError::Artifact(_) => "artifact",
        }
    }
}

fn import_message(name: &str, contract: Contract) -> String {
    if name.starts_with("wasi:") {
        format!(
            "the component imports the WASI interface `{name}`: policies get no clock, entropy or \
             I/O of their own. Build for wasm32-unknown-unknown with `relish build` (a wasm32-wasip2 \
             build drags in WASI), and take time and randomness from the request"
        )
    } else if name.starts_with("relish:policy/") {
        format!(
            "the component imports `{name}`, which is not part of {contract}, the contract of its \
             export: this host serves {} (rebuild the policy against one of them, all of its imports \
             and its export of the same version)",
            served()
        )
    } else {
        format!(
            "the component imports `{name}`, which is not part of {contract}: a policy may import \
             only `relish:policy/host` (the log function)"
        )
    }
}

/// Why a call did not produce a usable answer. The `reason` is what responses, logs and metrics
/// show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The call ran past its deadline and was interrupted.
    #[error("the policy ran past its {0:?} deadline and was interrupted")]
    Timeout(Duration),
    /// The call's thread was preempted: the wall clock ran past the deadline and its grace while
    /// the policy had used less CPU than the deadline. The host's fault (load), not the policy's:
    /// never counted toward automatic rollback.
    #[error(
        "the call was stopped after {wall:?} on the wall clock with {cpu:?} of CPU time used: its thread \
         was preempted (the host is overloaded; not the policy's fault)"
    )]
    Preempted {
        /// CPU time the call had used.
        cpu: Duration,
        /// Wall-clock time it ran.
        wall: Duration,
    },
    /// The call used up its fuel budget.
    #[error("the policy used up its fuel budget of {0} units")]
    OutOfFuel(u64),
    /// The policy tried to grow memory past its cap (and then trapped).
    #[error("the policy tried to grow its memory past the {cap} byte cap: {detail}")]
    Memory {
        /// The cap in bytes.
        cap: usize,
        /// What happened after the refusal.
        detail: String,
    },
    /// The policy trapped (panic, stack overflow, out-of-bounds access, ...).
    #[error("the policy trapped: {0}")]
    Trap(String),
    /// The policy logged past its budget.
    #[error("the policy wrote more than {0} log lines in one call and was stopped")]
    LogLimit(u32),
    /// The policy's answer broke the contract.
    #[error("the policy's answer is invalid: {0}")]
    InvalidOutput(#[from] InvalidOutput),
    /// The policy declined with `rank-error`.
    #[error("the policy returned an error: {0}")]
    Policy(PolicyError),
    /// No pooled instance was free.
    #[error("no policy instance slot is free ({0})")]
    Capacity(String),
}

impl CallError {
    /// Whether the failure is the policy's own, the kind that counts toward automatic rollback:
    /// not when the host could not give the call a slot or the CPU it needed.
    pub fn is_policy_fault(&self) -> bool {
        !matches!(self, CallError::Capacity(_) | CallError::Preempted { .. })
    }

    /// Whether the call was stopped by its deadline, on the CPU clock or the wall clock.
    pub fn is_deadline(&self) -> bool {
        matches!(self, CallError::Timeout(_) | CallError::Preempted { .. })
    }

    /// The short reason code responses, logs and metrics use.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Timeout(_) | CallError::OutOfFuel(_) => "timeout",
            CallError::Memory { .. } => "memory",
            CallError::Trap(_) => "trap",
            CallError::LogLimit(_) => "log-limit",
            CallError::InvalidOutput(_) => "invalid-output",
            CallError::Policy(_) => "error",
            CallError::Capacity(_) => "capacity",
            CallError::Preempted { .. } => "preempted",
        }
    }
}

/// A `rank-error` returned by a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy says the request is invalid for it.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The policy failed.
    #[error("internal: {0}")]
    Internal(String),
}
