//! Compiles `proto/relish/v1/rank.proto` into the request and response message types (`src/protobuf.rs`
//! includes them): protox parses it, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["relish/v1/rank.proto"], ["proto"])?;
    // Ordered maps: the same response encodes to the same bytes every time.
    prost_build::Config::new().btree_map(["."]).compile_fds(descriptors)?;
    Ok(())
}
