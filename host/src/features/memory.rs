//! The memory backend: a [feature file](super::file) read at startup and read again when it
//! changes, for a machine without Redis (the README's first command).
//!
//! A thread of its own checks the file's modification time and length every `poll_ms` (default
//! 1 s). A file that reads whole replaces what was served, at once (an `ArcSwap`); one with a bad
//! line is refused whole, logged with `file:line` and counted
//! (`relish_feature_reloads_total{outcome="error"}`), and the previous data stays until the file
//! changes again. Write the file elsewhere and rename it into place, so that a half-written file
//! is never read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus::IntCounterVec;

use super::file::{FileError, Records};
use super::{Entity, FetchFuture, Fetched, FieldSet, Query, Store};

/// A memory feature store.
pub struct MemoryStore {
    data: Arc<ArcSwap<Data>>,
    path: PathBuf,
}

/// What a file holds: by entity kind, by id.
#[derive(Default)]
struct Data {
    entities: HashMap<Box<str>, HashMap<Box<str>, Stored>>,
}

/// One entity.
struct Stored {
    /// Sorted by name.
    features: Box<[(Box<str>, f32)]>,
    tags: Option<Box<[Box<str>]>>,
}

impl Data {
    fn read(path: &Path) -> Result<(Data, usize), FileError> {
        let mut data = Data::default();
        let mut count = 0;
        for record in Records::open(path)? {
            let record = record?;
            let stored = Stored {
                features: record.features.into_iter().map(|(name, value)| (name.into_boxed_str(), value)).collect(),
                tags: record.tags.map(|tags| tags.into_iter().map(String::into_boxed_str).collect()),
            };
            let ids = data.entities.entry(record.entity.into_boxed_str()).or_default();
            // A later line for the same id wins, as it does when loading into Redis.
            ids.insert(record.id.into_boxed_str(), stored);
            count += 1;
        }
        Ok((data, count))
    }
}

impl Stored {
    fn get(&self, name: &str) -> Option<f32> {
        self.features.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|i| self.features[i].1)
    }

    fn entity(&self, fields: &FieldSet) -> Entity {
        let values = fields.names.iter().map(|name| self.get(name).unwrap_or(f32::NAN)).collect();
        let mut prefixed: Vec<(Box<str>, f32)> = Vec::new();
        for prefix in &fields.prefixes {
            let start = self.features.partition_point(|(n, _)| **n < **prefix);
            let matching = self.features[start..].iter().take_while(|(n, _)| n.starts_with(prefix.as_str()));
            prefixed.extend(matching.cloned());
        }
        if fields.prefixes.len() > 1 {
            prefixed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            prefixed.dedup_by(|a, b| a.0 == b.0);
        }
        let tags = if fields.tags { self.tags.clone() } else { None };
        Entity { values, prefixed: prefixed.into(), tags }
    }
}

/// The file's identity as far as change goes.
fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path)?;
    Ok((metadata.modified()?, metadata.len()))
}

impl MemoryStore {
    /// Reads `path` and watches it every `poll`; `reloads` counts reloads by outcome. `name` is the
    /// store's name, for logs.
    pub fn open(name: &str, path: &Path, poll: Duration, reloads: IntCounterVec) -> anyhow::Result<Self> {
        let last = stamp(path).map_err(|e| anyhow::anyhow!("path: cannot read {}: {e}", path.display()))?;
        let (data, count) = Data::read(path).map_err(|e| anyhow::anyhow!("path: {e}"))?;
        tracing::info!(store = name, path = %path.display(), entities = count, "feature file loaded");
        let data = Arc::new(ArcSwap::from_pointee(data));
        let watch =
            Watch { name: name.to_owned(), path: path.to_owned(), poll, last, data: Arc::downgrade(&data), reloads };
        std::thread::Builder::new().name(format!("relish-features-{name}")).spawn(move || watch.run())?;
        Ok(MemoryStore { data, path: path.to_owned() })
    }

    /// The file served.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The thread that reads the file again when it changes.
struct Watch {
    name: String,
    path: PathBuf,
    poll: Duration,
    /// The file's stamp when it was last read (successfully or not).
    last: (SystemTime, u64),
    /// What is served; gone with the store, and then so is the watch.
    data: Weak<ArcSwap<Data>>,
    reloads: IntCounterVec,
}

impl Watch {
    fn run(mut self) {
        let mut unreadable = false;
        loop {
            std::thread::sleep(self.poll);
            let Some(data) = self.data.upgrade() else { return };
            let (name, path) = (&self.name, self.path.display());
            match stamp(&self.path) {
                Err(e) => {
                    if !unreadable {
                        tracing::warn!(store = %name, %path, "feature file unreadable, serving what was loaded: {e}");
                    }
                    unreadable = true;
                }
                Ok(now) if now != self.last => {
                    unreadable = false;
                    self.last = now;
                    match Data::read(&self.path) {
                        Ok((fresh, entities)) => {
                            data.store(Arc::new(fresh));
                            self.reloads.with_label_values(&["ok"]).inc();
                            tracing::info!(store = %name, %path, entities, "feature file reloaded");
                        }
                        Err(e) => {
                            self.reloads.with_label_values(&["error"]).inc();
                            tracing::warn!(store = %name, "feature file not reloaded, serving what was loaded before: {e}");
                        }
                    }
                }
                Ok(_) => unreadable = false,
            }
        }
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn fetch<'a>(&'a self, batch: &'a [Query<'a>]) -> FetchFuture<'a> {
        let data = self.data.load();
        let answers = batch
            .iter()
            .map(|query| {
                let ids = data.entities.get(query.entity);
                query
                    .ids
                    .iter()
                    .map(|id| match ids.and_then(|ids| ids.get(*id)) {
                        Some(stored) => Fetched::Found(stored.entity(query.fields)),
                        None => Fetched::Absent,
                    })
                    .collect()
            })
            .collect();
        Box::pin(std::future::ready(Ok(answers)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::features::{Features, StoreConfig};

    fn reloads() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("r", "r"), &["outcome"]).unwrap()
    }

    /// Writes `text` to `path` the safe way: elsewhere, then renamed into place.
    fn write(path: &Path, text: &str) {
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, path).unwrap();
    }

    async fn rating(store: &MemoryStore, id: &str) -> Option<f32> {
        let fields = Arc::new(FieldSet::new(vec!["rating".into()], vec![], false));
        match store.fetch(&[Query { entity: "venue", fields: &fields, ids: &[id] }]).await.unwrap().remove(0).remove(0)
        {
            Fetched::Found(entity) => Some(entity.values[0]),
            Fetched::Absent => None,
        }
    }

    async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let started = Instant::now();
        while !done().await {
            assert!(started.elapsed() < Duration::from_secs(5), "{what}: not within 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_file_is_served_and_reloaded_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.jsonl");
        write(&path, "{\"entity\": \"venue\", \"id\": \"v1\", \"features\": {\"rating\": 4.5}}\n");
        let reloads = reloads();
        let store = MemoryStore::open("test", &path, Duration::from_millis(20), reloads.clone()).unwrap();
        assert_eq!((rating(&store, "v1").await, rating(&store, "v2").await), (Some(4.5), None));
        write(&path, "{\"entity\": \"venue\", \"id\": \"v2\", \"features\": {\"rating\": 3}}\n");
        eventually("reloaded", async || rating(&store, "v2").await == Some(3.0)).await;
        assert_eq!(rating(&store, "v1").await, None);
        assert_eq!(reloads.with_label_values(&["ok"]).get(), 1);
    }

    #[tokio::test]
    async fn a_bad_file_keeps_the_data_that_was_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.csv");
        write(&path, "entity,id,rating\nvenue,v1,4.5\n");
        let reloads = reloads();
        let store = MemoryStore::open("test", &path, Duration::from_millis(20), reloads.clone()).unwrap();
        write(&path, "entity,id,rating\nvenue,v1,1\nvenue,v2,pizza\n");
        eventually("refused", async || reloads.with_label_values(&["error"]).get() == 1).await;
        assert_eq!(rating(&store, "v1").await, Some(4.5));
        // Fixed: read again.
        write(&path, "entity,id,rating\nvenue,v1,2\n");
        eventually("reloaded", async || rating(&store, "v1").await == Some(2.0)).await;
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(rating(&store, "v1").await, Some(2.0));
    }

    #[test]
    fn a_bad_file_at_startup_is_an_error_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.jsonl");
        write(
            &path,
            concat!(
                "{\"entity\": \"venue\", \"id\": \"v1\"}\n",
                "{\"entity\": \"venue\", \"id\": \"v2\", \"features\": {\"x\": 1e39}}\n",
            ),
        );
        let error = MemoryStore::open("test", &path, Duration::from_secs(1), reloads()).err().unwrap().to_string();
        assert!(error.contains("features.jsonl:2: feature `x`"), "{error}");
        let error = MemoryStore::open("test", &dir.path().join("none.jsonl"), Duration::from_secs(1), reloads())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("none.jsonl"), "{error}");
    }

    #[tokio::test]
    async fn prefixes_names_and_tags_come_from_the_file_through_features() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.jsonl");
        write(
            &path,
            concat!(
                r#"{"entity": "user", "id": "u1", "#,
                r#""features": {"affinity.pizza": 0.8, "affinity.sushi": 0.1, "age": 30, "b": 1}}"#,
                "\n",
                r#"{"entity": "venue", "id": "v1", "features": {"rating": 4.5}, "tags": ["pizza"]}"#,
                "\n"
            ),
        );
        let features = Features::new("local", &StoreConfig::memory(&path), &prometheus::Registry::new()).unwrap();
        assert_eq!(features.kind(), "memory");
        let user = Arc::new(FieldSet::from_patterns(["age", "affinity.*", "affinity.p*"], false));
        let venue = Arc::new(FieldSet::new(vec!["rating".into(), "eta".into()], vec![], true));
        let lookup = features
            .lookup(
                &[
                    Query { entity: "user", fields: &user, ids: &["u1"] },
                    Query { entity: "venue", fields: &venue, ids: &["v1", "v9"] },
                ],
                Duration::from_secs(1),
            )
            .await;
        let u1 = lookup.found[0][0].as_ref().unwrap();
        assert_eq!(&*u1.values, [30.0]);
        assert_eq!(&*u1.prefixed, [(Box::from("affinity.pizza"), 0.8), (Box::from("affinity.sushi"), 0.1)]);
        let v1 = lookup.found[1][0].as_ref().unwrap();
        assert_eq!((v1.values[0], v1.values[1].is_nan()), (4.5, true));
        assert_eq!(v1.tags.as_deref(), Some(&[Box::from("pizza")][..]));
        assert!(lookup.found[1][1].is_none());
    }
}
