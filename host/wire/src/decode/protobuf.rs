//! The protobuf request (`proto/relish/v1/rank.proto`): decoded by prost, then checked and written
//! into the same [`Builder`] as JSON, so that both forms give the same request by the same rules.
//!
//! prost reads the packed columns in bulk (the feature matrix is a run of little-endian floats);
//! what is left here is to check every column's offsets and lengths, and to hand each string to
//! the builder, which checks limits and duplicates exactly as for JSON. Errors name the field by
//! its protobuf path (`candidates.ids.offsets`, `user.feature_names[2]`).

use chrono::{DateTime, Datelike, FixedOffset, Timelike};
use prost::Message as _;

use super::builder::{Builder, degrees, empty_tags, parse_time};
use super::tags::close_row;
use super::{DecodeError, DecodeErrorKind, DecodeOptions, Decoded, REQUEST_ID_RULE, Shape, is_request_id};
use crate::protobuf as pb;
use crate::types;

/// Decodes a serialized `relish.v1.RankRequest`.
pub fn decode_protobuf(body: &[u8], options: &DecodeOptions<'_>) -> Result<Decoded, DecodeError> {
    let message = pb::RankRequest::decode(body)
        .map_err(|e| invalid("", format!("not a protobuf `relish.v1.RankRequest`: {e}")))?;
    let mut b = Builder::new(options);
    b.shape = Some(Shape::Protobuf);
    read(&mut b, message).map_err(|(kind_is_limit, path, message)| DecodeError {
        kind: if kind_is_limit { DecodeErrorKind::TooLarge } else { DecodeErrorKind::Invalid },
        path,
        message,
    })?;
    b.finish()
}

/// Only `RankRequest.surface`: decoding it skips every other field without reading into it (a
/// length-delimited field is stepped over whole).
#[derive(Clone, PartialEq, prost::Message)]
struct SurfaceOnly {
    #[prost(string, optional, tag = "3")]
    surface: Option<String>,
}

/// The `surface` a serialized `relish.v1.RankRequest` names, if any, without decoding the rest:
/// what a gRPC call is routed by before its request is decoded with that surface's limits.
pub fn protobuf_surface(body: &[u8]) -> Result<Option<String>, DecodeError> {
    SurfaceOnly::decode(body)
        .map(|only| only.surface)
        .map_err(|e| invalid("", format!("not a protobuf `relish.v1.RankRequest`: {e}")))
}

/// A rejection: whether it is a limit (a `413`), the field path, and what is wrong.
type Rejection = (bool, String, String);

fn invalid(path: &str, message: String) -> DecodeError {
    DecodeError { kind: DecodeErrorKind::Invalid, path: path.to_owned(), message }
}

/// A builder's answer, its error as a rejection at `path` (a limit if the builder says so). The
/// path is only written for an error.
fn at(b: &mut Builder<'_>, result: Result<(), String>, path: impl FnOnce() -> String) -> Result<(), Rejection> {
    result.map_err(|message| (std::mem::take(&mut b.too_large), path(), message))
}

fn bad(path: impl Into<String>, message: impl Into<String>) -> Rejection {
    (false, path.into(), message.into())
}

fn read(b: &mut Builder<'_>, message: pb::RankRequest) -> Result<(), Rejection> {
    if let Some(id) = &message.request_id
        && !is_request_id(id)
    {
        return Err(bad("request_id", format!("must be {REQUEST_ID_RULE}")));
    }
    if let Some(key) = &message.bucket_key
        && (key.is_empty() || key.len() > 256)
    {
        return Err(bad("bucket_key", "must be 1 to 256 bytes (a device or session id)"));
    }
    b.request_id = message.request_id;
    b.bucket_key = message.bucket_key;
    b.surface = message.surface;
    b.seed = message.seed;
    b.limit = message.limit;
    let vocabulary = strings(message.tag_vocabulary.as_ref(), "tag_vocabulary")?;
    let mut seen = std::collections::HashSet::with_capacity(vocabulary.len());
    if let Some(i) = vocabulary.iter().position(|tag| !seen.insert(*tag)) {
        return Err(bad(format!("tag_vocabulary[{i}]"), format!("`{}` appears twice", vocabulary[i])));
    }
    if let Some(user) = message.user {
        b.user_id = user.id;
        let names = strings(user.feature_names.as_ref(), "user.feature_names")?;
        if names.len() != user.feature_values.len() {
            let message = format!("has {} values for {} names", user.feature_values.len(), names.len());
            return Err(bad("user.feature_values", message));
        }
        for (i, (name, &value)) in names.iter().zip(&user.feature_values).enumerate() {
            finite(value, || format!("user.feature_values[{i}]"))?;
            let result = b.user_feature(name, value);
            at(b, result, || format!("user.feature_names[{i}]"))?;
        }
    }
    if let Some(context) = message.context {
        let c = &mut b.context;
        (c.country, c.city, c.locale, c.device) = (context.country, context.city, context.locale, context.device);
        c.latitude = degrees(context.lat, 90.0).map_err(|m| bad("context.lat", m))?;
        c.longitude = degrees(context.lon, 180.0).map_err(|m| bad("context.lon", m))?;
        c.time = context.time.as_deref().map(parse_time).transpose().map_err(|m| bad("context.time", m))?;
        if let Some(cart) = context.cart {
            let ids = strings(cart.item_ids.as_ref(), "context.cart.item_ids")?;
            let max = b.options.max_candidates;
            if ids.len() > max {
                let message = format!("too many cart items: at most {max} allowed");
                return Err((true, format!("context.cart.item_ids[{max}]"), message));
            }
            let mut read = types::Cart { item_ids: types::StringColumn::empty(), tags: empty_tags() };
            read.item_ids.reserve(ids.len(), ids.iter().map(|id| id.len()).sum());
            let rows = tag_rows(cart.tags.as_ref(), ids.len(), "context.cart.tags")?;
            for (row, id) in ids.iter().enumerate() {
                tags(b, &mut read.tags, rows.get(row), &vocabulary, "context.cart.tags")?;
                read.item_ids.push(id);
                close_row(&mut read.tags, row + 1);
            }
            b.cart = Some(read);
        }
    }
    let candidates = message.candidates.unwrap_or_default();
    for (i, id) in strings(candidates.ids.as_ref(), "candidates.ids")?.into_iter().enumerate() {
        let result = b.push_id(id);
        at(b, result, || format!("candidates.ids[{i}]"))?;
    }
    for (j, name) in strings(candidates.feature_names.as_ref(), "candidates.feature_names")?.into_iter().enumerate() {
        let result = b.new_column(name);
        at(b, result, || format!("candidates.feature_names[{j}]"))?;
    }
    let (n, d) = (b.candidates(), b.feature_names.len());
    if Some(candidates.features.len()) != n.checked_mul(d) {
        let message = format!(
            "has {} values but {n} candidates × {d} feature names need {}",
            candidates.features.len(),
            n.saturating_mul(d)
        );
        return Err(bad("candidates.features", message));
    }
    if let Some(k) = candidates.features.iter().position(|v| v.is_infinite()) {
        return Err(bad(format!("candidates.features[{k}]"), "is infinite: send NaN for a missing value"));
    }
    b.matrix = Some(candidates.features);
    let rows = tag_rows(candidates.tags.as_ref(), n, "candidates.tags")?;
    let mut column = empty_tags();
    for row in 0..n {
        tags(b, &mut column, rows.get(row), &vocabulary, "candidates.tags")?;
        close_row(&mut column, row + 1);
    }
    b.candidate_tags = Some(column);
    Ok(())
}

fn finite(value: f32, path: impl FnOnce() -> String) -> Result<(), Rejection> {
    if value.is_infinite() { Err(bad(path(), "is infinite: send NaN to leave a feature out")) } else { Ok(()) }
}

/// The strings of a column, checked (see `StringColumn` in the `.proto`); none if it is absent.
fn strings<'a>(column: Option<&'a pb::StringColumn>, path: &str) -> Result<Vec<&'a str>, Rejection> {
    let Some(column) = column else {
        return Ok(Vec::new());
    };
    if column.offsets.is_empty() {
        return if column.data.is_empty() {
            Ok(Vec::new())
        } else {
            Err(bad(format!("{path}.offsets"), "is empty but `data` is not: n strings need n + 1 offsets"))
        };
    }
    if column.offsets[0] != 0 {
        return Err(bad(format!("{path}.offsets[0]"), format!("is {}: offsets start at 0", column.offsets[0])));
    }
    let last = *column.offsets.last().expect("not empty");
    if last as usize != column.data.len() {
        let message = format!("the last offset is {last} but `data` has {} bytes", column.data.len());
        return Err(bad(format!("{path}.offsets"), message));
    }
    let mut out = Vec::with_capacity(column.offsets.len() - 1);
    for (i, pair) in column.offsets.windows(2).enumerate() {
        let (start, end) = (pair[0] as usize, pair[1] as usize);
        let Some(text) = column.data.get(start..end) else {
            let message = if start > end {
                format!("{end} is less than the offset before it, {start}")
            } else if end > column.data.len() {
                format!("{end} is past the end of `data` ({} bytes)", column.data.len())
            } else {
                format!("{end} is inside a UTF-8 character of `data`")
            };
            return Err(bad(format!("{path}.offsets[{}]", i + 1), message));
        };
        out.push(text);
    }
    Ok(out)
}

/// The rows of a tag column for `n` items, as index slices, checked; absent or empty offsets
/// mean no tags.
fn tag_rows<'a>(column: Option<&'a pb::TagColumn>, n: usize, path: &str) -> Result<Vec<&'a [u32]>, Rejection> {
    let Some(column) = column.filter(|c| !(c.offsets.is_empty() && c.indices.is_empty())) else {
        return Ok(Vec::new());
    };
    if column.offsets.len() != n + 1 {
        let message = format!("has {} offsets but {n} rows need {}", column.offsets.len(), n + 1);
        return Err(bad(format!("{path}.offsets"), message));
    }
    if column.offsets[0] != 0 {
        return Err(bad(format!("{path}.offsets[0]"), format!("is {}: offsets start at 0", column.offsets[0])));
    }
    let last = column.offsets[n] as usize;
    if last != column.indices.len() {
        let message = format!("the last offset is {last} but there are {} indices", column.indices.len());
        return Err(bad(format!("{path}.offsets"), message));
    }
    let mut rows = Vec::with_capacity(n);
    for (i, pair) in column.offsets.windows(2).enumerate() {
        let (start, end) = (pair[0] as usize, pair[1] as usize);
        let Some(row) = column.indices.get(start..end) else {
            let message = if start > end {
                format!("{end} is less than the offset before it, {start}")
            } else {
                format!("{end} is past the end of `indices` ({})", column.indices.len())
            };
            return Err(bad(format!("{path}.offsets[{}]", i + 1), message));
        };
        rows.push(row);
    }
    Ok(rows)
}

/// Appends one row's tags (`None`: no tags) to `column` through the builder, which interns them
/// and keeps each row's tags distinct and within the limit.
fn tags(
    b: &mut Builder<'_>,
    column: &mut types::TagColumn,
    row: Option<&&[u32]>,
    vocabulary: &[&str],
    path: &str,
) -> Result<(), Rejection> {
    let start = column.indices.len();
    let row_index = column.offsets.len() - 1;
    for &index in row.map_or(&[][..], |row| *row) {
        let Some(tag) = vocabulary.get(index as usize) else {
            let message = format!("tag index {index} is outside the vocabulary of {}", vocabulary.len());
            return Err(bad(format!("{path}.indices (row {row_index})"), message));
        };
        let result = b.tag(column, start, tag);
        at(b, result, || format!("{path}.indices (row {row_index})"))?;
    }
    Ok(())
}

impl Decoded {
    /// The request as a protobuf `RankRequest` of the same content: what a caller sends to get
    /// this request from the protobuf form (`relish` uses it to turn JSON fixtures into protobuf
    /// bodies). The time is written with the UTC offset its local time implies.
    pub fn to_protobuf(&self) -> pb::RankRequest {
        let r = &self.request;
        let c = &r.context;
        pb::RankRequest {
            request_id: Some(r.request_id.clone()),
            bucket_key: self.bucket_key.clone(),
            surface: Some(r.surface.clone()).filter(|s| !s.is_empty()),
            seed: Some(r.seed),
            limit: Some(r.limit),
            user: Some(pb::User {
                id: c.user_id.clone(),
                feature_names: Some(pack(&r.user_features.names)),
                feature_values: r.user_features.values.clone(),
            }),
            context: Some(pb::Context {
                country: c.country.clone(),
                city: c.city.clone(),
                locale: c.locale.clone(),
                lat: c.latitude,
                lon: c.longitude,
                device: c.device.clone(),
                time: rfc3339(r.time_unix_ms, r.local_minute_of_day, r.local_weekday),
                cart: Some(pb::Cart { item_ids: Some(pack(&c.cart.item_ids)), tags: Some(tag_column(&c.cart.tags)) }),
            }),
            candidates: Some(pb::Candidates {
                ids: Some(pb::StringColumn {
                    data: r.candidates.ids.data.clone(),
                    offsets: r.candidates.ids.offsets.clone(),
                }),
                feature_names: Some(pack(&r.candidates.feature_names)),
                features: r.candidates.features.clone(),
                tags: Some(tag_column(&r.candidates.tags)),
            }),
            tag_vocabulary: Some(pack(&r.tag_vocabulary)),
        }
    }
}

fn pack(column: &types::StringColumn) -> pb::StringColumn {
    pb::StringColumn { data: column.data.clone(), offsets: column.offsets.clone() }
}

fn tag_column(column: &types::TagColumn) -> pb::TagColumn {
    pb::TagColumn { offsets: column.offsets.clone(), indices: column.indices.clone() }
}

/// The request time in RFC 3339 at the UTC offset that makes its local minute of the day and
/// weekday: of the (at most two) offsets within ±24 hours that give the local minute, the one
/// that gives the weekday.
fn rfc3339(unix_ms: i64, local_minute: u16, weekday: types::Weekday) -> Option<String> {
    let utc = DateTime::from_timestamp_millis(unix_ms)?;
    let difference = i32::from(local_minute) - (utc.hour() * 60 + utc.minute()) as i32;
    [difference, difference - 24 * 60, difference + 24 * 60].into_iter().find_map(|minutes| {
        let zone = FixedOffset::east_opt(minutes * 60)?;
        let local = utc.with_timezone(&zone);
        (super::builder::weekday(local.weekday()) == weekday)
            .then(|| local.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
    })
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::decode;

    /// 2026-11-28 12:00 UTC, a Saturday.
    const NOW: i64 = 1_795_867_200_000;

    fn options() -> DecodeOptions<'static> {
        DecodeOptions { now_unix_ms: NOW, ..DecodeOptions::default() }
    }

    const BODY: &str = r#"{"request_id": "r-1", "surface": "discovery", "seed": 7, "bucket_key": "device-9",
        "user": {"id": "u-42", "features": {"affinity.pizza": 0.9, "skip": null}},
        "context": {"country": "FI", "lat": 60.17, "lon": 24.94, "time": "2026-11-28T18:30:00+02:00",
                    "cart": [{"id": "i-1", "tags": ["burger", "drink"]}, {"id": "i-2"}]},
        "candidates": [
            {"id": "venue-1", "features": {"rating": 9.1, "eta_min": 25}, "tags": ["pizza", "dinner", "pizza"]},
            {"id": "venue-2", "features": {"eta_min": 30, "is_open": true}, "tags": ["burger"]},
            {"id": "venue-3"}
        ]}"#;

    fn json() -> Decoded {
        decode(BODY.as_bytes(), &options()).expect("a valid body")
    }

    fn message() -> pb::RankRequest {
        json().to_protobuf()
    }

    #[track_caller]
    fn rejects(message: &pb::RankRequest, kind: DecodeErrorKind, path: &str, needle: &str) {
        let error = decode_protobuf(&message.encode_to_vec(), &options()).expect_err("refused");
        assert_eq!((error.kind, error.path.as_str()), (kind, path), "{error}");
        assert!(error.message.contains(needle), "`{}` does not contain `{needle}`", error.message);
    }

    #[test]
    fn a_request_in_protobuf_decodes_to_the_request_of_its_json_form() {
        let json = json();
        let decoded = decode_protobuf(&json.to_protobuf().encode_to_vec(), &options()).expect("decodes");
        assert_eq!(format!("{:?}", decoded.request), format!("{:?}", json.request));
        assert_eq!((decoded.shape, decoded.bucket_key.as_deref()), (Shape::Protobuf, Some("device-9")));
        assert!(decoded.surface_given);
    }

    #[test]
    fn the_surface_is_read_without_decoding_the_rest_and_garbage_is_refused() {
        assert_eq!(protobuf_surface(&message().encode_to_vec()).unwrap().as_deref(), Some("discovery"));
        let mut without = message();
        without.surface = None;
        assert_eq!(protobuf_surface(&without.encode_to_vec()).unwrap(), None);
        let error = protobuf_surface(b"\xff\xff\xff").expect_err("not a message");
        assert!(error.message.contains("not a protobuf `relish.v1.RankRequest`"), "{error}");
    }

    #[test]
    fn the_vocabulary_is_interned_in_the_order_json_reads_it_whatever_order_the_caller_sends() {
        let mut message = message();
        // The same tags, the vocabulary reversed and the indices remapped.
        let vocabulary = json().request.tag_vocabulary;
        let reversed: types::StringColumn = vocabulary.iter().rev().collect();
        let remap = |column: &mut pb::TagColumn| {
            for index in &mut column.indices {
                *index = (vocabulary.len() - 1) as u32 - *index;
            }
        };
        message.tag_vocabulary = Some(pack(&reversed));
        remap(message.candidates.as_mut().unwrap().tags.as_mut().unwrap());
        remap(message.context.as_mut().unwrap().cart.as_mut().unwrap().tags.as_mut().unwrap());
        let decoded = decode_protobuf(&message.encode_to_vec(), &options()).expect("decodes");
        assert_eq!(format!("{:?}", decoded.request), format!("{:?}", json().request));
    }

    /// Found by the fuzzer: an offset of more than 14 hours puts the local day a day away from
    /// the one the nearest offset would give; the protobuf form keeps the weekday.
    #[test]
    fn a_far_utc_offset_keeps_its_weekday_in_the_protobuf_form() {
        for time in ["2026-11-28T18:30:00+23:00", "2026-11-28T01:30:00-23:59", "2026-11-28T18:30:00+14:00"] {
            let body = format!(r#"{{"context": {{"time": "{time}"}}, "candidates": []}}"#);
            let json = decode(body.as_bytes(), &options()).expect("a valid body");
            let again = decode_protobuf(&json.to_protobuf().encode_to_vec(), &options()).expect("decodes");
            assert_eq!(format!("{:?}", again.request), format!("{:?}", json.request), "{time}");
        }
    }

    #[test]
    fn an_empty_message_is_a_request_without_candidates() {
        let decoded = decode_protobuf(&[], &options()).expect("decodes");
        assert_eq!(decoded.request.candidates.ids.offsets, [0]);
        assert_eq!(decoded.request.time_unix_ms, NOW);
    }

    #[test]
    fn bytes_that_are_not_protobuf_are_refused_for_the_whole_body() {
        let error = decode_protobuf(b"{\"candidates\": []}", &options()).expect_err("refused");
        assert_eq!((error.kind, error.path.as_str()), (DecodeErrorKind::Invalid, ""));
        assert!(error.message.contains("not a protobuf `relish.v1.RankRequest`"), "{error}");
    }

    #[test]
    fn broken_columns_are_refused_naming_the_field() {
        let mut m = message();
        m.candidates.as_mut().unwrap().ids.as_mut().unwrap().offsets[1] = 30;
        rejects(&m, DecodeErrorKind::Invalid, "candidates.ids.offsets[1]", "30 is past the end of `data` (21 bytes)");
        let mut m = message();
        m.candidates.as_mut().unwrap().ids.as_mut().unwrap().offsets[2] = 1;
        rejects(&m, DecodeErrorKind::Invalid, "candidates.ids.offsets[2]", "1 is less than the offset before it, 7");
        let mut m = message();
        m.candidates.as_mut().unwrap().ids.as_mut().unwrap().offsets[0] = 1;
        rejects(&m, DecodeErrorKind::Invalid, "candidates.ids.offsets[0]", "offsets start at 0");
        let mut m = message();
        m.candidates.as_mut().unwrap().ids.as_mut().unwrap().offsets.pop();
        rejects(&m, DecodeErrorKind::Invalid, "candidates.ids.offsets", "the last offset is");
        let mut m = message();
        let names = m.user.as_mut().unwrap().feature_names.as_mut().unwrap();
        names.data = "é".repeat(7);
        names.offsets = vec![0, 3, 14];
        rejects(&m, DecodeErrorKind::Invalid, "user.feature_names.offsets[1]", "inside a UTF-8 character");
        let mut m = message();
        m.candidates.as_mut().unwrap().features.pop();
        rejects(
            &m,
            DecodeErrorKind::Invalid,
            "candidates.features",
            "has 8 values but 3 candidates × 3 feature names need 9",
        );
        let mut m = message();
        m.candidates.as_mut().unwrap().features[4] = f32::INFINITY;
        rejects(&m, DecodeErrorKind::Invalid, "candidates.features[4]", "is infinite");
        let mut m = message();
        m.user.as_mut().unwrap().feature_values.push(1.0);
        rejects(&m, DecodeErrorKind::Invalid, "user.feature_values", "has 2 values for 1 names");
        let mut m = message();
        m.candidates.as_mut().unwrap().tags.as_mut().unwrap().indices[0] = 99;
        rejects(
            &m,
            DecodeErrorKind::Invalid,
            "candidates.tags.indices (row 0)",
            "tag index 99 is outside the vocabulary of 4",
        );
        let mut m = message();
        m.candidates.as_mut().unwrap().tags.as_mut().unwrap().offsets.pop();
        rejects(&m, DecodeErrorKind::Invalid, "candidates.tags.offsets", "has 3 offsets but 3 rows need 4");
        let mut m = message();
        m.tag_vocabulary = Some(pack(&["a", "b", "a"].into_iter().collect()));
        rejects(&m, DecodeErrorKind::Invalid, "tag_vocabulary[2]", "`a` appears twice");
    }

    #[test]
    fn the_json_rules_hold_for_protobuf_naming_the_field() {
        let mut m = message();
        m.candidates.as_mut().unwrap().ids = Some(pack(&["a", "b", "a"].into_iter().collect()));
        rejects(&m, DecodeErrorKind::Invalid, "candidates.ids[2]", "`a` is also the id of candidate 0");
        let mut m = message();
        m.candidates.as_mut().unwrap().feature_names = Some(pack(&["x", "y", "x"].into_iter().collect()));
        rejects(&m, DecodeErrorKind::Invalid, "candidates.feature_names[2]", "`x` appears twice");
        let mut m = message();
        m.user.as_mut().unwrap().feature_names = Some(pack(&["a", "a"].into_iter().collect()));
        m.user.as_mut().unwrap().feature_values = vec![1.0, 2.0];
        rejects(&m, DecodeErrorKind::Invalid, "user.feature_names[1]", "duplicate feature `a`");
        let mut m = message();
        m.request_id = Some("a b".into());
        rejects(&m, DecodeErrorKind::Invalid, "request_id", "1 to 128 visible ASCII characters");
        let mut m = message();
        m.bucket_key = Some(String::new());
        rejects(&m, DecodeErrorKind::Invalid, "bucket_key", "1 to 256 bytes");
        let mut m = message();
        m.context.as_mut().unwrap().lat = Some(91.0);
        rejects(&m, DecodeErrorKind::Invalid, "context.lat", "outside -90..=90");
        let mut m = message();
        m.context.as_mut().unwrap().time = Some("yesterday".into());
        rejects(&m, DecodeErrorKind::Invalid, "context.time", "is not an RFC 3339 time");
        let mut m = message();
        m.surface = Some("banners".into());
        let error = decode_protobuf(&m.encode_to_vec(), &DecodeOptions { surface: Some("discovery"), ..options() })
            .expect_err("refused");
        assert_eq!(error.path, "surface", "{error}");
    }

    #[test]
    fn limits_are_too_large_naming_the_field() {
        let small = DecodeOptions { max_candidates: 2, max_features: 2, max_tags: 1, ..options() };
        let refused = |m: &pb::RankRequest| decode_protobuf(&m.encode_to_vec(), &small).expect_err("refused");
        let mut m = message();
        m.context = None;
        let error = refused(&m);
        assert_eq!((error.kind, error.path.as_str()), (DecodeErrorKind::TooLarge, "candidates.ids[2]"), "{error}");
        let mut m = message();
        m.context = None;
        m.candidates = Some(pb::Candidates {
            ids: Some(pack(&["a"].into_iter().collect())),
            feature_names: Some(pack(&["x", "y", "z"].into_iter().collect())),
            features: vec![1.0, 2.0, 3.0],
            tags: None,
        });
        let error = refused(&m);
        assert_eq!((error.kind, error.path.as_str()), (DecodeErrorKind::TooLarge, "candidates.feature_names[2]"));
        let mut m = message();
        m.candidates = None;
        let error = refused(&m);
        assert_eq!((error.kind, error.path.as_str()), (DecodeErrorKind::TooLarge, "context.cart.tags.indices (row 0)"));
        assert!(error.message.contains("too many tags"), "{error}");
    }
}
