//! What counts as a feature value in a store, and what is refused.
//!
//! A value is read per the store's [`Encoding`]:
//!
//! - `decimal` (the default): the text Rust's `f32` parser reads (`"4.5"`, `"-3"`, `"1e-3"`,
//!   `"+0.5"`), nothing around it (no spaces). It is what the loader writes.
//! - `f32le`: exactly 4 bytes, the little-endian bits of an `f32`.
//!
//! Whatever the encoding, a value must be a finite `f32`: `"NaN"`, `"inf"` or their bits are
//! refused (`not-finite`), and so is a decimal that overflows `f32` such as `"1e39"`
//! (`out-of-range`; one that underflows reads as 0 or a subnormal, as parsing does). A value
//! longer than [`MAX_VALUE_BYTES`] is refused unread (`too-large`). Tags (`_tags`) are a JSON
//! array of strings of at most [`MAX_TAGS_BYTES`] bytes (`bad-tags`, `too-large`).
//!
//! A refused value is missing, as if the store did not have it: the lookup does not fail, the
//! entity is still cached (with NaN in that slot), and the refusal is counted
//! (`relish_feature_values_refused_total{store,entity,reason}`) and logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus::IntCounterVec;

use super::config::Encoding;

/// The longest value read; anything longer is refused as `too-large` (a decimal `f32` needs at
/// most ~50 characters, even written out in full).
pub const MAX_VALUE_BYTES: usize = 64;

/// The longest tags value read (`_tags`).
pub const MAX_TAGS_BYTES: usize = 16 * 1024;

/// The most fields a hash may have for a prefix fetch: beyond it the entity's prefixed part is
/// refused as `too-large` and the hash is never transferred.
pub const MAX_HASH_FIELDS: usize = 4096;

/// Why a stored value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a number in the store's encoding (bad text, or not 4 bytes for `f32le`).
    NotANumber,
    /// A decimal beyond the range of `f32` (for example `1e39`).
    OutOfRange,
    /// NaN or an infinity.
    NotFinite,
    /// A value longer than [`MAX_VALUE_BYTES`], tags longer than [`MAX_TAGS_BYTES`], or a hash
    /// with more than [`MAX_HASH_FIELDS`] fields for a prefix fetch.
    TooLarge,
    /// `_tags` is not a JSON array of strings.
    BadTags,
    /// The key holds something other than a hash.
    WrongType,
}

impl Refusal {
    /// The stable reason code, the `reason` label of the metric.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NotANumber => "not-a-number",
            Refusal::OutOfRange => "out-of-range",
            Refusal::NotFinite => "not-finite",
            Refusal::TooLarge => "too-large",
            Refusal::BadTags => "bad-tags",
            Refusal::WrongType => "wrong-type",
        }
    }
}

/// Reads one stored value.
pub fn parse(bytes: &[u8], encoding: Encoding) -> Result<f32, Refusal> {
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(Refusal::TooLarge);
    }
    let value = match encoding {
        Encoding::Decimal => return parse_decimal(std::str::from_utf8(bytes).map_err(|_| Refusal::NotANumber)?),
        Encoding::F32le => f32::from_le_bytes(bytes.try_into().map_err(|_| Refusal::NotANumber)?),
    };
    if value.is_finite() { Ok(value) } else { Err(Refusal::NotFinite) }
}

/// Reads a decimal value, as in a store or a CSV cell.
pub fn parse_decimal(text: &str) -> Result<f32, Refusal> {
    if text.len() > MAX_VALUE_BYTES {
        return Err(Refusal::TooLarge);
    }
    let value: f32 = text.parse().map_err(|_| Refusal::NotANumber)?;
    if value.is_finite() {
        Ok(value)
    } else if value.is_nan() || text.trim_start_matches(['+', '-']).starts_with(['i', 'I']) {
        // `NaN`, `inf`, `infinity`, in any case: what the parser reads as a non-finite literal.
        Err(Refusal::NotFinite)
    } else {
        // Digits that round beyond f32::MAX.
        Err(Refusal::OutOfRange)
    }
}

/// Reads a number from a JSON file (which has no NaN or infinity, but may overflow `f32`).
pub fn from_f64(value: f64) -> Result<f32, Refusal> {
    if !value.is_finite() {
        return Err(Refusal::NotFinite);
    }
    let narrowed = value as f32;
    if narrowed.is_finite() { Ok(narrowed) } else { Err(Refusal::OutOfRange) }
}

/// Reads a stored `_tags` value.
pub fn parse_tags(bytes: &[u8]) -> Result<Box<[Box<str>]>, Refusal> {
    if bytes.len() > MAX_TAGS_BYTES {
        return Err(Refusal::TooLarge);
    }
    serde_json::from_slice(bytes).map_err(|_| Refusal::BadTags)
}

/// Counts and logs refused values of one store.
#[derive(Debug, Clone)]
pub struct Refusals {
    store: String,
    counter: IntCounterVec,
    /// When a refusal was last logged at `warn`, in ms since `epoch`.
    last_warned_ms: std::sync::Arc<AtomicU64>,
    epoch: Instant,
}

/// Refusals are logged at `warn` at most this often per store (and at `debug` every time).
const WARN_EVERY_MS: u64 = 10_000;

impl Refusals {
    pub(super) fn new(store: &str, counter: IntCounterVec) -> Self {
        Refusals {
            store: store.to_owned(),
            counter,
            last_warned_ms: std::sync::Arc::new(AtomicU64::new(u64::MAX)),
            epoch: Instant::now(),
        }
    }

    /// A sink that counts into a registry of its own, for stores used outside a [`Features`](super::Features).
    pub fn detached(store: &str) -> Self {
        Refusals::new(store, super::metrics::refused_counter(store).expect("a valid metric"))
    }

    /// Counts and logs that `field` of `entity` `id` was refused for `why`.
    pub fn refuse(&self, entity: &str, id: &str, field: &str, why: Refusal) {
        let reason = why.reason();
        self.counter.with_label_values(&[entity, reason]).inc();
        tracing::debug!(store = %self.store, entity, id, field, reason, "feature value refused");
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_warned_ms.load(Ordering::Relaxed);
        if (last == u64::MAX || now.saturating_sub(last) >= WARN_EVERY_MS)
            && self.last_warned_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                store = %self.store,
                entity,
                id,
                field,
                reason,
                "feature value refused: it is missing (NaN) to the policy; counted in \
                 relish_feature_values_refused_total, logged at most every 10 s"
            );
        }
    }

    /// How many values of `entity` were refused for `why` (for tests and reports).
    pub fn count(&self, entity: &str, why: Refusal) -> u64 {
        self.counter.with_label_values(&[entity, why.reason()]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_read_and_each_bad_one_has_its_reason() {
        assert_eq!(parse(b"4.5", Encoding::Decimal), Ok(4.5));
        assert_eq!(parse(b"-3", Encoding::Decimal), Ok(-3.0));
        assert_eq!(parse(b"1e-3", Encoding::Decimal), Ok(1e-3));
        assert_eq!(parse(b"1234", Encoding::Decimal), Ok(1234.0));
        assert_eq!(parse(b"3.4028235e38", Encoding::Decimal), Ok(f32::MAX));
        assert_eq!(parse(b"1e-50", Encoding::Decimal), Ok(0.0));
        assert_eq!(parse(b"pizza", Encoding::Decimal), Err(Refusal::NotANumber));
        assert_eq!(parse(b" 4.5", Encoding::Decimal), Err(Refusal::NotANumber));
        assert_eq!(parse(b"", Encoding::Decimal), Err(Refusal::NotANumber));
        assert_eq!(parse(b"\xff\xfe", Encoding::Decimal), Err(Refusal::NotANumber));
        assert_eq!(parse(b"1e39", Encoding::Decimal), Err(Refusal::OutOfRange));
        assert_eq!(parse(b"-1e39", Encoding::Decimal), Err(Refusal::OutOfRange));
        for text in ["NaN", "nan", "inf", "-inf", "+Infinity"] {
            assert_eq!(parse(text.as_bytes(), Encoding::Decimal), Err(Refusal::NotFinite), "{text}");
        }
        let long = "1".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(parse(long.as_bytes(), Encoding::Decimal), Err(Refusal::TooLarge));
        // At the limit it is read (and 64 digits overflow f32).
        assert_eq!(parse(&long.as_bytes()[1..], Encoding::Decimal), Err(Refusal::OutOfRange));
    }

    #[test]
    fn f32le_values_are_exactly_four_bytes_of_a_finite_f32() {
        assert_eq!(parse(&4.5f32.to_le_bytes(), Encoding::F32le), Ok(4.5));
        // The text "1234" is four bytes too: under f32le it is bits, not digits.
        assert_eq!(parse(b"1234", Encoding::F32le), Ok(f32::from_le_bytes(*b"1234")));
        assert_eq!(parse(b"4.5", Encoding::F32le), Err(Refusal::NotANumber));
        assert_eq!(parse(&f32::NAN.to_le_bytes(), Encoding::F32le), Err(Refusal::NotFinite));
        assert_eq!(parse(&f32::INFINITY.to_le_bytes(), Encoding::F32le), Err(Refusal::NotFinite));
    }

    #[test]
    fn json_numbers_must_fit_f32() {
        assert_eq!(from_f64(4.5), Ok(4.5));
        assert_eq!(from_f64(1e39), Err(Refusal::OutOfRange));
        assert_eq!(from_f64(f64::NAN), Err(Refusal::NotFinite));
    }

    #[test]
    fn tags_are_a_json_array_of_strings() {
        assert_eq!(parse_tags(br#"["pizza","italian"]"#).unwrap().as_ref(), [Box::from("pizza"), Box::from("italian")]);
        assert_eq!(parse_tags(b"[]").unwrap().len(), 0);
        assert_eq!(parse_tags(b"pizza"), Err(Refusal::BadTags));
        assert_eq!(parse_tags(b"[1,2]"), Err(Refusal::BadTags));
        assert_eq!(parse_tags(br#"{"a":"b"}"#), Err(Refusal::BadTags));
        let huge = format!("[{}]", vec!["\"x\""; MAX_TAGS_BYTES].join(","));
        assert_eq!(parse_tags(huge.as_bytes()), Err(Refusal::TooLarge));
    }

    #[test]
    fn refusals_are_counted_by_entity_and_reason() {
        let refusals = Refusals::detached("test");
        refusals.refuse("venue", "v1", "rating", Refusal::OutOfRange);
        refusals.refuse("venue", "v2", "rating", Refusal::OutOfRange);
        refusals.refuse("user", "u1", "age", Refusal::NotANumber);
        assert_eq!(refusals.count("venue", Refusal::OutOfRange), 2);
        assert_eq!(refusals.count("user", Refusal::NotANumber), 1);
        assert_eq!(refusals.count("venue", Refusal::NotANumber), 0);
    }
}
