//! `relish new NAME --surface SURFACE`: a policy crate that builds on a machine with nothing but
//! Rust and this binary.
//!
//! The binary carries the guest SDK it was built with (`guest/` and `wit/policy.wit`, embedded at
//! compile time) and writes it into the new crate as `sdk/`, a path dependency: the crate then
//! needs neither this repository nor a registry that publishes the SDK, and the SDK it builds
//! against is exactly the one this host loads. Its manifest is the SDK's own with the workspace's
//! values (version, edition, dependency versions) filled in from the workspace manifest, also
//! embedded, so the two never drift apart.
//!
//! The crate: `Cargo.toml`, `src/lib.rs` (a policy that orders the surface's candidates by one
//! feature, with a native test), `requests/SURFACE.json` (a request of that surface, from the
//! repository's fixtures) and a `.gitignore`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::server::config::STANDARD_SURFACES;

/// The SDK's files, as `(path under sdk/, contents)`.
const SDK: &[(&str, &str)] = &[
    ("relish-guest/src/arena.rs", include_str!("../../guest/src/arena.rs")),
    ("relish-guest/src/columns.rs", include_str!("../../guest/src/columns.rs")),
    ("relish-guest/src/lib.rs", include_str!("../../guest/src/lib.rs")),
    ("relish-guest/src/log.rs", include_str!("../../guest/src/log.rs")),
    ("relish-guest/src/math.rs", include_str!("../../guest/src/math.rs")),
    ("relish-guest/src/ranking.rs", include_str!("../../guest/src/ranking.rs")),
    ("relish-guest/src/request.rs", include_str!("../../guest/src/request.rs")),
    ("relish-guest/src/rng.rs", include_str!("../../guest/src/rng.rs")),
    ("relish-guest/src/score.rs", include_str!("../../guest/src/score.rs")),
    ("relish-guest/src/spec.rs", include_str!("../../guest/src/spec.rs")),
    ("relish-guest/src/testing.rs", include_str!("../../guest/src/testing.rs")),
    // The SDK's `generate!` reads `../wit` from its crate.
    ("wit/policy.wit", include_str!("../../wit/policy.wit")),
];

const SDK_MANIFEST: &str = include_str!("../../guest/Cargo.toml");
const WORKSPACE_MANIFEST: &str = include_str!("../../Cargo.toml");

/// Per standard surface: a request of it, and the feature the new policy orders by.
const SURFACES: [(&str, &str, &str); 7] = [
    ("discovery", include_str!("../../tests/fixtures/discovery-evening.json"), "rating"),
    ("category", include_str!("../../tests/fixtures/category-sushi.json"), "rating"),
    ("venue-items", include_str!("../../tests/fixtures/venue-items-morning.json"), "orders_7d"),
    ("cart-cross-sell", include_str!("../../tests/fixtures/cart-cross-sell-burger.json"), "orders_7d"),
    ("banners", include_str!("../../tests/fixtures/banners-home.json"), "clicks"),
    ("brands", include_str!("../../tests/fixtures/brands-home.json"), "orders_7d"),
    ("food-categories", include_str!("../../tests/fixtures/food-categories-home.json"), "orders_7d"),
];

/// Creates the crate of policy `name` for `surface` in `parent/name`; returns its directory.
pub fn new_policy(parent: &Path, name: &str, surface: &str) -> anyhow::Result<PathBuf> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` cannot name a policy crate: use 1 to 64 of a-z, 0-9, `-` and `_`, starting with a letter \
             (it becomes the policy's name and the crate `relish-policy-{name}`)"
        );
    }
    let Some(&(_, request, feature)) = SURFACES.iter().find(|(known, ..)| *known == surface) else {
        bail!("no standard surface `{surface}`: choose one of {}", STANDARD_SURFACES.join(", "));
    };
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} exists already: choose another name or directory", dir.display());
    }
    let files = [
        ("Cargo.toml".to_owned(), manifest(name)),
        ("src/lib.rs".to_owned(), policy_source(name, surface, feature)),
        (format!("requests/{surface}.json"), request.to_owned()),
        (".gitignore".to_owned(), "/target\n".to_owned()),
        ("sdk/relish-guest/Cargo.toml".to_owned(), sdk_manifest()?),
    ];
    let sdk = SDK.iter().map(|(path, text)| (format!("sdk/{path}"), (*text).to_owned()));
    for (path, text) in files.into_iter().chain(sdk) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in the crate"))
            .with_context(|| format!("creating {}", path.parent().unwrap_or(&dir).display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

fn manifest(name: &str) -> String {
    format!(
        "[package]\nname = \"relish-policy-{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n\
         [dependencies]\n# The SDK this `relish` was built with (`relish new` wrote it; `relish build` checks the\n\
         # component against the same contract).\nrelish-guest = {{ path = \"sdk/relish-guest\" }}\n\n\
         # A crate of its own, not a member of a workspace around it.\n[workspace]\nexclude = [\"sdk\"]\n\n\
         [profile.release]\nopt-level = 3\nlto = true\ncodegen-units = 1\npanic = \"abort\"\n"
    )
}

/// The SDK's manifest with every `workspace = true` replaced by the workspace's value, and
/// without the workspace's lints.
fn sdk_manifest() -> anyhow::Result<String> {
    let workspace: toml::Table = WORKSPACE_MANIFEST.parse().context("the embedded workspace manifest")?;
    let ws = workspace.get("workspace").and_then(toml::Value::as_table).context("[workspace]")?;
    let package_values = ws.get("package").and_then(toml::Value::as_table).context("[workspace.package]")?;
    let dependency_values =
        ws.get("dependencies").and_then(toml::Value::as_table).context("[workspace.dependencies]")?;
    let mut sdk: toml::Table = SDK_MANIFEST.parse().context("the embedded SDK manifest")?;
    sdk.remove("lints");
    let inherits = |value: &toml::Value| value.get("workspace").and_then(toml::Value::as_bool) == Some(true);
    if let Some(package) = sdk.get_mut("package").and_then(toml::Value::as_table_mut) {
        for (key, value) in package.iter_mut() {
            if inherits(value) {
                *value = package_values.get(key).with_context(|| format!("workspace.package.{key}"))?.clone();
            }
        }
    }
    if let Some(dependencies) = sdk.get_mut("dependencies").and_then(toml::Value::as_table_mut) {
        for (name, value) in dependencies.iter_mut() {
            if !inherits(value) {
                continue;
            }
            let mut resolved =
                dependency_values.get(name).with_context(|| format!("workspace.dependencies.{name}"))?.clone();
            // `features` given beside `workspace = true` add to the workspace's.
            if let Some(extra) = value.get("features").and_then(toml::Value::as_array) {
                if let toml::Value::String(version) = &resolved {
                    resolved =
                        toml::Value::Table(toml::Table::from_iter([("version".to_owned(), version.clone().into())]));
                }
                let table = resolved.as_table_mut().expect("a table");
                let features = table.entry("features").or_insert_with(|| toml::Value::Array(Vec::new()));
                features.as_array_mut().context("features")?.extend(extra.iter().cloned());
            }
            *value = resolved;
        }
    }
    let mut text =
        String::from("# The Relish guest SDK, written by `relish new` from the SDK this `relish` was built with.\n");
    // The package first, as people write manifests (a table serialises its keys sorted).
    for section in ["package", "features", "dependencies"] {
        if let Some(table) = sdk.remove(section) {
            let one = toml::Table::from_iter([(section.to_owned(), table)]);
            write!(text, "\n{}", toml::to_string(&one)?).expect("writing to a String");
        }
    }
    if !sdk.is_empty() {
        write!(text, "\n{}", toml::to_string(&sdk)?).expect("writing to a String");
    }
    Ok(text)
}

/// `nearest-venue` → `NearestVenue`.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars).collect::<String>()
        })
        .collect()
}

fn policy_source(name: &str, surface: &str, feature: &str) -> String {
    let policy = type_name(name);
    format!(
        r#"//! The `{name}` policy for the `{surface}` surface: candidates with the highest `{feature}`
//! first, those without it last.
//!
//! ```sh
//! cargo test                  # the native tests below, no wasm toolchain needed
//! relish build                # target/policies/{name}.wasm
//! relish rank --policy target/policies/{name}.wasm --request requests/{surface}.json
//! ```

use relish_guest::{{Feature, Param, Policy, RankError, Ranking, Request, Spec}};

pub struct {policy};

impl Policy for {policy} {{
    const SPEC: &'static Spec = &Spec {{
        name: "{name}",
        version: env!("CARGO_PKG_VERSION"),
        description: "Highest `{feature}` first.",
        surfaces: &["{surface}"],
        params: &[Param {{ name: "weight", default: "1.0", description: "Multiplies `{feature}` (negative: lowest first)." }}],
        features: &[Feature::candidate("{feature}", "What the candidates are ordered by.")],
    }};

    fn rank(request: &Request) -> Result<Ranking, RankError> {{
        let weight: f32 = request.param("weight")?;
        let values = request.candidates().feature("{feature}");
        // A missing value (NaN in the matrix) comes back as None: last.
        let scores: Vec<f32> =
            (0..request.candidates().len()).map(|i| values.get(i).map_or(f32::MIN, |v| weight * v)).collect();
        Ok(Ranking::from_scores(&scores, request.limit()))
    }}
}}

relish_guest::export_policy!({policy});

#[cfg(test)]
mod tests {{
    use relish_guest::testing::RequestBuilder;

    use super::*;

    #[test]
    fn the_highest_value_comes_first_and_a_missing_one_last() {{
        let ranking = RequestBuilder::new("{surface}")
            .candidate("low", &[("{feature}", 1.0)], &[])
            .candidate("none", &[], &[])
            .candidate("high", &[("{feature}", 5.0)], &[])
            .rank::<{policy}>()
            .unwrap();
        assert_eq!(ranking.order(), [2, 0, 1]);
    }}

    #[test]
    fn a_negative_weight_turns_the_order_round() {{
        let ranking = RequestBuilder::new("{surface}")
            .param("weight", "-1")
            .candidate("low", &[("{feature}", 1.0)], &[])
            .candidate("high", &[("{feature}", 5.0)], &[])
            .rank::<{policy}>()
            .unwrap();
        assert_eq!(ranking.order(), [0, 1]);
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_source_file_is_embedded() {
        let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(guest)
            .unwrap()
            .map(|entry| format!("relish-guest/src/{}", entry.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> =
            SDK.iter().map(|(path, _)| (*path).to_owned()).filter(|p| p.starts_with("relish-guest/src/")).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "a file added to guest/src must be added to scaffold::SDK");
        let surfaces: Vec<&str> = SURFACES.iter().map(|(surface, ..)| *surface).collect();
        assert_eq!(surfaces, STANDARD_SURFACES);
    }

    #[test]
    fn the_sdk_manifest_has_the_workspaces_values() {
        let manifest: toml::Table = sdk_manifest().unwrap().parse().unwrap();
        assert_eq!(manifest["package"]["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(manifest["package"]["edition"].as_str(), Some("2024"));
        assert!(manifest["dependencies"]["wit-bindgen"]["version"].as_str().unwrap().starts_with("0.61"));
        assert!(!manifest.contains_key("lints"));
        let text = sdk_manifest().unwrap();
        assert!(!text.contains("workspace"), "{text}");
    }

    #[test]
    fn names_and_surfaces_are_checked_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["Nearest", "9lives", "a.b", "../x", ""] {
            let error = new_policy(dir.path(), bad, "discovery").unwrap_err().to_string();
            assert!(error.contains("a-z, 0-9"), "{bad}: {error}");
        }
        let error = new_policy(dir.path(), "nearest", "home").unwrap_err().to_string();
        assert!(error.contains("`home`") && error.contains("discovery, category"), "{error}");
        let made = new_policy(dir.path(), "nearest-venue", "banners").unwrap();
        let source = std::fs::read_to_string(made.join("src/lib.rs")).unwrap();
        assert!(source.contains("pub struct NearestVenue;") && source.contains("\"clicks\""), "{source}");
        assert!(made.join("requests/banners.json").exists() && made.join("sdk/wit/policy.wit").exists());
        let error = new_policy(dir.path(), "nearest-venue", "banners").unwrap_err().to_string();
        assert!(error.contains("exists already"), "{error}");
    }
}
