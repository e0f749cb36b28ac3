//! Features from a store: before the policy call, the host looks up exactly what the surface's
//! policies declare (their `features` metadata, user and candidate scope, plus candidate tags)
//! for the request's user and candidates, and builds the same columns an inline request has. The
//! policy sees no difference, the call stays synchronous and deterministic, and the decision
//! keeps the values used.
//!
//! With `source = "both"`, values the caller sent win: a candidate is looked up only if a
//! declared feature (or its tags) is missing from the body, and a stored value fills only what
//! the body left out. With `source = "store"` the body carries ids only.
//!
//! A lookup never fails the request: what the store could not give by the surface's deadline
//! (down, slow, unknown id, a refused value) is missing, NaN in the matrix as for an inline
//! request that leaves a feature out; the answer says what was missing ([`FeatureReport`]), and
//! it is counted and logged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::features::{Entity, Features, FieldSet, Lookup, Query};
use crate::runtime::FeatureSpec;
use crate::runtime::types;
use crate::server::config::{FeatureSource, ResolvedFeatures};
use crate::wire::MAX_TAGS;

/// How a bound surface gets its features from a store.
pub struct StoreFeatures {
    /// The store's name in the configuration.
    pub store_name: String,
    /// The store, with its cache.
    pub store: Arc<Features>,
    /// `store` or `both`.
    pub source: FeatureSource,
    /// The candidates' entity kind.
    pub entity: String,
    /// The users' entity kind.
    pub user_entity: String,
    /// What to look up for the user (declared user features: names and prefixes).
    pub user: Arc<FieldSet>,
    /// What to look up for each candidate (declared candidate features, and tags).
    pub candidate: Arc<FieldSet>,
    /// The lookup deadline.
    pub deadline: Duration,
    /// When a degraded lookup was last logged, in ms since the epoch (logs at most once a second).
    logged_ms: AtomicU64,
}

/// What a lookup did for one request: the `"features"` of the answer.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FeatureReport {
    /// The store's name.
    pub store: String,
    /// Entities answered from the cache.
    pub hits: u32,
    /// Entities the cache did not have.
    pub misses: u32,
    /// Expired entries used because the store did not answer.
    pub stale: u32,
    /// Round trips to the store (0 or 1).
    pub round_trips: u32,
    /// Why the store did not answer (`timeout`, `unavailable`, ...), when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// What the policy will find missing.
    #[serde(skip_serializing_if = "Missing::is_empty")]
    pub missing: Missing,
    /// Microseconds the lookup took.
    #[serde(skip)]
    pub took_us: u64,
}

/// Declared features the policy will find missing after the lookup.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Missing {
    /// Declared user features (exact names) the user has no value for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user: Vec<String>,
    /// By declared candidate feature, how many candidates have no value for it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub candidates: BTreeMap<String, u32>,
    /// Ids the store does not know (user included), when the store answered.
    #[serde(skip_serializing_if = "is_zero")]
    pub unknown_ids: u32,
}

impl FeatureReport {
    /// The report as the protobuf response carries it (`relish.v1.FeatureLookup`).
    pub fn to_protobuf(&self) -> crate::wire::protobuf::FeatureLookup {
        crate::wire::protobuf::FeatureLookup {
            store: self.store.clone(),
            hits: self.hits,
            misses: self.misses,
            stale: self.stale,
            round_trips: self.round_trips,
            error: self.error.map(str::to_owned),
            missing_user: self.missing.user.clone(),
            missing_candidates: self.missing.candidates.clone(),
            unknown_ids: self.missing.unknown_ids,
        }
    }

    /// Why the policy finds declared features missing, if it does: the store's failure reason,
    /// else `unknown-ids`, else `missing-values`.
    pub fn incomplete(&self) -> Option<&'static str> {
        if let Some(error) = self.error {
            Some(error)
        } else if self.missing.unknown_ids > 0 {
            Some("unknown-ids")
        } else if !self.missing.is_empty() {
            Some("missing-values")
        } else {
            None
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Missing {
    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty() && self.candidates.is_empty() && self.unknown_ids == 0
    }
}

/// The features declared by a surface's policies, split by scope.
pub fn declared<'a>(specs: impl IntoIterator<Item = &'a FeatureSpec>) -> (FieldSet, FieldSet) {
    let (mut user_names, mut user_prefixes, mut candidate_names) = (Vec::new(), Vec::new(), Vec::new());
    for spec in specs {
        let target = match (spec.scope, spec.name.strip_suffix('*')) {
            ("user", Some(prefix)) => (&mut user_prefixes, prefix),
            ("user", None) => (&mut user_names, spec.name.as_str()),
            // The contract has prefixes for user features only.
            (_, Some(_)) => continue,
            (_, None) => (&mut candidate_names, spec.name.as_str()),
        };
        if !target.0.iter().any(|n: &String| n == target.1) {
            target.0.push(target.1.to_owned());
        }
    }
    (FieldSet::new(user_names, user_prefixes, false), FieldSet::new(candidate_names, Vec::new(), true))
}

impl StoreFeatures {
    /// The feature source of a surface bound with policies declaring `specs`.
    pub fn new<'a>(
        settings: &ResolvedFeatures,
        store: Arc<Features>,
        specs: impl IntoIterator<Item = &'a FeatureSpec>,
    ) -> Self {
        let (user, candidate) = declared(specs);
        StoreFeatures {
            store_name: settings.store.clone(),
            store,
            source: settings.source,
            entity: settings.entity.clone(),
            user_entity: settings.user_entity.clone(),
            user: Arc::new(user),
            candidate: Arc::new(candidate),
            deadline: settings.deadline,
            logged_ms: AtomicU64::new(0),
        }
    }

    /// With `source = "store"`, the request must not carry feature values: the name of the first
    /// field that does, to refuse it with.
    pub fn refuses(&self, request: &types::Request) -> Option<&'static str> {
        if self.source != FeatureSource::Store {
            return None;
        }
        if !request.candidates.feature_names.is_empty() {
            Some("candidates")
        } else if !request.user_features.names.is_empty() {
            Some("user.features")
        } else {
            None
        }
    }

    /// Looks up what `request` lacks and fills it in. Never fails: see the [module
    /// documentation](self).
    pub async fn fill(&self, request: &mut types::Request) -> FeatureReport {
        let started = Instant::now();
        let user_id = request
            .context
            .user_id()
            .map(str::to_owned)
            .filter(|_| !self.user.names.is_empty() || !self.user.prefixes.is_empty());
        let n = request.candidates.ids.offsets.len().saturating_sub(1);
        let inline = Inline::of(request, &self.candidate);
        let wanted: Vec<usize> = (0..n).filter(|&i| inline.lacks(request, i, &self.candidate)).collect();
        let ids: Vec<&str> = wanted.iter().map(|&i| candidate_id(request, i)).collect();
        let user_ids: Vec<&str> = user_id.as_deref().into_iter().collect();
        let mut queries = Vec::with_capacity(2);
        if !user_ids.is_empty() {
            queries.push(Query { entity: &self.user_entity, fields: &self.user, ids: &user_ids });
        }
        if !ids.is_empty() {
            queries.push(Query { entity: &self.entity, fields: &self.candidate, ids: &ids });
        }
        let lookup =
            if queries.is_empty() { Lookup::default() } else { self.store.lookup(&queries, self.deadline).await };
        let mut found = lookup.found.into_iter();
        let user = if user_ids.is_empty() { None } else { found.next().and_then(|mut v| v.pop()).flatten() };
        let candidates = if ids.is_empty() { Vec::new() } else { found.next().unwrap_or_default() };
        let mut unknown = 0;
        if lookup.error.is_none() {
            unknown += u32::from(!user_ids.is_empty() && user.is_none());
            unknown += candidates.iter().filter(|c| c.is_none()).count() as u32;
        }
        if let Some(user) = &user {
            merge_user(request, &self.user, user);
        }
        if candidates.iter().any(Option::is_some) {
            merge_candidates(request, &self.candidate, &wanted, &candidates, &inline);
        }
        let mut missing = missing(request, &self.user, &self.candidate, user_id.is_some());
        missing.unknown_ids = unknown;
        let report = FeatureReport {
            store: self.store_name.clone(),
            hits: lookup.hits,
            misses: lookup.misses,
            stale: lookup.stale,
            round_trips: lookup.round_trips,
            error: lookup.error.as_ref().map(|e| e.reason()),
            missing,
            took_us: started.elapsed().as_micros() as u64,
        };
        if report.error.is_some() {
            self.log_degraded(&report, lookup.error.as_ref().map(ToString::to_string).unwrap_or_default());
        }
        report
    }

    fn log_degraded(&self, report: &FeatureReport, detail: String) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let last = self.logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000
            && self.logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                store = %report.store,
                reason = report.error.unwrap_or("unknown"),
                "feature lookup degraded (answering with what arrived; logged at most once a second): {detail}"
            );
        }
    }
}

fn candidate_id(request: &types::Request, i: usize) -> &str {
    let offsets = &request.candidates.ids.offsets;
    &request.candidates.ids.data[offsets[i] as usize..offsets[i + 1] as usize]
}

/// Where the declared candidate features are among the request's own columns.
struct Inline {
    /// For each declared name, its column in the request, if the caller sent it.
    columns: Vec<Option<usize>>,
}

impl Inline {
    fn of(request: &types::Request, fields: &FieldSet) -> Self {
        let names = &request.candidates.feature_names;
        Inline { columns: fields.names.iter().map(|name| names.position(name)).collect() }
    }

    /// Whether candidate `i` lacks a declared feature or its tags in the body.
    fn lacks(&self, request: &types::Request, i: usize, fields: &FieldSet) -> bool {
        let c = &request.candidates;
        let d = c.feature_names.len();
        let tags = &c.tags.offsets;
        (fields.tags && tags.get(i) == tags.get(i + 1))
            || self.columns.iter().any(|column| column.is_none_or(|j| c.features[i * d + j].is_nan()))
    }
}

fn merge_user(request: &mut types::Request, fields: &FieldSet, user: &Entity) {
    let features = &mut request.user_features;
    let stored = fields.names.iter().map(String::as_str).zip(user.values.iter().copied());
    let prefixed = user.prefixed.iter().map(|(name, value)| (&**name, *value));
    for (name, value) in stored.chain(prefixed) {
        if !value.is_nan() && !features.names.contains(name) {
            features.names.push(name);
            features.values.push(value);
        }
    }
}

/// Fills candidates `wanted[k]` from `found[k]`: declared columns the body left out are added
/// after the body's own, a NaN the body sent is filled, a value it sent stays; tags fill a
/// candidate that came without any.
fn merge_candidates(
    request: &mut types::Request,
    fields: &FieldSet,
    wanted: &[usize],
    found: &[Option<Arc<Entity>>],
    inline: &Inline,
) {
    let c = &mut request.candidates;
    let n = c.ids.offsets.len() - 1;
    let d = c.feature_names.len();
    // Column of each declared name in the result.
    let mut columns = Vec::with_capacity(fields.names.len());
    let mut names = std::mem::take(&mut c.feature_names);
    for (name, column) in fields.names.iter().zip(&inline.columns) {
        columns.push(column.unwrap_or_else(|| {
            names.push(name);
            names.len() - 1
        }));
    }
    let width = names.len();
    if width != d {
        let mut matrix = vec![f32::NAN; n * width];
        for (row, old) in matrix.chunks_exact_mut(width).zip(c.features.chunks_exact(d.max(1))) {
            row[..d].copy_from_slice(&old[..d]);
        }
        c.features = matrix;
    }
    c.feature_names = names;
    for (&i, entity) in wanted.iter().zip(found) {
        let Some(entity) = entity else { continue };
        let row = &mut c.features[i * width..(i + 1) * width];
        for (&column, &value) in columns.iter().zip(entity.values.iter()) {
            if row[column].is_nan() {
                row[column] = value;
            }
        }
    }
    if fields.tags && found.iter().flatten().any(|e| e.tags.as_ref().is_some_and(|t| !t.is_empty())) {
        merge_tags(request, wanted, found);
    }
}

fn merge_tags(request: &mut types::Request, wanted: &[usize], found: &[Option<Arc<Entity>>]) {
    let vocabulary = &mut request.tag_vocabulary;
    let mut index: HashMap<String, u32> =
        vocabulary.iter().enumerate().map(|(i, tag)| (tag.to_owned(), i as u32)).collect();
    let tags = &request.candidates.tags;
    let n = tags.offsets.len() - 1;
    let mut stored: Vec<Option<&[Box<str>]>> = vec![None; n];
    for (&i, entity) in wanted.iter().zip(found) {
        if tags.offsets[i] == tags.offsets[i + 1] {
            stored[i] = entity.as_ref().and_then(|e| e.tags.as_deref());
        }
    }
    let mut offsets = Vec::with_capacity(n + 1);
    let mut indices = Vec::with_capacity(tags.indices.len());
    offsets.push(0);
    for (i, stored) in stored.iter().enumerate() {
        match stored {
            Some(row) => {
                let start = indices.len();
                // At most as many tags as a body may send for one candidate (the decoder's default).
                for tag in row.iter().take(MAX_TAGS) {
                    let at = match index.get(&**tag) {
                        Some(&at) => at,
                        None => {
                            let at = vocabulary.len() as u32;
                            vocabulary.push(tag);
                            index.insert(tag.to_string(), at);
                            at
                        }
                    };
                    // A row's tags are distinct (the contract says so).
                    if !indices[start..].contains(&at) {
                        indices.push(at);
                    }
                }
            }
            None => indices.extend_from_slice(&tags.indices[tags.offsets[i] as usize..tags.offsets[i + 1] as usize]),
        }
        offsets.push(indices.len() as u32);
    }
    request.candidates.tags = types::TagColumn { offsets, indices };
}

/// What the policy will find missing of what it declared.
fn missing(request: &types::Request, user: &FieldSet, candidate: &FieldSet, signed_in: bool) -> Missing {
    let mut missing = Missing::default();
    if signed_in {
        let names = &request.user_features.names;
        missing.user = user.names.iter().filter(|name| !names.contains(name)).cloned().collect();
    }
    let c = &request.candidates;
    let d = c.feature_names.len();
    if d > 0 {
        for name in &candidate.names {
            let count = match c.feature_names.position(name) {
                Some(j) => c.features.chunks_exact(d).filter(|row| row[j].is_nan()).count(),
                None => c.ids.offsets.len() - 1,
            };
            if count > 0 {
                missing.candidates.insert(name.clone(), count as u32);
            }
        }
    } else if c.ids.offsets.len() > 1 {
        for name in &candidate.names {
            missing.candidates.insert(name.clone(), (c.ids.offsets.len() - 1) as u32);
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DecodeOptions, decode};

    fn request(json: &str) -> types::Request {
        decode(json.as_bytes(), &DecodeOptions::default()).expect("a valid request").request
    }

    fn entity(tags: Vec<String>) -> Option<Arc<Entity>> {
        Some(Arc::new(Entity {
            values: Box::new([]),
            prefixed: Box::new([]),
            tags: Some(tags.into_iter().map(String::into_boxed_str).collect()),
        }))
    }

    #[test]
    fn stored_tags_fill_only_untagged_candidates_and_at_most_as_many_as_a_body_may_send() {
        let mut request = request(r#"{"candidates": [{"id": "a", "tags": ["pizza"]}, {"id": "b"}]}"#);
        let many: Vec<String> = std::iter::once("pizza".to_owned()).chain((0..100).map(|i| format!("t{i}"))).collect();
        merge_tags(&mut request, &[0, 1], &[entity(vec!["sushi".into()]), entity(many)]);
        let tags = &request.candidates.tags;
        let row = |i: usize| -> Vec<&str> {
            tags.indices[tags.offsets[i] as usize..tags.offsets[i + 1] as usize]
                .iter()
                .map(|&t| request.tag_vocabulary.get(t as usize))
                .collect()
        };
        assert_eq!(row(0), ["pizza"], "the body's tags win");
        assert_eq!(row(1).len(), MAX_TAGS);
        assert_eq!(row(1)[0], "pizza");
        assert_eq!(request.tag_vocabulary.iter().filter(|t| *t == "pizza").count(), 1, "one vocabulary entry per tag");
        assert!(!request.tag_vocabulary.iter().any(|t| t == "sushi"), "candidate a kept its own tags");
    }

    #[test]
    fn stored_values_fill_what_the_body_left_out_and_never_what_it_sent() {
        let mut request = request(
            r#"{"candidates": [{"id": "a", "features": {"rating": 9.0}}, {"id": "b", "features": {"rating": null}}]}"#,
        );
        let fields = FieldSet::new(vec!["rating".into(), "eta_min".into()], Vec::new(), false);
        let inline = Inline::of(&request, &fields);
        let stored = |rating: f32, eta: f32| {
            Some(Arc::new(Entity { values: Box::new([rating, eta]), prefixed: Box::new([]), tags: None }))
        };
        merge_candidates(&mut request, &fields, &[0, 1], &[stored(1.0, 20.0), stored(7.5, 30.0)], &inline);
        let c = &request.candidates;
        let (rating, eta) = (
            c.feature_names.iter().position(|n| n == "rating").unwrap(),
            c.feature_names.iter().position(|n| n == "eta_min").unwrap(),
        );
        let d = c.feature_names.len();
        assert_eq!(c.features[rating], 9.0, "the body's value wins");
        assert_eq!(c.features[d + rating], 7.5, "a value the body left out comes from the store");
        assert_eq!((c.features[eta], c.features[d + eta]), (20.0, 30.0));
        let missing = missing(&request, &FieldSet::new(Vec::new(), Vec::new(), false), &fields, false);
        assert!(missing.is_empty(), "{missing:?}");
    }
}
