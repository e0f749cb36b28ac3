//! The wire format, from the `relish-wire` crate (`host/wire`), and the move of a decoded request
//! into the contract's records.
//!
//! `relish-wire` has no WebAssembly runtime in it, so it has request types of its own: the same
//! records as the `wasmtime` bindings of `wit/policy.wit`, every list of names already the
//! contract's packed `string-column` (one buffer, as the policy receives it). [`decode`] moves
//! the columns across (no copy) and packs the context's five strings into its `text`, so the rest
//! of the host sees only the bindings' [`types`].

pub use relish_wire::{
    ArmRef, DecodeError, DecodeErrorKind, DecodeOptions, Fallback, Items, MAX_TAGS, PolicyRef, REQUEST_ID_RULE,
    Response, Shape, derive_seed, is_request_id, protobuf, protobuf_surface,
};

use crate::runtime::{ContextStrings, types};
use relish_wire::types as wire;

/// A decoded request, in the contract's records.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The contract request, ready to pass to a policy.
    pub request: types::Request,
    /// The shape the caller used.
    pub shape: Shape,
    /// Whether the body itself named a surface (rather than only the URL).
    pub surface_given: bool,
    /// The caller's `bucket_key` (a device or session id for anonymous users): what assigns the
    /// request to a plan arm when there is no `user.id`.
    pub bucket_key: Option<String>,
}

/// Decodes a JSON request body (either shape); see [`relish_wire::decode`].
pub fn decode(body: &[u8], options: &DecodeOptions<'_>) -> Result<Decoded, DecodeError> {
    relish_wire::decode(body, options).map(decoded)
}

/// Decodes a protobuf `relish.v1.RankRequest`; see [`relish_wire::decode_protobuf`].
pub fn decode_protobuf(body: &[u8], options: &DecodeOptions<'_>) -> Result<Decoded, DecodeError> {
    relish_wire::decode_protobuf(body, options).map(decoded)
}

fn decoded(decoded: relish_wire::Decoded) -> Decoded {
    Decoded {
        request: request(decoded.request),
        shape: decoded.shape,
        surface_given: decoded.surface_given,
        bucket_key: decoded.bucket_key,
    }
}

/// Moves a request into the contract's records (the context's strings packed into one text).
pub fn request(r: wire::Request) -> types::Request {
    let c = r.context;
    let strings = ContextStrings {
        user_id: c.user_id.as_deref(),
        country: c.country.as_deref(),
        city: c.city.as_deref(),
        locale: c.locale.as_deref(),
        device: c.device.as_deref(),
    };
    let cart = types::Cart { item_ids: c.cart.item_ids.into(), tags: tags(c.cart.tags) };
    types::Request {
        surface: r.surface,
        request_id: r.request_id,
        time_unix_ms: r.time_unix_ms,
        local_minute_of_day: r.local_minute_of_day,
        local_weekday: weekday(r.local_weekday),
        seed: r.seed,
        context: types::Context::new(strings, c.latitude, c.longitude, cart),
        user_features: types::Features { names: r.user_features.names.into(), values: r.user_features.values },
        tag_vocabulary: r.tag_vocabulary.into(),
        candidates: types::Candidates {
            ids: r.candidates.ids.into(),
            feature_names: r.candidates.feature_names.into(),
            features: r.candidates.features,
            tags: tags(r.candidates.tags),
        },
        limit: r.limit,
        params: r.params.iter().map(|(k, v)| (k, v)).collect(),
    }
}

fn tags(column: wire::TagColumn) -> types::TagColumn {
    types::TagColumn { offsets: column.offsets, indices: column.indices }
}

fn weekday(day: wire::Weekday) -> types::Weekday {
    match day {
        wire::Weekday::Monday => types::Weekday::Monday,
        wire::Weekday::Tuesday => types::Weekday::Tuesday,
        wire::Weekday::Wednesday => types::Weekday::Wednesday,
        wire::Weekday::Thursday => types::Weekday::Thursday,
        wire::Weekday::Friday => types::Weekday::Friday,
        wire::Weekday::Saturday => types::Weekday::Saturday,
        wire::Weekday::Sunday => types::Weekday::Sunday,
    }
}
