//! Feeds arbitrary bytes to the protobuf request decoder (`relish.v1.RankRequest`). It must never
//! panic or stall; an accepted body must decode to a request that keeps every promise the
//! contract makes a policy (`wire::check_request`) and stays within the limits, and its JSON-free
//! round trip (`Decoded::to_protobuf`, decoded again) must give the same request; a rejected one
//! must say why.
//!
//! Small limits, so that the fuzzer reaches them with short inputs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use relish_wire::{self as wire, DecodeErrorKind, DecodeOptions};

const OPTIONS: DecodeOptions<'static> = DecodeOptions {
    surface: None,
    now_unix_ms: 1_795_867_200_000,
    max_candidates: 64,
    max_features: 16,
    max_values: 1024,
    max_tags: 8,
    request_id: Some("fuzz"),
};

fuzz_target!(|body: &[u8]| {
    match wire::decode_protobuf(body, &OPTIONS) {
        Ok(decoded) => {
            let request = &decoded.request;
            if let Err(broken) = wire::check_request(request) {
                panic!("an accepted body broke the contract: {broken}");
            }
            let candidates = &request.candidates;
            assert!(candidates.ids.offsets.len() - 1 <= OPTIONS.max_candidates);
            assert!(candidates.feature_names.len() <= OPTIONS.max_features);
            assert!(request.user_features.names.len() <= OPTIONS.max_features);
            assert!(request.context.cart.item_ids.len() <= OPTIONS.max_candidates);
            for tags in [&candidates.tags, &request.context.cart.tags] {
                assert!(tags.offsets.windows(2).all(|w| (w[1] - w[0]) as usize <= OPTIONS.max_tags));
            }
            let again = wire::decode_protobuf(&decoded.to_protobuf().encode_to_vec(), &OPTIONS)
                .unwrap_or_else(|e| panic!("the request's own protobuf form is refused: {e}"));
            assert_eq!(format!("{:?}", again.request), format!("{:?}", decoded.request));
        }
        Err(error) => {
            assert!(!error.message.is_empty(), "an empty message at `{}`", error.path);
            let limit = error.message.contains("too many") || error.message.contains("too long");
            assert!(error.kind == DecodeErrorKind::Invalid || limit, "{error}");
        }
    }
});
