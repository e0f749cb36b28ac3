//! Feeds arbitrary bytes to the request decoder. It must never panic, stall or overflow its
//! stack; an accepted body must decode to a request that keeps every promise the contract makes
//! a policy (`wire::check_request`) and stays within the limits; a rejected one must say why.
//! And the differential check: whatever the single-pass fast path accepts, the serde decoder
//! accepts with the same request, bit for bit.
//!
//! Small limits, so that the fuzzer reaches them with short inputs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relish_wire::{self as wire, DecodeErrorKind, DecodeOptions};

const OPTIONS: DecodeOptions<'static> = DecodeOptions {
    surface: None,
    now_unix_ms: 1_795_867_200_000,
    max_candidates: 64,
    max_features: 16,
    max_values: 1024,
    max_tags: 8,
    // Not a fresh UUID per decode, so that both paths give the same request.
    request_id: Some("fuzz"),
};

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
        Ok(decoded) => {
            let request = &decoded.request;
            if let Err(broken) = wire::check_request(request) {
                panic!("an accepted body broke the contract: {broken}");
            }
            let candidates = &request.candidates;
            let n = candidates.ids.offsets.len() - 1;
            assert!(n <= OPTIONS.max_candidates, "{n} candidates");
            assert!(candidates.feature_names.len() <= OPTIONS.max_features);
            assert!(request.user_features.names.len() <= OPTIONS.max_features);
            assert!(request.context.cart.item_ids.len() <= OPTIONS.max_candidates);
            for tags in [&candidates.tags, &request.context.cart.tags] {
                assert!(tags.offsets.windows(2).all(|w| (w[1] - w[0]) as usize <= OPTIONS.max_tags));
            }
            if let Some(latitude) = request.context.latitude {
                assert!((-90.0..=90.0).contains(&latitude));
            }
            if let Some(longitude) = request.context.longitude {
                assert!((-180.0..=180.0).contains(&longitude));
            }
        }
        Err(error) => {
            assert!(!error.message.is_empty(), "an empty message at `{}`", error.path);
            // `TooLarge` (a 413) is for limits only, never a stale flag on another error.
            let limit = error.message.contains("too many") || error.message.contains("too long");
            assert!(error.kind == DecodeErrorKind::Invalid || limit, "{error}");
        }
    }
});
