//! [`Features`]: one named store behind its cache, and the lookup the serving pipeline calls.
//!
//! A lookup reads every id from the cache. What is not fresh there is either being fetched
//! already (by another lookup, or earlier in this one for a repeated id), and then waited for, or
//! gathered into this lookup's one fetch: ONE [`Store::fetch`] for all its misses, all entity
//! kinds together, so a lookup makes at most one round trip. The fetch runs as a task of its own:
//! when the lookup's deadline passes first, the lookup answers with what it has, and the fetch
//! still fills the cache for the lookups after it (and wakes the others waiting for it), until
//! the store's `timeout_ms`.
//!
//! When the store fails or is late, an expired entry answers for its id (counted `stale`); what
//! has no entry is missing, and [`Lookup::error`] says why.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::cache::{Answer, Cache, Flight, FlightResult, Probe, Status};
use super::config::{Backend, CacheConfig, StoreConfig};
use super::memory::MemoryStore;
use super::metrics::{EntityMetrics, StoreMetrics};
use super::redis::RedisStore;
use super::value::Refusals;
use super::{Entity, Fetched, FieldSet, Query, Store, StoreError};

/// What one lookup found: one `Vec` per query, one slot per id, in order.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// Per query, per id: the entity, or `None` when the store does not have it or it is not
    /// available (then [`Lookup::error`] says why).
    pub found: Vec<Vec<Option<Arc<Entity>>>>,
    /// Ids answered from the cache while fresh (including ids the store is known not to have).
    pub hits: u32,
    /// Ids that went to the store (this lookup's fetch, or another's it waited for).
    pub misses: u32,
    /// Of the misses, ids answered with an expired entry because the store failed or was late.
    pub stale: u32,
    /// Fetches from the store this lookup made: 0 or 1.
    pub round_trips: u32,
    /// Set when the store failed or the deadline passed: what is missing is then missing because
    /// of it (it may also be absent from the store; there is no telling).
    pub error: Option<LookupFailure>,
}

/// Why a lookup is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupFailure {
    /// The deadline passed before the store answered.
    #[error("the feature store did not answer by the deadline")]
    Timeout,
    /// The store cannot be reached.
    #[error("the feature store is unavailable: {0}")]
    Unavailable(String),
    /// The store answered with an error.
    #[error("the feature store failed: {0}")]
    Failed(String),
}

impl LookupFailure {
    /// The stable reason code: `timeout`, `unavailable` or `store-error`.
    pub fn reason(&self) -> &'static str {
        match self {
            LookupFailure::Timeout => "timeout",
            LookupFailure::Unavailable(_) => "unavailable",
            LookupFailure::Failed(_) => "store-error",
        }
    }
}

impl From<StoreError> for LookupFailure {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(why) => LookupFailure::Unavailable(why),
            StoreError::Timeout => LookupFailure::Timeout,
            StoreError::Failed(why) => LookupFailure::Failed(why),
        }
    }
}

/// One (entity kind, field set) the cache keeps entries for, with what a lookup needs of it.
struct Table {
    id: u32,
    entity: Box<str>,
    fields: Arc<FieldSet>,
    ttl: Duration,
    metrics: EntityMetrics,
}

/// What the lookups and their fetch tasks share.
struct Core {
    store: Arc<dyn Store>,
    cache: Cache,
    metrics: StoreMetrics,
    negative_ttl: Duration,
    fetch_timeout: Duration,
}

/// The most tables (distinct field sets per entity kind, plus other `Arc`s of equal ones) kept.
/// Beyond it a field set equal to a known one is still found, by comparing content.
const MAX_TABLES: usize = 256;

/// One named feature store, its cache and its metrics.
pub struct Features {
    name: String,
    core: Arc<Core>,
    cache_config: CacheConfig,
    /// Read on every lookup, written when a new field set shows up.
    tables: ArcSwap<Vec<Arc<Table>>>,
    tables_written: Mutex<()>,
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features").field("name", &self.name).field("kind", &self.kind()).finish_non_exhaustive()
    }
}

impl Features {
    /// Opens the store `name` of `config` and registers its metrics on `registry`.
    ///
    /// Never waits for Redis: its connection is made on first use and remade when lost, and
    /// lookups fail fast (`unavailable`) while there is none. A memory store reads its file now
    /// (an unreadable or malformed file is an error naming file:line) and then watches it.
    pub fn new(name: &str, config: &StoreConfig, registry: &prometheus::Registry) -> anyhow::Result<Arc<Self>> {
        config.validate()?;
        let metrics = StoreMetrics::new(name, registry)?;
        let store: Arc<dyn Store> = match config.backend {
            Backend::Redis => Arc::new(RedisStore::new(name, config, Refusals::new(name, metrics.refused.clone()))?),
            Backend::Memory => {
                let path = config.path.as_deref().expect("validated");
                Arc::new(MemoryStore::open(name, path, config.poll(), metrics.reloads.clone())?)
            }
        };
        Ok(Self::build(name, store, &config.cache, config.timeout(), metrics))
    }

    /// A store of any backend (a test double, say) behind a cache, its metrics on `registry`;
    /// `fetch_timeout` bounds each fetch.
    pub fn with_store(
        name: &str,
        store: Arc<dyn Store>,
        cache: &CacheConfig,
        fetch_timeout: Duration,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Arc<Self>> {
        cache.validate().map_err(|e| anyhow::anyhow!("cache.{e}"))?;
        Ok(Self::build(name, store, cache, fetch_timeout, StoreMetrics::new(name, registry)?))
    }

    fn build(
        name: &str,
        store: Arc<dyn Store>,
        cache: &CacheConfig,
        fetch_timeout: Duration,
        metrics: StoreMetrics,
    ) -> Arc<Self> {
        let core = Core {
            store,
            cache: Cache::new(
                cache.max_entries,
                cache.max_bytes,
                cache.shards,
                metrics.entries.clone(),
                metrics.bytes.clone(),
            ),
            metrics,
            negative_ttl: cache.negative_ttl(),
            fetch_timeout,
        };
        Arc::new(Features {
            name: name.to_owned(),
            core: Arc::new(core),
            cache_config: cache.clone(),
            tables: ArcSwap::default(),
            tables_written: Mutex::new(()),
        })
    }

    /// The store's name in the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend: `redis`, `memory`, or a test double's.
    pub fn kind(&self) -> &'static str {
        self.core.store.kind()
    }

    /// Looks every id of every query up, answering by `deadline` with what it has. Never fails
    /// (see [`Lookup::error`]), and makes at most one store round trip.
    pub async fn lookup(&self, queries: &[Query<'_>], deadline: Duration) -> Lookup {
        let started = Instant::now();
        let mut lookup = Lookup { found: Vec::with_capacity(queries.len()), ..Lookup::default() };
        let mut tables = Vec::with_capacity(queries.len());
        // This lookup's fetch: created on its first miss; `next` is its next position.
        let (mut own, mut next) = (None, 0u32);
        let mut fetches: Vec<(usize, usize, u32)> = Vec::new();
        let mut waits: Vec<Wait> = Vec::new();
        for (q, query) in queries.iter().enumerate() {
            let table = self.table(query);
            let (mut hit, mut absent) = (0, 0);
            let mut row = vec![None; query.ids.len()];
            let cache = &self.core.cache;
            cache.lookup_all(table.id, query.ids, started, &mut own, &mut next, |i, status| match status {
                Status::Fresh(answer) => {
                    if answer.is_some() {
                        hit += 1;
                    } else {
                        absent += 1;
                    }
                    row[i] = answer;
                }
                Status::Wait { flight, at, stale } => {
                    waits.push(Wait { query: q, id: i, flight: Some(flight), at, stale });
                }
                Status::Fetch { at, stale } => {
                    fetches.push((q, i, at));
                    waits.push(Wait { query: q, id: i, flight: None, at, stale });
                }
            });
            table.metrics.hit.inc_by(hit);
            table.metrics.absent.inc_by(absent);
            lookup.hits += (hit + absent) as u32;
            lookup.found.push(row);
            tables.push(table);
        }
        if let Some(flight) = &own {
            lookup.round_trips = 1;
            self.core.metrics.round_trips.inc();
            self.spawn_fetch(flight.clone(), next, queries, &tables, &fetches);
        }
        if !waits.is_empty() {
            self.wait(&mut lookup, &tables, waits, own, started + deadline).await;
        }
        if let Some(error) = &lookup.error {
            self.core.metrics.error(error.reason());
        }
        self.core.metrics.duration.observe(started.elapsed().as_secs_f64());
        lookup
    }

    /// Waits for the fetches of `waits` until `until`, and fills their slots.
    async fn wait(
        &self,
        lookup: &mut Lookup,
        tables: &[Arc<Table>],
        mut waits: Vec<Wait>,
        own: Option<Arc<Flight>>,
        until: Instant,
    ) {
        for wait in &mut waits {
            if wait.flight.is_none() {
                wait.flight.clone_from(&own);
            }
        }
        let mut flights: Vec<&Arc<Flight>> = Vec::new();
        for flight in waits.iter().filter_map(|w| w.flight.as_ref()) {
            if !flights.iter().any(|f| Arc::ptr_eq(f, flight)) {
                flights.push(flight);
            }
        }
        let all = async {
            for flight in flights {
                flight.wait().await;
            }
        };
        let _ = tokio::time::timeout_at(until.into(), all).await;
        let mut counts = vec![(0u64, 0u64); tables.len()];
        for wait in &waits {
            let flight = wait.flight.as_ref().expect("set above");
            let failure = match flight.get(wait.at) {
                Some(Ok(answer)) => {
                    lookup.found[wait.query][wait.id].clone_from(answer);
                    counts[wait.query].0 += 1;
                    continue;
                }
                Some(Err(failure)) => failure.clone(),
                None => LookupFailure::Timeout,
            };
            lookup.error.get_or_insert(failure);
            match &wait.stale {
                Some(stale) => {
                    lookup.found[wait.query][wait.id].clone_from(stale);
                    counts[wait.query].1 += 1;
                }
                None => counts[wait.query].0 += 1,
            }
        }
        for (table, (miss, stale)) in tables.iter().zip(counts) {
            table.metrics.miss.inc_by(miss);
            table.metrics.stale.inc_by(stale);
            lookup.misses += (miss + stale) as u32;
            lookup.stale += stale as u32;
        }
    }

    /// Starts the one fetch of this lookup's misses, `fetches` (query, id, position), as a task.
    fn spawn_fetch(
        &self,
        flight: Arc<Flight>,
        positions: u32,
        queries: &[Query<'_>],
        tables: &[Arc<Table>],
        fetches: &[(usize, usize, u32)],
    ) {
        let mut parts: Vec<Part> = Vec::new();
        for &(q, i, at) in fetches {
            if parts.last().is_none_or(|p| p.query != q) {
                parts.push(Part { query: q, table: tables[q].clone(), ids: Vec::new(), at: Vec::new() });
            }
            let part = parts.last_mut().expect("pushed");
            part.ids.push(queries[q].ids[i].into());
            part.at.push(at);
        }
        let fetch = Fetch { core: self.core.clone(), flight, parts, positions, done: false };
        tokio::spawn(fetch.run());
    }

    /// The table of `query`'s entity kind and field set, made on first sight.
    fn table(&self, query: &Query<'_>) -> Arc<Table> {
        let same = |t: &&Arc<Table>| Arc::ptr_eq(&t.fields, query.fields) && &*t.entity == query.entity;
        let equal = |t: &&Arc<Table>| &*t.entity == query.entity && *t.fields == **query.fields;
        let tables = self.tables.load();
        if let Some(table) = tables.iter().find(same) {
            return table.clone();
        }
        let equal_one = tables.iter().find(equal).cloned();
        if let Some(table) = equal_one
            && tables.len() >= MAX_TABLES
        {
            return table;
        }
        drop(tables);
        let _written = self.tables_written.lock().unwrap_or_else(|p| p.into_inner());
        let tables = self.tables.load_full();
        if let Some(table) = tables.iter().find(same) {
            return table.clone();
        }
        let table = match tables.iter().find(equal) {
            // Another `Arc` of a known field set: the same entries, found by pointer next time.
            Some(known) => Arc::new(Table {
                id: known.id,
                entity: known.entity.clone(),
                fields: query.fields.clone(),
                ttl: known.ttl,
                metrics: self.core.metrics.entity(query.entity),
            }),
            None => Arc::new(Table {
                id: tables.iter().map(|t| t.id + 1).max().unwrap_or(0),
                entity: query.entity.into(),
                fields: query.fields.clone(),
                ttl: self.cache_config.ttl(query.entity),
                metrics: self.core.metrics.entity(query.entity),
            }),
        };
        if tables.len() < MAX_TABLES || !tables.iter().any(|t| t.id == table.id) {
            let mut next = Vec::clone(&tables);
            next.push(table.clone());
            self.tables.store(Arc::new(next));
        }
        table
    }
}

/// An id of a lookup waiting for a fetch: its own (`flight: None` until the fetch is started) or
/// another lookup's.
struct Wait {
    query: usize,
    id: usize,
    flight: Option<Arc<Flight>>,
    at: u32,
    stale: Option<Answer>,
}

/// One query's part of a fetch.
struct Part {
    query: usize,
    table: Arc<Table>,
    ids: Vec<Box<str>>,
    at: Vec<u32>,
}

/// A fetch in its own task. If the task is dropped before the fetch ends (the runtime shutting
/// down, a panicking store), the entries stop waiting for it and the flight ends as failed.
struct Fetch {
    core: Arc<Core>,
    flight: Arc<Flight>,
    parts: Vec<Part>,
    positions: u32,
    done: bool,
}

impl Fetch {
    async fn run(mut self) {
        let result = {
            let ids: Vec<Vec<&str>> = self.parts.iter().map(|p| p.ids.iter().map(|id| &**id).collect()).collect();
            let queries: Vec<Query<'_>> = self
                .parts
                .iter()
                .zip(&ids)
                .map(|(part, ids)| Query { entity: &part.table.entity, fields: &part.table.fields, ids })
                .collect();
            match tokio::time::timeout(self.core.fetch_timeout, self.core.store.fetch(&queries)).await {
                Ok(Ok(answers)) => self.answers(answers),
                Ok(Err(error)) => Err(error.into()),
                Err(_) => Err(LookupFailure::Timeout),
            }
        };
        self.finish(result);
    }

    /// The store's answers by position, checked against what was asked.
    fn answers(&self, answers: Vec<Vec<Fetched>>) -> FlightResult {
        let wrong =
            |what: String| Err(LookupFailure::Failed(format!("the {} store answered {what}", self.core.store.kind())));
        if answers.len() != self.parts.len() {
            return wrong(format!("{} queries for {}", answers.len(), self.parts.len()));
        }
        let mut out: Vec<Answer> = vec![None; self.positions as usize];
        for (part, answers) in self.parts.iter().zip(answers) {
            if answers.len() != part.ids.len() {
                return wrong(format!("{} ids for {}", answers.len(), part.ids.len()));
            }
            for (&at, answer) in part.at.iter().zip(answers) {
                if let Fetched::Found(entity) = answer {
                    if entity.values.len() != part.table.fields.names.len() {
                        return wrong(format!(
                            "{} values for {} names",
                            entity.values.len(),
                            part.table.fields.names.len()
                        ));
                    }
                    out[at as usize] = Some(Arc::new(entity));
                }
            }
        }
        Ok(out.into())
    }

    fn finish(&mut self, result: FlightResult) {
        let now = Instant::now();
        for part in &self.parts {
            for (id, &at) in part.ids.iter().zip(&part.at) {
                let key = Probe::new(part.table.id, id);
                match &result {
                    Ok(answers) => {
                        let answer = &answers[at as usize];
                        let ttl = if answer.is_some() { part.table.ttl } else { self.core.negative_ttl };
                        self.core.cache.fill(key, &self.flight, answer.clone(), now + ttl);
                    }
                    Err(_) => self.core.cache.abandon(key, &self.flight),
                }
            }
        }
        if let Err(failure) = &result {
            tracing::debug!(
                store = self.core.metrics.store(),
                reason = failure.reason(),
                "feature fetch failed: {failure}"
            );
        }
        self.flight.complete(result);
        self.done = true;
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Err(LookupFailure::Failed("the fetch was cancelled".into())));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::features::FetchFuture;

    /// A store of `v{n}` ids with one value each (`n`), that counts its fetches and ids, can be
    /// made slow or failing, and holds nothing for other ids.
    #[derive(Default)]
    struct Fake {
        fetches: AtomicUsize,
        ids: AtomicUsize,
        delay_ms: AtomicUsize,
        fail: AtomicBool,
        /// Added to every value, to tell refreshed answers from old ones.
        generation: AtomicUsize,
    }

    impl Store for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }

        fn fetch<'a>(&'a self, batch: &'a [Query<'a>]) -> FetchFuture<'a> {
            Box::pin(async move {
                self.fetches.fetch_add(1, Ordering::SeqCst);
                let delay = self.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay as u64)).await;
                }
                if self.fail.load(Ordering::SeqCst) {
                    return Err(StoreError::Unavailable("connection refused".into()));
                }
                let generation = self.generation.load(Ordering::SeqCst) as f32;
                Ok(batch
                    .iter()
                    .map(|query| {
                        self.ids.fetch_add(query.ids.len(), Ordering::SeqCst);
                        query
                            .ids
                            .iter()
                            .map(|id| match id.strip_prefix('v').and_then(|n| n.parse::<f32>().ok()) {
                                Some(n) => Fetched::Found(Entity {
                                    values: query.fields.names.iter().map(|_| n + generation).collect(),
                                    ..Entity::default()
                                }),
                                None => Fetched::Absent,
                            })
                            .collect()
                    })
                    .collect())
            })
        }
    }

    fn features(fake: &Arc<Fake>, cache: CacheConfig) -> Arc<Features> {
        Features::with_store("test", fake.clone(), &cache, Duration::from_secs(5), &prometheus::Registry::new())
            .unwrap()
    }

    fn fields() -> Arc<FieldSet> {
        Arc::new(FieldSet::new(vec!["rating".into()], vec![], false))
    }

    fn value(lookup: &Lookup, q: usize, i: usize) -> Option<f32> {
        lookup.found[q][i].as_ref().map(|e| e.values[0])
    }

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_miss_is_fetched_once_then_hit() {
        let fake = Arc::new(Fake::default());
        let features = features(&fake, CacheConfig::default());
        let fields = fields();
        let ids = ["v1", "v2", "nobody"];
        let query = [Query { entity: "venue", fields: &fields, ids: &ids }];
        let first = features.lookup(&query, LONG).await;
        assert_eq!((value(&first, 0, 0), value(&first, 0, 1), value(&first, 0, 2)), (Some(1.0), Some(2.0), None));
        assert_eq!((first.hits, first.misses, first.round_trips, first.error), (0, 3, 1, None));
        let second = features.lookup(&query, LONG).await;
        assert_eq!((value(&second, 0, 0), value(&second, 0, 2)), (Some(1.0), None));
        assert_eq!((second.hits, second.misses, second.round_trips), (3, 0, 0));
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn all_misses_of_a_lookup_make_one_round_trip_across_entity_kinds() {
        let fake = Arc::new(Fake::default());
        let features = features(&fake, CacheConfig::default());
        let fields = fields();
        let users = ["v7"];
        let venues: Vec<String> = (0..500).map(|n| format!("v{n}")).collect();
        let venues: Vec<&str> = venues.iter().map(String::as_str).collect();
        let queries = [
            Query { entity: "user", fields: &fields, ids: &users },
            Query { entity: "venue", fields: &fields, ids: &venues },
        ];
        let lookup = features.lookup(&queries, LONG).await;
        assert_eq!((lookup.round_trips, lookup.misses), (1, 501));
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
        assert_eq!(fake.ids.load(Ordering::SeqCst), 501);
        assert_eq!(value(&lookup, 1, 499), Some(499.0));
        // A repeated id in one lookup is fetched once too.
        let repeated = ["v900", "v900"];
        let lookup = features.lookup(&[Query { entity: "venue", fields: &fields, ids: &repeated }], LONG).await;
        assert_eq!((value(&lookup, 0, 0), value(&lookup, 0, 1)), (Some(900.0), Some(900.0)));
        assert_eq!(fake.ids.load(Ordering::SeqCst), 502);
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_id_make_one_fetch() {
        let fake = Arc::new(Fake { delay_ms: AtomicUsize::new(50), ..Fake::default() });
        let features = features(&fake, CacheConfig::default());
        let fields = fields();
        let ids = ["v1"];
        let query = [Query { entity: "venue", fields: &fields, ids: &ids }];
        let (a, b) = tokio::join!(features.lookup(&query, LONG), features.lookup(&query, LONG));
        assert_eq!((value(&a, 0, 0), value(&b, 0, 0)), (Some(1.0), Some(1.0)));
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
        // One made the fetch, the other waited for it.
        assert_eq!(a.round_trips + b.round_trips, 1);
        assert_eq!((a.misses, b.misses), (1, 1));
    }

    #[tokio::test]
    async fn different_field_sets_are_separate_entries_and_equal_ones_share() {
        let fake = Arc::new(Fake::default());
        let features = features(&fake, CacheConfig::default());
        let (one, equal) = (fields(), fields());
        let two = Arc::new(FieldSet::new(vec!["rating".into(), "eta".into()], vec![], false));
        let ids = ["v1"];
        features.lookup(&[Query { entity: "venue", fields: &one, ids: &ids }], LONG).await;
        let shared = features.lookup(&[Query { entity: "venue", fields: &equal, ids: &ids }], LONG).await;
        assert_eq!(shared.hits, 1);
        let other = features.lookup(&[Query { entity: "venue", fields: &two, ids: &ids }], LONG).await;
        assert_eq!((other.hits, other.misses), (0, 1));
        assert_eq!(other.found[0][0].as_ref().unwrap().values.len(), 2);
        let user = features.lookup(&[Query { entity: "user", fields: &one, ids: &ids }], LONG).await;
        assert_eq!(user.misses, 1);
    }

    #[tokio::test]
    async fn the_deadline_answers_with_what_is_there_and_the_late_fetch_still_fills_the_cache() {
        let fake = Arc::new(Fake { delay_ms: AtomicUsize::new(100), ..Fake::default() });
        let features = features(&fake, CacheConfig::default());
        let fields = fields();
        let ids = ["v1"];
        let query = [Query { entity: "venue", fields: &fields, ids: &ids }];
        let started = Instant::now();
        let late = features.lookup(&query, Duration::from_millis(5)).await;
        assert!(started.elapsed() < Duration::from_millis(80), "{:?}", started.elapsed());
        assert_eq!((value(&late, 0, 0), late.error.clone()), (None, Some(LookupFailure::Timeout)));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let after = features.lookup(&query, Duration::from_millis(5)).await;
        assert_eq!((value(&after, 0, 0), after.hits, after.error), (Some(1.0), 1, None));
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn absent_ids_are_believed_absent_for_the_negative_ttl() {
        let fake = Arc::new(Fake::default());
        let cache = CacheConfig { negative_ttl_secs: 0.1, ..CacheConfig::default() };
        let features = features(&fake, cache);
        let fields = fields();
        let ids = ["nobody"];
        let query = [Query { entity: "venue", fields: &fields, ids: &ids }];
        features.lookup(&query, LONG).await;
        let again = features.lookup(&query, LONG).await;
        assert_eq!((again.hits, again.found[0][0].is_none(), again.error), (1, true, None));
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(120)).await;
        let expired = features.lookup(&query, LONG).await;
        assert_eq!(expired.misses, 1);
        assert_eq!(fake.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn entries_expire_by_their_entity_ttl_and_are_refreshed() {
        let fake = Arc::new(Fake::default());
        let cache = CacheConfig { entity_ttl_secs: [("user".into(), 0.05)].into(), ..CacheConfig::default() };
        let features = features(&fake, cache);
        let fields = fields();
        let ids = ["v1"];
        let user = [Query { entity: "user", fields: &fields, ids: &ids }];
        let venue = [Query { entity: "venue", fields: &fields, ids: &ids }];
        features.lookup(&user, LONG).await;
        features.lookup(&venue, LONG).await;
        fake.generation.store(10, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(70)).await;
        let user = features.lookup(&user, LONG).await;
        assert_eq!((user.misses, value(&user, 0, 0)), (1, Some(11.0)));
        let venue = features.lookup(&venue, LONG).await;
        assert_eq!((venue.hits, value(&venue, 0, 0)), (1, Some(1.0)));
    }

    #[tokio::test]
    async fn an_expired_entry_answers_when_the_store_fails_and_a_fresh_one_replaces_it_after() {
        let fake = Arc::new(Fake::default());
        let cache = CacheConfig { ttl_secs: 0.05, ..CacheConfig::default() };
        let features = features(&fake, cache);
        let fields = fields();
        let ids = ["v1", "v2"];
        let both = [Query { entity: "venue", fields: &fields, ids: &ids[..1] }];
        features.lookup(&both, LONG).await;
        tokio::time::sleep(Duration::from_millis(70)).await;
        fake.fail.store(true, Ordering::SeqCst);
        let query = [Query { entity: "venue", fields: &fields, ids: &ids }];
        let failing = features.lookup(&query, LONG).await;
        assert_eq!((value(&failing, 0, 0), value(&failing, 0, 1)), (Some(1.0), None));
        assert_eq!((failing.stale, failing.misses), (1, 2));
        assert_eq!(failing.error.as_ref().map(LookupFailure::reason), Some("unavailable"));
        // The failure is not cached: the next lookup asks again, and gets fresh values.
        fake.fail.store(false, Ordering::SeqCst);
        fake.generation.store(10, Ordering::SeqCst);
        let back = features.lookup(&query, LONG).await;
        assert_eq!((value(&back, 0, 0), value(&back, 0, 1), back.error), (Some(11.0), Some(12.0), None));
    }

    #[tokio::test]
    async fn an_expired_entry_answers_when_the_store_is_late() {
        let fake = Arc::new(Fake::default());
        let features = features(&fake, CacheConfig { ttl_secs: 0.0, ..CacheConfig::default() });
        let fields = fields();
        let ids = ["v1"];
        let query = [Query { entity: "venue", fields: &fields, ids: &ids }];
        features.lookup(&query, LONG).await;
        fake.delay_ms.store(200, Ordering::SeqCst);
        let late = features.lookup(&query, Duration::from_millis(5)).await;
        assert_eq!((value(&late, 0, 0), late.stale, late.error), (Some(1.0), 1, Some(LookupFailure::Timeout)));
    }

    #[tokio::test]
    async fn a_store_answering_the_wrong_shape_fails_the_lookup_not_the_process() {
        struct Wrong;
        impl Store for Wrong {
            fn kind(&self) -> &'static str {
                "wrong"
            }
            fn fetch<'a>(&'a self, _: &'a [Query<'a>]) -> FetchFuture<'a> {
                Box::pin(async { Ok(vec![vec![Fetched::Found(Entity::default())]]) })
            }
        }
        let features =
            Features::with_store("w", Arc::new(Wrong), &CacheConfig::default(), LONG, &prometheus::Registry::new())
                .unwrap();
        let fields = fields();
        let ids = ["v1", "v2"];
        let lookup = features.lookup(&[Query { entity: "venue", fields: &fields, ids: &ids }], LONG).await;
        assert_eq!(lookup.error.as_ref().map(LookupFailure::reason), Some("store-error"));
        assert!(lookup.found[0].iter().all(Option::is_none));
    }

    #[tokio::test]
    async fn lookups_are_counted_by_outcome() {
        let fake = Arc::new(Fake::default());
        let registry = prometheus::Registry::new();
        let features = Features::with_store("counted", fake.clone(), &CacheConfig::default(), LONG, &registry).unwrap();
        let fields = fields();
        let ids = ["v1", "nobody"];
        let query = [Query { entity: "venue", fields: &fields, ids: &ids }];
        features.lookup(&query, LONG).await;
        features.lookup(&query, LONG).await;
        let mut text = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        for line in [
            r#"relish_feature_lookups_total{entity="venue",outcome="miss",store="counted"} 2"#,
            r#"relish_feature_lookups_total{entity="venue",outcome="hit",store="counted"} 1"#,
            r#"relish_feature_lookups_total{entity="venue",outcome="absent",store="counted"} 1"#,
            r#"relish_feature_round_trips_total{store="counted"} 1"#,
            r#"relish_feature_cache_entries{store="counted"} 2"#,
            r#"relish_feature_lookup_duration_seconds_count{store="counted"} 2"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    /// Prints what a warm lookup of 500 candidates costs (run with `--ignored --nocapture`,
    /// in release for a meaningful number).
    #[tokio::test]
    #[ignore = "a measurement, not a test"]
    async fn warm_lookup_cost() {
        let fake = Arc::new(Fake::default());
        let features = features(&fake, CacheConfig::default());
        let user_fields = Arc::new(FieldSet::new(vec!["age".into()], vec!["affinity.".into()], false));
        let fields = Arc::new(FieldSet::new(vec!["rating".into(), "eta".into(), "price".into()], vec![], true));
        let ids: Vec<String> = (0..500).map(|n| format!("v{n}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let user = ["v42"];
        let queries = [
            Query { entity: "user", fields: &user_fields, ids: &user },
            Query { entity: "venue", fields: &fields, ids: &ids },
        ];
        features.lookup(&queries, LONG).await;
        let rounds = 20_000;
        let started = Instant::now();
        for _ in 0..rounds {
            let lookup = features.lookup(&queries, LONG).await;
            assert_eq!(lookup.hits, 501);
        }
        let per = started.elapsed() / rounds;
        println!("warm lookup, 1 user + 500 candidates: {per:?} ({:?} per 100 ids)", per / 5);
    }
}
