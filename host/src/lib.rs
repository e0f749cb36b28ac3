//! Relish: a host that runs personalisation policies as WebAssembly components.
//!
//! Policies are components of the `relish:policy` world (`wit/policy.wit`), written against the
//! `relish-guest` SDK. This crate is everything around them:
//!
//! - [`runtime`]: the one wrapper around wasmtime: load, check, compile and pre-instantiate a
//!   component once, then run each call on a fresh pooled instance under a deadline, a memory cap
//!   and output validation.
//! - [`wire`]: the JSON request and response, decoded straight into the contract's columns.
//! - [`registry`]: stored policy versions and every surface's plan history, in a crash-safe data
//!   directory, with the versions that serve traffic kept loaded.
//! - [`control`]: the control plane: every change of what serves a surface (plans with weighted
//!   sticky arms and shadows, activations, rollbacks), applied in one place.
//! - [`serving`]: the pipeline that answers a request (plan → arm → call → validate → fallback →
//!   shadow) and returns a `Decision`, with no HTTP in it.
//! - [`metrics`]: the Prometheus metrics; [`telemetry`]: OpenTelemetry traces over OTLP.
//! - [`builder`]: `relish build`, which compiles policy crates to components with no WASI imports.
//! - [`bundled`]: the bundled policies, built into the binary.
//! - [`scaffold`]: `relish new`, a policy crate with the SDK this binary was built with.
//! - [`fallback`]: the answer when a policy fails: a page never fails because a policy did.
//! - [`server`]: `relish serve`, the HTTP data plane and the admin API, on top of the two above.

pub mod builder;
pub mod bundled;
pub mod control;
pub mod decisions;
pub mod fallback;
pub mod features;
pub mod fleet;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod scaffold;
pub mod server;
pub mod serving;
pub mod telemetry;
pub mod wire;
