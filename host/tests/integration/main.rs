//! Integration tests of `relish serve`: the real server on ephemeral ports, real HTTP.
//!
//! One test binary with a module per area; `util` starts servers and speaks HTTP.

mod util;

mod admin;
mod cli;
mod containment;
mod crash;
mod data_plane;
mod decisions;
mod fail_open;
mod features;
mod fleet;
mod hostile;
mod lifecycle;
mod ops_page;
mod plans;
mod traces;
