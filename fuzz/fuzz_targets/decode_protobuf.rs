//! Feeds arbitrary bytes to the protobuf request decoder (`relish.v1.RankRequest`). It must never
//! panic or stall; an accepted body must decode to a request that keeps every promise the
//! contract makes a policy (`wire::check_request`) and stays within the limits, and its JSON-free
//! round trip (`Decoded::to_protobuf`, decoded again) must give the same request; a rejected one
//! must say why.

#![no_main]

mod common;

use common::OPTIONS;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use relish_wire as wire;

fuzz_target!(|body: &[u8]| {
    match wire::decode_protobuf(body, &OPTIONS) {
        Ok(decoded) => {
            common::accepted(&decoded.request);
            let again = wire::decode_protobuf(&decoded.to_protobuf().encode_to_vec(), &OPTIONS)
                .unwrap_or_else(|e| panic!("the request's own protobuf form is refused: {e}"));
            assert_eq!(format!("{:?}", again.request), format!("{:?}", decoded.request));
        }
        Err(error) => common::rejected(&error),
    }
});
