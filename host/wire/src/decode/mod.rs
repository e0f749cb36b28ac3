//! Decoding a JSON ranking request straight into the contract's columns.
//!
//! Parsing is most of a request's cost (a 500-candidate body is ~150 KB; scoring it takes a few
//! µs), so the decoder is a serde `DeserializeSeed` that writes each value where the policy will
//! read it: candidate ids into one packed string, features into the row-major matrix (see
//! `RowMatrix`), tags into an interned vocabulary. There is no per-candidate map
//! and no intermediate document; keys are matched and interned from the body without copying.
//!
//! Errors name the field path (`candidates[3].features.rating`). Finding the path costs a second
//! parse with path tracking, paid only by requests that fail. For that second parse to point at
//! the right field, every check runs inside the seed of the value (or key) it is about: a check
//! made in a parent's `visit_map` after the value was read would be reported at the parent.
//!
//! Most bodies never reach serde: [`decode`] first tries the single-pass parser in `fast`, which
//! writes into the same [`Builder`] and hands every body it is not certain about (every wrong
//! one included) to the serde decoder, so errors are always the serde decoder's.
//!
//! A file a concern: the options, the result and its errors are here; [`check_request`] is in
//! `check`; the [`Builder`] that the seeds write into, in `builder`; the generic serde helpers, in
//! `fields`; the request object with its user, context and cart, in `request`; the two candidate
//! shapes, in `row` and `columnar`; the tags of one row, which the cart and both shapes read, in
//! `tags`.

mod builder;
mod check;
mod columnar;
mod fast;
mod fields;
mod protobuf;
mod request;
mod row;
mod tags;

pub use check::check_request;
pub use protobuf::{decode_protobuf, protobuf_surface};

use std::fmt::{self, Write as _};

use serde::de::DeserializeSeed;
use sha2::{Digest as _, Sha256};

use builder::Builder;
use request::RequestSeed;

use crate::types;

/// Limits and host-supplied values for decoding.
#[derive(Debug, Clone)]
pub struct DecodeOptions<'a> {
    /// The surface from the URL, if any; a body naming another surface is rejected.
    pub surface: Option<&'a str>,
    /// The host's clock, used as the request time when the body has no `context.time`.
    pub now_unix_ms: i64,
    /// The most candidates a request may carry, and the most cart items.
    pub max_candidates: usize,
    /// The most distinct candidate feature columns, and the most distinct user features.
    pub max_features: usize,
    /// The most values the feature matrix may hold (candidates × features). Bounds the memory a
    /// small body can make the host allocate: a few candidates each naming a different feature
    /// would otherwise ask for a matrix of `max_candidates × max_features` mostly missing values.
    pub max_values: usize,
    /// The most tags one candidate or cart item may carry.
    pub max_tags: usize,
    /// The request id to use when the body has none (for example the caller's `x-request-id`);
    /// a fresh UUID if this is `None` too.
    pub request_id: Option<&'a str>,
}

/// The most tags one candidate or cart item may carry, by default.
pub const MAX_TAGS: usize = 64;

impl Default for DecodeOptions<'_> {
    fn default() -> Self {
        DecodeOptions {
            surface: None,
            now_unix_ms: 0,
            max_candidates: 10_000,
            max_features: 512,
            max_values: 2_000_000,
            max_tags: MAX_TAGS,
            request_id: None,
        }
    }
}

/// Which of the documented request forms a body used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `candidates` is an array of `{id, features, tags}` objects.
    Rows,
    /// `candidates` is an object of columns `{ids, feature_names, features, tags}`.
    Columns,
    /// A protobuf `RankRequest` (`proto/relish/v1/rank.proto`): columns throughout.
    Protobuf,
}

/// A decoded request.
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

/// What kind of problem a rejected body has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// Not JSON, or JSON of the wrong form: a `400`.
    Invalid,
    /// Too many candidates, features or tags: a `413`.
    TooLarge,
}

/// A rejected request body: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Invalid or too large.
    pub kind: DecodeErrorKind,
    /// The field path, for example `candidates[3].features.rating`; empty for the whole body.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

impl std::error::Error for DecodeError {}

/// What makes a request id usable, worded for error messages. An id is echoed in the
/// `x-request-id` header and carried by every log line of its request, so it is short and plain.
pub const REQUEST_ID_RULE: &str = "1 to 128 visible ASCII characters";

/// Whether `id` is a usable request id (see [`REQUEST_ID_RULE`]).
pub fn is_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The seed a request gets when it does not send one: the first 8 bytes, little-endian, of
/// `SHA-256(request_id + "\n" + user_id)`, with an empty user id for anonymous users. Any caller
/// can reproduce it, and a repeated request gets the same seed.
pub fn derive_seed(request_id: &str, user_id: Option<&str>) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(request_id.as_bytes());
    hasher.update(b"\n");
    hasher.update(user_id.unwrap_or_default().as_bytes());
    let digest = hasher.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// Decodes a JSON request body (either shape).
///
/// The same answer as [`decode_with_serde`], for every body; most valid bodies take the
/// single-pass parser (see [`decode_fast`]) at about twice the speed.
pub fn decode(body: &[u8], options: &DecodeOptions<'_>) -> Result<Decoded, DecodeError> {
    match fast::decode(body, options) {
        Some(decoded) => Ok(decoded),
        None => decode_with_serde(body, options),
    }
}

/// The single-pass parser alone: `Some` for a body it is certain of (the request
/// [`decode_with_serde`] returns for it, field for field), `None` for one it leaves to serde:
/// every invalid body, and valid ones with string escapes or numbers of more than nineteen
/// digits (or an exponent beyond ±308). For tests and fuzzing; callers use [`decode`].
pub fn decode_fast(body: &[u8], options: &DecodeOptions<'_>) -> Option<Decoded> {
    fast::decode(body, options)
}

/// The serde decoder alone: every body, every error named by its field path.
pub fn decode_with_serde(body: &[u8], options: &DecodeOptions<'_>) -> Result<Decoded, DecodeError> {
    let mut builder = Builder::new(options);
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed = RequestSeed(&mut builder).deserialize(&mut json).and_then(|()| json.end());
    let Err(error) = parsed else {
        return builder.finish();
    };
    let kind = if builder.too_large { DecodeErrorKind::TooLarge } else { DecodeErrorKind::Invalid };
    if body.iter().all(u8::is_ascii_whitespace) {
        let message = "the body is empty: expected a JSON ranking request object".to_owned();
        return Err(DecodeError { kind, path: String::new(), message });
    }
    let path = match builder.error_path {
        Some(path) => path.to_owned(),
        None => locate(body, options),
    };
    let message = if error.is_eof() {
        format!("the body ends early ({error})")
    } else {
        explain(body, &error).unwrap_or_else(|| error.to_string())
    };
    Err(DecodeError { kind, path, message })
}

/// A clearer message than serde_json's for two mistakes its messages do not name: a `NaN` or
/// `Infinity` literal (which JavaScript's `JSON.stringify` never writes, but other encoders do)
/// reads "expected value", and a lone UTF-16 surrogate escape reads "unexpected end of hex
/// escape" or, for a trailing one, "lone leading surrogate".
fn explain(body: &[u8], error: &serde_json::Error) -> Option<String> {
    if !error.is_syntax() || error.line() == 0 {
        return None;
    }
    let line_start = if error.line() == 1 {
        0
    } else {
        body.iter().enumerate().filter(|&(_, &b)| b == b'\n').nth(error.line() - 2)?.0 + 1
    };
    // serde_json's column is 1-based, on the byte where it stopped: a literal's first letter,
    // the letter after a `-`, or the byte after a string escape.
    let at = (line_start + error.column()).checked_sub(1)?.min(body.len());
    let (line, column) = (error.line(), error.column());
    let window = &body[at.saturating_sub(1)..];
    let literal = [0, 1].into_iter().find_map(|skip| {
        let rest = window.get(skip..)?;
        ["-Infinity", "-NaN", "Infinity", "NaN"].into_iter().find(|literal| rest.starts_with(literal.as_bytes()))
    });
    if let Some(literal) = literal {
        return Some(format!(
            "`{literal}` is not a JSON number (JSON has no NaN or infinities): send `null` for a missing value, \
             at line {line} column {column}"
        ));
    }
    // A surrogate among the last two `\u` escapes before the error is the cause.
    if !error.to_string().contains("hex escape") {
        return None;
    }
    let before = &body[at.saturating_sub(14)..(at + 1).min(body.len())];
    let mut escapes = before
        .windows(6)
        .rev()
        .filter(|w| w.starts_with(b"\\u"))
        .filter_map(|w| u16::from_str_radix(std::str::from_utf8(&w[2..]).ok()?, 16).ok());
    let (last, previous) = (escapes.next()?, escapes.next());
    let (code, kind) = match (last, previous) {
        (0xD800..=0xDBFF, _) => (last, "a high surrogate not followed by a low one (`\\uDC00`..`\\uDFFF`)"),
        (0xDC00..=0xDFFF, _) => (last, "a low surrogate without a high one before it (`\\uD800`..`\\uDBFF`)"),
        (_, Some(high @ 0xD800..=0xDBFF)) => {
            (high, "a high surrogate not followed by a low one (`\\uDC00`..`\\uDFFF`)")
        }
        _ => return None,
    };
    Some(format!(
        "a lone surrogate `\\u{code:04x}` in a string: {kind}; JSON strings must be valid Unicode, at line {line} \
         column {column}"
    ))
}

/// Parses again with path tracking to say where the first parse failed; empty for the whole
/// body (for example trailing characters after the request object).
fn locate(body: &[u8], options: &DecodeOptions<'_>) -> String {
    let mut builder = Builder::new(options);
    let mut track = serde_path_to_error::Track::new();
    let mut json = serde_json::Deserializer::from_slice(body);
    let tracked = serde_path_to_error::Deserializer::new(&mut json, &mut track);
    if RequestSeed(&mut builder).deserialize(tracked).is_ok() {
        return String::new();
    }
    // Written out rather than with `Path`'s `Display`, which shows the whole body as `.` and a
    // key that was never read (the body ended first) as `?`.
    let mut path = String::new();
    for segment in &track.path() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => write!(path, "[{index}]"),
            serde_path_to_error::Segment::Map { key } if path.is_empty() => write!(path, "{key}"),
            serde_path_to_error::Segment::Map { key } => write!(path, ".{key}"),
            _ => Ok(()),
        }
        .expect("writing to a String cannot fail");
    }
    path
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-28 12:00 UTC, a Saturday.
    const NOW: i64 = 1_795_867_200_000;

    fn options() -> DecodeOptions<'static> {
        DecodeOptions { now_unix_ms: NOW, ..DecodeOptions::default() }
    }

    /// Small limits, to reach them with small bodies.
    fn small() -> DecodeOptions<'static> {
        DecodeOptions { max_candidates: 2, max_features: 2, max_tags: 2, ..options() }
    }

    fn decode_with(body: &str, options: &DecodeOptions<'_>) -> Result<types::Request, DecodeError> {
        decode(body.as_bytes(), options).map(|d| d.request)
    }

    fn ok(body: &str) -> types::Request {
        decode_with(body, &options()).unwrap_or_else(|e| panic!("{body}\nwas rejected: {e}"))
    }

    fn err(body: &str) -> DecodeError {
        err_with(body, &options())
    }

    fn err_with(body: &str, options: &DecodeOptions<'_>) -> DecodeError {
        match decode_with(body, options) {
            Ok(request) => panic!("{body}\nwas accepted: {request:?}"),
            Err(error) => error,
        }
    }

    /// Asserts that `body` is rejected as `kind` at `path` with a message containing `needle`.
    #[track_caller]
    fn rejects(body: &str, options: &DecodeOptions<'_>, kind: DecodeErrorKind, path: &str, needle: &str) {
        let error = err_with(body, options);
        assert_eq!((error.kind, error.path.as_str()), (kind, path), "{body}\n{error}");
        assert!(error.message.contains(needle), "{body}\n`{}` does not contain `{needle}`", error.message);
    }

    fn ids(request: &types::Request) -> Vec<&str> {
        let ids = &request.candidates.ids;
        ids.offsets.windows(2).map(|w| &ids.data[w[0] as usize..w[1] as usize]).collect()
    }

    fn row_tags<'r>(request: &'r types::Request, column: &types::TagColumn, row: usize) -> Vec<&'r str> {
        let indices = &column.indices[column.offsets[row] as usize..column.offsets[row + 1] as usize];
        indices.iter().map(|&i| request.tag_vocabulary.get(i as usize)).collect()
    }

    fn feature(request: &types::Request, row: usize, name: &str) -> f32 {
        let c = &request.candidates;
        let j = c.feature_names.iter().position(|n| n == name).unwrap_or_else(|| panic!("no column `{name}`"));
        c.features[row * c.feature_names.len() + j]
    }

    /// Requests compare by their debug form: it shows every field, and NaN equals NaN there.
    fn same(a: &types::Request, b: &types::Request) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    const ROWS: &str = r#"{"request_id": "r-1", "surface": "discovery", "seed": 7,
        "user": {"id": "u-42", "features": {"affinity.pizza": 0.9}},
        "context": {"cart": [{"id": "i-1", "tags": ["burger", "drink"]}]},
        "candidates": [
            {"id": "venue-1", "features": {"rating": 9.1, "eta_min": 25}, "tags": ["pizza", "dinner"]},
            {"id": "venue-2", "features": {"eta_min": 30, "is_open": true}, "tags": ["burger"]},
            {"id": "venue-3"}
        ]}"#;

    const COLUMNS: &str = r#"{"request_id": "r-1", "surface": "discovery", "seed": 7,
        "user": {"id": "u-42", "features": {"affinity.pizza": 0.9}},
        "context": {"cart": [{"id": "i-1", "tags": ["burger", "drink"]}]},
        "candidates": {
            "ids": ["venue-1", "venue-2", "venue-3"],
            "feature_names": ["rating", "eta_min", "is_open"],
            "features": [9.1, 25, null,  null, 30, 1,  null, null, null],
            "tags": [["pizza", "dinner"], ["burger"], []]
        }}"#;

    #[test]
    fn row_and_columnar_shapes_decode_to_the_same_request() {
        let rows = decode(ROWS.as_bytes(), &options()).unwrap();
        let columns = decode(COLUMNS.as_bytes(), &options()).unwrap();
        assert_eq!((rows.shape, columns.shape), (Shape::Rows, Shape::Columns));
        assert!(same(&rows.request, &columns.request), "{:?}\n{:?}", rows.request, columns.request);
        let request = rows.request;
        assert_eq!(ids(&request), ["venue-1", "venue-2", "venue-3"]);
        assert_eq!(request.candidates.feature_names, ["rating", "eta_min", "is_open"]);
        assert_eq!(request.candidates.features.len(), 9);
    }

    #[test]
    fn a_missing_or_null_feature_is_nan() {
        let request = ok(r#"{"candidates": [{"id": "a", "features": {"x": 1, "y": null}}, {"id": "b"},
            {"id": "c", "features": null}, {"id": "d", "features": {"y": 2}}]}"#);
        assert_eq!(request.candidates.feature_names, ["x", "y"]);
        assert_eq!(feature(&request, 0, "x"), 1.0);
        for (row, name) in [(0, "y"), (1, "x"), (1, "y"), (2, "x"), (2, "y"), (3, "x")] {
            assert!(feature(&request, row, name).is_nan(), "row {row} `{name}`");
        }
        assert_eq!(feature(&request, 3, "y"), 2.0);
    }

    #[test]
    fn candidates_may_list_features_in_any_order_and_add_new_ones_late() {
        // Row 0 has no features (no stride yet), row 1 fixes the columns x, y, rows 2-3 send them
        // in another order, and row 3 brings a column z that earlier rows lack.
        let request = ok(r#"{"candidates": [{"id": "a"}, {"id": "b", "features": {"x": 1, "y": 2}},
            {"id": "c", "features": {"y": 3, "x": 4}}, {"id": "d", "features": {"z": 5, "x": 6}}, {"id": "e"}]}"#);
        assert_eq!(request.candidates.feature_names, ["x", "y", "z"]);
        let rows: Vec<String> = request.candidates.features.chunks(3).map(|r| format!("{r:?}")).collect();
        assert_eq!(
            rows,
            ["[NaN, NaN, NaN]", "[1.0, 2.0, NaN]", "[4.0, 3.0, NaN]", "[6.0, NaN, 5.0]", "[NaN, NaN, NaN]"]
        );
    }

    #[test]
    fn booleans_are_one_and_zero() {
        let request = ok(r#"{"user": {"features": {"vip": true}},
            "candidates": [{"id": "a", "features": {"open": true, "promo": false}}]}"#);
        assert_eq!(request.candidates.features, [1.0, 0.0]);
        assert_eq!(request.user_features.values, [1.0]);
        let columns =
            ok(r#"{"candidates": {"ids": ["a"], "feature_names": ["open", "promo"], "features": [true, false]}}"#);
        assert_eq!(columns.candidates.features, [1.0, 0.0]);
    }

    #[test]
    fn a_string_rating_is_rejected_naming_its_path() {
        let body = r#"{"candidates": [{"id": "a"}, {"id": "b"}, {"id": "c"},
            {"id": "d", "features": {"eta_min": 20, "rating": "9.1"}}]}"#;
        rejects(body, &options(), DecodeErrorKind::Invalid, "candidates[3].features.rating", "invalid type: string");
        let columns = r#"{"candidates": {"ids": ["a"], "feature_names": ["rating"], "features": ["9.1"]}}"#;
        rejects(columns, &options(), DecodeErrorKind::Invalid, "candidates.features[0]", "invalid type: string");
    }

    #[test]
    fn candidates_and_cart_share_one_tag_vocabulary() {
        let request = ok(ROWS);
        assert_eq!(request.tag_vocabulary, ["burger", "drink", "pizza", "dinner"]);
        let cart = &request.context.cart;
        assert_eq!(cart.item_ids, ["i-1"]);
        assert_eq!(row_tags(&request, &cart.tags, 0), ["burger", "drink"]);
        assert_eq!(row_tags(&request, &request.candidates.tags, 1), ["burger"]);
        assert_eq!(request.candidates.tags.offsets, [0, 2, 3, 3]);
    }

    #[test]
    fn tags_are_distinct_per_row_and_keep_their_order() {
        let request =
            ok(r#"{"candidates": [{"id": "a", "tags": ["z", "y", "z", "x", "y"]}, {"id": "b", "tags": ["x", "x"]},
            {"id": "c", "tags": null}]}"#);
        let tags = &request.candidates.tags;
        assert_eq!(row_tags(&request, tags, 0), ["z", "y", "x"]);
        assert_eq!(row_tags(&request, tags, 1), ["x"]);
        assert!(row_tags(&request, tags, 2).is_empty());
        assert_eq!(request.tag_vocabulary, ["z", "y", "x"]);
        let columns = ok(r#"{"candidates": {"ids": ["a", "b"], "tags": [["z", "y", "z"], null]}}"#);
        assert_eq!(row_tags(&columns, &columns.candidates.tags, 0), ["z", "y"]);
        assert_eq!(columns.candidates.tags.offsets, [0, 2, 2]);
    }

    #[test]
    fn a_tag_that_is_not_a_string_is_rejected_naming_its_index() {
        rejects(
            r#"{"candidates": [{"id": "a", "tags": ["x", 1]}]}"#,
            &options(),
            DecodeErrorKind::Invalid,
            "candidates[0].tags[1]",
            "invalid type: integer",
        );
        rejects(
            r#"{"context": {"cart": [{"id": "i", "tags": "x"}]}, "candidates": []}"#,
            &options(),
            DecodeErrorKind::Invalid,
            "context.cart[0].tags",
            "invalid type: string",
        );
    }

    #[test]
    fn user_features_skip_null() {
        let request = ok(r#"{"user": {"id": "u", "features": {"a": 1, "b": null, "c": 3}}, "candidates": []}"#);
        assert_eq!(request.user_features.names, ["a", "c"]);
        assert_eq!(request.user_features.values, [1.0, 3.0]);
        assert_eq!(request.context.user_id.as_deref(), Some("u"));
    }

    /// `NaN`/`Infinity` literals and lone surrogates are named as such, with where they are.
    #[test]
    fn non_json_numbers_and_lone_surrogates_are_named() {
        let cases = [
            (
                r#"{"candidates": [{"id": "a", "features": {"x": NaN}}]}"#,
                "candidates[0].features.x",
                "`NaN` is not a JSON number",
            ),
            (
                r#"{"candidates": [{"id": "a", "features": {"x": Infinity}}]}"#,
                "candidates[0].features.x",
                "`Infinity` is not",
            ),
            (
                r#"{"candidates": [{"id": "a", "features": {"x": -Infinity}}]}"#,
                "candidates[0].features.x",
                "`-Infinity` is not",
            ),
            (
                r#"{"user": {"features": {"x":
                NaN}}, "candidates": []}"#,
                "user.features.x",
                "`NaN` is not a JSON number",
            ),
            (r#"{"candidates": [{"id": "a\ud800"}]}"#, "candidates[0].id", "lone surrogate `\\ud800`"),
            (
                r#"{"candidates": [{"id": "a\ud800\u0041"}]}"#,
                "candidates[0].id",
                "lone surrogate `\\ud800` in a string: a high",
            ),
            (
                r#"{"candidates": [{"id": "a\udc00"}]}"#,
                "candidates[0].id",
                "lone surrogate `\\udc00` in a string: a low",
            ),
        ];
        for (body, path, needle) in cases {
            rejects(body, &options(), DecodeErrorKind::Invalid, path, needle);
        }
        // Neither is mistaken for the other: a pair is fine, a short escape keeps serde_json's words.
        let request = ok(r#"{"candidates": [{"id": "\ud83c\udf55"}]}"#);
        assert_eq!(ids(&request), ["\u{1f355}"]);
        rejects(
            r#"{"candidates": [{"id": "\u12"}]}"#,
            &options(),
            DecodeErrorKind::Invalid,
            "candidates[0].id",
            "invalid escape",
        );
    }

    /// One rule for every object of the request: a key may appear once. A feature named twice is
    /// refused like a repeated top-level field, at the path of its second value, `null` included.
    #[test]
    fn a_repeated_feature_is_rejected_naming_it() {
        let cases = [
            (r#"{"user": {"features": {"a": 1, "c": 3, "a": 4}}, "candidates": []}"#, "user.features.a"),
            (r#"{"user": {"features": {"a": null, "a": 4}}, "candidates": []}"#, "user.features.a"),
            (r#"{"user": {"features": {"a": 1, "a": null}}, "candidates": []}"#, "user.features.a"),
            (
                r#"{"candidates": [{"id": "x", "features": {"a": 1, "b": 2}}, {"id": "y", "features": {"b": 1, "a": 2, "b": 3}}]}"#,
                "candidates[1].features.b",
            ),
            (r#"{"candidates": [{"id": "x", "features": {"a": null, "a": 2}}]}"#, "candidates[0].features.a"),
        ];
        for (body, path) in cases {
            rejects(body, &options(), DecodeErrorKind::Invalid, path, "duplicate feature");
        }
        // The same name in two candidates, or in the user's and a candidate's, is no repeat.
        let request = ok(r#"{"user": {"features": {"a": 1}},
            "candidates": [{"id": "x", "features": {"a": 1}}, {"id": "y", "features": {"a": 2}}]}"#);
        assert_eq!(request.candidates.feature_names, ["a"]);
        assert_eq!(request.candidates.features, [1.0, 2.0]);
    }

    #[test]
    fn a_user_feature_of_the_wrong_type_is_rejected_naming_it() {
        let body = r#"{"user": {"features": {"affinity.pizza": [0.9]}}, "candidates": []}"#;
        rejects(body, &options(), DecodeErrorKind::Invalid, "user.features.affinity.pizza", "invalid type: sequence");
    }

    #[test]
    fn context_time_gives_unix_ms_local_minute_and_weekday() {
        let request = ok(r#"{"context": {"time": "2026-11-28T18:30:00+02:00"}, "candidates": []}"#);
        assert_eq!(request.time_unix_ms, 1_795_883_400_000);
        assert_eq!(request.local_minute_of_day, 18 * 60 + 30);
        assert!(matches!(request.local_weekday, types::Weekday::Saturday));
        // Past midnight west of UTC: the local day is the next one, the UTC day is not.
        let request = ok(r#"{"context": {"time": "2026-11-29T00:15:00-05:00"}, "candidates": []}"#);
        assert_eq!(request.time_unix_ms, 1_795_929_300_000);
        assert_eq!(request.local_minute_of_day, 15);
        assert!(matches!(request.local_weekday, types::Weekday::Sunday));
    }

    #[test]
    fn a_bad_time_is_rejected_naming_context_time() {
        for time in [r#""2026-11-28 18:30""#, r#""yesterday""#, "1795883400000"] {
            let body = format!(r#"{{"context": {{"time": {time}}}, "candidates": []}}"#);
            let error = err(&body);
            assert_eq!((error.kind, error.path.as_str()), (DecodeErrorKind::Invalid, "context.time"), "{error}");
        }
    }

    #[test]
    fn without_a_time_the_host_clock_is_used_in_utc() {
        for body in [r#"{"candidates": []}"#, r#"{"context": {"time": null}, "candidates": []}"#] {
            let request = ok(body);
            assert_eq!(request.time_unix_ms, NOW);
            assert_eq!(request.local_minute_of_day, 12 * 60);
            assert!(matches!(request.local_weekday, types::Weekday::Saturday));
        }
    }

    #[test]
    fn the_derived_seed_follows_the_documented_formula() {
        // First 8 bytes, little-endian, of SHA-256("r-1\nu-42") and SHA-256("r-1\n").
        assert_eq!(derive_seed("r-1", Some("u-42")), 14_176_498_581_297_037_741);
        assert_eq!(derive_seed("r-1", None), 283_801_811_728_540_936);
        assert_eq!(derive_seed("r-1", Some("")), derive_seed("r-1", None));
    }

    #[test]
    fn an_explicit_seed_wins_over_the_derived_one() {
        assert_eq!(ok(ROWS).seed, 7);
        let derived = ok(r#"{"request_id": "r-1", "user": {"id": "u-42"}, "candidates": []}"#);
        assert_eq!(derived.seed, derive_seed("r-1", Some("u-42")));
        let anonymous = ok(r#"{"request_id": "r-1", "seed": null, "candidates": []}"#);
        assert_eq!(anonymous.seed, derive_seed("r-1", None));
        rejects(r#"{"seed": -1, "candidates": []}"#, &options(), DecodeErrorKind::Invalid, "seed", "invalid value");
    }

    #[test]
    fn a_request_without_an_id_gets_a_generated_one_and_its_seed() {
        let (a, b) = (ok(r#"{"candidates": []}"#), ok(r#"{"candidates": []}"#));
        assert_eq!(a.request_id.len(), 36, "a UUID: {}", a.request_id);
        assert_ne!(a.request_id, b.request_id);
        assert_eq!(a.seed, derive_seed(&a.request_id, None));
    }

    #[test]
    fn the_limit_defaults_to_the_number_of_candidates() {
        assert_eq!(ok(ROWS).limit, 3);
        assert_eq!(ok(COLUMNS).limit, 3);
        assert_eq!(ok(r#"{"limit": 1, "candidates": [{"id": "a"}, {"id": "b"}]}"#).limit, 1);
        assert_eq!(ok(r#"{"limit": null, "candidates": [{"id": "a"}]}"#).limit, 1);
        rejects(r#"{"limit": -1, "candidates": []}"#, &options(), DecodeErrorKind::Invalid, "limit", "invalid value");
        rejects(r#"{"limit": 2.5, "candidates": []}"#, &options(), DecodeErrorKind::Invalid, "limit", "invalid type");
    }

    #[test]
    fn a_body_surface_that_differs_from_the_url_is_rejected() {
        let url = DecodeOptions { surface: Some("banners"), ..options() };
        rejects(
            r#"{"surface": "discovery", "candidates": []}"#,
            &url,
            DecodeErrorKind::Invalid,
            "surface",
            "`discovery`",
        );
    }

    #[test]
    fn a_surface_in_the_body_alone_or_the_url_alone_is_used() {
        let body_only = decode(br#"{"surface": "discovery", "candidates": []}"#, &options()).unwrap();
        assert_eq!((body_only.request.surface.as_str(), body_only.surface_given), ("discovery", true));
        let url = DecodeOptions { surface: Some("banners"), ..options() };
        let url_only = decode(br#"{"candidates": []}"#, &url).unwrap();
        assert_eq!((url_only.request.surface.as_str(), url_only.surface_given), ("banners", false));
        let both = decode(br#"{"surface": "banners", "candidates": []}"#, &url).unwrap();
        assert_eq!((both.request.surface.as_str(), both.surface_given), ("banners", true));
        let neither = decode(br#"{"candidates": []}"#, &options()).unwrap();
        assert_eq!((neither.request.surface.as_str(), neither.surface_given), ("", false));
    }

    #[test]
    fn latitude_and_longitude_are_range_checked() {
        let request = ok(r#"{"context": {"lat": -90, "lon": 180}, "candidates": []}"#);
        assert_eq!((request.context.latitude, request.context.longitude), (Some(-90.0), Some(180.0)));
        let request = ok(r#"{"context": {"lat": null, "lon": 24.94}, "candidates": []}"#);
        assert_eq!((request.context.latitude, request.context.longitude), (None, Some(24.94)));
        let body = r#"{"context": {"lat": 90.5}, "candidates": []}"#;
        rejects(body, &options(), DecodeErrorKind::Invalid, "context.lat", "90.5 is outside -90..=90");
        let body = r#"{"context": {"lat": 60, "lon": -181}, "candidates": []}"#;
        rejects(body, &options(), DecodeErrorKind::Invalid, "context.lon", "-181 is outside -180..=180");
        let body = r#"{"context": {"lat": "60.17"}, "candidates": []}"#;
        rejects(body, &options(), DecodeErrorKind::Invalid, "context.lat", "invalid type: string");
    }

    #[test]
    fn context_strings_are_kept() {
        let request = ok(r#"{"context": {"country": "FI", "city": "helsinki", "locale": "fi-FI", "device": "ios",
            "cart": null}, "candidates": []}"#);
        let c = &request.context;
        assert_eq!(
            (c.country.as_deref(), c.city.as_deref(), c.locale.as_deref(), c.device.as_deref()),
            (Some("FI"), Some("helsinki"), Some("fi-FI"), Some("ios"))
        );
        assert!(c.cart.item_ids.is_empty());
        assert_eq!(c.cart.tags.offsets, [0]);
    }

    #[test]
    fn unknown_fields_are_rejected_at_every_level_naming_the_field() {
        let cases = [
            (r#"{"colour": 1, "candidates": []}"#, "colour"),
            (r#"{"user": {"colour": 1}, "candidates": []}"#, "user.colour"),
            (r#"{"context": {"colour": 1}, "candidates": []}"#, "context.colour"),
            (r#"{"context": {"cart": [{"id": "i", "colour": 1}]}, "candidates": []}"#, "context.cart[0].colour"),
            (r#"{"candidates": [{"id": "a"}, {"id": "b", "colour": 1}]}"#, "candidates[1].colour"),
            (r#"{"candidates": {"ids": [], "colour": 1}}"#, "candidates.colour"),
        ];
        for (body, path) in cases {
            rejects(body, &options(), DecodeErrorKind::Invalid, path, "unknown field `colour`, expected");
        }
    }

    #[test]
    fn a_repeated_field_is_rejected_naming_it() {
        let cases = [
            (r#"{"candidates": [{"id": "a"}], "candidates": {"ids": ["b"]}}"#, "candidates"),
            (r#"{"candidates": [{"id": "a", "id": "b"}]}"#, "candidates[0].id"),
            (r#"{"candidates": [{"id": "a", "tags": ["x"], "tags": ["y"]}]}"#, "candidates[0].tags"),
            (r#"{"candidates": {"ids": ["a"], "ids": ["b"]}}"#, "candidates.ids"),
            (r#"{"context": {"cart": [], "cart": []}, "candidates": []}"#, "context.cart"),
            (r#"{"user": {"id": "u", "id": "v"}, "candidates": []}"#, "user.id"),
        ];
        for (body, path) in cases {
            rejects(body, &options(), DecodeErrorKind::Invalid, path, "duplicate field");
        }
    }

    #[test]
    fn errors_name_the_field_path() {
        let cases = [
            (r#"{"request_id": 1, "candidates": []}"#, "request_id", "invalid type: integer"),
            (r#"{"request_id": "", "candidates": []}"#, "request_id", "1 to 128 visible ASCII characters"),
            (r#"{"request_id": "a b", "candidates": []}"#, "request_id", "1 to 128 visible ASCII characters"),
            (r#"{"user": {"id": 42}, "candidates": []}"#, "user.id", "invalid type: integer"),
            (r#"{"user": [], "candidates": []}"#, "user", "invalid type: sequence"),
            (r#"{"context": {"cart": [{"id": 1}]}, "candidates": []}"#, "context.cart[0].id", "invalid type: integer"),
            (r#"{"context": {"cart": [{"tags": []}]}, "candidates": []}"#, "context.cart[0]", "missing field `id`"),
            (r#"{"candidates": [{"id": "a"}, {"features": {}}]}"#, "candidates[1]", "missing field `id`"),
            (r#"{"candidates": [{"id": "a"}, 7]}"#, "candidates[1]", "invalid type: integer"),
            (r#"{"candidates": [{"id": "a", "features": [1]}]}"#, "candidates[0].features", "invalid type: sequence"),
            (r#"{"candidates": {"ids": ["a", 2]}}"#, "candidates.ids[1]", "invalid type: integer"),
            (
                r#"{"candidates": [{"id": "a"}, {"id": "b"}, {"id": "a"}]}"#,
                "candidates[2].id",
                "`a` is also the id of candidate 0: each candidate may appear once",
            ),
            (r#"{"candidates": {"ids": ["x", "x"]}}"#, "candidates.ids[1]", "`x` is also the id of candidate 0"),
            (r#"{"candidates": null}"#, "candidates", "invalid type: null"),
            (r#"{"candidates": "a,b"}"#, "candidates", "invalid type: string"),
            (r#"{"surface": "discovery"}"#, "candidates", "missing field `candidates`"),
        ];
        for (body, path, needle) in cases {
            rejects(body, &options(), DecodeErrorKind::Invalid, path, needle);
        }
    }

    #[test]
    fn too_many_candidates_is_too_large_in_both_shapes() {
        let at_limit = r#"{"candidates": [{"id": "a"}, {"id": "b"}]}"#;
        assert_eq!(decode_with(at_limit, &small()).unwrap().candidates.ids.offsets.len(), 3);
        let rows = r#"{"candidates": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}"#;
        rejects(rows, &small(), DecodeErrorKind::TooLarge, "candidates[2]", "too many candidates: at most 2");
        let columns = r#"{"candidates": {"ids": ["a", "b", "c"]}}"#;
        rejects(columns, &small(), DecodeErrorKind::TooLarge, "candidates.ids[2]", "too many candidates: at most 2");
        let tag_rows = r#"{"candidates": {"tags": [[], [], []]}}"#;
        rejects(tag_rows, &small(), DecodeErrorKind::TooLarge, "candidates.tags", "too many tag rows");
    }

    #[test]
    fn too_many_features_is_too_large_in_both_shapes() {
        let at_limit =
            r#"{"candidates": [{"id": "a", "features": {"x": 1}}, {"id": "b", "features": {"y": 1, "x": 2}}]}"#;
        assert_eq!(decode_with(at_limit, &small()).unwrap().candidates.feature_names, ["x", "y"]);
        let rows = r#"{"candidates": [{"id": "a", "features": {"x": 1, "y": 1}}, {"id": "b", "features": {"z": 1}}]}"#;
        rejects(rows, &small(), DecodeErrorKind::TooLarge, "candidates[1].features.z", "too many distinct features");
        let columns = r#"{"candidates": {"feature_names": ["x", "y", "z"]}}"#;
        rejects(
            columns,
            &small(),
            DecodeErrorKind::TooLarge,
            "candidates.feature_names[2]",
            "too many distinct features",
        );
        let values = r#"{"candidates": {"features": [1, 2, 3, 4, 5]}}"#;
        rejects(values, &small(), DecodeErrorKind::TooLarge, "candidates.features", "too many feature values");
        let user = r#"{"user": {"features": {"a": 1, "b": 2, "c": 4}}, "candidates": []}"#;
        rejects(user, &small(), DecodeErrorKind::TooLarge, "user.features.c", "too many user features");
    }

    #[test]
    fn too_many_tags_is_too_large_in_both_shapes_and_the_cart() {
        let at_limit = r#"{"candidates": [{"id": "a", "tags": ["x", "y", "x", "y"]}]}"#;
        assert_eq!(decode_with(at_limit, &small()).unwrap().candidates.tags.indices, [0, 1]);
        let cases = [
            (r#"{"candidates": [{"id": "a", "tags": ["x", "y", "z"]}]}"#, "candidates[0].tags[2]"),
            (r#"{"candidates": {"ids": ["a"], "tags": [["x", "x", "y", "z"]]}}"#, "candidates.tags[0][3]"),
            (
                r#"{"context": {"cart": [{"id": "i", "tags": ["x", "y", "z"]}]}, "candidates": []}"#,
                "context.cart[0].tags[2]",
            ),
        ];
        for (body, path) in cases {
            rejects(body, &small(), DecodeErrorKind::TooLarge, path, "too many tags: at most 2 per item");
        }
    }

    #[test]
    fn too_many_cart_items_is_too_large() {
        let body = r#"{"context": {"cart": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}, "candidates": []}"#;
        rejects(body, &small(), DecodeErrorKind::TooLarge, "context.cart[2]", "too many cart items: at most 2");
    }

    #[test]
    fn a_matrix_over_the_value_limit_is_too_large_in_both_shapes() {
        let options = DecodeOptions { max_values: 5, ..options() };
        // Three candidates naming different features ask for 3 × 3 = 9 mostly missing values.
        let rows = r#"{"candidates": [{"id": "a", "features": {"x": 1}}, {"id": "b", "features": {"y": 1}},
                                       {"id": "c", "features": {"z": 1}}]}"#;
        let error = decode(rows.as_bytes(), &options).unwrap_err();
        assert_eq!(error.kind, DecodeErrorKind::TooLarge, "{error}");
        assert!(error.message.contains("9") || error.message.contains("more than the 5"), "{error}");
        let columns =
            r#"{"candidates": {"ids": ["a", "b", "c"], "feature_names": ["x", "y"], "features": [1, 2, 3, 4, 5, 6]}}"#;
        assert_eq!(decode(columns.as_bytes(), &options).unwrap_err().kind, DecodeErrorKind::TooLarge);
        let fits = r#"{"candidates": {"ids": ["a", "b"], "feature_names": ["x", "y"], "features": [1, 2, 3, 4]}}"#;
        assert!(decode(fits.as_bytes(), &options).is_ok());
    }

    #[test]
    fn a_matrix_is_refused_where_it_grows_past_the_limit_not_after_the_body() {
        // One wide candidate, then narrow ones: the second already makes 2 × 3 > 5 values, so the
        // decoder stops there instead of allocating rows for every candidate of the body first.
        let options = DecodeOptions { max_values: 5, ..options() };
        let narrow = r#"{"id": "n", "features": {"x": 1}}"#;
        let body = format!(
            r#"{{"candidates": [{{"id": "w", "features": {{"x": 1, "y": 2, "z": 3}}}}, {}]}}"#,
            vec![narrow; 10_000].join(", ")
        );
        let error = decode(body.as_bytes(), &options).unwrap_err();
        assert_eq!(error.kind, DecodeErrorKind::TooLarge, "{error}");
        assert!(error.path.starts_with("candidates[1]"), "refused at the second candidate: {error}");
        assert!(error.message.contains("2 candidates × 3 features"), "{error}");
        // A new column is refused the same way.
        let wide_late = r#"{"candidates": [{"id": "a", "features": {"x": 1}}, {"id": "b", "features": {"x": 1}},
                                            {"id": "c", "features": {"x": 1, "y": 2}}]}"#;
        let error = decode(wide_late.as_bytes(), &options).unwrap_err();
        assert!(error.path.starts_with("candidates[2].features"), "{error}");
    }

    #[test]
    fn columnar_features_must_be_n_by_d() {
        let cases = [
            (
                r#"{"candidates": {"ids": ["a", "b"], "feature_names": ["x"], "features": [1]}}"#,
                "has 1 values but 2 candidates × 1 feature names need 2",
            ),
            (r#"{"candidates": {"features": [1, 2], "ids": ["a"], "feature_names": ["x"]}}"#, "has 2 values"),
            (r#"{"candidates": {"ids": ["a"], "feature_names": ["x"]}}"#, "has 0 values"),
            (r#"{"candidates": {"ids": ["a"], "features": [1]}}"#, "`feature_names` is empty or missing"),
        ];
        for (body, needle) in cases {
            rejects(body, &options(), DecodeErrorKind::Invalid, "candidates.features", needle);
        }
        let no_candidates = ok(r#"{"candidates": {"feature_names": ["x"], "features": []}}"#);
        assert_eq!(no_candidates.candidates.feature_names, ["x"]);
    }

    #[test]
    fn columnar_tag_rows_must_match_the_candidates() {
        let body = r#"{"candidates": {"ids": ["a", "b"], "tags": [["x"]]}}"#;
        rejects(body, &options(), DecodeErrorKind::Invalid, "candidates.tags", "has 1 rows but there are 2 candidates");
        let without_tags = ok(r#"{"candidates": {"ids": ["a", "b"]}}"#);
        assert_eq!(without_tags.candidates.tags.offsets, [0, 0, 0]);
    }

    #[test]
    fn columnar_feature_names_must_be_distinct() {
        let body = r#"{"candidates": {"ids": [], "feature_names": ["x", "y", "x"]}}"#;
        rejects(body, &options(), DecodeErrorKind::Invalid, "candidates.feature_names[2]", "`x` appears twice");
    }

    #[test]
    fn trailing_garbage_after_the_object_is_rejected() {
        assert_eq!(ok("  {\"candidates\": []}\n\t ").limit, 0);
        for body in [r#"{"candidates": []}x"#, r#"{"candidates": []}{}"#, r#"{"candidates": []},"#] {
            rejects(body, &options(), DecodeErrorKind::Invalid, "", "trailing characters");
        }
    }

    #[test]
    fn an_empty_body_is_rejected_as_empty() {
        for body in ["", "  \n"] {
            rejects(body, &options(), DecodeErrorKind::Invalid, "", "the body is empty");
        }
    }

    #[test]
    fn a_cut_off_body_says_it_ends_early() {
        rejects(r#"{"candidates": [{"id": "a""#, &options(), DecodeErrorKind::Invalid, "candidates[0]", "ends early");
        rejects("{", &options(), DecodeErrorKind::Invalid, "", "ends early");
    }

    #[test]
    fn a_top_level_that_is_not_an_object_is_rejected_for_the_whole_body() {
        for body in ["[]", "1", "\"request\"", "null", "true", "nul", "\u{feff}{}"] {
            let error = err(body);
            assert_eq!((error.kind, error.path.as_str()), (DecodeErrorKind::Invalid, ""), "{body}: {error}");
            assert_eq!(error.to_string(), error.message);
        }
        assert!(err("[]").message.contains("expected a ranking request object"));
    }

    #[test]
    fn an_error_displays_its_path_then_its_message() {
        let error = err(r#"{"limit": "5", "candidates": []}"#);
        assert!(error.to_string().starts_with("limit: invalid type: string \"5\""), "{error}");
    }

    #[test]
    fn numbers_too_big_for_f32_are_rejected() {
        let largest = ok(r#"{"candidates": [{"id": "a", "features": {"x": 3.4e38, "y": -3.4e38, "z": 1e-50}}]}"#);
        assert_eq!(largest.candidates.features, [3.4e38, -3.4e38, 0.0]);
        let cases = [
            (r#"{"candidates": [{"id": "a", "features": {"x": 1e39}}]}"#, "candidates[0].features.x"),
            (r#"{"candidates": [{"id": "a", "features": {"x": -1e39}}]}"#, "candidates[0].features.x"),
            (r#"{"candidates": {"ids": ["a"], "feature_names": ["x"], "features": [1e39]}}"#, "candidates.features[0]"),
            (r#"{"user": {"features": {"x": 1e39}}, "candidates": []}"#, "user.features.x"),
        ];
        for (body, path) in cases {
            rejects(body, &options(), DecodeErrorKind::Invalid, path, "does not fit in a 32-bit float");
        }
        let beyond_f64 = r#"{"candidates": [{"id": "a", "features": {"x": 1e400}}]}"#;
        rejects(beyond_f64, &options(), DecodeErrorKind::Invalid, "candidates[0].features.x", "number out of range");
    }

    #[test]
    fn deeply_nested_junk_is_rejected_without_overflowing_the_stack() {
        let deep = |open: &str| open.repeat(100_000);
        let bodies = [
            deep("["),
            deep("{\"a\":"),
            format!(r#"{{"candidates": {}"#, deep("[")),
            format!(r#"{{"candidates": [{{"id": "a", "features": {{"x": {}"#, deep("[")),
            format!(r#"{{"candidates": [{{"id": "a", "tags": {}"#, deep("[")),
            format!(r#"{{"candidates": {{"features": {}"#, deep("[")),
            format!(r#"{{"candidates": {{"tags": {}"#, deep("[")),
            format!(r#"{{"user": {{"features": {{"x": {}"#, deep("{\"a\":")),
            format!(r#"{{"context": {{"cart": {}"#, deep("[")),
            format!(r#"{{"request_id": {}"#, deep("[")),
        ];
        for body in bodies {
            let error = err(&body);
            assert_eq!(error.kind, DecodeErrorKind::Invalid, "{error}");
        }
    }

    #[test]
    fn huge_strings_are_fine() {
        let long = "x".repeat(4 << 20);
        let body = format!(
            r#"{{"user": {{"features": {{"{long}": 1}}}},
                "candidates": [{{"id": "{long}", "features": {{"{long}": 2}}, "tags": ["{long}"]}}]}}"#
        );
        let request = ok(&body);
        assert_eq!(request.candidates.ids.data.len(), long.len());
        assert_eq!(request.candidates.feature_names, [&long]);
        assert_eq!(request.tag_vocabulary, [&long]);
        assert_eq!(request.user_features.names, [long]);
    }

    #[test]
    fn escaped_keys_and_strings_are_unescaped() {
        let request = ok(r#"{"c\u0061ndidates": [{"\u0069d": "a\"b\u00e9", "features": {"r\u0061ting": 1},
            "tags": ["caf\u00e9"]}]}"#);
        assert_eq!(ids(&request), ["a\"bé"]);
        assert_eq!(request.candidates.feature_names, ["rating"]);
        assert_eq!(request.tag_vocabulary, ["café"]);
    }
}
