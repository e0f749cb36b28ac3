//! End-to-end tests: bundled policies and test guests run through the real host runtime.
//!
//! One test binary with a module per area; shared helpers live in the `relish-tests` library.

mod containment;
mod contract;
mod determinism;
mod evaluation;
mod native;
mod policies;
mod portfolio;
mod registry;
mod rejection;
mod validation;
