//! `relish build`: compiles policy crates into components.
//!
//! A policy crate is a `cdylib` that depends on `relish-guest`. It is built for
//! `wasm32-unknown-unknown` (so it cannot import WASI: no clock, entropy or I/O) and the core
//! module is encoded as a component with `wit-component`, using the world description that
//! `wit-bindgen` embeds in the module. Measured here: such a component has zero WASI imports and
//! instantiates in ~4 µs from the pool, against ~13 µs for a `wasm32-wasip2` build that drags in
//! 13 WASI interfaces.
//!
//! The same tool builds this repository's policies (`relish build` at the root) and a policy
//! author's own crate (`relish build --manifest-path my-policy/Cargo.toml`). The wasm build uses
//! its own profile, defined on the cargo command line so it does not touch the author's profiles,
//! and its own target directory, so it never waits on a host build's lock.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::runtime::Digest;

mod wasm;

pub use wasm::{BUNDLED, WASM_TARGET, ensure_target};

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The workspace or crate manifest; the current directory's workspace if `None`.
    pub manifest_path: Option<PathBuf>,
    /// Packages to build; every policy package of the workspace if empty.
    pub packages: Vec<String>,
    /// Where components go; `<target dir>/policies` if `None`.
    pub out_dir: Option<PathBuf>,
    /// The rustc target; [`WASM_TARGET`] if `None`. (`wasm32-wasip2` exists for test guests that
    /// must import WASI, to check that the host rejects them.)
    pub target: Option<String>,
    /// Pass `--quiet` to cargo.
    pub quiet: bool,
}

/// One built policy.
#[derive(Debug, Clone)]
pub struct Built {
    /// The package name.
    pub package: String,
    /// The policy's file name stem: the package name without the `relish-policy-` prefix.
    pub name: String,
    /// The component.
    pub component: PathBuf,
    /// The core module it was encoded from (the component itself for targets that emit one).
    pub core_module: PathBuf,
    /// The component's size in bytes.
    pub size: usize,
    /// The component's digest.
    pub digest: Digest,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
    target_directory: PathBuf,
    workspace_root: PathBuf,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    id: String,
    targets: Vec<Target>,
    dependencies: Vec<Dependency>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
    crate_types: Vec<String>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
}

/// Builds policy packages into components.
pub fn build(options: &BuildOptions) -> anyhow::Result<Vec<Built>> {
    let target = options.target.as_deref().unwrap_or(WASM_TARGET);
    let metadata = cargo_metadata(options.manifest_path.as_deref())?;
    let packages = select(&metadata, &options.packages)?;
    ensure_target(target).map_err(anyhow::Error::msg)?;

    let wasm_target_dir = metadata.target_directory.join("wasm");
    let out_dir = options.out_dir.clone().unwrap_or_else(|| metadata.target_directory.join("policies"));
    let names: Vec<String> = packages.iter().map(|(package, _)| package.clone()).collect();
    let mut command = wasm::build_command(target, &wasm_target_dir, &names);
    if let Some(manifest) = &options.manifest_path {
        command.arg("--manifest-path").arg(manifest);
    }
    if options.quiet {
        command.arg("--quiet");
    }
    let status = command.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo could not build the policies for {target} ({status})");
    }

    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut built = Vec::new();
    for (package, lib) in packages {
        let core_module = wasm::core_module(&wasm_target_dir, target, &lib);
        let bytes = std::fs::read(&core_module).with_context(|| format!("reading {}", core_module.display()))?;
        let component = if wasmparser::Parser::is_component(&bytes) {
            bytes
        } else {
            encode(&bytes).with_context(|| format!("encoding {package} as a component"))?
        };
        let name = package.strip_prefix("relish-policy-").unwrap_or(&package).to_owned();
        let path = out_dir.join(format!("{name}.wasm"));
        crate::registry::write_atomically(&path, &component).with_context(|| format!("writing {}", path.display()))?;
        built.push(Built {
            package,
            name,
            component: path,
            core_module,
            size: component.len(),
            digest: Digest::of(&component),
        });
    }
    Ok(built)
}

/// Encodes a core module built with `wit-bindgen` as a component.
pub fn encode(core_module: &[u8]) -> anyhow::Result<Vec<u8>> {
    wit_component::ComponentEncoder::default().validate(true).module(core_module)?.encode()
}

fn cargo_metadata(manifest_path: Option<&Path>) -> anyhow::Result<Metadata> {
    let mut command = wasm::cargo();
    command.args(["metadata", "--format-version", "1", "--no-deps"]);
    if let Some(manifest) = manifest_path {
        command.arg("--manifest-path").arg(manifest);
    }
    let output = command.output().context("running cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    serde_json::from_slice(&output.stdout).context("reading cargo metadata")
}

/// The packages to build, with their library target names.
fn select(metadata: &Metadata, wanted: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let members: Vec<&Package> =
        metadata.packages.iter().filter(|p| metadata.workspace_members.contains(&p.id)).collect();
    let cdylib =
        |p: &Package| p.targets.iter().find(|t| t.crate_types.iter().any(|c| c == "cdylib")).map(|t| t.name.clone());
    if wanted.is_empty() {
        let policies: Vec<(String, String)> = members
            .iter()
            .filter(|p| p.dependencies.iter().any(|d| d.name == "relish-guest"))
            .filter_map(|p| cdylib(p).map(|lib| (p.name.clone(), lib)))
            .collect();
        if policies.is_empty() {
            bail!(
                "no policy packages in {}: a policy is a crate with `crate-type = [\"cdylib\"]` that depends on \
                 relish-guest",
                metadata.workspace_root.display()
            );
        }
        return Ok(policies);
    }
    wanted
        .iter()
        .map(|name| {
            let package = members.iter().find(|p| &p.name == name).with_context(|| {
                format!("no package `{name}` in the workspace at {}", metadata.workspace_root.display())
            })?;
            let lib = cdylib(package)
                .with_context(|| format!("package `{name}` has no cdylib target (add `crate-type = [\"cdylib\"]`)"))?;
            Ok((name.clone(), lib))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_carries_every_policy_of_the_workspace() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let metadata = cargo_metadata(Some(&manifest)).unwrap();
        let mut workspace: Vec<String> = select(&metadata, &[])
            .unwrap()
            .into_iter()
            .map(|(package, _)| package.strip_prefix("relish-policy-").unwrap_or(&package).to_owned())
            .collect();
        workspace.sort();
        let mut bundled = BUNDLED.map(str::to_owned).to_vec();
        bundled.sort();
        assert_eq!(bundled, workspace, "builder::wasm::BUNDLED lists the policy packages under policies/");
    }
}
