//! Building requests in native tests.
//!
//! A policy is a plain Rust function of its request, so its unit tests build a request here and
//! call [`crate::Policy::rank`] directly, with `cargo test` and no wasm toolchain:
//!
//! ```
//! use relish_guest::testing::RequestBuilder;
//!
//! let request = RequestBuilder::new("discovery")
//!     .user("u-1")
//!     .user_feature("affinity.pizza", 0.9)
//!     .candidate("v-1", &[("rating", 9.1), ("is_open", 1.0)], &["pizza"])
//!     .candidate("v-2", &[("rating", 8.0)], &["sushi"])
//!     .limit(10)
//!     .build();
//! assert_eq!(request.candidates.ids.offsets, vec![0, 3, 6]);
//! ```

use crate::bindings::relish::policy::types as raw;
use crate::{Policy, RankError, RawRequest, Request};

/// Builds a [`RawRequest`] candidate by candidate, in the row shape callers send.
///
/// Features a candidate does not list are NaN (missing) in the matrix, exactly as the host fills
/// them. Defaults: request id `test`, time 2026-11-28 12:00 UTC (a Saturday, minute 720), seed 0,
/// limit 20, no params.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    request: RawRequest,
    rows: Vec<Vec<(String, f32)>>,
    tags: Vec<Vec<String>>,
    cart: Vec<(String, Vec<String>)>,
    user_id: Option<String>,
    country: Option<String>,
    city: Option<String>,
    params: Vec<(String, String)>,
}

impl RequestBuilder {
    /// A request for `surface` with no user and no candidates.
    pub fn new(surface: &str) -> Self {
        RequestBuilder {
            request: RawRequest {
                surface: surface.to_owned(),
                request_id: "test".to_owned(),
                time_unix_ms: 1_795_867_200_000,
                local_minute_of_day: 720,
                local_weekday: raw::Weekday::Saturday,
                seed: 0,
                context: raw::Context {
                    text: String::new(),
                    user_id: None,
                    country: None,
                    city: None,
                    locale: None,
                    latitude: None,
                    longitude: None,
                    device: None,
                    cart: raw::Cart { item_ids: raw::StringColumn::empty(), tags: empty_tags() },
                },
                user_features: raw::Features { names: raw::StringColumn::empty(), values: Vec::new() },
                tag_vocabulary: raw::StringColumn::empty(),
                candidates: raw::Candidates {
                    ids: raw::StringColumn { data: String::new(), offsets: vec![0] },
                    feature_names: raw::StringColumn::empty(),
                    features: Vec::new(),
                    tags: empty_tags(),
                },
                limit: 20,
                params: raw::Params { keys: raw::StringColumn::empty(), values: raw::StringColumn::empty() },
            },
            rows: Vec::new(),
            tags: Vec::new(),
            cart: Vec::new(),
            user_id: None,
            country: None,
            city: None,
            params: Vec::new(),
        }
    }

    /// Sets the request id.
    pub fn request_id(mut self, id: &str) -> Self {
        self.request.request_id = id.to_owned();
        self
    }

    /// Sets the signed-in user's id.
    pub fn user(mut self, id: &str) -> Self {
        self.user_id = Some(id.to_owned());
        self
    }

    /// Adds a user feature.
    pub fn user_feature(mut self, name: &str, value: f32) -> Self {
        self.request.user_features.names.push(name);
        self.request.user_features.values.push(value);
        self
    }

    /// Sets the local time: minutes since midnight and weekday.
    pub fn local_time(mut self, minute_of_day: u16, weekday: raw::Weekday) -> Self {
        self.request.local_minute_of_day = minute_of_day;
        self.request.local_weekday = weekday;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.request.seed = seed;
        self
    }

    /// Sets the limit.
    pub fn limit(mut self, limit: u32) -> Self {
        self.request.limit = limit;
        self
    }

    /// Sets a policy parameter.
    pub fn param(mut self, key: &str, value: &str) -> Self {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets the market and city.
    pub fn location(mut self, country: &str, city: &str) -> Self {
        self.country = Some(country.to_owned());
        self.city = Some(city.to_owned());
        self
    }

    /// Adds an item to the cart.
    pub fn cart_item(mut self, id: &str, tags: &[&str]) -> Self {
        self.cart.push((id.to_owned(), tags.iter().map(|t| (*t).to_owned()).collect()));
        self
    }

    /// Adds a candidate with its features and tags.
    pub fn candidate(mut self, id: &str, features: &[(&str, f32)], tags: &[&str]) -> Self {
        let ids = &mut self.request.candidates.ids;
        ids.data.push_str(id);
        ids.offsets.push(ids.data.len() as u32);
        self.rows.push(features.iter().map(|(name, value)| ((*name).to_owned(), *value)).collect());
        self.tags.push(tags.iter().map(|t| (*t).to_owned()).collect());
        self
    }

    /// The finished raw request.
    pub fn build(self) -> RawRequest {
        let RequestBuilder { mut request, rows, tags, cart, user_id, country, city, params } = self;
        let mut names: Vec<String> = Vec::new();
        for row in &rows {
            for (name, _) in row {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        let d = names.len();
        let mut matrix = vec![f32::NAN; rows.len() * d];
        for (i, row) in rows.iter().enumerate() {
            for (name, value) in row {
                let j = names.iter().position(|n| n == name).expect("name was collected above");
                matrix[i * d + j] = *value;
            }
        }
        let context = &mut request.context;
        let mut put = |value: Option<String>| {
            value.map(|value| {
                let start = context.text.len() as u32;
                context.text.push_str(&value);
                raw::Span { start, end: context.text.len() as u32 }
            })
        };
        let (user_id, country, city) = (put(user_id), put(country), put(city));
        (context.user_id, context.country, context.city) = (user_id, country, city);
        request.params = raw::Params {
            keys: params.iter().map(|(k, _)| k).collect(),
            values: params.iter().map(|(_, v)| v).collect(),
        };
        let mut vocabulary: Vec<String> = Vec::new();
        let mut intern = |tag: &String| match vocabulary.iter().position(|t| t == tag) {
            Some(id) => id as u32,
            None => {
                vocabulary.push(tag.clone());
                (vocabulary.len() - 1) as u32
            }
        };
        let mut candidate_tags = empty_tags();
        for row in &tags {
            candidate_tags.indices.extend(row.iter().map(&mut intern));
            candidate_tags.offsets.push(candidate_tags.indices.len() as u32);
        }
        let mut cart_tags = empty_tags();
        for (id, tags) in &cart {
            request.context.cart.item_ids.push(id);
            cart_tags.indices.extend(tags.iter().map(&mut intern));
            cart_tags.offsets.push(cart_tags.indices.len() as u32);
        }
        request.context.cart.tags = cart_tags;
        request.candidates.feature_names = names.iter().collect();
        request.candidates.features = matrix;
        request.candidates.tags = candidate_tags;
        request.tag_vocabulary = vocabulary.iter().collect();
        request
    }

    /// Builds the request and ranks it with policy `P`, exactly as the component would.
    pub fn rank<P: Policy>(self) -> Result<crate::Ranking, RankError> {
        P::rank(&Request::new(self.build(), P::SPEC))
    }

    /// Builds the request, ranks it with policy `P` and answers the ranked candidates' ids, best
    /// first: the shape most policy tests assert on.
    pub fn ranked_ids<P: Policy>(self) -> Result<Vec<String>, RankError> {
        let request = Request::new(self.build(), P::SPEC);
        let ranking = P::rank(&request)?;
        Ok(ranking.order().iter().map(|&i| request.candidates().id(i as usize).to_owned()).collect())
    }
}

fn empty_tags() -> raw::TagColumn {
    raw::TagColumn { offsets: vec![0], indices: Vec::new() }
}
