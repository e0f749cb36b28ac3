//! Feeds arbitrary bytes to the request decoder. It must never panic, stall or overflow its
//! stack; an accepted body must decode to a request that keeps every promise the contract makes
//! a policy (`wire::check_request`) and stays within the limits; a rejected one must say why.
//! And the differential check: whatever the single-pass fast path accepts, the serde decoder
//! accepts with the same request, bit for bit.

#![no_main]

mod common;

use common::OPTIONS;
use libfuzzer_sys::fuzz_target;
use relish_wire as wire;

fuzz_target!(|body: &[u8]| {
    if let Some(fast) = wire::decode_fast(body, &OPTIONS) {
        let slow = match wire::decode_with_serde(body, &OPTIONS) {
            Ok(slow) => slow,
            Err(error) => panic!("the fast path accepted a body serde refuses: {error}"),
        };
        assert_eq!(format!("{:?}", fast.request), format!("{:?}", slow.request));
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fast.request.candidates.features), bits(&slow.request.candidates.features));
        assert_eq!(bits(&fast.request.user_features.values), bits(&slow.request.user_features.values));
        let degrees =
            |r: &wire::types::Request| (r.context.latitude.map(f64::to_bits), r.context.longitude.map(f64::to_bits));
        assert_eq!(degrees(&fast.request), degrees(&slow.request));
        assert_eq!(
            (fast.shape, fast.surface_given, &fast.bucket_key),
            (slow.shape, slow.surface_given, &slow.bucket_key)
        );
    }
    match wire::decode(body, &OPTIONS) {
        Ok(decoded) => common::accepted(&decoded.request),
        Err(error) => common::rejected(&error),
    }
});
