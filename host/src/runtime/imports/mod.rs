//! The host side of the contract's imports: one module per WIT interface a policy may import
//! (`ALLOWED_IMPORTS`), each with the per-call state it needs and an `add_to_linker` that
//! [`Runtime::new`](super::Runtime::new) calls, and the store data ([`CallState`]) that holds that
//! state for one call.

pub(super) mod log;
pub(super) mod types;

use self::log::LogState;
use super::Budget;
use super::budget::Limits;
use super::deadline::Clock;

/// Per-call store data: limits, the deadline's clocks and the log buffer.
pub(super) struct CallState {
    pub(super) limits: Limits,
    /// The call's CPU and wall clocks (see [`super::deadline`]).
    pub(super) clock: Clock,
    /// The `relish:policy/host` import's state (see [`log`]).
    pub(super) log: LogState,
}

impl CallState {
    pub(super) fn new(budget: &Budget, tick: std::time::Duration) -> Self {
        CallState {
            limits: Limits {
                memory_bytes: budget.memory_bytes,
                table_elements: budget.table_elements,
                memory_refused: false,
            },
            clock: Clock::start(budget, tick),
            log: LogState::new(budget),
        }
    }
}
