//! Relish's wire format: the JSON ranking request and response of `relish rank` and the HTTP API.
//!
//! Two request shapes carry the same information (see `docs/api.md`): the row shape, one object
//! per candidate, and the columnar shape for high-volume callers. Both decode into the contract's
//! [`types::Request`] without an intermediate document. A third form, protobuf
//! ([`decode_protobuf`], `proto/relish/v1/rank.proto`), carries the same content as columns. This crate has no WebAssembly runtime in
//! it, so that edge tooling can build and check requests with it, and so that its fuzz targets
//! build in a minute.

mod decode;
mod encode;
pub mod types;

/// The protobuf request's and response's message types, generated from
/// `proto/relish/v1/rank.proto` (the documentation of every field is there); build a
/// [`protobuf::RankRequest`] and send its `prost::Message::encode_to_vec` with `content-type:
/// application/x-protobuf` (and `accept: application/x-protobuf` for a [`protobuf::RankResponse`]),
/// or call the `relish.v1.Ranker` gRPC service with it.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod protobuf {
    include!(concat!(env!("OUT_DIR"), "/relish.v1.rs"));
}

pub use decode::{
    DecodeError, DecodeErrorKind, DecodeOptions, Decoded, MAX_TAGS, REQUEST_ID_RULE, Shape, check_request, decode,
    decode_fast, decode_protobuf, decode_with_serde, derive_seed, is_request_id, protobuf_surface,
};
pub use encode::{ArmRef, Fallback, Items, PolicyRef, Response};
