//! Property tests: no input panics the decoder, and generated requests decode to exactly the
//! columns a simple model of the format predicts, in both shapes.
//!
//! Case counts keep the whole file under a few seconds in the dev profile; raise them with
//! `PROPTEST_CASES=10000 cargo test -p relish-host proptests` for a longer search.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value as Json, json};

use super::*;

/// Every field name the format knows, so that random objects hit real fields often.
static FIELD_NAMES: [&str; 20] = [
    "request_id",
    "surface",
    "seed",
    "limit",
    "user",
    "context",
    "candidates",
    "id",
    "features",
    "tags",
    "country",
    "lat",
    "lon",
    "time",
    "cart",
    "ids",
    "feature_names",
    "locale",
    "device",
    "x",
];

/// Feature names for generated requests: a quote and a non-ASCII letter force unescaping.
static FEATURES: [&str; 8] = ["rating", "eta_min", "is_open", "price", "a\"quoted\"", "café", "f6", "f7"];
static TAGS: [&str; 6] = ["pizza", "sushi", "burger", "vegan", "dinner", "ta\\g"];

fn small_limits() -> DecodeOptions<'static> {
    DecodeOptions {
        now_unix_ms: 1_795_867_200_000,
        max_candidates: 50,
        max_features: 8,
        max_values: 50 * 8,
        max_tags: 4,
        surface: None,
        request_id: None,
    }
}

/// Decodes and checks what any decode must hold: an accepted request keeps the contract's
/// promises, a rejected one says what is wrong, and the fast path agrees with serde.
fn decode_checked(body: &[u8], options: &DecodeOptions<'_>) -> Result<(), TestCaseError> {
    same_on_both_paths(body, options)?;
    match decode(body, options) {
        Ok(decoded) => {
            check_request(&decoded.request).map_err(TestCaseError::fail)?;
            let n = decoded.request.candidates.ids.offsets.len() - 1;
            prop_assert!(n <= options.max_candidates);
            prop_assert!(decoded.request.candidates.feature_names.len() <= options.max_features);
        }
        Err(error) => prop_assert!(!error.message.is_empty(), "an empty message at `{}`", error.path),
    }
    Ok(())
}

/// The differential check: whatever the fast path accepts, the serde decoder accepts with the
/// same request, field for field (the debug form shows every field, bit patterns aside: NaN is
/// `NaN` there, so the matrices are compared by their bits as well).
fn same_on_both_paths(body: &[u8], options: &DecodeOptions<'_>) -> Result<Option<Decoded>, TestCaseError> {
    // A body without a request id gets this one on both paths, not two random UUIDs.
    let options = DecodeOptions { request_id: Some("fallback-id"), ..options.clone() };
    let Some(fast) = decode_fast(body, &options) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(body);
    let slow = decode_with_serde(body, &options)
        .map_err(|e| TestCaseError::fail(format!("the fast path accepted what serde rejects ({e}):\n{text}")))?;
    prop_assert_eq!(format!("{:?}", fast.request), format!("{:?}", slow.request), "{}", text);
    prop_assert_eq!(bits(&fast.request.candidates.features), bits(&slow.request.candidates.features));
    prop_assert_eq!(bits(&fast.request.user_features.values), bits(&slow.request.user_features.values));
    prop_assert_eq!(fast.request.context.latitude.map(f64::to_bits), slow.request.context.latitude.map(f64::to_bits));
    prop_assert_eq!(fast.request.context.longitude.map(f64::to_bits), slow.request.context.longitude.map(f64::to_bits));
    prop_assert_eq!(
        (fast.shape, fast.surface_given, &fast.bucket_key),
        (slow.shape, slow.surface_given, &slow.bucket_key)
    );
    Ok(Some(fast))
}

/// Any JSON value, with object keys mostly drawn from the format's field names.
fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter_map("JSON has no NaN or infinity", |f| serde_json::Number::from_f64(f).map(Json::Number)),
        select(vec![1e39, -1e39, 3.4e38, 1e-50, 0.5, -0.0, 90.5, 180.0]).prop_map(Json::from),
        "[a-z\"\\\\é]{0,6}".prop_map(Json::from),
        Just(Json::from("2026-11-28T18:30:00+02:00")),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::vec(
                (prop_oneof![4 => select(&FIELD_NAMES[..]).prop_map(str::to_owned), 1 => "[a-z]{0,3}"], inner),
                0..6
            )
            .prop_map(|entries| Json::Object(entries.into_iter().collect())),
        ]
    })
}

/// Follows `choices` into `value` (each picks a child modulo the number of children) and
/// replaces what it reaches with `replacement`.
fn replace_at(value: &mut Json, choices: &[usize], replacement: Json) {
    let child = match (value, choices.split_first()) {
        (Json::Array(items), Some((&c, _))) if !items.is_empty() => {
            let len = items.len();
            &mut items[c % len]
        }
        (Json::Object(map), Some((&c, _))) if !map.is_empty() => {
            let len = map.len();
            map.values_mut().nth(c % len).expect("an index below the length")
        }
        (value, _) => {
            *value = replacement;
            return;
        }
    };
    replace_at(child, &choices[1..], replacement);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_checked(&body, &small_limits())?;
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        decode_checked(value.to_string().as_bytes(), &small_limits())?;
    }

    #[test]
    fn arbitrary_objects_of_request_fields_never_panic(
        fields in prop::collection::vec((select(&FIELD_NAMES[..]), json_value()), 0..8),
    ) {
        let object: Map<String, Json> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        decode_checked(Json::Object(object).to_string().as_bytes(), &small_limits())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_valid_request_with_one_value_replaced_never_panics(
        model in model(0..20),
        columnar in any::<bool>(),
        choices in prop::collection::vec(any::<usize>(), 0..6),
        replacement in json_value(),
    ) {
        let body = if columnar { model.columns() } else { model.rows() };
        let mut value: Json = serde_json::from_str(&body).expect("the model writes JSON");
        replace_at(&mut value, &choices, replacement);
        decode_checked(value.to_string().as_bytes(), &small_limits())?;
    }

    #[test]
    fn a_valid_request_cut_or_spliced_never_panics(
        model in model(0..10),
        columnar in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        splice in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut body = if columnar { model.columns() } else { model.rows() }.into_bytes();
        let at = cut.index(body.len() + 1);
        body.splice(at..at + (body.len() - at).min(splice.len()), splice);
        decode_checked(&body, &small_limits())?;
    }

    #[test]
    fn generated_requests_decode_to_the_expected_columns(model in model(0..200)) {
        let options = DecodeOptions { max_candidates: 200, max_values: 200 * 8, ..small_limits() };
        let expected = model.expected();
        for (shape, body) in [(Shape::Rows, model.rows()), (Shape::Columns, model.columns())] {
            same_on_both_paths(body.as_bytes(), &options)?;
            let decoded = decode(body.as_bytes(), &options).map_err(|e| TestCaseError::fail(format!("{shape:?}: {e}\n{body}")))?;
            prop_assert_eq!(decoded.shape, shape);
            let got = decoded.request;
            check_request(&got).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&got.candidates.ids.data, &expected.ids.concat());
            prop_assert_eq!(got.candidates.ids.offsets.len(), expected.ids.len() + 1);
            prop_assert_eq!(&got.candidates.feature_names, &expected.columns);
            prop_assert_eq!(bits(&got.candidates.features), bits(&expected.matrix), "{:?}", shape);
            prop_assert_eq!(&got.tag_vocabulary, &expected.vocabulary);
            prop_assert_eq!(&got.candidates.tags.offsets, &expected.tags.offsets);
            prop_assert_eq!(&got.candidates.tags.indices, &expected.tags.indices);
            prop_assert_eq!(&got.context.cart.item_ids, &expected.cart_ids);
            prop_assert_eq!(&got.context.cart.tags.offsets, &expected.cart_tags.offsets);
            prop_assert_eq!(&got.context.cart.tags.indices, &expected.cart_tags.indices);
            prop_assert_eq!(&got.user_features.names, &expected.user_names);
            prop_assert_eq!(bits(&got.user_features.values), bits(&expected.user_values));
            prop_assert_eq!(got.limit, model.limit.unwrap_or(model.candidates.len() as u32));
            prop_assert_eq!(got.seed, model.seed.unwrap_or_else(|| derive_seed(&model.request_id, model.user_id.as_deref())));
            prop_assert_eq!(&got.request_id, &model.request_id);
            prop_assert_eq!(&got.context.user_id, &model.user_id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Bodies as callers send them (no escapes; any values) take the fast path, in both shapes,
    /// and it agrees with serde.
    #[test]
    fn plain_requests_take_the_fast_path(model in model(0..100)) {
        let model = model.plain();
        let options = DecodeOptions { max_candidates: 100, max_values: 100 * 8, ..small_limits() };
        for body in [model.rows(), model.columns()] {
            let fast = same_on_both_paths(body.as_bytes(), &options)?;
            prop_assert!(fast.is_some(), "the fast path left a plain body to serde:\n{}", body);
        }
    }

    /// Numbers of every length the eight-digits-at-a-time parser splits differently (1 to 25
    /// significant digits, split anywhere by the point), with exponents near ±22 and ±308,
    /// leading zeros, signs and negative zero, in a candidate's features, the user's and the
    /// columnar matrix, followed by every byte that may end a value: wherever the fast path takes
    /// them they decode to serde's bits, and a plain one (at most nineteen digits, no leading
    /// zero, an exponent the table holds, a finite `f32`) it takes.
    #[test]
    fn numbers_of_every_length_agree_with_serde(
        digits in "[1-9][0-9]{0,24}",
        point in any::<prop::sample::Index>(),
        zeros in prop_oneof![4 => Just(0usize), 1 => 1usize..4],
        exponent in prop::option::of(prop_oneof![-25i32..25, -330i32..-290, 290i32..330]),
        negative in any::<bool>(),
        leading_zero in prop::bool::weighted(0.1),
    ) {
        let point = point.index(digits.len() + 1);
        let mut number = String::from(if negative { "-" } else { "" });
        if leading_zero {
            number.push('0');
        }
        match point {
            0 => number.push('0'),
            _ => number.push_str(&digits[..point]),
        }
        if point < digits.len() {
            number.push('.');
            if point == 0 {
                number.push_str(&"0".repeat(zeros));
            }
            number.push_str(&digits[point..]);
        }
        if let Some(e) = exponent {
            number.push_str(&format!("e{e}"));
        }
        let fraction = digits.len() - point + if point == 0 { zeros } else { 0 };
        let applied = exponent.unwrap_or(0) - fraction as i32;
        let value: f64 = number.parse().expect("a Rust float");
        let plain = !leading_zero
            && digits.len() + if point == 0 { zeros } else { 0 } <= 19
            && applied.abs() <= 308
            && (value as f32).is_finite();
        for end in ["}", ",\"y\":1}"] {
            let bodies = [
                format!(r#"{{"candidates":[{{"id":"a","features":{{"x":{number}{end}}}]}}"#),
                format!(r#"{{"user":{{"features":{{"x":{number}{end}}},"candidates":[]}}"#),
            ];
            for body in &bodies {
                let fast = same_on_both_paths(body.as_bytes(), &small_limits())?;
                decode_checked(body.as_bytes(), &small_limits())?;
                if plain {
                    prop_assert!(fast.is_some(), "the fast path left a plain number to serde: {}", body);
                }
            }
        }
        let columnar = format!(r#"{{"candidates":{{"ids":["a","b"],"feature_names":["x"],"features":[{number},{number}]}}}}"#);
        let fast = same_on_both_paths(columnar.as_bytes(), &small_limits())?;
        if plain {
            prop_assert!(fast.is_some(), "the fast path left a plain number to serde: {}", columnar);
        }
    }

    /// Numbers at and past the edges of what the fast path takes (2^53, u64 overflow, exponents
    /// near ±308): wherever it takes them,
    /// they decode to serde's bits.
    #[test]
    fn numbers_at_the_edges_agree_with_serde(
        mantissa in prop_oneof![0u64..1000, (1u64 << 53) - 2..(1u64 << 53) + 2, any::<u64>()],
        fraction in prop::option::of(0u32..30),
        exponent in prop::option::of(prop_oneof![-30i32..30, -340i32..-280, 280i32..320]),
        negative in any::<bool>(),
        upper in any::<bool>(),
    ) {
        let digits = mantissa.to_string();
        let mut number = String::from(if negative { "-" } else { "" });
        match fraction.map(|f| f as usize) {
            Some(f) if f > 0 && f < digits.len() => {
                number.push_str(&digits[..digits.len() - f]);
                number.push('.');
                number.push_str(&digits[digits.len() - f..]);
            }
            Some(f) if f > 0 => {
                number.push_str("0.");
                number.push_str(&"0".repeat(f - digits.len()));
                number.push_str(&digits);
            }
            _ => number.push_str(&digits),
        }
        if let Some(e) = exponent {
            number.push(if upper { 'E' } else { 'e' });
            number.push_str(&e.to_string());
        }
        let bodies = [
            format!(r#"{{"candidates": [{{"id": "a", "features": {{"x": {number}}}}}]}}"#),
            format!(r#"{{"user": {{"features": {{"x": {number}}}}}, "candidates": []}}"#),
            format!(r#"{{"candidates": {{"ids": ["a"], "feature_names": ["x"], "features": [{number}]}}}}"#),
            format!(r#"{{"context": {{"lat": {number}, "lon": {number}}}, "candidates": []}}"#),
            format!(r#"{{"seed": {number}, "limit": {number}, "candidates": []}}"#),
        ];
        for body in bodies {
            decode_checked(body.as_bytes(), &small_limits())?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A request sent as protobuf decodes to the request its JSON form decodes to.
    #[test]
    fn generated_requests_decode_to_the_same_request_from_protobuf(model in model(0..100)) {
        use prost::Message as _;
        let options = DecodeOptions { max_candidates: 100, max_values: 100 * 8, ..small_limits() };
        let json = decode(model.rows().as_bytes(), &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let body = json.to_protobuf().encode_to_vec();
        let decoded = decode_protobuf(&body, &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_request(&decoded.request).map_err(TestCaseError::fail)?;
        prop_assert_eq!(format!("{:?}", decoded.request), format!("{:?}", json.request));
    }

    /// Arbitrary bytes, and protobuf requests with a byte changed, never panic the protobuf
    /// decoder; what it accepts keeps the contract's promises and the limits.
    #[test]
    fn arbitrary_protobuf_never_panics(
        model in model(0..20),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        use prost::Message as _;
        let options = small_limits();
        let json = decode(model.rows().as_bytes(), &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut body = json.to_protobuf().encode_to_vec();
        for (at, byte) in flips {
            let at = at.index(body.len().max(1));
            if let Some(b) = body.get_mut(at) {
                *b = byte;
            }
        }
        for body in [&body, &bytes] {
            match decode_protobuf(body, &options) {
                Ok(decoded) => {
                    check_request(&decoded.request).map_err(TestCaseError::fail)?;
                    prop_assert!(decoded.request.candidates.ids.offsets.len() - 1 <= options.max_candidates);
                    prop_assert!(decoded.request.candidates.feature_names.len() <= options.max_features);
                }
                Err(error) => prop_assert!(!error.message.is_empty()),
            }
        }
    }
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// A feature value as a caller may send it.
#[derive(Debug, Clone, Copy)]
enum Feature {
    Number(f32),
    Bool(bool),
    Null,
}

impl Feature {
    fn json(self) -> Json {
        match self {
            Feature::Number(v) => json!(v),
            Feature::Bool(b) => json!(b),
            Feature::Null => Json::Null,
        }
    }

    /// The value the decoder stores; NaN for `null`.
    fn value(self) -> f32 {
        match self {
            Feature::Number(v) => v,
            Feature::Bool(b) => f32::from(u8::from(b)),
            Feature::Null => f32::NAN,
        }
    }
}

#[derive(Debug, Clone)]
struct Candidate {
    id: String,
    /// In body order; a name may repeat (the last value that is not null wins).
    features: Vec<(&'static str, Feature)>,
    /// `None`: no `tags` field; may repeat a tag.
    tags: Option<Vec<&'static str>>,
    /// How empty features are sent (absent, `null` or `{}`), and whether `id` comes last.
    style: u8,
}

#[derive(Debug, Clone)]
struct Model {
    request_id: String,
    seed: Option<u64>,
    limit: Option<u32>,
    user_id: Option<String>,
    user_features: Vec<(&'static str, Feature)>,
    cart: Vec<(String, Vec<&'static str>)>,
    candidates: Vec<Candidate>,
}

fn feature() -> impl Strategy<Value = Feature> {
    prop_oneof![
        6 => any::<f32>().prop_filter("finite", |v| v.is_finite()).prop_map(Feature::Number),
        2 => (-1000i32..1000).prop_map(|v| Feature::Number(v as f32)),
        1 => any::<bool>().prop_map(Feature::Bool),
        1 => Just(Feature::Null),
    ]
}

/// Distinct names (a repeated one is refused; `a_repeated_feature_is_rejected_naming_it`).
fn features() -> impl Strategy<Value = Vec<(&'static str, Feature)>> {
    prop::collection::vec((select(&FEATURES[..]), feature()), 0..8).prop_map(|mut features| {
        let mut seen = std::collections::HashSet::new();
        features.retain(|(name, _)| seen.insert(*name));
        features
    })
}

fn tags() -> impl Strategy<Value = Vec<&'static str>> {
    // At most 4 distinct tags exist per row (the limit in `small_limits`), repeats allowed.
    prop::collection::vec(select(&TAGS[..4]), 0..6).prop_union(prop::collection::vec(select(&TAGS[2..]), 0..6)).boxed()
}

fn model(n: std::ops::Range<usize>) -> impl Strategy<Value = Model> {
    let candidate = (features(), prop::option::of(tags()), any::<u8>(), "[a-z0-9é\"-]{0,8}")
        .prop_map(|(features, tags, style, id)| Candidate { id, features, tags, style });
    (
        "[a-z0-9-]{1,12}",
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u32>()),
        prop::option::of("[a-z0-9]{1,6}"),
        features(),
        prop::collection::vec(("[a-z0-9]{1,4}", tags()), 0..4),
        prop::collection::vec(candidate, n),
    )
        .prop_map(|(request_id, seed, limit, user_id, user_features, cart, mut candidates)| {
            // Candidate ids are distinct (a repeated one is refused): `#` is not in their alphabet.
            for (i, candidate) in candidates.iter_mut().enumerate() {
                candidate.id = format!("{}#{i}", candidate.id);
            }
            Model { request_id, seed, limit, user_id, user_features, cart, candidates }
        })
}

/// What the decoder should produce for a model.
struct Expected {
    ids: Vec<String>,
    columns: Vec<String>,
    matrix: Vec<f32>,
    vocabulary: Vec<String>,
    tags: types::TagColumn,
    cart_ids: Vec<String>,
    cart_tags: types::TagColumn,
    user_names: Vec<String>,
    user_values: Vec<f32>,
}

impl Model {
    /// The model with what the fast path leaves to serde taken out: names and ids with a quote
    /// or a backslash (escapes). Every value stays: any `f32`, written as serde_json writes it
    /// (the shortest `f64` form, up to 17 digits and an exponent), takes the fast path.
    fn plain(mut self) -> Model {
        let plain_features = |features: &mut Vec<(&'static str, Feature)>| {
            features.retain(|(name, _)| !name.contains(['"', '\\']));
        };
        plain_features(&mut self.user_features);
        for (_, tags) in &mut self.cart {
            tags.retain(|t| !t.contains('\\'));
        }
        for c in &mut self.candidates {
            c.id = c.id.replace('"', "q");
            plain_features(&mut c.features);
            if let Some(tags) = &mut c.tags {
                tags.retain(|t| !t.contains('\\'));
            }
        }
        self
    }

    /// Everything but the candidates; the cart comes first, so its tags come first in the
    /// vocabulary.
    fn head(&self) -> Map<String, Json> {
        let mut head = Map::new();
        head.insert("request_id".into(), json!(self.request_id));
        if let Some(seed) = self.seed {
            head.insert("seed".into(), json!(seed));
        }
        if let Some(limit) = self.limit {
            head.insert("limit".into(), json!(limit));
        }
        let cart: Vec<Json> = self.cart.iter().map(|(id, tags)| json!({"id": id, "tags": tags})).collect();
        head.insert("context".into(), json!({"cart": cart}));
        head
    }

    /// The user object, written by hand: serde_json's maps cannot repeat a key.
    fn user(&self) -> String {
        let entries: Vec<String> =
            self.user_features.iter().map(|(name, value)| format!("{}:{}", json!(name), value.json())).collect();
        format!(r#""user":{{"id":{},"features":{{{}}}}}"#, json!(self.user_id), entries.join(","))
    }

    fn rows(&self) -> String {
        let candidates: Vec<String> = self
            .candidates
            .iter()
            .map(|c| {
                let mut fields = Vec::new();
                let id = format!(r#""id":{}"#, json!(c.id));
                if c.style & 4 == 0 {
                    fields.push(id.clone());
                }
                let entries: Vec<String> =
                    c.features.iter().map(|(name, value)| format!("{}:{}", json!(name), value.json())).collect();
                match (entries.is_empty(), c.style % 3) {
                    (true, 0) => {}
                    (true, 1) => fields.push(r#""features":null"#.to_owned()),
                    _ => fields.push(format!(r#""features":{{{}}}"#, entries.join(","))),
                }
                if let Some(tags) = &c.tags {
                    fields.push(format!(r#""tags":{}"#, json!(tags)));
                }
                if c.style & 4 != 0 {
                    fields.push(id);
                }
                format!("{{{}}}", fields.join(","))
            })
            .collect();
        let head = Json::Object(self.head()).to_string();
        format!(r#"{},{},"candidates":[{}]}}"#, &head[..head.len() - 1], self.user(), candidates.join(","))
    }

    fn columns(&self) -> String {
        let expected = self.expected();
        let values: Vec<Json> =
            expected.matrix.iter().map(|&v| if v.is_nan() { Json::Null } else { json!(v) }).collect();
        let tags: Vec<Json> = self.candidates.iter().map(|c| json!(c.tags)).collect();
        let columns = json!({
            "ids": expected.ids,
            "feature_names": expected.columns,
            "features": values,
            "tags": tags,
        });
        let head = Json::Object(self.head()).to_string();
        format!(r#"{},{},"candidates":{}}}"#, &head[..head.len() - 1], self.user(), columns)
    }

    fn expected(&self) -> Expected {
        let mut vocabulary: Vec<String> = Vec::new();
        let mut intern = |tag: &str| match vocabulary.iter().position(|t| t == tag) {
            Some(i) => i as u32,
            None => {
                vocabulary.push(tag.to_owned());
                vocabulary.len() as u32 - 1
            }
        };
        let mut row = |column: &mut types::TagColumn, tags: &[&str]| {
            let start = column.indices.len();
            for tag in tags {
                let id = intern(tag);
                if !column.indices[start..].contains(&id) {
                    column.indices.push(id);
                }
            }
            column.offsets.push(column.indices.len() as u32);
        };
        let mut cart_tags = types::TagColumn { offsets: vec![0], indices: Vec::new() };
        for (_, tags) in &self.cart {
            row(&mut cart_tags, tags);
        }
        let mut tags = types::TagColumn { offsets: vec![0], indices: Vec::new() };
        for c in &self.candidates {
            row(&mut tags, c.tags.as_deref().unwrap_or_default());
        }
        let mut columns: Vec<String> = Vec::new();
        for (name, _) in self.candidates.iter().flat_map(|c| &c.features) {
            if !columns.iter().any(|c| c == name) {
                columns.push((*name).to_owned());
            }
        }
        let d = columns.len();
        let mut matrix = vec![f32::NAN; self.candidates.len() * d];
        for (i, c) in self.candidates.iter().enumerate() {
            for (name, value) in &c.features {
                let j = columns.iter().position(|c| c == name).expect("collected above");
                if !value.value().is_nan() {
                    matrix[i * d + j] = value.value();
                }
            }
        }
        let (mut user_names, mut user_values) = (Vec::<String>::new(), Vec::new());
        for (name, value) in &self.user_features {
            let value = value.value();
            if value.is_nan() {
                continue;
            }
            match user_names.iter().position(|n| n == name) {
                Some(i) => user_values[i] = value,
                None => {
                    user_names.push((*name).to_owned());
                    user_values.push(value);
                }
            }
        }
        Expected {
            ids: self.candidates.iter().map(|c| c.id.clone()).collect(),
            columns,
            matrix,
            vocabulary,
            tags,
            cart_ids: self.cart.iter().map(|(id, _)| id.clone()).collect(),
            cart_tags,
            user_names,
            user_values,
        }
    }
}
