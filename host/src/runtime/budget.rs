//! What one call may spend ([`Budget`]), and the resource limiter that holds an instance to its
//! memory and table caps.

use std::time::Duration;

#[cfg(doc)]
use super::RuntimeConfig;

/// What one call may spend.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The deadline, enforced by epoch interruption on the policy's CPU time: a call that used
    /// this much CPU is stopped between `deadline` and `deadline + epoch_tick` after it starts
    /// (a timeout); one whose thread was preempted goes on for the CPU time it has left, up to
    /// [`Budget::preemption_grace`] more on the wall clock (see `runtime::deadline`).
    pub deadline: Duration,
    /// How much longer than `deadline`, on the wall clock, a preempted call may run before it is
    /// stopped as preempted (the host's fault, not the policy's); `None`: as long as `deadline`.
    pub preemption_grace: Option<Duration>,
    /// The most bytes any one linear memory of the instance may grow to.
    pub memory_bytes: usize,
    /// The most table elements any one table may grow to.
    pub table_elements: usize,
    /// A deterministic instruction budget (wasmtime fuel); needs [`RuntimeConfig::fuel`].
    pub fuel: Option<u64>,
    /// The most log lines one call may write; the call is stopped at the next one.
    pub log_lines: u32,
    /// Log messages, and the messages of errors a policy returns, are truncated to this many
    /// bytes.
    pub log_line_bytes: usize,
    /// The most distinct reason codes an answer may carry, and their longest length in bytes.
    pub reason_codes: usize,
    /// See [`Budget::reason_codes`].
    pub reason_code_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            deadline: Duration::from_millis(5),
            preemption_grace: None,
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            fuel: None,
            log_lines: 32,
            log_line_bytes: 1024,
            reason_codes: 64,
            reason_code_bytes: 64,
        }
    }
}

/// Caps one instance's memories and tables, and remembers a refusal so that the trap that usually
/// follows (a Rust allocator aborts on failure) is reported as `memory`, not as a plain trap.
pub(super) struct Limits {
    pub(super) memory_bytes: usize,
    pub(super) table_elements: usize,
    pub(super) memory_refused: bool,
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    // Per-store counts, matching the pool's per-component limits in `Runtime::new`.
    fn instances(&self) -> usize {
        8
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}
