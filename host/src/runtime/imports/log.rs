//! The `relish:policy/host` interface: the policy's `log` function, under the call's log budget,
//! and the per-call buffer of lines it writes (emitted as `tracing` events by
//! [`PolicyInstance::flush_logs`](crate::runtime::PolicyInstance::flush_logs)).

use wasmtime::StoreContextMut;
use wasmtime::component::{HasSelf, Linker};

use super::CallState;
use crate::runtime::Budget;
use crate::runtime::bindings;
use crate::runtime::bindings::relish::policy::host::LogLevel;

/// Adds the `relish:policy/host` interface to `linker`, on each call's [`LogState`], in every
/// contract version served (0.2.0 and 0.1.0 have the same `log` function).
pub(in crate::runtime) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    bindings::relish::policy::host::add_to_linker::<_, HasSelf<_>>(linker, |state| &mut state.log)?;
    for older in ["relish:policy/host@0.2.0", "relish:policy/host@0.1.0"] {
        linker.instance(older)?.func_wrap(
            "log",
            |mut store: StoreContextMut<'_, CallState>, (level, message): (LogLevel, String)| {
                bindings::relish::policy::host::Host::log(&mut store.data_mut().log, level, message)
            },
        )?;
    }
    Ok(())
}

/// The log import's per-call state: the buffered lines and the budget they count against.
pub(in crate::runtime) struct LogState {
    pub(in crate::runtime) logs: Vec<(LogLevel, String)>,
    log_lines: u32,
    log_line_bytes: usize,
    pub(in crate::runtime) log_overflow: bool,
    pub(in crate::runtime) last_error_log: Option<String>,
}

impl LogState {
    pub(super) fn new(budget: &Budget) -> Self {
        LogState {
            logs: Vec::new(),
            log_lines: budget.log_lines,
            log_line_bytes: budget.log_line_bytes,
            log_overflow: false,
            last_error_log: None,
        }
    }
}

impl bindings::relish::policy::host::Host for LogState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        if self.logs.len() as u32 >= self.log_lines {
            self.log_overflow = true;
            wasmtime::bail!("log budget of {} lines exceeded", self.log_lines);
        }
        let message = bounded(message, self.log_line_bytes);
        if level == LogLevel::Error {
            self.last_error_log = Some(message.clone());
        }
        self.logs.push((level, message));
        Ok(())
    }
}

/// `message` cut to at most `max` bytes (on a character boundary, marked with `…`), in an
/// allocation of its own size: a guest string may be as large as the guest's memory, and the host
/// keeps it beyond the call (logs, responses).
pub(in crate::runtime) fn bounded(message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut cut = String::with_capacity(end + '…'.len_utf8());
    cut.push_str(&message[..end]);
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn a_long_guest_string_is_cut_on_a_character_boundary_into_a_small_allocation() {
        let huge = "é".repeat(1 << 20); // 2 MiB, two bytes per character
        let cut = bounded(huge, 1001);
        assert_eq!(cut, format!("{}…", "é".repeat(500)));
        assert!(cut.capacity() <= 1001 + 3, "the copy does not keep the guest's 2 MiB");
        assert_eq!(bounded("short".to_owned(), 1001), "short");
    }
}
