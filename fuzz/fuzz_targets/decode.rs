//! Feeds arbitrary bytes to the request decoder. It must never panic, stall or overflow its
//! stack; an accepted body must decode to a request that keeps every promise the contract makes
//! a policy (`wire::check_request`) and stays within the limits; a rejected one must say why.
//!
//! Small limits, so that the fuzzer reaches them with short inputs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relish_host::wire::{self, DecodeErrorKind, DecodeOptions};

const OPTIONS: DecodeOptions<'static> =
    DecodeOptions {
        surface: None,
        now_unix_ms: 1_795_867_200_000,
        max_candidates: 64,
        max_features: 16,
        max_values: 1024,
        max_tags: 8,
        request_id: None,
    };

fuzz_target!(|body: &[u8]| {
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
