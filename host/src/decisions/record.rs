//! One line of the decision log: everything a replay and an evaluation need, as JSON.

use serde::{Deserialize, Serialize};

use crate::runtime::{ContextStrings, types};

/// The format of the records this host writes.
///
/// 2 writes `request.features` packed (see [`packed_f32`]); 1 wrote it as a JSON array of numbers
/// and `null`s. Both read; a reader refuses other formats, naming the file and line.
pub const FORMAT: u32 = 2;
/// The formats this host reads.
pub const FORMATS: [u32; 2] = [1, 2];

/// A logged decision. The fields are documented in `docs/decision-log.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// [`FORMAT`].
    pub format: u32,
    /// The contract the policy was called through (`relish:policy@0.3.0`; a 0.1.0 component's
    /// decisions say `relish:policy@0.1.0`).
    pub contract: String,
    /// The decision's id: unique, also in the rank response (`decision_id`).
    pub id: String,
    /// When the host answered, in milliseconds since the epoch.
    pub logged_at_ms: i64,
    /// The surface.
    pub surface: String,
    /// The plan revision that answered.
    pub revision: u64,
    /// The arm the request was assigned to, absent without a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<LoggedArm>,
    /// The request's bucket, `0..10_000`.
    pub bucket: u16,
    /// Whether the bucket came from a key (`user.id`, `bucket_key`) rather than the seed.
    pub sticky: bool,
    /// The request as the policy saw it: decoded, with features from a store filled in, the
    /// arm's parameters applied, and masked fields changed as the surface's masking says.
    pub request: LoggedRequest,
    /// The answer sent.
    pub answer: Answer,
    /// Set when a fallback answered instead of the arm's policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<LoggedFallback>,
    /// Shadow calls started for this request.
    pub shadows: usize,
    /// What each shadow the request was sampled for did, in plan order (written once they are
    /// done; absent when none was sampled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow_results: Vec<LoggedShadow>,
    /// The fields masking changed (`user.id: hashed`, `context.latitude: dropped`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<String>,
}

/// The arm that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedArm {
    /// Its index in the plan.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// Policy name.
    pub policy: String,
    /// Version.
    pub version: String,
    /// The version's digest (`sha256:...`).
    pub digest: String,
}

/// What one shadow did with the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedShadow {
    /// The shadow's name in the plan (`policy@version`).
    pub name: String,
    /// `answered`, `skipped` (over the surface's shadow limit, or the shadow queue full), or why
    /// its call failed (`timeout`, `trap`, ...).
    pub outcome: String,
    /// How long its call took, in microseconds.
    pub took_us: u64,
    /// Its answer: indices into `request.candidates`, best first (when it answered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub order: Vec<u32>,
    /// Its scores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<f32>,
    /// Its agreement with the answer sent: top-1, overlap@k, rank-biased overlap, Kendall's tau.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<LoggedAgreement>,
}

/// [`crate::serving::compare::Agreement`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedAgreement {
    /// 1 when both put the same candidate first.
    pub top1: f64,
    /// Overlap@k, k the answer's length.
    pub overlap: f64,
    /// Rank-biased overlap.
    pub rbo: f64,
    /// Kendall's tau-b over the shared candidates.
    pub tau: f64,
}

impl From<&crate::serving::shadow::ShadowResult> for LoggedShadow {
    fn from(result: &crate::serving::shadow::ShadowResult) -> Self {
        let (outcome, order, scores, agreement) = match &result.outcome {
            Ok((ranking, a)) => (
                "answered".to_owned(),
                ranking.order().to_vec(),
                ranking.scores().to_vec(),
                Some(LoggedAgreement { top1: a.top1, overlap: a.overlap, rbo: a.rbo, tau: a.tau }),
            ),
            Err(reason) => ((*reason).to_owned(), Vec::new(), Vec::new(), None),
        };
        LoggedShadow { name: result.name.clone(), outcome, took_us: result.micros, order, scores, agreement }
    }
}

/// What answered instead of the arm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedFallback {
    /// Why the arm did not answer (`timeout`, `trap`, ...).
    pub reason: String,
    /// What answered: the fallback policy's name, or `input-order`.
    pub answered_by: String,
    /// The failure in words.
    pub detail: String,
}

/// The answer: candidate indices into the request, best first, their ids and scores, and
/// reason codes where the policy gave them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// Indices into `request.candidates`.
    pub order: Vec<u32>,
    /// The candidates' ids, in answer order.
    pub ids: Vec<String>,
    /// One score per item.
    pub scores: Vec<f32>,
    /// One reason code per item (`null` for none), or empty when the policy gave none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Option<String>>,
    /// The probability the policy gave each item of being where it is, when the policy
    /// randomises (contract 0.2.0); empty when the answer did not depend on the seed (every
    /// propensity 1) or the policy predates propensities (a 0.1.0 component, or a log written
    /// before them: off-policy evaluation refuses those).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub propensities: Vec<f32>,
}

/// A `tag-column`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedTags {
    /// `n + 1` offsets into `indices`.
    pub offsets: Vec<u32>,
    /// Indices into the tag vocabulary.
    pub indices: Vec<u32>,
}

/// [`types::Request`], field for field, losslessly: `f32` values print as the shortest decimal
/// that reads back as the same `f32`, and a missing candidate feature (NaN) is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggedRequest {
    /// `surface`.
    pub surface: String,
    /// `request-id`.
    pub request_id: String,
    /// `time-unix-ms`.
    pub time_unix_ms: i64,
    /// `local-minute-of-day`.
    pub local_minute_of_day: u16,
    /// `local-weekday`, lowercase.
    pub local_weekday: String,
    /// `seed`.
    pub seed: u64,
    /// `context.user-id`.
    #[serde(default)]
    pub user_id: Option<String>,
    /// `context.country`.
    #[serde(default)]
    pub country: Option<String>,
    /// `context.city`.
    #[serde(default)]
    pub city: Option<String>,
    /// `context.locale`.
    #[serde(default)]
    pub locale: Option<String>,
    /// `context.latitude`.
    #[serde(default)]
    pub latitude: Option<f64>,
    /// `context.longitude`.
    #[serde(default)]
    pub longitude: Option<f64>,
    /// `context.device`.
    #[serde(default)]
    pub device: Option<String>,
    /// `context.cart.item-ids`.
    pub cart_items: Vec<String>,
    /// `context.cart.tags`.
    pub cart_tags: LoggedTags,
    /// `user-features`: (name, value) in the order the policy saw them.
    pub user_features: Vec<(String, f32)>,
    /// `tag-vocabulary`.
    pub tag_vocabulary: Vec<String>,
    /// `candidates.ids`.
    pub candidate_ids: Vec<String>,
    /// `candidates.feature-names`.
    pub feature_names: Vec<String>,
    /// `candidates.features`, row-major, NaN for a missing value: written as base64 of the
    /// little-endian bytes of each value (format 2; format 1's JSON array reads too).
    #[serde(with = "packed_f32")]
    pub features: Vec<f32>,
    /// `candidates.tags`.
    pub candidate_tags: LoggedTags,
    /// `limit`.
    pub limit: u32,
    /// `params`, in order.
    pub params: Vec<(String, String)>,
}

const WEEKDAYS: [(types::Weekday, &str); 7] = [
    (types::Weekday::Monday, "monday"),
    (types::Weekday::Tuesday, "tuesday"),
    (types::Weekday::Wednesday, "wednesday"),
    (types::Weekday::Thursday, "thursday"),
    (types::Weekday::Friday, "friday"),
    (types::Weekday::Saturday, "saturday"),
    (types::Weekday::Sunday, "sunday"),
];

fn tags(column: &types::TagColumn) -> LoggedTags {
    LoggedTags { offsets: column.offsets.clone(), indices: column.indices.clone() }
}

impl From<&types::Request> for LoggedRequest {
    fn from(r: &types::Request) -> Self {
        let c = &r.context;
        LoggedRequest {
            surface: r.surface.clone(),
            request_id: r.request_id.clone(),
            time_unix_ms: r.time_unix_ms,
            local_minute_of_day: r.local_minute_of_day,
            local_weekday: WEEKDAYS.iter().find(|(d, _)| *d == r.local_weekday).map_or("monday", |(_, n)| n).to_owned(),
            seed: r.seed,
            user_id: c.user_id().map(str::to_owned),
            country: c.country().map(str::to_owned),
            city: c.city().map(str::to_owned),
            locale: c.locale().map(str::to_owned),
            latitude: c.latitude,
            longitude: c.longitude,
            device: c.device().map(str::to_owned),
            cart_items: c.cart.item_ids.to_vec(),
            cart_tags: tags(&c.cart.tags),
            user_features: r
                .user_features
                .names
                .iter()
                .map(str::to_owned)
                .zip(r.user_features.values.iter().copied())
                .collect(),
            tag_vocabulary: r.tag_vocabulary.to_vec(),
            candidate_ids: r.candidates.ids.to_vec(),
            feature_names: r.candidates.feature_names.to_vec(),
            features: r.candidates.features.clone(),
            candidate_tags: tags(&r.candidates.tags),
            limit: r.limit,
            params: r.params.to_pairs(),
        }
    }
}

impl LoggedRequest {
    /// The request again, as the policy saw it. Fails, saying what, on a record whose columns do
    /// not fit together (edited by hand, or from a broken writer).
    pub fn to_request(&self) -> Result<types::Request, String> {
        let n = self.candidate_ids.len();
        let d = self.feature_names.len();
        if self.features.len() != n * d {
            return Err(format!(
                "request.features has {} values for {n} candidates × {d} features",
                self.features.len()
            ));
        }
        for (field, column, rows) in
            [("cart_tags", &self.cart_tags, self.cart_items.len()), ("candidate_tags", &self.candidate_tags, n)]
        {
            let fits = column.offsets.len() == rows + 1
                && column.offsets.first() == Some(&0)
                && column.offsets.windows(2).all(|w| w[0] <= w[1])
                && column.offsets.last().is_some_and(|&last| last as usize == column.indices.len())
                && column.indices.iter().all(|&i| (i as usize) < self.tag_vocabulary.len());
            if !fits {
                return Err(format!("request.{field} does not fit its {rows} rows and the tag vocabulary"));
            }
        }
        let weekday = WEEKDAYS
            .iter()
            .find(|(_, name)| *name == self.local_weekday)
            .map(|(day, _)| *day)
            .ok_or_else(|| format!("request.local_weekday: `{}` is not a weekday", self.local_weekday))?;
        let names = self.user_features.iter().map(|(name, _)| name).collect();
        let values = self.user_features.iter().map(|&(_, value)| value).collect();
        let strings = ContextStrings {
            user_id: self.user_id.as_deref(),
            country: self.country.as_deref(),
            city: self.city.as_deref(),
            locale: self.locale.as_deref(),
            device: self.device.as_deref(),
        };
        Ok(types::Request {
            surface: self.surface.clone(),
            request_id: self.request_id.clone(),
            time_unix_ms: self.time_unix_ms,
            local_minute_of_day: self.local_minute_of_day,
            local_weekday: weekday,
            seed: self.seed,
            context: types::Context::new(
                strings,
                self.latitude,
                self.longitude,
                types::Cart {
                    item_ids: self.cart_items.iter().collect(),
                    tags: types::TagColumn {
                        offsets: self.cart_tags.offsets.clone(),
                        indices: self.cart_tags.indices.clone(),
                    },
                },
            ),
            user_features: types::Features { names, values },
            tag_vocabulary: self.tag_vocabulary.iter().collect(),
            candidates: types::Candidates {
                ids: self.candidate_ids.iter().collect(),
                feature_names: self.feature_names.iter().collect(),
                features: self.features.clone(),
                tags: types::TagColumn {
                    offsets: self.candidate_tags.offsets.clone(),
                    indices: self.candidate_tags.indices.clone(),
                },
            },
            limit: self.limit,
            params: self.params.iter().map(|(k, v)| (k, v)).collect(),
        })
    }
}

/// A column of `f32` as base64 (standard alphabet, padded) of the little-endian bytes of each
/// value: bit for bit, NaNs and all, at 5.3 characters a value where JSON numbers take 8 to 12,
/// and a memcpy-like encoding instead of formatting every number (measured on a 500 × 20
/// request: the record's JSON took ~240 µs with numbers). Reads format 1's JSON array of
/// numbers and `null`s (missing, NaN) too.
pub mod packed_f32 {
    use std::fmt;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `values` packed.
    pub fn serialize<S: Serializer>(values: &[f32], serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for value in values {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    /// Reads a packed column, or an array of numbers and `null`s.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
        struct Column;
        impl<'de> Visitor<'de> for Column {
            type Value = Vec<f32>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("base64 of little-endian f32 values, or an array of numbers and nulls")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<f32>, E> {
                let bytes = STANDARD.decode(text).map_err(|e| E::custom(format!("not base64: {e}")))?;
                if bytes.len() % 4 != 0 {
                    return Err(E::custom(format!("{} bytes is not a whole number of f32 values", bytes.len())));
                }
                Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f32>, A::Error> {
                let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(value) = seq.next_element::<Option<f32>>()? {
                    values.push(value.unwrap_or(f32::NAN));
                }
                Ok(values)
            }
        }
        deserializer.deserialize_any(Column)
    }
}
