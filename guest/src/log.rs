//! Log lines to the host, tagged there with the request id, policy and version.
//!
//! The host bounds logging: long messages are truncated and a call that logs past its budget is
//! stopped. Natively (in tests) lines go to standard error.

use crate::bindings::relish::policy::host::LogLevel;

fn write(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::relish::policy::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Logs detail for debugging a policy.
pub fn debug(message: &str) {
    write(LogLevel::Debug, message);
}

/// Logs a notable event.
pub fn info(message: &str) {
    write(LogLevel::Info, message);
}

/// Logs something unexpected that the policy recovered from.
pub fn warn(message: &str) {
    write(LogLevel::Warn, message);
}

/// Logs a failure.
pub fn error(message: &str) {
    write(LogLevel::Error, message);
}
