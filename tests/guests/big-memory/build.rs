//! Makes the initial memory large enough for the static table (the linker refuses a smaller one).

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=--initial-memory={}", 336 << 20);
    }
}
