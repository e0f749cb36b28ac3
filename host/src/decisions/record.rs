//! One line of the decision log: everything a replay and an evaluation need, as JSON.

use serde::{Deserialize, Serialize};

use crate::runtime::types;

/// The format of a record; a reader refuses others, naming the file and line.
pub const FORMAT: u32 = 1;

/// A logged decision. The fields are documented in `docs/decision-log.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// [`FORMAT`].
    pub format: u32,
    /// The contract the policy was called through (`relish:policy@0.2.0`; a 0.1.0 component's
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
    /// `candidates.features`, row-major; `null` for a missing value.
    pub features: Vec<Option<f32>>,
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

fn strings(column: &types::StringColumn) -> Vec<String> {
    column.offsets.windows(2).map(|w| column.data[w[0] as usize..w[1] as usize].to_owned()).collect()
}

fn pack(strings: &[String]) -> types::StringColumn {
    let mut data = String::with_capacity(strings.iter().map(String::len).sum());
    let mut offsets = Vec::with_capacity(strings.len() + 1);
    offsets.push(0);
    for s in strings {
        data.push_str(s);
        offsets.push(data.len() as u32);
    }
    types::StringColumn { data, offsets }
}

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
            user_id: c.user_id.clone(),
            country: c.country.clone(),
            city: c.city.clone(),
            locale: c.locale.clone(),
            latitude: c.latitude,
            longitude: c.longitude,
            device: c.device.clone(),
            cart_items: c.cart.item_ids.clone(),
            cart_tags: tags(&c.cart.tags),
            user_features: r.user_features.names.iter().cloned().zip(r.user_features.values.iter().copied()).collect(),
            tag_vocabulary: r.tag_vocabulary.clone(),
            candidate_ids: strings(&r.candidates.ids),
            feature_names: r.candidates.feature_names.clone(),
            features: r.candidates.features.iter().map(|v| (!v.is_nan()).then_some(*v)).collect(),
            candidate_tags: tags(&r.candidates.tags),
            limit: r.limit,
            params: r.params.clone(),
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
        let (names, values) = self.user_features.iter().cloned().unzip();
        Ok(types::Request {
            surface: self.surface.clone(),
            request_id: self.request_id.clone(),
            time_unix_ms: self.time_unix_ms,
            local_minute_of_day: self.local_minute_of_day,
            local_weekday: weekday,
            seed: self.seed,
            context: types::Context {
                user_id: self.user_id.clone(),
                country: self.country.clone(),
                city: self.city.clone(),
                locale: self.locale.clone(),
                latitude: self.latitude,
                longitude: self.longitude,
                device: self.device.clone(),
                cart: types::Cart {
                    item_ids: self.cart_items.clone(),
                    tags: types::TagColumn {
                        offsets: self.cart_tags.offsets.clone(),
                        indices: self.cart_tags.indices.clone(),
                    },
                },
            },
            user_features: types::Features { names, values },
            tag_vocabulary: self.tag_vocabulary.clone(),
            candidates: types::Candidates {
                ids: pack(&self.candidate_ids),
                feature_names: self.feature_names.clone(),
                features: self.features.iter().map(|v| v.unwrap_or(f32::NAN)).collect(),
                tags: types::TagColumn {
                    offsets: self.candidate_tags.offsets.clone(),
                    indices: self.candidate_tags.indices.clone(),
                },
            },
            limit: self.limit,
            params: self.params.clone(),
        })
    }
}
