//! The JSON request and response: the wire format of `relish rank` and of the HTTP API.
//!
//! Two request shapes carry the same information (see `docs/api.md`): the row shape, one object
//! per candidate, and the columnar shape for high-volume callers. Both decode into the contract's
//! [`types::Request`](crate::runtime::types::Request) without an intermediate document.

mod decode;
mod encode;

pub use decode::{
    DecodeError, DecodeErrorKind, DecodeOptions, Decoded, MAX_TAGS, REQUEST_ID_RULE, Shape, check_request, decode,
    derive_seed, is_request_id,
};
pub use encode::{ArmRef, Fallback, Items, PolicyRef, Response};
