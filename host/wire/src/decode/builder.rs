//! The [`Builder`] that the seeds write into, and the column building it does: candidate ids,
//! the feature matrix (see [`RowMatrix`]), interned tags, and the request it finishes into.

use std::hash::BuildHasher as _;

use chrono::{DateTime, Datelike, Timelike};
use serde::de;

use super::fast::same;
use super::{DecodeError, DecodeErrorKind, DecodeOptions, Decoded, Shape, derive_seed};
use crate::types;

/// Positions into a list of distinct strings, each found by its string with one hash. A map from
/// the string would hold a second copy of each: an allocation per feature name, tag and user
/// feature of every request.
///
/// foldhash rather than SipHash: feature names and tags are hashed for every value of a request.
/// Its seed differs per process (address-space randomisation) and per table, so a body cannot aim
/// for collisions it can predict, and the limits bound how many names one body brings.
#[derive(Default)]
struct Index {
    table: hashbrown::HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl Index {
    /// The hash of `name` in this index: computed once for a lookup and the insertion after it.
    #[inline]
    fn hash(&self, name: &[u8]) -> u64 {
        self.hasher.hash_one(name)
    }

    /// The position of `name` (of hash `hash`), where `key` gives the string at a position.
    #[inline]
    fn find<'k>(&self, hash: u64, name: &[u8], key: impl Fn(u32) -> &'k [u8]) -> Option<u32> {
        self.table.find(hash, |&at| equal(key(at), name)).copied()
    }

    /// Adds the string of hash `hash` at position `at`; the caller has found it absent.
    fn insert<'k>(&mut self, hash: u64, at: u32, key: impl Fn(u32) -> &'k [u8]) {
        let rehash = |&at: &u32| self.hasher.hash_one(key(at));
        if self.table.capacity() == 0 {
            // Requests name a few dozen features or tags: one table, not four that grow.
            self.table.reserve(FEW, rehash);
        }
        self.table.insert_unique(hash, at, rehash);
    }
}

/// Everything the decoder has read so far.
pub(super) struct Builder<'o> {
    pub(super) options: &'o DecodeOptions<'o>,
    /// Set when the error being returned is a limit (a `413`), not a malformed body.
    pub(super) too_large: bool,
    /// The path of an error found after its field was read (a columnar length mismatch), which
    /// the tracking parse would otherwise report at the parent.
    pub(super) error_path: Option<&'static str>,
    pub(super) request_id: Option<String>,
    pub(super) bucket_key: Option<String>,
    pub(super) surface: Option<String>,
    pub(super) seed: Option<u64>,
    pub(super) limit: Option<u32>,
    pub(super) user_id: Option<String>,
    user_features: types::Features,
    /// Every user feature name read (those given `null` too), so a repeated one costs one lookup:
    /// positions into `user_features.names`, or, from [`NULL_NAME`] on, into `null_user_names`.
    user_names: Index,
    /// The user features named with `null` (named, so not to be repeated, but without a value).
    null_user_names: types::StringColumn,
    pub(super) context: Context,
    pub(super) cart: Option<types::Cart>,
    pub(super) shape: Option<Shape>,
    ids: types::StringColumn,
    /// Positions into `feature_names`.
    columns: Index,
    pub(super) feature_names: types::StringColumn,
    /// The row shape's matrix as it is read.
    pub(super) rows: RowMatrix,
    /// By column, the row (plus one) that last gave it a value: a feature named twice in one
    /// candidate is found with one compare.
    row_marks: Vec<u32>,
    /// The columnar shape's matrix, as sent.
    pub(super) matrix: Option<Vec<f32>>,
    tags: Interner,
    pub(super) candidate_tags: Option<types::TagColumn>,
}

#[derive(Default)]
pub(super) struct Context {
    pub(super) country: Option<String>,
    pub(super) city: Option<String>,
    pub(super) locale: Option<String>,
    pub(super) latitude: Option<f64>,
    pub(super) longitude: Option<f64>,
    pub(super) device: Option<String>,
    pub(super) time: Option<(i64, u16, types::Weekday)>,
}

/// Whether two strings are equal, compared as [`same`] compares (no call to `memcmp`).
#[inline]
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && same(a, b)
}

/// The bytes of string `i` of `column`, which has it (a position an [`Index`] holds).
#[inline]
fn key(column: &types::StringColumn, i: u32) -> &[u8] {
    column.bytes(i as usize).expect("an index holds positions of its column")
}

/// Room for [`FEW`] names of about this many bytes each, made once.
const NAME_BYTES: usize = 16;

/// How many feature names, tags or user features a request is first given room for: what a
/// typical request has, so that their vectors are allocated once or twice rather than grown from
/// four entries up.
const FEW: usize = 32;

/// The first of the positions in `Builder::user_names` that are of `null_user_names`.
const NULL_NAME: u32 = 1 << 31;

/// The tag vocabulary: each distinct tag once, in the order first seen.
///
/// A request has a handful of distinct tags, each read once per candidate that carries it. So
/// before the index, a small table remembers the tag last seen at a slot chosen by its length and
/// its first and last bytes: a hit costs a compare of the tag with one vocabulary entry instead
/// of hashing it. A slot is only a guess, always checked, so a body whose tags share slots is
/// as fast as before, not wrong.
struct Interner {
    /// Positions into `vocabulary`.
    index: Index,
    vocabulary: types::StringColumn,
    /// By slot ([`Interner::slot`]), the position plus one of the tag last interned there; 0 for
    /// none.
    recent: [u32; RECENT],
}

/// The number of slots of `Interner::recent`.
const RECENT: usize = 64;

impl Default for Interner {
    fn default() -> Self {
        Interner { index: Index::default(), vocabulary: types::StringColumn::empty(), recent: [0; RECENT] }
    }
}

impl Interner {
    /// The position of `tag`. Slots come in pairs (`slot` and `slot ^ 1`), so two tags that
    /// share a slot both stay: the one found (or added) last moves to the first of the pair.
    #[inline]
    fn intern(&mut self, tag: &str) -> u32 {
        let bytes = tag.as_bytes();
        let slot = Self::slot(bytes);
        if let Some(id) = self.recent[slot].checked_sub(1)
            && equal(key(&self.vocabulary, id), bytes)
        {
            return id;
        }
        let id = match self.recent[slot ^ 1].checked_sub(1) {
            Some(id) if equal(key(&self.vocabulary, id), bytes) => id,
            _ => self.intern_indexed(tag),
        };
        self.recent[slot ^ 1] = self.recent[slot];
        self.recent[slot] = id + 1;
        id
    }

    /// The slot of `tag` in `recent`: a mix of its length and its first and last bytes, which
    /// differ between the tags of one request more often than not.
    #[inline]
    fn slot(tag: &[u8]) -> usize {
        let (first, last) = match tag {
            [] => (0, 0),
            [first, .., last] => (*first, *last),
            [only] => (*only, *only),
        };
        let mixed = (usize::from(first) << 16 | usize::from(last) << 8 | tag.len()).wrapping_mul(0x9e37_79b9);
        (mixed >> 16) % RECENT
    }

    /// The position of `tag`, found in or added to the index.
    #[inline(never)]
    fn intern_indexed(&mut self, tag: &str) -> u32 {
        let vocabulary = &self.vocabulary;
        let hash = self.index.hash(tag.as_bytes());
        if let Some(id) = self.index.find(hash, tag.as_bytes(), |id| key(vocabulary, id)) {
            return id;
        }
        let id = self.vocabulary.len() as u32;
        if id == 0 {
            self.vocabulary.reserve(FEW, FEW * NAME_BYTES);
        }
        self.vocabulary.push(tag);
        let vocabulary = &self.vocabulary;
        self.index.insert(hash, id, |id| key(vocabulary, id));
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
pub(super) struct RowMatrix {
    /// Rows of `stride` values (NaN = missing); rows after the last one with a value are absent.
    dense: Vec<f32>,
    stride: Option<usize>,
    late: Vec<(u32, u32, f32)>,
}

impl RowMatrix {
    /// Makes room for row `row` once the stride is known, before its values are set: each
    /// [`RowMatrix::set`] is then a store (the `NaN`s are what finishing would fill in).
    #[inline]
    pub(super) fn open_row(&mut self, row: u32) {
        if let Some(stride) = self.stride {
            let end = (row as usize + 1) * stride;
            if end > self.dense.len() {
                self.grow(end);
            }
        }
    }

    /// Grows the matrix to `len` values, NaN (out of [`RowMatrix::open_row`]'s way: the matrix is
    /// usually sized once, see [`RowMatrix::presize`]).
    #[inline(never)]
    fn grow(&mut self, len: usize) {
        self.dense.resize(len, f32::NAN);
    }

    /// Sets the value of `column` in row `row`.
    #[inline]
    pub(super) fn set(&mut self, row: u32, column: u32, value: f32) {
        match self.stride {
            Some(stride) if (column as usize) < stride => {
                let at = row as usize * stride + column as usize;
                if at >= self.dense.len() {
                    self.dense.resize((row as usize + 1) * stride, f32::NAN);
                }
                self.dense[at] = value;
            }
            _ => self.push_late(row, column, value),
        }
    }

    /// Sets the value of `column` in row `row`, opened with [`RowMatrix::open_row`]: a store,
    /// without a branch on the value. A `null` (NaN) is stored as well where the row has room,
    /// which changes nothing: the matrix is filled with the same NaN, and a feature is given once
    /// per candidate.
    #[inline]
    pub(super) fn set_in_open_row(&mut self, row: u32, column: u32, value: f32) {
        match self.stride {
            Some(stride) if (column as usize) < stride => self.dense[row as usize * stride + column as usize] = value,
            _ if value.is_nan() => {}
            _ => self.push_late(row, column, value),
        }
    }

    /// Keeps the value of a column the matrix has no room for yet: all of the first candidate's,
    /// and those of columns first seen later. Room for a few dozen is made at once: the first
    /// candidate's values alone would grow the vector four times.
    fn push_late(&mut self, row: u32, column: u32, value: f32) {
        if self.late.capacity() == 0 {
            self.late.reserve(FEW);
        }
        self.late.push((row, column, value));
    }

    /// Makes room for `rows` rows once the stride is known, filled with NaN in one pass rather
    /// than row by row as they are opened (finishing cuts what is left over).
    fn presize(&mut self, rows: usize) {
        if let Some(stride) = self.stride
            && rows * stride > self.dense.len()
        {
            self.dense.resize(rows * stride, f32::NAN);
        }
    }

    /// Called after each candidate's features, when there are `d` columns: the first time
    /// there are any, they fix the stride.
    pub(super) fn end_row(&mut self, d: usize) {
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

pub(super) fn empty_tags() -> types::TagColumn {
    types::TagColumn { offsets: vec![0], indices: Vec::new() }
}

impl<'o> Builder<'o> {
    pub(super) fn new(options: &'o DecodeOptions<'o>) -> Self {
        Builder {
            options,
            too_large: false,
            error_path: None,
            request_id: None,
            bucket_key: None,
            surface: None,
            seed: None,
            limit: None,
            user_id: None,
            user_features: types::Features { names: types::StringColumn::empty(), values: Vec::new() },
            user_names: Index::default(),
            null_user_names: types::StringColumn::empty(),
            context: Context::default(),
            cart: None,
            shape: None,
            ids: types::StringColumn { data: String::new(), offsets: vec![0] },
            columns: Index::default(),
            feature_names: types::StringColumn::empty(),
            rows: RowMatrix::default(),
            row_marks: Vec::new(),
            matrix: None,
            tags: Interner::default(),
            candidate_tags: None,
        }
    }

    /// Marks the error being returned as a limit (a `413`, not a `400`).
    pub(super) fn too_large(&mut self, message: String) -> String {
        self.too_large = true;
        message
    }

    /// The number of candidates read so far.
    pub(super) fn candidates(&self) -> usize {
        self.ids.offsets.len() - 1
    }

    /// Fails if one more candidate would be too many.
    pub(super) fn room_for_candidate(&mut self) -> Result<(), String> {
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

    pub(super) fn push_id(&mut self, id: &str) -> Result<(), String> {
        self.room_for_candidate()?;
        self.ids.data.push_str(id);
        let end = u32::try_from(self.ids.data.len()).map_err(|_| self.too_large("candidate ids too long".into()))?;
        self.ids.offsets.push(end);
        Ok(())
    }

    /// Reserves room for `more` candidates like the first one (row shape): its id's length, its
    /// tags and the matrix's row. Within the limits, and a hint only: the columns still grow if
    /// the candidates are more or larger.
    pub(super) fn reserve_rows(&mut self, more: usize, tags: &mut types::TagColumn) {
        let more = more.min(self.options.max_candidates.saturating_sub(self.candidates()));
        let n = self.candidates() + more;
        self.ids.offsets.reserve(more);
        self.ids.data.reserve(more.saturating_mul(self.ids.data.len() / self.candidates().max(1)));
        tags.offsets.reserve(more);
        tags.indices.reserve(more.saturating_mul(tags.indices.len().max(1)));
        // The stride is at most `d`, so the matrix stays within `max_values`.
        let d = self.feature_names.len();
        if n.checked_mul(d).is_some_and(|values| values <= self.options.max_values) {
            self.rows.presize(n);
        }
    }

    /// The column of feature `name`, added if new.
    pub(super) fn column(&mut self, name: &str) -> Result<u32, String> {
        let hash = self.columns.hash(name.as_bytes());
        if let Some(j) = self.columns.find(hash, name.as_bytes(), |j| key(&self.feature_names, j)) {
            return Ok(j);
        }
        if self.feature_names.len() >= self.options.max_features {
            let message = format!("too many distinct features: at most {} allowed", self.options.max_features);
            return Err(self.too_large(message));
        }
        // The candidate being read may not be counted yet: the check at its id covers it.
        self.room_for_matrix(self.candidates(), self.feature_names.len() + 1)?;
        let j = self.feature_names.len() as u32;
        if j == 0 {
            // Requests have a few dozen features: three allocations, not many of growing vectors.
            self.feature_names.reserve(FEW, FEW * NAME_BYTES);
            self.row_marks.reserve(FEW);
        }
        self.feature_names.push(name);
        self.row_marks.push(0);
        let names = &self.feature_names;
        self.columns.insert(hash, j, |j| key(names, j));
        Ok(j)
    }

    /// The column of feature `name`, if it has one.
    fn find_column(&self, name: &str) -> Option<u32> {
        let name = name.as_bytes();
        self.columns.find(self.columns.hash(name), name, |j| key(&self.feature_names, j))
    }

    /// The column of feature `name`, trying column `guess` first: candidates usually list their
    /// features in the same order, so the next key is usually the next column, and comparing
    /// one name is cheaper than hashing it.
    pub(super) fn column_at(&mut self, name: &str, guess: usize) -> Result<u32, String> {
        match self.feature_names.bytes(guess) {
            Some(known) if equal(known, name.as_bytes()) => Ok(guess as u32),
            _ => self.column(name),
        }
    }

    /// A name of the columnar `feature_names`: a new column.
    pub(super) fn new_column(&mut self, name: &str) -> Result<(), String> {
        if self.find_column(name).is_some() {
            return Err(format!("feature name `{name}` appears twice"));
        }
        self.column(name).map(drop)
    }

    /// Sets user feature `name` (NaN, from `null`: named but left out). A name may appear once,
    /// as a top-level field may: a repeated one is refused.
    pub(super) fn user_feature(&mut self, name: &str, value: f32) -> Result<(), String> {
        let (named, nulls) = (&self.user_features.names, &self.null_user_names);
        let either = |at: u32| match at.checked_sub(NULL_NAME) {
            None => key(named, at),
            Some(null) => key(nulls, null),
        };
        let hash = self.user_names.hash(name.as_bytes());
        if self.user_names.find(hash, name.as_bytes(), either).is_some() {
            return Err(repeated_feature(name, "the user's features"));
        }
        if named.len() + nulls.len() >= self.options.max_features {
            let message = format!("too many user features: at most {} allowed", self.options.max_features);
            return Err(self.too_large(message));
        }
        let at = if value.is_nan() {
            self.null_user_names.push(name);
            NULL_NAME + (self.null_user_names.len() - 1) as u32
        } else {
            if self.user_features.names.is_empty() {
                self.user_features.names.reserve(FEW, FEW * NAME_BYTES);
                self.user_features.values.reserve(FEW);
            }
            self.user_features.names.push(name);
            self.user_features.values.push(value);
            (self.user_features.names.len() - 1) as u32
        };
        let (named, nulls) = (&self.user_features.names, &self.null_user_names);
        let either = |at: u32| match at.checked_sub(NULL_NAME) {
            None => key(named, at),
            Some(null) => key(nulls, null),
        };
        self.user_names.insert(hash, at, either);
        Ok(())
    }

    /// Marks feature `column` as given by candidate `row`; an error when that candidate gave it
    /// already (row shape).
    #[inline]
    pub(super) fn mark_row_feature(&mut self, row: u32, column: u32) -> Result<(), String> {
        let column = column as usize;
        if column >= self.row_marks.len() {
            self.row_marks.resize(column + 1, 0);
        }
        let mark = row + 1;
        if self.row_marks[column] == mark {
            return Err(self.repeated_row_feature(column));
        }
        self.row_marks[column] = mark;
        Ok(())
    }

    /// The error of [`Builder::mark_row_feature`], out of its way.
    #[cold]
    fn repeated_row_feature(&self, column: usize) -> String {
        repeated_feature(self.feature_names.get(column), "this candidate's features")
    }

    /// Appends `tag` to the open row of `column` (which starts at `start`) unless the row has it.
    pub(super) fn tag(&mut self, column: &mut types::TagColumn, start: usize, tag: &str) -> Result<(), String> {
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
    pub(super) fn invalid_at<E: de::Error>(&mut self, path: &'static str, message: String) -> E {
        self.error_path = Some(path);
        E::custom(message)
    }

    pub(super) fn finish(self) -> Result<Decoded, DecodeError> {
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
        if let Some((first, second)) = duplicate_id(&self.ids) {
            let path = match shape {
                Shape::Rows => format!("candidates[{second}].id"),
                Shape::Columns | Shape::Protobuf => format!("candidates.ids[{second}]"),
            };
            let id = &self.ids.data[self.ids.offsets[second] as usize..self.ids.offsets[second + 1] as usize];
            let message = format!("`{id}` is also the id of candidate {first}: each candidate may appear once");
            return Err(invalid(&path, message));
        }
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
                cart: self
                    .cart
                    .unwrap_or_else(|| types::Cart { item_ids: types::StringColumn::empty(), tags: empty_tags() }),
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
        Ok(Decoded { request, shape, surface_given, bucket_key: self.bucket_key })
    }
}

fn utc_time(unix_ms: i64) -> (i64, u16, types::Weekday) {
    let time = DateTime::from_timestamp_millis(unix_ms).unwrap_or_default();
    (unix_ms, (time.hour() * 60 + time.minute()) as u16, weekday(time.weekday()))
}

pub(super) fn weekday(day: chrono::Weekday) -> types::Weekday {
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
pub(super) fn parse_time(text: &str) -> Result<(i64, u16, types::Weekday), String> {
    let time = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("`{text}` is not an RFC 3339 time such as 2026-11-28T18:30:00+02:00 ({e})"))?;
    Ok((time.timestamp_millis(), (time.hour() * 60 + time.minute()) as u16, weekday(time.weekday())))
}

/// Checks a latitude (`bound` 90) or longitude (`bound` 180) in degrees.
pub(super) fn degrees(value: Option<f64>, bound: f64) -> Result<Option<f64>, String> {
    match value {
        Some(v) if !(-bound..=bound).contains(&v) => Err(format!("{v} is outside -{bound}..={bound}")),
        other => Ok(other),
    }
}

/// The message for a feature named twice in one object (`where`).
fn repeated_feature(name: &str, place: &str) -> String {
    format!("duplicate feature `{name}`: a feature may appear once in {place}")
}

/// The first candidate whose id an earlier one has: (the earlier's index, its index). A page
/// must not show one venue twice, and an answer names candidates by index, so two candidates of
/// one id could both be in it. The ids are the caller's, so the table is randomly seeded (as an
/// [`Index`] is): a hash they could aim collisions at would make this quadratic.
fn duplicate_id(ids: &types::StringColumn) -> Option<(usize, usize)> {
    let n = ids.offsets.len().saturating_sub(1);
    let id = |i: usize| &ids.data[ids.offsets[i] as usize..ids.offsets[i + 1] as usize];
    let hasher = foldhash::fast::RandomState::default();
    // Candidate indices, found by their ids: one allocation, and no second copy of an id.
    let mut seen = hashbrown::HashTable::<u32>::with_capacity(n);
    for i in 0..n {
        let this = id(i);
        let entry = seen.entry(
            hasher.hash_one(this),
            |&first| equal(id(first as usize).as_bytes(), this.as_bytes()),
            |&first| hasher.hash_one(id(first as usize)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(first) => return Some((*first.get() as usize, i)),
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert(i as u32);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Interner;

    proptest! {
        /// Interning gives each distinct tag the next position at its first appearance and that
        /// position ever after, whatever tags share a slot of the recent table: the tags here
        /// (same length, first and last byte, so one slot) and arbitrary ones.
        #[test]
        fn interning_numbers_tags_in_order_of_first_appearance(
            tags in prop::collection::vec(prop_oneof!["a[0-9]b", "[a-c]{0,3}", ".{0,9}"], 0..200),
        ) {
            let mut interner = Interner::default();
            let mut model: Vec<&str> = Vec::new();
            for tag in &tags {
                let want = match model.iter().position(|t| t == tag) {
                    Some(i) => i,
                    None => {
                        model.push(tag);
                        model.len() - 1
                    }
                };
                prop_assert_eq!(interner.intern(tag) as usize, want, "{}", tag);
            }
            prop_assert_eq!(&interner.vocabulary, &model);
        }
    }
}
