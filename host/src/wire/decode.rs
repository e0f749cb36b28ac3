//! Decoding a JSON ranking request straight into the contract's columns.
//!
//! Parsing is most of a request's cost (a 500-candidate body is ~150 KB; scoring it takes a few
//! µs), so the decoder is a serde `DeserializeSeed` that writes each value where the policy will
//! read it: candidate ids into one packed string, features into `(row, column, value)` cells that
//! become the row-major matrix, tags into an interned vocabulary. There is no per-candidate map
//! and no intermediate document; keys are borrowed from the body whenever they need no unescaping.
//!
//! Errors name the field path (`candidates[3].features.rating`). Finding the path costs a second
//! parse with path tracking, paid only by requests that fail.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Datelike, Timelike};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest as _, Sha256};

use crate::runtime::types;

/// Limits and host-supplied values for decoding.
#[derive(Debug, Clone)]
pub struct DecodeOptions<'a> {
    /// The surface from the URL, if any; a body naming another surface is rejected.
    pub surface: Option<&'a str>,
    /// The host's clock, used as the request time when the body has no `context.time`.
    pub now_unix_ms: i64,
    /// The most candidates a request may carry.
    pub max_candidates: usize,
    /// The most distinct candidate feature columns.
    pub max_features: usize,
    /// The most tags one candidate or cart item may carry.
    pub max_tags: usize,
    /// The request id to use when the body has none (for example the caller's `x-request-id`);
    /// a fresh UUID if this is `None` too.
    pub request_id: Option<&'a str>,
}

impl Default for DecodeOptions<'_> {
    fn default() -> Self {
        DecodeOptions {
            surface: None,
            now_unix_ms: 0,
            max_candidates: 10_000,
            max_features: 512,
            max_tags: 64,
            request_id: None,
        }
    }
}

/// Which of the two documented request shapes a body used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `candidates` is an array of `{id, features, tags}` objects.
    Rows,
    /// `candidates` is an object of columns `{ids, feature_names, features, tags}`.
    Columns,
}

/// A decoded request.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The contract request, ready to pass to a policy.
    pub request: types::Request,
    /// The shape the caller used.
    pub shape: Shape,
    /// Whether the body named a surface.
    pub surface_given: bool,
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
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for DecodeError {}

/// The seed a request gets when it does not send one: the first 8 bytes, little-endian, of
/// `SHA-256(request_id + "\n" + user_id)`, with an empty user id for anonymous users. Any caller
/// can reproduce it, and a repeated request gets the same seed.
pub fn derive_seed(request_id: &str, user_id: Option<&str>) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(request_id.as_bytes());
    hasher.update(b"\n");
    hasher.update(user_id.unwrap_or_default().as_bytes());
    let digest = hasher.finalize();
    u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// Decodes a JSON request body (either shape).
pub fn decode(body: &[u8], options: &DecodeOptions<'_>) -> Result<Decoded, DecodeError> {
    let mut builder = Builder::new(options);
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed = RequestSeed(&mut builder).deserialize(&mut json).and_then(|()| json.end());
    match parsed {
        Ok(()) => builder.finish(),
        Err(error) => Err(locate(body, options, error, builder.too_large)),
    }
}

/// Parses again with path tracking to say where `error` is.
fn locate(body: &[u8], options: &DecodeOptions<'_>, error: serde_json::Error, too_large: bool) -> DecodeError {
    let mut builder = Builder::new(options);
    let mut track = serde_path_to_error::Track::new();
    let mut json = serde_json::Deserializer::from_slice(body);
    let tracked = serde_path_to_error::Deserializer::new(&mut json, &mut track);
    let path = match RequestSeed(&mut builder).deserialize(tracked) {
        Err(_) => track.path().to_string(),
        Ok(()) => String::new(),
    };
    let kind = if too_large { DecodeErrorKind::TooLarge } else { DecodeErrorKind::Invalid };
    let message =
        if error.is_eof() && error.line() > 0 { format!("the body ends early ({error})") } else { error.to_string() };
    DecodeError { kind, path, message }
}

/// Everything the decoder has read so far.
struct Builder<'o> {
    options: &'o DecodeOptions<'o>,
    too_large: bool,
    request_id: Option<String>,
    surface: Option<String>,
    seed: Option<u64>,
    limit: Option<u32>,
    user_id: Option<String>,
    user_features: types::Features,
    context: Context,
    cart: Option<types::Cart>,
    shape: Option<Shape>,
    ids: types::StringColumn,
    columns: HashMap<String, u32>,
    feature_names: Vec<String>,
    cells: Vec<(u32, u32, f32)>,
    matrix: Option<Vec<f32>>,
    tags: Interner,
    candidate_tags: Option<types::TagColumn>,
}

#[derive(Default)]
struct Context {
    country: Option<String>,
    city: Option<String>,
    locale: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    device: Option<String>,
    time: Option<(i64, u16, types::Weekday)>,
}

#[derive(Default)]
struct Interner {
    index: HashMap<String, u32>,
    vocabulary: Vec<String>,
}

impl Interner {
    fn intern(&mut self, tag: &str) -> u32 {
        if let Some(&id) = self.index.get(tag) {
            return id;
        }
        let id = self.vocabulary.len() as u32;
        self.vocabulary.push(tag.to_owned());
        self.index.insert(tag.to_owned(), id);
        id
    }
}

fn empty_tags() -> types::TagColumn {
    types::TagColumn { offsets: vec![0], indices: Vec::new() }
}

impl<'o> Builder<'o> {
    fn new(options: &'o DecodeOptions<'o>) -> Self {
        Builder {
            options,
            too_large: false,
            request_id: None,
            surface: None,
            seed: None,
            limit: None,
            user_id: None,
            user_features: types::Features { names: Vec::new(), values: Vec::new() },
            context: Context::default(),
            cart: None,
            shape: None,
            ids: types::StringColumn { data: String::new(), offsets: vec![0] },
            columns: HashMap::new(),
            feature_names: Vec::new(),
            cells: Vec::new(),
            matrix: None,
            tags: Interner::default(),
            candidate_tags: None,
        }
    }

    fn too_large<E: de::Error>(&mut self, message: String) -> E {
        self.too_large = true;
        E::custom(message)
    }

    fn push_id<E: de::Error>(&mut self, id: &str) -> Result<(), E> {
        let n = self.ids.offsets.len() - 1;
        if n >= self.options.max_candidates {
            return Err(self.too_large(format!("too many candidates: at most {} allowed", self.options.max_candidates)));
        }
        self.ids.data.push_str(id);
        let end = u32::try_from(self.ids.data.len()).map_err(|_| self.too_large("candidate ids too long".into()))?;
        self.ids.offsets.push(end);
        Ok(())
    }

    fn column<E: de::Error>(&mut self, name: &str) -> Result<u32, E> {
        if let Some(&j) = self.columns.get(name) {
            return Ok(j);
        }
        if self.feature_names.len() >= self.options.max_features {
            let message = format!("too many distinct features: at most {} allowed", self.options.max_features);
            return Err(self.too_large(message));
        }
        let j = self.feature_names.len() as u32;
        self.feature_names.push(name.to_owned());
        self.columns.insert(name.to_owned(), j);
        Ok(j)
    }

    fn finish(self) -> Result<Decoded, DecodeError> {
        let invalid = |path: &str, message: String| DecodeError {
            kind: DecodeErrorKind::Invalid,
            path: path.to_owned(),
            message,
        };
        let Some(shape) = self.shape else {
            return Err(invalid("candidates", "missing field `candidates` (the one required field)".to_owned()));
        };
        let surface = match (self.options.surface, self.surface) {
            (Some(url), Some(body)) if url != body => {
                return Err(invalid("surface", format!("the body says `{body}` but the URL says `{url}`")));
            }
            (Some(url), _) => url.to_owned(),
            (None, Some(body)) => body,
            (None, None) => String::new(),
        };
        let surface_given = !surface.is_empty();
        let n = self.ids.offsets.len() - 1;
        let d = self.feature_names.len();
        let features = match self.matrix {
            Some(matrix) => matrix,
            None => {
                let mut matrix = vec![f32::NAN; n * d];
                for (i, j, value) in self.cells {
                    matrix[i as usize * d + j as usize] = value;
                }
                matrix
            }
        };
        let request_id = self
            .request_id
            .or_else(|| self.options.request_id.map(str::to_owned))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let seed = self.seed.unwrap_or_else(|| derive_seed(&request_id, self.user_id.as_deref()));
        let (time_unix_ms, local_minute_of_day, local_weekday) =
            self.context.time.unwrap_or_else(|| utc_time(self.options.now_unix_ms));
        let limit = self.limit.unwrap_or(u32::try_from(n).unwrap_or(u32::MAX));
        let request = types::Request {
            surface,
            request_id,
            time_unix_ms,
            local_minute_of_day,
            local_weekday,
            seed,
            context: types::Context {
                user_id: self.user_id,
                country: self.context.country,
                city: self.context.city,
                locale: self.context.locale,
                latitude: self.context.latitude,
                longitude: self.context.longitude,
                device: self.context.device,
                cart: self.cart.unwrap_or_else(|| types::Cart { item_ids: Vec::new(), tags: empty_tags() }),
            },
            user_features: self.user_features,
            tag_vocabulary: self.tags.vocabulary,
            candidates: types::Candidates {
                ids: self.ids,
                feature_names: self.feature_names,
                features,
                tags: self
                    .candidate_tags
                    .unwrap_or_else(|| types::TagColumn { offsets: vec![0; n + 1], indices: Vec::new() }),
            },
            limit,
            params: Vec::new(),
        };
        Ok(Decoded { request, shape, surface_given })
    }
}

fn utc_time(unix_ms: i64) -> (i64, u16, types::Weekday) {
    let time = DateTime::from_timestamp_millis(unix_ms).unwrap_or_default();
    (unix_ms, (time.hour() * 60 + time.minute()) as u16, weekday(time.weekday()))
}

fn weekday(day: chrono::Weekday) -> types::Weekday {
    match day {
        chrono::Weekday::Mon => types::Weekday::Monday,
        chrono::Weekday::Tue => types::Weekday::Tuesday,
        chrono::Weekday::Wed => types::Weekday::Wednesday,
        chrono::Weekday::Thu => types::Weekday::Thursday,
        chrono::Weekday::Fri => types::Weekday::Friday,
        chrono::Weekday::Sat => types::Weekday::Saturday,
        chrono::Weekday::Sun => types::Weekday::Sunday,
    }
}

/// Parses `context.time`: an RFC 3339 time with the user's UTC offset.
fn parse_time(text: &str) -> Result<(i64, u16, types::Weekday), String> {
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("`{text}` is not an RFC 3339 time such as 2026-11-28T18:30:00+02:00 ({e})"))?;
    Ok((time.timestamp_millis(), (time.hour() * 60 + time.minute()) as u16, weekday(time.weekday())))
}

// --- serde plumbing -------------------------------------------------------------------------------

/// A string that borrows from the body when it needs no unescaping.
struct Str<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// A feature value: a number, `true`/`false` (1/0) or `null` (missing, NaN).
struct Value(f32);

impl<'de> de::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl ValueVisitor {
            fn finite<E: de::Error>(v: f64) -> Result<Value, E> {
                let narrowed = v as f32;
                if narrowed.is_finite() {
                    Ok(Value(narrowed))
                } else {
                    Err(E::custom(format!("{v} does not fit in a 32-bit float")))
                }
            }
        }
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, a boolean or null")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Self::finite(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value(v as f32))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value(v as f32))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value(if v { 1.0 } else { 0.0 }))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value(f32::NAN))
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value(f32::NAN))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

fn unknown_field<E: de::Error>(key: &str, expected: &'static [&'static str]) -> E {
    E::unknown_field(key, expected)
}

/// Reads an optional value where `null` means absent.
fn optional<'de, T: de::Deserialize<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<Option<T>, A::Error> {
    map.next_value::<Option<T>>()
}

struct RequestSeed<'b, 'o>(&'b mut Builder<'o>);

const TOP_FIELDS: &[&str] = &["request_id", "surface", "seed", "limit", "user", "context", "candidates"];

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a ranking request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "request_id" => b.request_id = optional(&mut map)?,
                "surface" => b.surface = optional(&mut map)?,
                "seed" => b.seed = optional(&mut map)?,
                "limit" => b.limit = optional(&mut map)?,
                "user" => map.next_value_seed(UserSeed(b))?,
                "context" => map.next_value_seed(ContextSeed(b))?,
                "candidates" => map.next_value_seed(CandidatesSeed(b))?,
                other => return Err(unknown_field(other, TOP_FIELDS)),
            }
        }
        Ok(())
    }
}

struct UserSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for UserSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for UserSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a user object `{\"id\": ..., \"features\": {...}}` or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "id" => b.user_id = optional(&mut map)?,
                "features" => map.next_value_seed(UserFeaturesSeed(b))?,
                other => return Err(unknown_field(other, &["id", "features"])),
            }
        }
        Ok(())
    }
}

struct UserFeaturesSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for UserFeaturesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for UserFeaturesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of feature names to numbers")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let features = &mut self.0.user_features;
        while let Some(name) = map.next_key::<Str<'de>>()? {
            let Value(value) = map.next_value()?;
            if value.is_nan() {
                continue;
            }
            match features.names.iter().position(|n| *n == name.0) {
                Some(i) => features.values[i] = value,
                None => {
                    features.names.push(name.0.into_owned());
                    features.values.push(value);
                }
            }
        }
        Ok(())
    }
}

struct ContextSeed<'b, 'o>(&'b mut Builder<'o>);

const CONTEXT_FIELDS: &[&str] = &["country", "city", "locale", "lat", "lon", "device", "time", "cart"];

impl<'de> DeserializeSeed<'de> for ContextSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ContextSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a context object or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "country" => b.context.country = optional(&mut map)?,
                "city" => b.context.city = optional(&mut map)?,
                "locale" => b.context.locale = optional(&mut map)?,
                "device" => b.context.device = optional(&mut map)?,
                "lat" => b.context.latitude = latitude(optional(&mut map)?, 90.0)?,
                "lon" => b.context.longitude = latitude(optional(&mut map)?, 180.0)?,
                "time" => {
                    if let Some(text) = optional::<Str<'de>, _>(&mut map)? {
                        b.context.time = Some(parse_time(&text.0).map_err(de::Error::custom)?);
                    }
                }
                "cart" => map.next_value_seed(CartSeed(b))?,
                other => return Err(unknown_field(other, CONTEXT_FIELDS)),
            }
        }
        Ok(())
    }
}

fn latitude<E: de::Error>(value: Option<f64>, bound: f64) -> Result<Option<f64>, E> {
    match value {
        Some(v) if !(-bound..=bound).contains(&v) => Err(E::custom(format!("{v} is outside -{bound}..={bound}"))),
        other => Ok(other),
    }
}

struct CartSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for CartSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for CartSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of cart items `{\"id\": ..., \"tags\": [...]}` or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let b = self.0;
        let mut cart = types::Cart { item_ids: Vec::new(), tags: empty_tags() };
        while let Some(()) = seq.next_element_seed(CartItemSeed { builder: b, cart: &mut cart })? {
            if cart.item_ids.len() > b.options.max_candidates {
                let message = format!("too many cart items: at most {} allowed", b.options.max_candidates);
                return Err(b.too_large(message));
            }
        }
        b.cart = Some(cart);
        Ok(())
    }
}

struct CartItemSeed<'b, 'c, 'o> {
    builder: &'b mut Builder<'o>,
    cart: &'c mut types::Cart,
}

impl<'de> DeserializeSeed<'de> for CartItemSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CartItemSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a cart item `{\"id\": ..., \"tags\": [...]}`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut id = None;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "id" => id = Some(map.next_value::<String>()?),
                "tags" => map.next_value_seed(TagsSeed { builder: self.builder, column: &mut self.cart.tags })?,
                other => return Err(unknown_field(other, &["id", "tags"])),
            }
        }
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        self.cart.item_ids.push(id);
        close_row(&mut self.cart.tags, self.cart.item_ids.len());
        Ok(())
    }
}

/// Closes the tag row of item `rows - 1`, adding an empty row if the item had no `tags`.
fn close_row(column: &mut types::TagColumn, rows: usize) {
    while column.offsets.len() < rows + 1 {
        column.offsets.push(column.indices.len() as u32);
    }
}

/// Tags of one row: appended to `column.indices` (distinct, in order); the row is closed by the
/// caller.
struct TagsSeed<'b, 'c, 'o> {
    builder: &'b mut Builder<'o>,
    column: &'c mut types::TagColumn,
}

impl<'de> DeserializeSeed<'de> for TagsSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tag strings or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let start = *self.column.offsets.last().expect("a tag column starts with offset 0") as usize;
        while let Some(tag) = seq.next_element::<Str<'de>>()? {
            let id = self.builder.tags.intern(&tag.0);
            if !self.column.indices[start..].contains(&id) {
                if self.column.indices.len() - start >= self.builder.options.max_tags {
                    let message = format!("too many tags: at most {} per item", self.builder.options.max_tags);
                    return Err(self.builder.too_large(message));
                }
                self.column.indices.push(id);
            }
        }
        Ok(())
    }
}

struct CandidatesSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for CandidatesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CandidatesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of candidates (row shape) or an object of columns (columnar shape)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let b = self.0;
        b.shape = Some(Shape::Rows);
        let mut tags = empty_tags();
        while let Some(()) = seq.next_element_seed(CandidateSeed { builder: b, tags: &mut tags })? {}
        b.candidate_tags = Some(tags);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        b.shape = Some(Shape::Columns);
        let mut values: Option<Vec<f32>> = None;
        let mut tags: Option<types::TagColumn> = None;
        let mut names_given = false;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "ids" => map.next_value_seed(IdsSeed(b))?,
                "feature_names" => {
                    names_given = true;
                    map.next_value_seed(FeatureNamesSeed(b))?
                }
                "features" => values = Some(map.next_value_seed(MatrixSeed(b))?),
                "tags" => tags = Some(map.next_value_seed(TagRowsSeed(b))?),
                other => return Err(unknown_field(other, &["ids", "feature_names", "features", "tags"])),
            }
        }
        let n = b.ids.offsets.len() - 1;
        let d = b.feature_names.len();
        let values = values.unwrap_or_default();
        if values.len() != n * d {
            let message = if names_given || d > 0 {
                format!("`features` has {} values but {n} candidates × {d} feature names need {}", values.len(), n * d)
            } else {
                "`features` needs `feature_names`".to_owned()
            };
            return Err(de::Error::custom(message));
        }
        b.matrix = Some(values);
        match tags {
            Some(tags) if tags.offsets.len() != n + 1 => {
                let message = format!("`tags` has {} rows but there are {n} candidates", tags.offsets.len() - 1);
                return Err(de::Error::custom(message));
            }
            tags => b.candidate_tags = tags,
        }
        Ok(())
    }
}

struct CandidateSeed<'b, 'c, 'o> {
    builder: &'b mut Builder<'o>,
    tags: &'c mut types::TagColumn,
}

impl<'de> DeserializeSeed<'de> for CandidateSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for CandidateSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a candidate `{\"id\": ..., \"features\": {...}, \"tags\": [...]}`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.builder;
        let row = (b.ids.offsets.len() - 1) as u32;
        let mut id: Option<Str<'de>> = None;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "id" => id = Some(map.next_value()?),
                "features" => map.next_value_seed(RowFeaturesSeed { builder: b, row })?,
                "tags" => map.next_value_seed(TagsSeed { builder: b, column: self.tags })?,
                other => return Err(unknown_field(other, &["id", "features", "tags"])),
            }
        }
        let id = id.ok_or_else(|| de::Error::missing_field("id"))?;
        b.push_id(&id.0)?;
        close_row(self.tags, row as usize + 1);
        Ok(())
    }
}

struct RowFeaturesSeed<'b, 'o> {
    builder: &'b mut Builder<'o>,
    row: u32,
}

impl<'de> DeserializeSeed<'de> for RowFeaturesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for RowFeaturesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of feature names to numbers")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.builder;
        while let Some(name) = map.next_key::<Str<'de>>()? {
            let column = b.column(&name.0)?;
            let Value(value) = map.next_value()?;
            if !value.is_nan() {
                b.cells.push((self.row, column, value));
            }
        }
        Ok(())
    }
}

struct IdsSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for IdsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for IdsSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of candidate id strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(id) = seq.next_element::<Str<'de>>()? {
            self.0.push_id(&id.0)?;
        }
        Ok(())
    }
}

struct FeatureNamesSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for FeatureNamesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FeatureNamesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of distinct feature names")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let b = self.0;
        while let Some(name) = seq.next_element::<Str<'de>>()? {
            if b.columns.contains_key(name.0.as_ref()) {
                return Err(de::Error::custom(format!("feature name `{}` appears twice", name.0)));
            }
            b.column::<A::Error>(&name.0)?;
        }
        Ok(())
    }
}

struct MatrixSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for MatrixSeed<'_, '_> {
    type Value = Vec<f32>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<f32>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MatrixSeed<'_, '_> {
    type Value = Vec<f32>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a flat row-major array of numbers (null = missing)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f32>, A::Error> {
        let cap = self.0.options.max_candidates * self.0.options.max_features;
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(cap));
        while let Some(Value(value)) = seq.next_element()? {
            if values.len() >= cap {
                return Err(self.0.too_large(format!("too many feature values: at most {cap} allowed")));
            }
            values.push(value);
        }
        Ok(values)
    }
}

struct TagRowsSeed<'b, 'o>(&'b mut Builder<'o>);

impl<'de> DeserializeSeed<'de> for TagRowsSeed<'_, '_> {
    type Value = types::TagColumn;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<types::TagColumn, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TagRowsSeed<'_, '_> {
    type Value = types::TagColumn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array with one array of tags per candidate")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<types::TagColumn, A::Error> {
        let b = self.0;
        let mut column = empty_tags();
        let mut rows = 0;
        while let Some(()) = seq.next_element_seed(TagsSeed { builder: b, column: &mut column })? {
            rows += 1;
            if rows > b.options.max_candidates {
                return Err(b.too_large(format!("too many tag rows: at most {} allowed", b.options.max_candidates)));
            }
            close_row(&mut column, rows);
        }
        Ok(column)
    }
}
