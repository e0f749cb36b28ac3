//! What both decode targets assert, and the limits they decode with.

use relish_wire::{DecodeError, DecodeErrorKind, DecodeOptions, types::Request};

/// Small limits, so that the fuzzer reaches them with short inputs; a fixed request id, so that
/// two decodes of one body give the same request (not two fresh UUIDs).
pub const OPTIONS: DecodeOptions<'static> = DecodeOptions {
    surface: None,
    now_unix_ms: 1_795_867_200_000,
    max_candidates: 64,
    max_features: 16,
    max_values: 1024,
    max_tags: 8,
    request_id: Some("fuzz"),
};

/// An accepted request keeps every promise the contract makes a policy and stays within
/// [`OPTIONS`].
pub fn accepted(request: &Request) {
    if let Err(broken) = relish_wire::check_request(request) {
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

/// A rejection says what is wrong, and `TooLarge` (a 413) is for limits only, never a stale flag
/// on another error.
pub fn rejected(error: &DecodeError) {
    assert!(!error.message.is_empty(), "an empty message at `{}`", error.path);
    let limit = error.message.contains("too many") || error.message.contains("too long");
    assert!(error.kind == DecodeErrorKind::Invalid || limit, "{error}");
}
