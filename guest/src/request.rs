//! Read-only views of a ranking request: the request, its user, context, candidates and tags.

use std::str::FromStr;

use crate::bindings::relish::policy::types as raw;
use crate::columns::span;
use crate::{RankError, RawRequest, Rng, Spec, Strings};

/// One ranking request, as a policy sees it.
///
/// Wraps the raw contract record without copying it; every accessor is a cheap view.
pub struct Request {
    raw: RawRequest,
    spec: &'static Spec,
}

/// Day of the week at the user's location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    /// Whether this is Saturday or Sunday.
    pub fn is_weekend(self) -> bool {
        matches!(self, Weekday::Saturday | Weekday::Sunday)
    }
}

/// A part of the day at the user's location, by the convention every bundled policy shares:
/// breakfast 05:00–10:59, lunch 11:00–14:59, dinner 17:00–22:59, and none in between (the
/// afternoon lull and the night).
///
/// Candidates say which dayparts they suit with tags of the same names (`breakfast`, `lunch`,
/// `dinner`), so a policy matches [`Request::daypart`] against [`Daypart::tag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Daypart {
    /// 05:00–10:59.
    Breakfast,
    /// 11:00–14:59.
    Lunch,
    /// 17:00–22:59.
    Dinner,
}

impl Daypart {
    /// Every daypart, in the order of the day.
    pub const ALL: [Daypart; 3] = [Daypart::Breakfast, Daypart::Lunch, Daypart::Dinner];
    /// The tag of every daypart, in the order of [`Daypart::ALL`]: the tags that name a time of
    /// day rather than a cuisine or a category.
    pub const TAGS: [&'static str; 3] = ["breakfast", "lunch", "dinner"];

    /// The daypart of a local time (minutes since midnight), if it falls in one.
    pub fn at(minute_of_day: u16) -> Option<Daypart> {
        match minute_of_day / 60 {
            5..=10 => Some(Daypart::Breakfast),
            11..=14 => Some(Daypart::Lunch),
            17..=22 => Some(Daypart::Dinner),
            _ => None,
        }
    }

    /// The tag candidates carry to say they suit this daypart.
    pub fn tag(self) -> &'static str {
        Daypart::TAGS[self as usize]
    }
}

impl Request {
    /// Wraps a raw request for the policy described by `spec` (parameter defaults come from it).
    pub fn new(raw: RawRequest, spec: &'static Spec) -> Self {
        Request { raw, spec }
    }

    /// The raw contract record.
    pub fn raw(&self) -> &RawRequest {
        &self.raw
    }

    /// The surface being ranked, for example `discovery`.
    pub fn surface(&self) -> &str {
        &self.raw.surface
    }

    /// The caller's request id.
    pub fn request_id(&self) -> &str {
        &self.raw.request_id
    }

    /// The request time in milliseconds since the Unix epoch, as decided by the host.
    pub fn time_unix_ms(&self) -> i64 {
        self.raw.time_unix_ms
    }

    /// Minutes since local midnight at the user's location (0..=1439).
    pub fn minute_of_day(&self) -> u16 {
        self.raw.local_minute_of_day
    }

    /// The local hour of day (0..=23), a convenience over [`Request::minute_of_day`].
    pub fn hour(&self) -> u16 {
        self.raw.local_minute_of_day / 60
    }

    /// The daypart at the user's location, if the local time falls in one (see [`Daypart`]).
    pub fn daypart(&self) -> Option<Daypart> {
        Daypart::at(self.raw.local_minute_of_day)
    }

    /// The day of the week at the user's location.
    pub fn weekday(&self) -> Weekday {
        match self.raw.local_weekday {
            raw::Weekday::Monday => Weekday::Monday,
            raw::Weekday::Tuesday => Weekday::Tuesday,
            raw::Weekday::Wednesday => Weekday::Wednesday,
            raw::Weekday::Thursday => Weekday::Thursday,
            raw::Weekday::Friday => Weekday::Friday,
            raw::Weekday::Saturday => Weekday::Saturday,
            raw::Weekday::Sunday => Weekday::Sunday,
        }
    }

    /// The per-request seed.
    pub fn seed(&self) -> u64 {
        self.raw.seed
    }

    /// A random number generator seeded from the request: the only randomness a policy may use.
    ///
    /// Every call returns a generator in the same state, so the same request gets the same draws.
    /// Use [`Request::rng_stream`] for independent streams (for example one per purpose).
    pub fn rng(&self) -> Rng {
        Rng::from_seed(self.raw.seed)
    }

    /// An independent random stream derived from the request seed and a stream number.
    pub fn rng_stream(&self, stream: u64) -> Rng {
        Rng::from_seed_and_stream(self.raw.seed, stream)
    }

    /// The most items the answer may hold, never more than the number of candidates.
    pub fn limit(&self) -> usize {
        (self.raw.limit as usize).min(self.candidates().len())
    }

    /// The user: id and features.
    pub fn user(&self) -> User<'_> {
        User { raw: &self.raw }
    }

    /// Where and how the user is browsing.
    pub fn context(&self) -> Context<'_> {
        Context { raw: &self.raw.context }
    }

    /// The candidates to order.
    pub fn candidates(&self) -> Candidates<'_> {
        Candidates::new(&self.raw.candidates)
    }

    /// The request's tag vocabulary: tag names and ids.
    pub fn tags(&self) -> Tags<'_> {
        Tags { vocabulary: Strings::new(&self.raw.tag_vocabulary) }
    }

    /// The value of a parameter as a string: the host's configured value, else the default the
    /// policy's [`Spec`] declares.
    ///
    /// A name the spec does not declare is an [`RankError::Internal`]: every parameter a policy
    /// reads must be in its metadata, so operators can see and set it.
    pub fn param_str(&self, name: &str) -> Result<&str, RankError> {
        let declared = self.spec.param(name).ok_or_else(|| {
            RankError::Internal(format!(
                "policy `{}` reads parameter `{name}` but does not declare it in its spec",
                self.spec.name
            ))
        })?;
        let params = &self.raw.params;
        let set = Strings::new(&params.keys).position(name).map(|i| Strings::new(&params.values).get(i));
        Ok(set.unwrap_or(declared.default))
    }

    /// The value of a parameter parsed as `T` (see [`Request::param_str`]).
    ///
    /// A value that does not parse is an [`RankError::InvalidRequest`] naming the key and value.
    pub fn param<T: FromStr>(&self, name: &str) -> Result<T, RankError> {
        let value = self.param_str(name)?;
        value.trim().parse().map_err(|_| {
            RankError::InvalidRequest(format!(
                "parameter `{name}`: cannot parse `{value}` as {}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// A comma-separated list parameter, for example `breakfast,lunch`; empty items are skipped.
    pub fn param_list(&self, name: &str) -> Result<Vec<&str>, RankError> {
        Ok(self.param_str(name)?.split(',').map(str::trim).filter(|item| !item.is_empty()).collect())
    }
}

/// The user: id and features.
#[derive(Clone, Copy)]
pub struct User<'a> {
    raw: &'a RawRequest,
}

impl<'a> User<'a> {
    /// The signed-in user's id; `None` for anonymous visitors.
    pub fn id(&self) -> Option<&'a str> {
        let context = &self.raw.context;
        context.user_id.map(|s| span(&context.text, s))
    }

    /// Whether the request carries any user features. Anonymous users and users the feature store
    /// does not know have none: policies give them their cold-start answer.
    pub fn has_features(&self) -> bool {
        self.raw.user_features.names.offsets.len() > 1
    }

    /// The value of a user feature, `None` if absent (or NaN).
    pub fn feature(&self, name: &str) -> Option<f32> {
        let features = &self.raw.user_features;
        Strings::new(&features.names)
            .position(name)
            .and_then(|i| features.values.get(i).copied())
            .filter(|v| !v.is_nan())
    }

    /// Every user feature as `(name, value)`.
    pub fn features(&self) -> impl Iterator<Item = (&'a str, f32)> + 'a {
        let features = &self.raw.user_features;
        Strings::new(&features.names).iter().zip(features.values.iter().copied())
    }

    /// For each tag of the request's vocabulary (by tag id), the user feature `{prefix}{tag}`, for
    /// example `affinity.pizza` for prefix `affinity.`. One pass over the user's features: the
    /// way to join user-by-tag features with candidate tags without a lookup per candidate.
    pub fn features_by_tag(&self, prefix: &str) -> Vec<Option<f32>> {
        let vocabulary = Strings::new(&self.raw.tag_vocabulary);
        let mut by_tag = vec![None; vocabulary.len()];
        for (name, value) in self.features() {
            let Some(tag) = name.strip_prefix(prefix) else { continue };
            if value.is_nan() {
                continue;
            }
            if let Some(id) = vocabulary.position(tag) {
                by_tag[id] = Some(value);
            }
        }
        by_tag
    }
}

/// Where and how the user is browsing.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    raw: &'a raw::Context,
}

impl<'a> Context<'a> {
    /// The market as an ISO 3166-1 alpha-2 code.
    pub fn country(&self) -> Option<&'a str> {
        self.string(self.raw.country)
    }

    /// The city slug.
    pub fn city(&self) -> Option<&'a str> {
        self.string(self.raw.city)
    }

    /// The user's locale (BCP 47).
    pub fn locale(&self) -> Option<&'a str> {
        self.string(self.raw.locale)
    }

    /// The delivery location as `(latitude, longitude)` in degrees, when both are known.
    pub fn location(&self) -> Option<(f64, f64)> {
        self.raw.latitude.zip(self.raw.longitude)
    }

    /// The client platform.
    pub fn device(&self) -> Option<&'a str> {
        self.string(self.raw.device)
    }

    fn string(&self, field: Option<raw::Span>) -> Option<&'a str> {
        field.map(|s| span(&self.raw.text, s))
    }

    /// The cart's contents.
    pub fn cart(&self) -> Cart<'a> {
        Cart { raw: &self.raw.cart }
    }
}

/// The cart's contents.
#[derive(Clone, Copy)]
pub struct Cart<'a> {
    raw: &'a raw::Cart,
}

impl<'a> Cart<'a> {
    /// The number of items in the cart.
    #[inline]
    pub fn len(&self) -> usize {
        self.ids().len()
    }

    /// Whether the cart is empty.
    pub fn is_empty(&self) -> bool {
        self.ids().is_empty()
    }

    /// The id of cart item `i`.
    #[inline]
    pub fn id(&self, i: usize) -> &'a str {
        self.ids().get(i)
    }

    /// The ids of the cart's items, in cart order.
    pub fn ids(&self) -> Strings<'a> {
        Strings::new(&self.raw.item_ids)
    }

    /// Whether an item with this id is in the cart.
    pub fn contains(&self, id: &str) -> bool {
        self.ids().contains(id)
    }

    /// The tag ids of cart item `i`.
    #[inline]
    pub fn tags(&self, i: usize) -> &'a [u32] {
        tag_slice(&self.raw.tags, i)
    }
}

/// The candidates to order, as columns.
#[derive(Clone, Copy)]
pub struct Candidates<'a> {
    raw: &'a raw::Candidates,
    n: usize,
    d: usize,
}

impl<'a> Candidates<'a> {
    fn new(raw: &'a raw::Candidates) -> Self {
        let n = raw.ids.offsets.len().saturating_sub(1);
        Candidates { raw, n, d: Strings::new(&raw.feature_names).len() }
    }

    /// The number of candidates.
    #[inline]
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The caller's id of candidate `i`.
    #[inline]
    pub fn id(&self, i: usize) -> &'a str {
        let offsets = &self.raw.ids.offsets;
        &self.raw.ids.data[offsets[i] as usize..offsets[i + 1] as usize]
    }

    /// Every candidate's id, in candidate order.
    pub fn ids(&self) -> Strings<'a> {
        Strings::new(&self.raw.ids)
    }

    /// The index of the candidate with this id, if any (a linear scan).
    pub fn index_of(&self, id: &str) -> Option<usize> {
        (0..self.n).find(|&i| crate::columns::same(self.id(i), id))
    }

    /// The feature column names.
    pub fn feature_names(&self) -> Strings<'a> {
        Strings::new(&self.raw.feature_names)
    }

    /// A feature column by name. A name no candidate carries gives a column where every value is
    /// missing, so policies handle "feature not sent" and "feature unknown" the same way.
    #[inline]
    pub fn feature(&self, name: &str) -> Column<'a> {
        let column = self.feature_names().position(name);
        Column { matrix: &self.raw.features, n: self.len(), d: self.d, column }
    }

    /// Candidate `i`'s feature values, in the order of [`Candidates::feature_names`] (NaN where
    /// missing).
    #[inline]
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.raw.features[i * self.d..(i + 1) * self.d]
    }

    /// Candidate `i`'s tag ids (indices into the request's [`Tags`]).
    #[inline]
    pub fn tags(&self, i: usize) -> &'a [u32] {
        tag_slice(&self.raw.tags, i)
    }

    /// Whether candidate `i` has the tag with this id.
    #[inline]
    pub fn has_tag(&self, i: usize, tag: u32) -> bool {
        self.tags(i).contains(&tag)
    }
}

#[inline]
fn tag_slice(column: &raw::TagColumn, i: usize) -> &[u32] {
    &column.indices[column.offsets[i] as usize..column.offsets[i + 1] as usize]
}

/// One feature column of the candidates. Values are `None` where the caller did not send them.
#[derive(Clone, Copy)]
pub struct Column<'a> {
    matrix: &'a [f32],
    n: usize,
    d: usize,
    column: Option<usize>,
}

impl Column<'_> {
    /// Whether any candidate carries this feature column at all.
    pub fn exists(&self) -> bool {
        self.column.is_some()
    }

    /// Candidate `i`'s value, `None` if missing.
    #[inline]
    pub fn get(&self, i: usize) -> Option<f32> {
        let j = self.column?;
        let value = self.matrix[i * self.d + j];
        (!value.is_nan()).then_some(value)
    }

    /// Candidate `i`'s value, or `default` if missing.
    #[inline]
    pub fn get_or(&self, i: usize, default: f32) -> f32 {
        self.get(i).unwrap_or(default)
    }

    /// Whether candidate `i`'s value is present and above 0.5: the reading of a 0/1 flag such as
    /// `is_open`. A missing flag is `None`.
    #[inline]
    pub fn flag(&self, i: usize) -> Option<bool> {
        self.get(i).map(|v| v > 0.5)
    }

    /// Every candidate's [`Column::flag`], `missing` where absent: `feature("is_open").flags(true)`
    /// reads a venue the caller did not mark as closed as open.
    pub fn flags(&self, missing: bool) -> Vec<bool> {
        (0..self.n).map(|i| self.flag(i).unwrap_or(missing)).collect()
    }

    /// The number of candidates (values in the column, present or not).
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no candidates.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// The request's tag vocabulary.
#[derive(Clone, Copy)]
pub struct Tags<'a> {
    vocabulary: Strings<'a>,
}

impl<'a> Tags<'a> {
    /// The id of a tag, if any candidate or cart item carries it.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.vocabulary.position(name).map(|i| i as u32)
    }

    /// The name of a tag id.
    pub fn name(&self, id: u32) -> &'a str {
        self.vocabulary.get(id as usize)
    }

    /// The number of distinct tags in the request.
    #[inline]
    pub fn len(&self) -> usize {
        self.vocabulary.len()
    }

    /// Whether the request has no tags at all.
    pub fn is_empty(&self) -> bool {
        self.vocabulary.is_empty()
    }

    /// For every tag id, whether its name is in `names`.
    pub fn mask(&self, names: &[&str]) -> Vec<bool> {
        self.vocabulary.iter().map(|t| names.contains(&t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dayparts_cover_their_hours_and_leave_the_lull_empty() {
        assert_eq!(Daypart::at(4 * 60 + 59), None);
        assert_eq!(Daypart::at(5 * 60), Some(Daypart::Breakfast));
        assert_eq!(Daypart::at(10 * 60 + 59), Some(Daypart::Breakfast));
        assert_eq!(Daypart::at(11 * 60), Some(Daypart::Lunch));
        assert_eq!(Daypart::at(15 * 60), None);
        assert_eq!(Daypart::at(18 * 60 + 30), Some(Daypart::Dinner));
        assert_eq!(Daypart::at(23 * 60), None);
        let tags: Vec<&str> = Daypart::ALL.iter().map(|d| d.tag()).collect();
        assert_eq!(tags, Daypart::TAGS);
    }
}
