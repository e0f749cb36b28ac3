//! The feature store: what a request that carries only ids needs before its policy is called.
//!
//! A policy declares the features it reads (user scope: exact names or prefixes such as
//! `affinity.*`; candidate scope: exact names, plus tags). When a request carries ids only, the
//! serving pipeline asks [`Features::lookup`] for exactly those, for the user and every candidate,
//! and builds the same columns an inline request has. This module is that lookup and nothing
//! around it: no HTTP, no policy calls.
//!
//! - A [`Store`] is one trait with separate backends, as Spin's key-value factor has:
//!   [`redis`] (the online store: one hash per entity, one pipelined round trip per lookup) and
//!   [`memory`] (a file loaded at startup and reloaded when it changes, for a machine without
//!   Redis).
//! - [`Features`] puts one named store behind an in-process cache (the `lru` crate, sharded,
//!   bounded by entries and bytes, TTL per entity kind, negative entries for unknown ids), makes
//!   at most one store round trip per lookup, lets concurrent misses of one id share one fetch,
//!   answers by the caller's deadline with whatever it has, and serves an expired entry when the
//!   store fails.
//! - [`load()`](load::load) fills Redis from a JSONL or CSV file (`relish features load`), in the same
//!   format the [`memory`] backend reads ([`file`](mod@file)).
//!
//! ## Key layout and values
//!
//! One Redis hash per entity, `{prefix}:{entity}:{id}` (for example `relish:venue:venue-1`), one
//! field per feature name. Values are decimal text by default (`"4.5"`, `"-3"`, `"1e-3"`; the
//! loader writes the shortest text that reads back as the same `f32`), or, with
//! `encoding = "f32le"` on the store, exactly 4 bytes of a little-endian `f32`. The encoding is one
//! setting of the whole store rather than a guess per value because a 4-byte value is ambiguous:
//! `"1234"` is both the decimal 1234 and the bits of 1.6e-7. Fields starting with `_` are
//! reserved: `_tags` holds the entity's tags as a JSON array of strings (`["pizza","italian"]`),
//! and no prefix ever matches a reserved field. A value the store holds but that is not a usable
//! `f32` is refused, that value alone ([`value::Refusal`]): it is missing (NaN), counted and
//! logged, never an error of the lookup.

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;

mod cache;
pub mod config;
pub mod file;
pub mod load;
mod lookup;
pub mod memory;
mod metrics;
pub mod redis;
pub mod value;

pub use config::{Backend, CacheConfig, ConfigError, Encoding, StoreConfig};
pub use load::{LoadOptions, LoadReport, OnProgress, Progress, load};
pub use lookup::{Features, Lookup, LookupFailure};

/// The reserved field holding an entity's tags, a JSON array of strings.
pub const TAGS_FIELD: &str = "_tags";

/// Whether `field` is reserved (starts with `_`): never a feature, never matched by a prefix.
pub fn is_reserved(field: &str) -> bool {
    field.starts_with('_')
}

/// What to fetch for one entity kind: a policy's declared features of one scope.
///
/// Build it with [`FieldSet::new`] and share it in an `Arc`: the cache keeps entries per
/// (entity kind, field set), and two equal field sets share their entries.
#[derive(Debug, Clone)]
pub struct FieldSet {
    /// Exact feature names; [`Entity::values`] has one value per name, in this order.
    pub names: Vec<String>,
    /// Prefixes of feature names, without the trailing `*` (`affinity.` for `affinity.*`); every
    /// field starting with one lands in [`Entity::prefixed`].
    pub prefixes: Vec<String>,
    /// Whether to fetch the entity's tags.
    pub tags: bool,
    /// A hash of the three fields above, computed once in [`FieldSet::new`].
    fingerprint: u64,
}

impl FieldSet {
    /// A field set of `names`, `prefixes` (without the `*`) and, if `tags`, the tags.
    pub fn new(names: Vec<String>, prefixes: Vec<String>, tags: bool) -> Self {
        let fingerprint = fingerprint(&names, &prefixes, tags);
        FieldSet { names, prefixes, tags, fingerprint }
    }

    /// A field set from declared patterns: `name` for an exact name, `prefix*` for a prefix.
    pub fn from_patterns<'a>(patterns: impl IntoIterator<Item = &'a str>, tags: bool) -> Self {
        let (mut names, mut prefixes) = (Vec::new(), Vec::new());
        for pattern in patterns {
            match pattern.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix.to_owned()),
                None => names.push(pattern.to_owned()),
            }
        }
        FieldSet::new(names, prefixes, tags)
    }

    /// A hash of the field set's content, computed once at construction: equal field sets have
    /// equal fingerprints.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.prefixes.is_empty() && !self.tags
    }

    /// Whether `field` matches one of the prefixes (a reserved field never does).
    pub fn matches_prefix(&self, field: &str) -> bool {
        !is_reserved(field) && self.prefixes.iter().any(|p| field.starts_with(p.as_str()))
    }
}

fn fingerprint(names: &[String], prefixes: &[String], tags: bool) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    names.hash(&mut hasher);
    prefixes.hash(&mut hasher);
    tags.hash(&mut hasher);
    hasher.finish()
}

impl PartialEq for FieldSet {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
            && self.names == other.names
            && self.prefixes == other.prefixes
            && self.tags == other.tags
    }
}

impl Eq for FieldSet {}

/// Fields matched by a [`FieldSet`]'s prefixes, `(name, value)`, sorted by name.
pub type Prefixed = Box<[(Box<str>, f32)]>;

/// What the store holds for one entity, restricted to a [`FieldSet`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entity {
    /// One value per [`FieldSet::names`], in that order; NaN where the store has no (valid) value.
    pub values: Box<[f32]>,
    /// The fields matching [`FieldSet::prefixes`], sorted by name.
    pub prefixed: Prefixed,
    /// The tags, when [`FieldSet::tags`] asked for them and the store has them.
    pub tags: Option<Box<[Box<str>]>>,
}

impl Entity {
    /// An estimate of the heap and inline bytes the entity holds, for the cache's byte bound.
    pub fn bytes(&self) -> usize {
        let prefixed: usize = self.prefixed.iter().map(|(name, _)| name.len() + size_of::<(Box<str>, f32)>()).sum();
        let tags: usize = self.tags.iter().flatten().map(|tag| tag.len() + size_of::<Box<str>>()).sum();
        size_of::<Entity>() + self.values.len() * size_of::<f32>() + prefixed + tags
    }
}

/// One entity kind's part of a lookup: which fields of which ids.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The entity kind, for example `user` or `venue` (the middle of the Redis key).
    pub entity: &'a str,
    /// What to fetch for each id.
    pub fields: &'a Arc<FieldSet>,
    /// The ids.
    pub ids: &'a [&'a str],
}

/// A store's answer for one id.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// The entity, restricted to the query's field set.
    Found(Entity),
    /// The store has nothing for the id. A backend may also answer `Absent` for an entity that
    /// has none of the requested fields (Redis cannot tell the two apart in one `HMGET`); to a
    /// policy they are the same.
    Absent,
}

/// Why a store could not answer a fetch at all (a bad value is not this: it is refused alone).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached (down, refusing connections, not connected yet).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer in time.
    #[error("the store did not answer in time")]
    Timeout,
    /// The store answered with an error or with something that is not an answer.
    #[error("the store failed: {0}")]
    Failed(String),
}

/// The future [`Store::fetch`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Vec<Fetched>>, StoreError>> + Send + 'a>>;

/// A feature store backend: [`redis::RedisStore`], [`memory::MemoryStore`], or a test double.
pub trait Store: Send + Sync {
    /// The backend's name: `redis` or `memory`.
    fn kind(&self) -> &'static str;

    /// Fetches every id of every query in ONE round trip (all entity kinds together). The answer
    /// has one `Vec` per query and one [`Fetched`] per id, in order.
    fn fetch<'a>(&'a self, batch: &'a [Query<'a>]) -> FetchFuture<'a>;
}

impl fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Store({})", self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_field_sets_have_equal_fingerprints_and_different_ones_do_not() {
        let a = FieldSet::new(vec!["rating".into()], vec!["affinity.".into()], true);
        let b = FieldSet::from_patterns(["rating", "affinity.*"], true);
        assert_eq!(a, b);
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = FieldSet::new(vec!["rating".into()], vec!["affinity.".into()], false);
        assert_ne!(a, c);
        assert_ne!(a.fingerprint(), c.fingerprint());
        // The boundary between names and prefixes is part of the content.
        let d = FieldSet::new(vec!["rating".into(), "affinity.".into()], vec![], true);
        assert_ne!(a.fingerprint(), d.fingerprint());
    }

    #[test]
    fn prefixes_never_match_reserved_fields() {
        let all = FieldSet::from_patterns(["*"], false);
        assert!(all.matches_prefix("rating"));
        assert!(!all.matches_prefix(TAGS_FIELD));
        let affinity = FieldSet::from_patterns(["affinity.*"], false);
        assert!(affinity.matches_prefix("affinity.pizza"));
        assert!(!affinity.matches_prefix("rating"));
    }
}
