//! Compiles `proto/relish/v1/rank.proto` into the `RankRequest` message types (`src/protobuf.rs`
//! includes them): protox parses it, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["relish/v1/rank.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
