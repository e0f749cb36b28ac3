//! The bundled policies, built into this binary: `relish serve` on a machine with nothing but
//! the binary serves every standard surface with them.
//!
//! `build.rs` compiles each policy of [`BUNDLED`](crate::builder::BUNDLED) for wasm, exactly as
//! `relish build` does, and embeds the core module; the component is encoded from it when a
//! surface first needs the policy. Encoding is deterministic, so the same binary gives the same
//! bytes (and digest) on every start, and a data directory that stored them once finds them
//! again.

use anyhow::Context as _;

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// The names of the bundled policies.
pub fn names() -> impl Iterator<Item = &'static str> {
    CORE_MODULES.iter().map(|(name, _)| *name)
}

/// Whether this binary carries the policy `name`.
pub fn contains(name: &str) -> bool {
    names().any(|bundled| bundled == name)
}

/// The component of the bundled policy `name`, or `None` if this binary does not carry it.
pub fn component(name: &str) -> Option<anyhow::Result<Vec<u8>>> {
    let (_, core_module) = CORE_MODULES.iter().find(|(bundled, _)| *bundled == name)?;
    Some(crate::builder::encode(core_module).with_context(|| format!("encoding the bundled policy `{name}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_policy_encodes_as_a_component_the_same_way_each_time() {
        assert_eq!(names().collect::<Vec<_>>(), crate::builder::BUNDLED);
        for name in names() {
            let first = component(name).unwrap().unwrap();
            assert!(wasmparser::Parser::is_component(&first), "{name}");
            assert_eq!(component(name).unwrap().unwrap(), first, "{name}: encoding is deterministic");
        }
        assert!(component("no-such-policy").is_none());
        assert!(!contains("no-such-policy") && contains("popularity"));
    }
}
