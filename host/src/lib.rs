//! Relish: a host that runs personalisation policies as WebAssembly components.
//!
//! Policies are components of the `relish:policy` world (`wit/policy.wit`), written against the
//! `relish-guest` SDK. This crate is everything around them:
//!
//! - [`runtime`]: the one wrapper around wasmtime: load, check, compile and pre-instantiate a
//!   component once, then run each call on a fresh pooled instance under a deadline, a memory cap
//!   and output validation.
//! - [`wire`]: the JSON request and response, decoded straight into the contract's columns.
//! - [`registry`]: stored policy versions and their activation on surfaces, in a crash-safe data
//!   directory, with the versions that serve traffic kept loaded.
//! - [`builder`]: `relish build`, which compiles policy crates to components with no WASI imports.
//! - [`fallback`]: the answer when a policy fails: a page never fails because a policy did.
//! - [`server`]: `relish serve`, the HTTP data plane and the admin API.

pub mod builder;
pub mod fallback;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod wire;
