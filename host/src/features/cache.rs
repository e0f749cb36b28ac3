//! The in-process cache in front of a store: `lru` shards, each behind its own lock, bounded by
//! entries and by estimated bytes, with the fetches in flight kept in the entries themselves so
//! that concurrent misses of one key make one fetch.
//!
//! An entry ([`Slot`]) holds the store's last answer for its key (an entity, or "absent") with
//! the instant it stops being fresh, and the fetch in flight for it, if any. An expired answer
//! stays until the LRU evicts it: when the refresh fails it is still the best there is.
//!
//! A key is (table, id), where a table is one (entity kind, field set) of the [`Features`]
//! (`super::Features`). Its hash is computed once and serves both to pick the shard and, passed
//! through, as the hash of the shard's map, so a hit hashes the id once and allocates nothing.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use lru::LruCache;
use prometheus::IntGauge;
use tokio::sync::Notify;

use super::{Entity, LookupFailure};

/// The store's answer for an id: an entity, or `None` when it has none.
pub(super) type Answer = Option<Arc<Entity>>;

/// What a fetch in flight ends with: one answer per position, or why there are none.
pub(super) type FlightResult = Result<Box<[Answer]>, LookupFailure>;

/// Bytes an entry costs beyond its id and entity: the key and slot inline, the LRU's node (two
/// links and the map's bucket) and the `Arc`'s counts.
const ENTRY_OVERHEAD: usize = size_of::<Key>() + size_of::<Slot>() + 3 * size_of::<usize>() + 16;

/// One fetch in flight: the answers for a set of keys, in the order of its positions.
pub(super) struct Flight {
    result: OnceLock<FlightResult>,
    done: Notify,
}

impl Flight {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Flight { result: OnceLock::new(), done: Notify::new() })
    }

    pub(super) fn is_done(&self) -> bool {
        self.result.get().is_some()
    }

    /// Waits until the fetch has ended.
    pub(super) async fn wait(&self) {
        loop {
            // Registered before the check, so a completion between the two is not missed.
            let notified = self.done.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }

    /// The answer at `at`, once the fetch has ended.
    pub(super) fn get(&self, at: u32) -> Option<Result<&Answer, &LookupFailure>> {
        Some(match self.result.get()? {
            Ok(answers) => Ok(&answers[at as usize]),
            Err(failure) => Err(failure),
        })
    }

    /// Ends the fetch (the first result wins) and wakes everyone waiting.
    pub(super) fn complete(&self, result: FlightResult) {
        let _ = self.result.set(result);
        self.done.notify_waiters();
    }
}

/// A key of the cache: the table, the id, and their hash.
pub(super) struct Key {
    hash: u64,
    table: u32,
    id: Box<str>,
}

/// A key as stored or as looked up (borrowing its id): what the shard's map hashes and compares.
trait KeyView {
    fn key_hash(&self) -> u64;
    fn table(&self) -> u32;
    fn id(&self) -> &str;
}

impl KeyView for Key {
    fn key_hash(&self) -> u64 {
        self.hash
    }
    fn table(&self) -> u32 {
        self.table
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// A key to look up, borrowing its id.
#[derive(Clone, Copy)]
pub(super) struct Probe<'a> {
    pub(super) hash: u64,
    pub(super) table: u32,
    pub(super) id: &'a str,
}

impl<'a> Probe<'a> {
    pub(super) fn new(table: u32, id: &'a str) -> Self {
        Probe { hash: xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), u64::from(table)), table, id }
    }

    fn to_key(self) -> Key {
        Key { hash: self.hash, table: self.table, id: self.id.into() }
    }
}

impl KeyView for Probe<'_> {
    fn key_hash(&self) -> u64 {
        self.hash
    }
    fn table(&self) -> u32 {
        self.table
    }
    fn id(&self) -> &str {
        self.id
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.key_hash());
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.table() == other.table() && self.id() == other.id()
    }
}

impl Eq for dyn KeyView + '_ {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn KeyView) == (other as &dyn KeyView)
    }
}

impl Eq for Key {}

/// The map's hasher: the key's hash is computed already, it passes through.
#[derive(Clone, Copy, Default)]
struct PassThrough;

struct PassThroughHasher(u64);

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

impl Hasher for PassThroughHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (by the `Hash` impls above); this keeps any other use sound.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The store's last answer for a key.
#[derive(Clone)]
struct Cached {
    answer: Answer,
    fresh_until: Instant,
}

/// A fetch in flight for a key: the flight and the key's position in it.
struct Pending {
    flight: Arc<Flight>,
    at: u32,
}

/// One entry.
struct Slot {
    cached: Option<Cached>,
    pending: Option<Pending>,
    /// The entry's estimated size, as counted in its shard.
    bytes: usize,
}

impl Slot {
    fn bytes(id: &str, answer: Option<&Answer>) -> usize {
        ENTRY_OVERHEAD + id.len() + answer.and_then(Option::as_ref).map_or(0, |e| e.bytes() + 16)
    }
}

struct Shard {
    lru: LruCache<Key, Slot, PassThrough>,
    bytes: usize,
}

/// What the cache says about a key.
pub(super) enum Status {
    /// A fresh answer.
    Fresh(Answer),
    /// A fetch is in flight for it (another lookup's, or this one's for a repeated id): wait for
    /// position `at` of `flight`. `stale` is the expired answer, if there is one.
    Wait { flight: Arc<Flight>, at: u32, stale: Option<Answer> },
    /// It is to be fetched at position `at` of this lookup's flight, which is now pending in the
    /// entry. `stale` is the expired answer, if there is one.
    Fetch { at: u32, stale: Option<Answer> },
}

/// The sharded cache.
pub(super) struct Cache {
    shards: Box<[Mutex<Shard>]>,
    max_shard_bytes: usize,
    entries: IntGauge,
    bytes: IntGauge,
}

impl Cache {
    /// A cache of at most `max_entries` entries and `max_bytes` bytes in `shards` shards, which
    /// keeps its size in the two gauges.
    pub(super) fn new(max_entries: usize, max_bytes: usize, shards: usize, entries: IntGauge, bytes: IntGauge) -> Self {
        // Every shard holds at least one entry, so there are never more shards than entries.
        let shards = shards.clamp(1, max_entries.max(1));
        let per_shard = NonZeroUsize::new(max_entries.div_ceil(shards)).unwrap_or(NonZeroUsize::MIN);
        Cache {
            shards: (0..shards)
                .map(|_| Mutex::new(Shard { lru: LruCache::with_hasher(per_shard, PassThrough), bytes: 0 }))
                .collect(),
            max_shard_bytes: max_bytes.div_ceil(shards),
            entries,
            bytes,
        }
    }

    fn index(&self, hash: u64) -> usize {
        // Bits the shard's map does not use for its buckets (low) or its tags (top 7).
        (hash >> 32) as usize % self.shards.len()
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock leaves its entries consistent (every change is one
        // call into the LRU), so a poisoned lock is used as is.
        self.shards[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        self.lock(self.index(hash))
    }

    /// Looks `key` up at `now`. When it must be fetched and no fetch is in flight, the entry
    /// becomes pending on `own` (created on first use) at position `*next`, which is incremented.
    #[cfg(test)]
    pub(super) fn lookup(&self, key: Probe<'_>, now: Instant, own: &mut Option<Arc<Flight>>, next: &mut u32) -> Status {
        let mut shard = self.shard(key.hash);
        self.lookup_in(&mut shard, key, now, own, next)
    }

    /// Looks every id of `table` up, as [`Cache::lookup`] does one, calling `each(i, status)` for
    /// `ids[i]` (in shard order, not in order of `ids`). Each shard is locked once.
    pub(super) fn lookup_all(
        &self,
        table: u32,
        ids: &[&str],
        now: Instant,
        own: &mut Option<Arc<Flight>>,
        next: &mut u32,
        mut each: impl FnMut(usize, Status),
    ) {
        let probes: Vec<Probe<'_>> = ids.iter().map(|id| Probe::new(table, id)).collect();
        if self.shards.len() == 1 || ids.len() < 4 {
            for (i, &key) in probes.iter().enumerate() {
                let mut shard = self.shard(key.hash);
                each(i, self.lookup_in(&mut shard, key, now, own, next));
            }
            return;
        }
        // A counting sort of the ids by shard: `order[starts[s]..starts[s + 1]]` are shard s's.
        let mut starts = vec![0u32; self.shards.len() + 1];
        for key in &probes {
            starts[self.index(key.hash) + 1] += 1;
        }
        for s in 1..starts.len() {
            starts[s] += starts[s - 1];
        }
        let mut fill = starts.clone();
        let mut order = vec![0u32; probes.len()];
        for (i, key) in probes.iter().enumerate() {
            let slot = &mut fill[self.index(key.hash)];
            order[*slot as usize] = i as u32;
            *slot += 1;
        }
        for s in 0..self.shards.len() {
            let range = starts[s] as usize..starts[s + 1] as usize;
            if range.is_empty() {
                continue;
            }
            let mut shard = self.lock(s);
            for &i in &order[range] {
                each(i as usize, self.lookup_in(&mut shard, probes[i as usize], now, own, next));
            }
        }
    }

    fn lookup_in(
        &self,
        shard: &mut Shard,
        key: Probe<'_>,
        now: Instant,
        own: &mut Option<Arc<Flight>>,
        next: &mut u32,
    ) -> Status {
        if let Some(slot) = shard.lru.get_mut(&key as &dyn KeyView) {
            if let Some(cached) = &slot.cached
                && cached.fresh_until > now
            {
                return Status::Fresh(cached.answer.clone());
            }
            let stale = slot.cached.as_ref().map(|c| c.answer.clone());
            if let Some(pending) = &slot.pending
                && !pending.flight.is_done()
            {
                return Status::Wait { flight: pending.flight.clone(), at: pending.at, stale };
            }
            let at = *next;
            *next += 1;
            slot.pending = Some(Pending { flight: own.get_or_insert_with(Flight::new).clone(), at });
            return Status::Fetch { at, stale };
        }
        let at = *next;
        *next += 1;
        let pending = Pending { flight: own.get_or_insert_with(Flight::new).clone(), at };
        let slot = Slot { cached: None, pending: Some(pending), bytes: Slot::bytes(key.id, None) };
        self.insert(shard, key.to_key(), slot);
        Status::Fetch { at, stale: None }
    }

    /// Stores what `flight` fetched for `key`, fresh until `fresh_until`.
    pub(super) fn fill(&self, key: Probe<'_>, flight: &Arc<Flight>, answer: Answer, fresh_until: Instant) {
        let mut shard = self.shard(key.hash);
        let bytes = Slot::bytes(key.id, Some(&answer));
        let cached = Some(Cached { answer, fresh_until });
        if let Some(slot) = shard.lru.peek_mut(&key as &dyn KeyView) {
            let old = std::mem::replace(&mut slot.bytes, bytes);
            slot.cached = cached;
            if slot.pending.as_ref().is_some_and(|p| Arc::ptr_eq(&p.flight, flight)) {
                slot.pending = None;
            }
            shard.bytes = shard.bytes + bytes - old;
            self.bytes.add(bytes as i64 - old as i64);
            self.shrink(&mut shard);
        } else {
            // Evicted while in flight: the answer is still worth keeping.
            self.insert(&mut shard, key.to_key(), Slot { cached, pending: None, bytes });
        }
    }

    /// Forgets that `flight` was fetching `key` (it failed): the expired answer, if any, stays.
    pub(super) fn abandon(&self, key: Probe<'_>, flight: &Arc<Flight>) {
        let mut shard = self.shard(key.hash);
        if let Some(slot) = shard.lru.peek_mut(&key as &dyn KeyView)
            && slot.pending.as_ref().is_some_and(|p| Arc::ptr_eq(&p.flight, flight))
        {
            slot.pending = None;
        }
    }

    fn insert(&self, shard: &mut Shard, key: Key, slot: Slot) {
        let bytes = slot.bytes;
        shard.bytes += bytes;
        self.bytes.add(bytes as i64);
        self.entries.inc();
        if let Some((_, out)) = shard.lru.push(key, slot) {
            // Either the LRU entry, evicted to make room, or a former entry of the same key.
            shard.bytes -= out.bytes;
            self.bytes.sub(out.bytes as i64);
            self.entries.dec();
        }
        self.shrink(shard);
    }

    /// Evicts least recently used entries until the shard is within its bytes.
    fn shrink(&self, shard: &mut Shard) {
        while shard.bytes > self.max_shard_bytes {
            let Some((_, out)) = shard.lru.pop_lru() else { break };
            shard.bytes -= out.bytes;
            self.bytes.sub(out.bytes as i64);
            self.entries.dec();
        }
    }

    /// Whether `key` has a fresh answer at `now`, without touching the LRU order (for tests).
    #[cfg(test)]
    pub(super) fn has_fresh(&self, key: Probe<'_>, now: Instant) -> bool {
        let shard = self.shard(key.hash);
        shard.lru.peek(&key as &dyn KeyView).and_then(|s| s.cached.as_ref()).is_some_and(|c| c.fresh_until > now)
    }

    /// The number of entries (for tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().lru.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cache(max_entries: usize, max_bytes: usize, shards: usize) -> Cache {
        Cache::new(max_entries, max_bytes, shards, IntGauge::new("e", "e").unwrap(), IntGauge::new("b", "b").unwrap())
    }

    fn entity(value: f32) -> Answer {
        Some(Arc::new(Entity { values: Box::new([value]), ..Entity::default() }))
    }

    /// Looks `id` up and, if it is to be fetched, fills it with `answer` as a fetch would.
    fn put(cache: &Cache, id: &str, answer: Answer, now: Instant, ttl: Duration) {
        let (mut own, mut next) = (None, 0);
        if let Status::Fetch { .. } = cache.lookup(Probe::new(0, id), now, &mut own, &mut next) {
            cache.fill(Probe::new(0, id), own.as_ref().unwrap(), answer, now + ttl);
        }
    }

    fn fresh(cache: &Cache, id: &str, now: Instant) -> Option<Answer> {
        let (mut own, mut next) = (None, 0);
        match cache.lookup(Probe::new(0, id), now, &mut own, &mut next) {
            Status::Fresh(answer) => Some(answer),
            Status::Fetch { .. } => {
                cache.abandon(Probe::new(0, id), own.as_ref().unwrap());
                None
            }
            Status::Wait { .. } => None,
        }
    }

    #[test]
    fn the_least_recently_used_entry_goes_first_when_entries_are_full() {
        let cache = cache(2, 1 << 20, 1);
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        put(&cache, "a", entity(1.0), now, ttl);
        put(&cache, "b", entity(2.0), now, ttl);
        assert!(fresh(&cache, "a", now).is_some()); // a is now the most recently used
        put(&cache, "c", entity(3.0), now, ttl);
        assert_eq!(cache.len(), 2);
        assert!(!cache.has_fresh(Probe::new(0, "b"), now));
        assert!(cache.has_fresh(Probe::new(0, "a"), now) && cache.has_fresh(Probe::new(0, "c"), now));
        assert_eq!(cache.entries.get(), 2);
    }

    #[test]
    fn entries_are_evicted_until_the_bytes_fit() {
        let big = |n: usize| Some(Arc::new(Entity { values: vec![0.0; n].into(), ..Entity::default() }));
        let one = Slot::bytes("a", Some(&big(1000)));
        let cache = cache(1000, one * 3 + one / 2, 1);
        let now = Instant::now();
        for id in ["a", "b", "c", "d", "e"] {
            put(&cache, id, big(1000), now, Duration::from_secs(60));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.bytes.get() as usize <= one * 3 + one / 2);
        assert!(!cache.has_fresh(Probe::new(0, "a"), now) && !cache.has_fresh(Probe::new(0, "b"), now));
        assert!(cache.has_fresh(Probe::new(0, "e"), now));
        // Small entries fit many more.
        put(&cache, "small", entity(1.0), now, Duration::from_secs(60));
        assert!(fresh(&cache, "small", now).is_some());
    }

    #[test]
    fn an_entry_is_fresh_until_its_ttl_then_to_be_fetched_with_its_stale_answer() {
        let cache = cache(10, 1 << 20, 2);
        let now = Instant::now();
        put(&cache, "a", entity(1.0), now, Duration::from_secs(10));
        assert!(fresh(&cache, "a", now + Duration::from_secs(9)).is_some());
        let (mut own, mut next) = (None, 0);
        match cache.lookup(Probe::new(0, "a"), now + Duration::from_secs(10), &mut own, &mut next) {
            Status::Fetch { at: 0, stale: Some(Some(stale)) } => assert_eq!(stale.values[0], 1.0),
            _ => panic!("an expired entry is to be fetched, with its stale answer"),
        }
        // A second lookup waits for that fetch rather than making its own.
        let (mut other, mut other_next) = (None, 0);
        match cache.lookup(Probe::new(0, "a"), now + Duration::from_secs(10), &mut other, &mut other_next) {
            Status::Wait { at: 0, stale: Some(Some(_)), .. } => assert!(other.is_none()),
            _ => panic!("a key in flight is waited for"),
        }
    }

    #[test]
    fn tables_are_separate_keys() {
        let cache = cache(10, 1 << 20, 4);
        let now = Instant::now();
        put(&cache, "a", entity(1.0), now, Duration::from_secs(10));
        let (mut own, mut next) = (None, 0);
        assert!(matches!(cache.lookup(Probe::new(1, "a"), now, &mut own, &mut next), Status::Fetch { .. }));
    }

    #[tokio::test]
    async fn waiters_wake_when_the_flight_completes() {
        let flight = Flight::new();
        let waiter = tokio::spawn({
            let flight = flight.clone();
            async move {
                flight.wait().await;
                flight.get(0).unwrap().unwrap().clone()
            }
        });
        tokio::task::yield_now().await;
        flight.complete(Ok(vec![entity(7.0)].into()));
        assert_eq!(waiter.await.unwrap().unwrap().values[0], 7.0);
        // Waiting on a completed flight returns at once.
        flight.wait().await;
    }
}
