//! Components that are not ranking policies are refused at load, with a message naming why.

use relish_host::runtime::LoadError;
use relish_tests::{guest_bytes, guests, policy_bytes, runtime};

fn load_error(bytes: &[u8]) -> LoadError {
    runtime().load(bytes).expect_err("the component must be refused")
}

#[test]
fn a_component_that_imports_wasi_is_refused_naming_the_import() {
    let error = load_error(&guest_bytes("wasi-import"));
    let LoadError::ForbiddenImport { name, .. } = &error else { panic!("wrong error: {error}") };
    assert!(name.starts_with("wasi:"), "{name}");
    let message = error.to_string();
    assert!(message.contains(name.as_str()) && message.contains("wasm32-unknown-unknown"), "{message}");
}

#[test]
fn a_component_that_imports_an_unknown_interface_is_refused_naming_it() {
    let error = load_error(&guest_bytes("unknown-import"));
    assert!(matches!(&error, LoadError::ForbiddenImport { name, .. } if name == "test:evil/net"), "{error}");
    assert!(error.to_string().contains("`test:evil/net`"), "{error}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let error = load_error(&guest_bytes("other-world"));
    assert!(matches!(error, LoadError::WrongWorld { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("relish:policy/policy@0.1.0") && message.contains("`run`"), "{message}");
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    let core = std::fs::read(&guests()["out-of-range"].core_module).unwrap();
    let error = load_error(&core);
    assert!(matches!(error, LoadError::CoreModule), "{error}");
    assert!(error.to_string().contains("relish build"), "{error}");
}

#[test]
fn empty_garbage_and_truncated_files_are_refused() {
    assert!(matches!(load_error(b""), LoadError::Empty));
    assert!(matches!(load_error(b"\x7fELF not wasm at all"), LoadError::NotWasm));
    let good = policy_bytes("popularity");
    let error = load_error(&good[..good.len() / 2]);
    assert!(matches!(error, LoadError::Compile(_)), "{error}");
}

#[test]
fn a_component_declaring_memory_beyond_the_cap_is_refused_before_anything_runs() {
    let error = load_error(&guest_bytes("big-memory"));
    let LoadError::MemoryTooLarge { declared, cap } = error else { panic!("wrong error: {error}") };
    assert_eq!((declared, cap), (336 << 20, 256 << 20));
    assert!(error.to_string().contains("declares 336 MiB") && error.to_string().contains("256 MiB"), "{error}");
    // A bundled policy declares what `relish build` gives it.
    assert_eq!(runtime().load(&policy_bytes("popularity")).unwrap().declared_memory(), 4 << 20);
}

#[test]
fn a_component_that_traps_while_instantiating_is_refused() {
    let error = load_error(&guest_bytes("start-trap"));
    assert!(matches!(error, LoadError::Instantiate(_)), "{error}");
    assert!(error.to_string().contains("unreachable"), "{error}");
}

#[test]
fn a_bundled_policy_loads_and_describes_itself() {
    let policy = runtime().load(&policy_bytes("discovery")).unwrap();
    let metadata = policy.metadata();
    assert_eq!(metadata.name, "discovery");
    assert!(metadata.supports("discovery") && metadata.supports("category") && !metadata.supports("banners"));
    assert!(metadata.params.iter().any(|p| p.name == "diversity" && p.default == "0.3"));
    assert!(metadata.features.iter().any(|f| f.name == "affinity.*" && f.scope == "user"));
}
