//! How a policy is compiled to wasm: the target, the cargo profile and the environment of the
//! nested cargo. Shared, through `#[path]`, by `relish build` ([`super`]) and the host's build
//! script, which builds the bundled policies into the `relish` binary; both use the same target
//! directory and the same arguments, so the policies are compiled once for both. Only `std`: a
//! build script has no dependencies.

use std::path::Path;
use std::process::Command;

/// The default target: no WASI, so no clock, entropy or I/O.
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// The cargo profile the wasm build uses, defined on the command line (see [`profile_args`]).
pub const PROFILE: &str = "relish-policy";

/// The policies built into the `relish` binary, by package directory under `policies/` (each
/// package is `relish-policy-<name>`). A unit test checks this is every policy package of the
/// workspace.
pub const BUNDLED: [&str; 9] = [
    "popularity",
    "discovery",
    "discovery-gbdt",
    "category",
    "venue-items",
    "cart-cross-sell",
    "banners",
    "brands",
    "food-categories",
];

/// The initial linear memory of a policy, in bytes. The host gives every call a fresh instance
/// from a pool; when a call grows its memory past the initial size, wasmtime has to `mprotect` the
/// new pages on the way in and again when the slot is reset, and each `mprotect` in a
/// multi-threaded process is a TLB shootdown on every core. Starting with room for a typical
/// request (the 1 MiB stack, the request copied in, the policy's working vectors) keeps the hot
/// path free of those system calls; pages are only touched when used.
const INITIAL_MEMORY: usize = 4 << 20;

/// A `cargo` command without what a caller running under `cargo test`, `cargo clippy` or a build
/// script has set for its own target: none of it may leak into the wasm build.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for var in ["CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(var);
    }
    command
}

/// `cargo build` of `packages` for `target` into `target_dir`, with the wasm profile.
pub fn build_command(target: &str, target_dir: &Path, packages: &[String]) -> Command {
    let mut command = cargo();
    command.arg("build").args(["--target", target, "--profile", PROFILE]).arg("--target-dir").arg(target_dir);
    command.args(profile_args(target));
    for package in packages {
        command.args(["-p", package]);
    }
    command
}

/// Where `build_command` leaves the core module of the library `lib`.
pub fn core_module(target_dir: &Path, target: &str, lib: &str) -> std::path::PathBuf {
    target_dir.join(target).join(PROFILE).join(format!("{}.wasm", lib.replace('-', "_")))
}

/// The cargo `--config` arguments that define the wasm profile: optimised, one codegen unit and
/// link-time optimisation (the SDK's small functions inline into the policy), no debug info but
/// the name section kept, so traps show function names; the initial memory size (see
/// [`INITIAL_MEMORY`]); and WebAssembly SIMD (`simd128`, which every wasmtime compiles), so that
/// LLVM vectorises a policy's loops over columns as it does natively (measured: 7–10 % off a
/// `discovery` call). Appended to any rustflags the crate's own cargo configuration sets. SIMD
/// keeps answers bit for bit: LLVM never reorders floating-point arithmetic to vectorise it.
fn profile_args(target: &str) -> Vec<String> {
    let link = format!(
        "target.{target}.rustflags=[\"-C\", \"link-arg=--initial-memory={INITIAL_MEMORY}\", \"-C\", \"target-feature=+simd128\"]"
    );
    [
        "inherits=\"release\"",
        "opt-level=3",
        "lto=true",
        "codegen-units=1",
        "debug=false",
        "strip=\"debuginfo\"",
        "panic=\"abort\"",
        "incremental=false",
    ]
    .iter()
    .map(|setting| format!("profile.{PROFILE}.{setting}"))
    .chain((target == WASM_TARGET).then_some(link))
    .flat_map(|config| ["--config".to_owned(), config])
    .collect()
}

/// Makes sure `rustup` has the target installed; a no-op without rustup (cargo then reports a
/// missing target itself).
pub fn ensure_target(target: &str) -> Result<(), String> {
    let Ok(output) = Command::new("rustup").args(["target", "list", "--installed"]).output() else {
        return Ok(());
    };
    if String::from_utf8_lossy(&output.stdout).lines().any(|line| line.trim() == target) {
        return Ok(());
    }
    eprintln!("relish build: installing the {target} target with rustup");
    let status = Command::new("rustup").args(["target", "add", target]).status().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("`rustup target add {target}` failed ({status})"));
    }
    Ok(())
}
