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

use std::fmt::{self, Write as _};
use std::marker::PhantomData;

use chrono::{DateTime, Datelike, Timelike};
use std::collections::HashMap as StdHashMap;

/// foldhash rather than SipHash: feature names and tags are hashed for every value of a request.
/// Its seed differs per process (address-space randomisation) and per map, so a body cannot aim
/// for collisions it can predict, and the limits bound how many names one body brings.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
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

impl Default for DecodeOptions<'_> {
    fn default() -> Self {
        DecodeOptions {
            surface: None,
            now_unix_ms: 0,
            max_candidates: 10_000,
            max_features: 512,
            max_values: 2_000_000,
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
    /// Whether the body itself named a surface (rather than only the URL).
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
pub fn decode(body: &[u8], options: &DecodeOptions<'_>) -> Result<Decoded, DecodeError> {
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
    let message = if error.is_eof() { format!("the body ends early ({error})") } else { error.to_string() };
    Err(DecodeError { kind, path, message })
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

/// Checks the promises the contract makes a policy about a request's shape: string and tag
/// offsets that start at 0, never decrease and end at their data; a matrix of exactly n × d
/// values, none infinite; distinct feature names, user features and vocabulary; tag indices
/// inside the vocabulary and distinct per row; user feature values that are not NaN.
///
/// Every request [`decode`] returns passes. The fuzz target and the property tests hold the
/// decoder to that; a host that builds requests another way can check them here.
pub fn check_request(request: &types::Request) -> Result<(), String> {
    let c = &request.candidates;
    let ids = &c.ids;
    let n = ids.offsets.len().checked_sub(1).ok_or("`candidates.ids.offsets` is empty")?;
    check_offsets("candidates.ids", &ids.offsets, ids.data.len())?;
    if let Some(&bad) = ids.offsets.iter().find(|&&o| !ids.data.is_char_boundary(o as usize)) {
        return Err(format!("candidates.ids: offset {bad} is inside a UTF-8 character"));
    }
    let d = c.feature_names.len();
    if Some(c.features.len()) != n.checked_mul(d) {
        return Err(format!("candidates.features: {} values for {n} × {d}", c.features.len()));
    }
    if c.features.iter().any(|v| v.is_infinite()) {
        return Err("candidates.features: an infinite value".to_owned());
    }
    check_distinct("candidates.feature_names", &c.feature_names)?;
    check_distinct("tag_vocabulary", &request.tag_vocabulary)?;
    let vocabulary = request.tag_vocabulary.len();
    check_tags("candidates.tags", &c.tags, n, vocabulary)?;
    let cart = &request.context.cart;
    check_tags("context.cart.tags", &cart.tags, cart.item_ids.len(), vocabulary)?;
    let user = &request.user_features;
    if user.names.len() != user.values.len() {
        return Err(format!("user_features: {} names, {} values", user.names.len(), user.values.len()));
    }
    check_distinct("user_features.names", &user.names)?;
    if user.values.iter().any(|v| !v.is_finite()) {
        return Err("user_features: a value that is NaN or infinite".to_owned());
    }
    if request.local_minute_of_day >= 24 * 60 {
        return Err(format!("local_minute_of_day {} is not a minute of a day", request.local_minute_of_day));
    }
    Ok(())
}

fn check_offsets(name: &str, offsets: &[u32], end: usize) -> Result<(), String> {
    if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[0] > w[1]) {
        return Err(format!("{name}: offsets do not start at 0 and never decrease: {offsets:?}"));
    }
    if offsets.last().map(|&o| o as usize) != Some(end) {
        return Err(format!("{name}: the last offset is not the data length {end}"));
    }
    Ok(())
}

fn check_distinct(name: &str, items: &[String]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    match items.iter().find(|item| !seen.insert(item.as_str())) {
        Some(item) => Err(format!("{name}: `{item}` appears twice")),
        None => Ok(()),
    }
}

fn check_tags(name: &str, column: &types::TagColumn, rows: usize, vocabulary: usize) -> Result<(), String> {
    if column.offsets.len() != rows + 1 {
        return Err(format!("{name}: {} offsets for {rows} rows", column.offsets.len()));
    }
    check_offsets(name, &column.offsets, column.indices.len())?;
    if let Some(&bad) = column.indices.iter().find(|&&i| i as usize >= vocabulary) {
        return Err(format!("{name}: index {bad} is outside the vocabulary of {vocabulary}"));
    }
    for (row, w) in column.offsets.windows(2).enumerate() {
        let tags = &column.indices[w[0] as usize..w[1] as usize];
        if tags.iter().enumerate().any(|(k, t)| tags[..k].contains(t)) {
            return Err(format!("{name}: row {row} repeats a tag: {tags:?}"));
        }
    }
    Ok(())
}

/// Everything the decoder has read so far.
struct Builder<'o> {
    options: &'o DecodeOptions<'o>,
    /// Set when the error being returned is a limit (a `413`), not a malformed body.
    too_large: bool,
    /// The path of an error found after its field was read (a columnar length mismatch), which
    /// the tracking parse would otherwise report at the parent.
    error_path: Option<&'static str>,
    request_id: Option<String>,
    surface: Option<String>,
    seed: Option<u64>,
    limit: Option<u32>,
    user_id: Option<String>,
    user_features: types::Features,
    /// Position of each user feature name in `user_features`, so a repeated name costs one lookup.
    user_index: HashMap<String, u32>,
    context: Context,
    cart: Option<types::Cart>,
    shape: Option<Shape>,
    ids: types::StringColumn,
    columns: HashMap<String, u32>,
    feature_names: Vec<String>,
    /// The row shape's matrix as it is read.
    rows: RowMatrix,
    /// The columnar shape's matrix, as sent.
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

/// The row shape's feature matrix while it is read.
///
/// Candidates usually send the same features, so once the first candidate with features has been
/// read, its columns fix a `stride` and later values go straight into a row-major matrix. A value
/// of a column first seen later goes to `late` as a `(row, column, value)` cell, and the matrix is
/// widened once at the end. Writing in place instead of collecting every cell and scattering them
/// at the end saves a 12-byte push per value and a pass over all of them.
#[derive(Default)]
struct RowMatrix {
    /// Rows of `stride` values (NaN = missing); rows after the last one with a value are absent.
    dense: Vec<f32>,
    stride: Option<usize>,
    late: Vec<(u32, u32, f32)>,
}

impl RowMatrix {
    fn set(&mut self, row: u32, column: u32, value: f32) {
        match self.stride {
            Some(stride) if (column as usize) < stride => {
                let at = row as usize * stride + column as usize;
                if at >= self.dense.len() {
                    self.dense.resize((row as usize + 1) * stride, f32::NAN);
                }
                self.dense[at] = value;
            }
            _ => self.late.push((row, column, value)),
        }
    }

    /// Called after each candidate's features, when there are `d` columns: the first time
    /// there are any, they fix the stride.
    fn end_row(&mut self, d: usize) {
        if self.stride.is_none() && d > 0 {
            self.stride = Some(d);
            for (row, column, value) in std::mem::take(&mut self.late) {
                self.set(row, column, value);
            }
        }
    }

    /// The `n × d` row-major matrix (the caller has checked that `n × d` fits).
    fn finish(mut self, n: usize, d: usize) -> Vec<f32> {
        let stride = self.stride.unwrap_or(0);
        self.dense.resize(n * stride, f32::NAN);
        if stride == d && self.late.is_empty() {
            return self.dense;
        }
        let mut matrix = vec![f32::NAN; n * d];
        if stride > 0 {
            for (to, from) in matrix.chunks_exact_mut(d).zip(self.dense.chunks_exact(stride)) {
                to[..stride].copy_from_slice(from);
            }
        }
        for (row, column, value) in self.late {
            matrix[row as usize * d + column as usize] = value;
        }
        matrix
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
            error_path: None,
            request_id: None,
            surface: None,
            seed: None,
            limit: None,
            user_id: None,
            user_features: types::Features { names: Vec::new(), values: Vec::new() },
            user_index: HashMap::default(),
            context: Context::default(),
            cart: None,
            shape: None,
            ids: types::StringColumn { data: String::new(), offsets: vec![0] },
            columns: HashMap::default(),
            feature_names: Vec::new(),
            rows: RowMatrix::default(),
            matrix: None,
            tags: Interner::default(),
            candidate_tags: None,
        }
    }

    /// Marks the error being returned as a limit (a `413`, not a `400`).
    fn too_large(&mut self, message: String) -> String {
        self.too_large = true;
        message
    }

    /// The number of candidates read so far.
    fn candidates(&self) -> usize {
        self.ids.offsets.len() - 1
    }

    /// Fails if one more candidate would be too many.
    fn room_for_candidate(&mut self) -> Result<(), String> {
        if self.candidates() >= self.options.max_candidates {
            return Err(self.too_large(format!("too many candidates: at most {} allowed", self.options.max_candidates)));
        }
        self.room_for_matrix(self.candidates() + 1, self.feature_names.len())
    }

    /// Refuses a request whose feature matrix would exceed `max_values` as soon as it grows past
    /// it, before the matrix is allocated: a small body with one wide candidate and many narrow
    /// ones must not make the host allocate `candidates × features` values first.
    fn room_for_matrix(&mut self, candidates: usize, features: usize) -> Result<(), String> {
        if candidates.checked_mul(features).is_none_or(|values| values > self.options.max_values) {
            let message = format!(
                "{candidates} candidates × {features} features is more than the {} feature values allowed",
                self.options.max_values
            );
            return Err(self.too_large(message));
        }
        Ok(())
    }

    fn push_id(&mut self, id: &str) -> Result<(), String> {
        self.room_for_candidate()?;
        self.ids.data.push_str(id);
        let end = u32::try_from(self.ids.data.len()).map_err(|_| self.too_large("candidate ids too long".into()))?;
        self.ids.offsets.push(end);
        Ok(())
    }

    /// The column of feature `name`, added if new.
    fn column(&mut self, name: &str) -> Result<u32, String> {
        if let Some(&j) = self.columns.get(name) {
            return Ok(j);
        }
        if self.feature_names.len() >= self.options.max_features {
            let message = format!("too many distinct features: at most {} allowed", self.options.max_features);
            return Err(self.too_large(message));
        }
        // The candidate being read may not be counted yet: the check at its id covers it.
        self.room_for_matrix(self.candidates(), self.feature_names.len() + 1)?;
        let j = self.feature_names.len() as u32;
        self.feature_names.push(name.to_owned());
        self.columns.insert(name.to_owned(), j);
        Ok(j)
    }

    /// The column of feature `name`, trying column `guess` first: candidates usually list their
    /// features in the same order, so the next key is usually the next column, and comparing
    /// one name is cheaper than hashing it.
    fn column_at(&mut self, name: &str, guess: usize) -> Result<u32, String> {
        match self.feature_names.get(guess) {
            Some(known) if known == name => Ok(guess as u32),
            _ => self.column(name),
        }
    }

    /// A name of the columnar `feature_names`: a new column.
    fn new_column(&mut self, name: &str) -> Result<(), String> {
        if self.columns.contains_key(name) {
            return Err(format!("feature name `{name}` appears twice"));
        }
        self.column(name).map(drop)
    }

    /// Sets user feature `name`; a repeated name keeps the last value.
    fn user_feature(&mut self, name: &str, value: f32) -> Result<(), String> {
        let features = &mut self.user_features;
        if let Some(&i) = self.user_index.get(name) {
            features.values[i as usize] = value;
            return Ok(());
        }
        if features.names.len() >= self.options.max_features {
            let message = format!("too many user features: at most {} allowed", self.options.max_features);
            return Err(self.too_large(message));
        }
        self.user_index.insert(name.to_owned(), features.names.len() as u32);
        features.names.push(name.to_owned());
        features.values.push(value);
        Ok(())
    }

    /// Appends `tag` to the open row of `column` (which starts at `start`) unless the row has it.
    fn tag(&mut self, column: &mut types::TagColumn, start: usize, tag: &str) -> Result<(), String> {
        let id = self.tags.intern(tag);
        let row = &column.indices[start..];
        if row.contains(&id) {
            return Ok(());
        }
        if row.len() >= self.options.max_tags {
            return Err(self.too_large(format!("too many tags: at most {} per item", self.options.max_tags)));
        }
        column.indices.push(id);
        Ok(())
    }

    /// An error about `path` found after the field was read.
    fn invalid_at<E: de::Error>(&mut self, path: &'static str, message: String) -> E {
        self.error_path = Some(path);
        E::custom(message)
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
        let surface_given = self.surface.is_some();
        let n = self.candidates();
        let surface = match (self.options.surface, self.surface) {
            (Some(url), Some(body)) if url != body => {
                return Err(invalid("surface", format!("the body says `{body}` but the URL says `{url}`")));
            }
            (Some(url), _) => url.to_owned(),
            (None, Some(body)) => body,
            (None, None) => String::new(),
        };
        let d = self.feature_names.len();
        let features = match self.matrix {
            Some(matrix) => matrix,
            None => {
                // n ≤ max_candidates and d ≤ max_features, so this is the largest matrix the
                // limits allow; checked in case a host sets limits whose product overflows.
                if n.checked_mul(d).is_none_or(|values| values > self.options.max_values) {
                    let message = format!(
                        "{n} candidates × {d} features is more than the {} feature values allowed",
                        self.options.max_values
                    );
                    return Err(DecodeError {
                        kind: DecodeErrorKind::TooLarge,
                        path: "candidates".to_owned(),
                        message,
                    });
                }
                self.rows.finish(n, d)
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

/// Checks a latitude (`bound` 90) or longitude (`bound` 180) in degrees.
fn degrees(value: Option<f64>, bound: f64) -> Result<Option<f64>, String> {
    match value {
        Some(v) if !(-bound..=bound).contains(&v) => Err(format!("{v} is outside -{bound}..={bound}")),
        other => Ok(other),
    }
}

// --- serde plumbing -------------------------------------------------------------------------------

/// The fixed fields of one JSON object, with their wire names.
trait Fields: Copy + 'static {
    /// The wire names, in the order of [`Fields::ALL`].
    const NAMES: &'static [&'static str];
    /// Every field.
    const ALL: &'static [Self];
}

/// Declares the fields of one object: an enum whose variants map to wire names.
macro_rules! fields {
    ($(#[$meta:meta])* enum $name:ident { $($variant:ident = $key:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy)]
        enum $name {
            $($variant,)*
        }

        impl Fields for $name {
            const NAMES: &'static [&'static str] = &[$($key,)*];
            const ALL: &'static [Self] = &[$(Self::$variant,)*];
        }
    };
}

/// Reads the next key of an object with fixed fields `F`. An unknown or repeated key is rejected
/// while it is read, so the error's path ends in that key (`candidates[3].colour`).
fn next_field<'de, F: Fields, A: MapAccess<'de>>(map: &mut A, seen: &mut u32) -> Result<Option<F>, A::Error> {
    map.next_key_seed(FieldKey { seen, fields: PhantomData })
}

struct FieldKey<'s, F> {
    /// One bit per field already seen in this object.
    seen: &'s mut u32,
    fields: PhantomData<F>,
}

impl<'de, F: Fields> DeserializeSeed<'de> for FieldKey<'_, F> {
    type Value = F;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<F, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<F: Fields> Visitor<'_> for FieldKey<'_, F> {
    type Value = F;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<F, E> {
        let Some(i) = F::NAMES.iter().position(|name| *name == key) else {
            return Err(E::unknown_field(key, F::NAMES));
        };
        if *self.seen & (1 << i) != 0 {
            return Err(E::duplicate_field(F::NAMES[i]));
        }
        *self.seen |= 1 << i;
        Ok(F::ALL[i])
    }
}

/// A string that borrows from the body when it needs no unescaping.
struct Str<'de>(std::borrow::Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(v.to_owned().into()))
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
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, true/false or null")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                let narrowed = v as f32;
                if narrowed.is_finite() {
                    Ok(Value(narrowed))
                } else {
                    Err(E::custom(format!("{v} does not fit in a 32-bit float")))
                }
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

/// Reads an optional value where `null` means absent.
fn optional<'de, T: de::Deserialize<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<Option<T>, A::Error> {
    map.next_value::<Option<T>>()
}

/// Reads a `T`, then checks or converts it: an error from the check names the field just read.
struct Check<T, F>(F, PhantomData<fn() -> T>);

fn check<T, U, F: FnOnce(T) -> Result<U, String>>(f: F) -> Check<T, F> {
    Check(f, PhantomData)
}

impl<'de, T: de::Deserialize<'de>, U, F: FnOnce(T) -> Result<U, String>> DeserializeSeed<'de> for Check<T, F> {
    type Value = U;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<U, D::Error> {
        (self.0)(T::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

/// One string, handed to `f` as it is read (borrowed from the body, or unescaped into
/// serde_json's scratch buffer): nothing is allocated, and an error from `f` names the string's
/// own path.
struct StrSeed<F> {
    expecting: &'static str,
    f: F,
}

impl<F> StrSeed<F> {
    /// The bound here makes a closure argument take any `&str` lifetime.
    fn new<T>(expecting: &'static str, f: F) -> Self
    where
        F: FnOnce(&str) -> Result<T, String>,
    {
        StrSeed { expecting, f }
    }
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> DeserializeSeed<'de> for StrSeed<F> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StrSeed<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.f)(v).map_err(E::custom)
    }
}

/// An array of strings, each handed to `f` as it is read (see [`StrSeed`]).
struct EachStr<F> {
    expecting: &'static str,
    f: F,
}

impl<F> EachStr<F> {
    fn new(expecting: &'static str, f: F) -> Self
    where
        F: FnMut(&str) -> Result<(), String>,
    {
        EachStr { expecting, f }
    }
}

impl<'de, F: FnMut(&str) -> Result<(), String>> DeserializeSeed<'de> for EachStr<F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(&str) -> Result<(), String>> Visitor<'de> for EachStr<F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(()) = seq.next_element_seed(StrSeed::new("a string", &mut self.f))? {}
        Ok(())
    }
}

/// Implements `visit_none`/`visit_unit` (absent) and `visit_some` (then `$method`) for a seed
/// whose value may be `null`.
macro_rules! nullable {
    ($method:ident) => {
        fn visit_none<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
            deserializer.$method(self)
        }
    };
}

struct RequestSeed<'b, 'o>(&'b mut Builder<'o>);

fields! {
    /// The top-level fields of a request.
    enum Top {
        RequestId = "request_id",
        Surface = "surface",
        Seed = "seed",
        Limit = "limit",
        User = "user",
        Context = "context",
        Candidates = "candidates",
    }
}

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
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                Top::RequestId => {
                    b.request_id = map.next_value_seed(check(|id: Option<String>| match id {
                        Some(id) if !is_request_id(&id) => Err(format!("must be {REQUEST_ID_RULE}")),
                        id => Ok(id),
                    }))?;
                }
                Top::Surface => b.surface = optional(&mut map)?,
                Top::Seed => b.seed = optional(&mut map)?,
                Top::Limit => b.limit = optional(&mut map)?,
                Top::User => map.next_value_seed(UserSeed(b))?,
                Top::Context => map.next_value_seed(ContextSeed(b))?,
                Top::Candidates => map.next_value_seed(CandidatesSeed(b))?,
            }
        }
        Ok(())
    }
}

struct UserSeed<'b, 'o>(&'b mut Builder<'o>);

fields! {
    /// The fields of `user`.
    enum UserField {
        Id = "id",
        Features = "features",
    }
}

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

    nullable!(deserialize_map);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                UserField::Id => b.user_id = optional(&mut map)?,
                UserField::Features => map.next_value_seed(UserFeaturesSeed(b))?,
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

    nullable!(deserialize_map);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<Str<'de>>()? {
            map.next_value_seed(UserFeatureSeed { builder: self.0, name: &name.0 })?;
        }
        Ok(())
    }
}

/// The value of one user feature; `null` leaves the feature out.
struct UserFeatureSeed<'b, 'n, 'o> {
    builder: &'b mut Builder<'o>,
    name: &'n str,
}

impl<'de> DeserializeSeed<'de> for UserFeatureSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let Value(value) = de::Deserialize::deserialize(deserializer)?;
        if value.is_nan() { Ok(()) } else { self.builder.user_feature(self.name, value).map_err(de::Error::custom) }
    }
}

struct ContextSeed<'b, 'o>(&'b mut Builder<'o>);

fields! {
    /// The fields of `context`.
    enum ContextField {
        Country = "country",
        City = "city",
        Locale = "locale",
        Lat = "lat",
        Lon = "lon",
        Device = "device",
        Time = "time",
        Cart = "cart",
    }
}

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

    nullable!(deserialize_map);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                ContextField::Country => b.context.country = optional(&mut map)?,
                ContextField::City => b.context.city = optional(&mut map)?,
                ContextField::Locale => b.context.locale = optional(&mut map)?,
                ContextField::Device => b.context.device = optional(&mut map)?,
                ContextField::Lat => b.context.latitude = map.next_value_seed(check(|v| degrees(v, 90.0)))?,
                ContextField::Lon => b.context.longitude = map.next_value_seed(check(|v| degrees(v, 180.0)))?,
                ContextField::Time => {
                    let parse = |text: Option<Str<'de>>| text.map(|t| parse_time(&t.0)).transpose();
                    b.context.time = map.next_value_seed(check(parse))?;
                }
                ContextField::Cart => {
                    let mut cart = types::Cart { item_ids: Vec::new(), tags: empty_tags() };
                    map.next_value_seed(CartSeed { builder: b, cart: &mut cart })?;
                    b.cart = Some(cart);
                }
            }
        }
        Ok(())
    }
}

/// The cart: an array of items, or `null` for none.
struct CartSeed<'b, 'c, 'o> {
    builder: &'b mut Builder<'o>,
    cart: &'c mut types::Cart,
}

impl<'de> DeserializeSeed<'de> for CartSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for CartSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of cart items `{\"id\": ..., \"tags\": [...]}` or null")
    }

    nullable!(deserialize_seq);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(()) = seq.next_element_seed(CartItemSeed { builder: self.builder, cart: self.cart })? {}
        Ok(())
    }
}

struct CartItemSeed<'b, 'c, 'o> {
    builder: &'b mut Builder<'o>,
    cart: &'c mut types::Cart,
}

fields! {
    /// The fields of a cart item.
    enum CartItemField {
        Id = "id",
        Tags = "tags",
    }
}

impl<'de> DeserializeSeed<'de> for CartItemSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let max = self.builder.options.max_candidates;
        if self.cart.item_ids.len() >= max {
            return Err(de::Error::custom(
                self.builder.too_large(format!("too many cart items: at most {max} allowed")),
            ));
        }
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
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                CartItemField::Id => id = Some(map.next_value::<String>()?),
                CartItemField::Tags => {
                    map.next_value_seed(TagsSeed { builder: self.builder, column: &mut self.cart.tags })?
                }
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

    nullable!(deserialize_seq);

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (b, column) = (self.builder, self.column);
        let start = column.indices.len();
        while let Some(()) = seq.next_element_seed(StrSeed::new("a tag string", |tag| b.tag(column, start, tag)))? {}
        Ok(())
    }
}

struct CandidatesSeed<'b, 'o>(&'b mut Builder<'o>);

fields! {
    /// The columns of the columnar shape.
    enum ColumnsField {
        Ids = "ids",
        FeatureNames = "feature_names",
        Features = "features",
        Tags = "tags",
    }
}

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
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                ColumnsField::Ids => {
                    map.next_value_seed(EachStr::new("an array of candidate id strings", |id| b.push_id(id)))?
                }
                ColumnsField::FeatureNames => {
                    let new_column = |name: &str| b.new_column(name);
                    map.next_value_seed(EachStr::new("an array of distinct feature names", new_column))?
                }
                ColumnsField::Features => values = Some(map.next_value_seed(MatrixSeed(b))?),
                ColumnsField::Tags => tags = Some(map.next_value_seed(TagRowsSeed(b))?),
            }
        }
        // The columns may come in any order, so their lengths are checked once all are read.
        let n = b.candidates();
        let d = b.feature_names.len();
        let values = values.unwrap_or_default();
        let need = n.checked_mul(d);
        if Some(values.len()) != need {
            let message = if let Some(need) = need
                && d > 0
            {
                format!("has {} values but {n} candidates × {d} feature names need {need}", values.len())
            } else if d > 0 {
                format!("has {} values, but {n} candidates × {d} feature names is too many", values.len())
            } else {
                "has values but `feature_names` is empty or missing".to_owned()
            };
            return Err(b.invalid_at("candidates.features", message));
        }
        b.matrix = Some(values);
        match tags {
            Some(tags) if tags.offsets.len() != n + 1 => {
                let message = format!("has {} rows but there are {n} candidates", tags.offsets.len() - 1);
                return Err(b.invalid_at("candidates.tags", message));
            }
            tags => b.candidate_tags = tags,
        }
        Ok(())
    }
}

/// One candidate of the row shape.
struct CandidateSeed<'b, 'c, 'o> {
    builder: &'b mut Builder<'o>,
    tags: &'c mut types::TagColumn,
}

fields! {
    /// The fields of a candidate in the row shape.
    enum CandidateField {
        Id = "id",
        Features = "features",
        Tags = "tags",
    }
}

impl<'de> DeserializeSeed<'de> for CandidateSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // Checked before reading, so one candidate too many is rejected without parsing it.
        self.builder.room_for_candidate().map_err(de::Error::custom)?;
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
        // The id is appended when it is read, which may be after the features.
        let row = b.candidates() as u32;
        let mut has_id = false;
        let mut seen = 0;
        while let Some(field) = next_field(&mut map, &mut seen)? {
            match field {
                CandidateField::Id => {
                    map.next_value_seed(StrSeed::new("a candidate id string", |id| b.push_id(id)))?;
                    has_id = true;
                }
                CandidateField::Features => map.next_value_seed(RowFeaturesSeed { builder: b, row })?,
                CandidateField::Tags => map.next_value_seed(TagsSeed { builder: b, column: self.tags })?,
            }
        }
        if !has_id {
            return Err(de::Error::missing_field("id"));
        }
        close_row(self.tags, row as usize + 1);
        Ok(())
    }
}

/// One candidate's features in the row shape.
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

    nullable!(deserialize_map);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.builder;
        let mut next = 0;
        // The column is found (or added) as the key is read, so that a feature past the limit is
        // reported at its own path.
        while let Some(column) = map.next_key_seed(StrSeed::new("a feature name", |name| b.column_at(name, next)))? {
            let Value(value) = map.next_value()?;
            if !value.is_nan() {
                b.rows.set(self.row, column, value);
            }
            next = column as usize + 1;
        }
        b.rows.end_row(b.feature_names.len());
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
        let options = self.0.options;
        let cap = options.max_candidates.saturating_mul(options.max_features).min(options.max_values);
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(cap));
        while let Some(Value(value)) = seq.next_element()? {
            if values.len() >= cap {
                return Err(de::Error::custom(
                    self.0.too_large(format!("too many feature values: at most {cap} allowed")),
                ));
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
                let message = format!("too many tag rows: at most {} allowed", b.options.max_candidates);
                return Err(de::Error::custom(b.too_large(message)));
            }
            close_row(&mut column, rows);
        }
        Ok(column)
    }
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
        indices.iter().map(|&i| request.tag_vocabulary[i as usize].as_str()).collect()
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
    fn a_repeated_candidate_feature_keeps_the_last_value_that_is_not_null() {
        let request = ok(r#"{"candidates": [{"id": "a", "features": {"x": 1, "x": 2, "x": null}}]}"#);
        assert_eq!(request.candidates.features, [2.0]);
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
    fn user_features_skip_null_and_keep_the_last_duplicate() {
        let request = ok(r#"{"user": {"id": "u", "features": {"a": 1, "b": null, "c": 3, "a": 4, "c": null}},
            "candidates": []}"#);
        assert_eq!(request.user_features.names, ["a", "c"]);
        assert_eq!(request.user_features.values, [4.0, 3.0]);
        assert_eq!(request.context.user_id.as_deref(), Some("u"));
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
        let user = r#"{"user": {"features": {"a": 1, "b": 2, "a": 3, "c": 4}}, "candidates": []}"#;
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
        assert_eq!(request.candidates.feature_names, std::slice::from_ref(&long));
        assert_eq!(request.tag_vocabulary, std::slice::from_ref(&long));
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
