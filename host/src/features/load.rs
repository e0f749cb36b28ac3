//! The loader: a [feature file](super::file) into Redis (`relish features load FILE --store URL`).
//!
//! The file is streamed: a thread reads and checks it and packs batches of entities (1000 by
//! default), each one pipeline in a `MULTI`/`EXEC` transaction, while the caller's task keeps a
//! few of them in flight on one connection. For every entity the batch has `DEL key` then
//! `HSET key field value ...` (its features, and `_tags`), so loading is idempotent: loading a
//! file twice gives the same state, and a feature left out of the new file is gone. Being in one
//! transaction, no reader ever sees an entity between its `DEL` and its `HSET` (which it would
//! otherwise cache as absent). Entities that are not in the file are left as they are.
//!
//! Values are written as the shortest decimal text that reads back as the same `f32` (`{}` of the
//! `f32`), or as 4 little-endian bytes for a store configured `encoding = "f32le"`.
//!
//! Batches are sent in file order and a connection answers in order, so when an id appears twice
//! in a file its later line wins, as in the memory backend.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use ::redis::{AsyncConnectionConfig, Pipeline, RedisResult};
use anyhow::Context as _;
use tokio::sync::mpsc;

use super::TAGS_FIELD;
use super::config::Encoding;
use super::file::{FileError, Record, Records};

/// How to load.
pub struct LoadOptions {
    /// Entities per pipeline (default 1000).
    pub batch: usize,
    /// Pipelines in flight at once (default 4).
    pub in_flight: usize,
    /// How values are written (default decimal text).
    pub encoding: Encoding,
    /// Skip bad lines (reported in [`LoadReport::errors`]) instead of stopping at the first.
    pub skip_bad_lines: bool,
    /// Called after every batch Redis has applied.
    pub progress: Option<OnProgress>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { batch: 1000, in_flight: 4, encoding: Encoding::Decimal, skip_bad_lines: false, progress: None }
    }
}

/// What [`LoadOptions::progress`] calls.
pub type OnProgress = Box<dyn FnMut(&Progress) + Send>;

/// How far a load is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Entities written so far.
    pub entities: u64,
    /// Bytes of the file read so far.
    pub bytes: u64,
    /// Bytes of the file.
    pub total_bytes: u64,
    /// Time since the load started.
    pub elapsed: Duration,
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Entities written.
    pub entities: u64,
    /// Feature values written.
    pub values: u64,
    /// Bad lines skipped (with [`LoadOptions::skip_bad_lines`]).
    pub bad_lines: u64,
    /// The first few bad lines, `file:line: what is wrong`.
    pub errors: Vec<String>,
    /// How long it took.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Entities written per second.
    pub fn per_second(&self) -> f64 {
        self.entities as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Bad lines kept in [`LoadReport::errors`].
const ERRORS_KEPT: usize = 20;

/// One pipeline's worth of entities.
struct Batch {
    pipe: Pipeline,
    entities: u64,
    values: u64,
    /// Bytes of the file read when the batch was packed.
    bytes: u64,
}

enum Message {
    Batch(Batch),
    Failed(FileError),
    Done { bad_lines: u64, errors: Vec<String> },
}

/// Loads `path` into the Redis at `url`, under keys `{prefix}:{entity}:{id}`.
pub async fn load(path: &Path, url: &str, prefix: &str, mut options: LoadOptions) -> anyhow::Result<LoadReport> {
    let started = Instant::now();
    let total_bytes = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?.len();
    let records = Records::open(path)?;
    let client = ::redis::Client::open(url).with_context(|| format!("{url}: not a Redis URL"))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(60)));
    let connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("cannot connect to Redis at {url}"))?;

    let in_flight = options.in_flight.max(1);
    let (sender, mut receiver) = mpsc::channel(in_flight);
    let packer = Packer { prefix: prefix.to_owned(), encoding: options.encoding, batch: options.batch.max(1) };
    let skip = options.skip_bad_lines;
    let reader = std::thread::Builder::new()
        .name("relish-features-load".into())
        .spawn(move || packer.run(records, skip, &sender))?;

    let mut report = LoadReport::default();
    let mut pending: VecDeque<(Sent, Batch)> = VecDeque::new();
    let mut done = false;
    while !done || !pending.is_empty() {
        if !done && pending.len() < in_flight {
            match receiver.recv().await {
                Some(Message::Batch(mut batch)) => {
                    let pipe = std::mem::take(&mut batch.pipe);
                    let mut connection = connection.clone();
                    let mut sent: Sent = Box::pin(async move { pipe.query_async::<()>(&mut connection).await });
                    // Polled once now, so that batches go out in file order whatever the runtime
                    // does with the rest.
                    let first = std::future::poll_fn(|cx| Poll::Ready(sent.as_mut().poll(cx))).await;
                    if let Poll::Ready(result) = first {
                        result.context("Redis refused a batch")?;
                        sent = Box::pin(std::future::ready(Ok(())));
                    }
                    pending.push_back((sent, batch));
                    continue;
                }
                Some(Message::Failed(error)) => return Err(error.into()),
                Some(Message::Done { bad_lines, errors }) => {
                    (report.bad_lines, report.errors) = (bad_lines, errors);
                    done = true;
                    continue;
                }
                None => done = true,
            }
        }
        let Some((sent, batch)) = pending.pop_front() else { break };
        sent.await.with_context(|| format!("writing to Redis at {url}"))?;
        report.entities += batch.entities;
        report.values += batch.values;
        if let Some(progress) = &mut options.progress {
            progress(&Progress {
                entities: report.entities,
                bytes: batch.bytes,
                total_bytes,
                elapsed: started.elapsed(),
            });
        }
    }
    reader.join().map_err(|_| anyhow::anyhow!("the file reader panicked"))?;
    report.elapsed = started.elapsed();
    Ok(report)
}

type Sent = Pin<Box<dyn Future<Output = RedisResult<()>> + Send>>;

/// Packs records into batches, on the reader thread.
struct Packer {
    prefix: String,
    encoding: Encoding,
    batch: usize,
}

impl Packer {
    fn run(self, mut records: Records, skip: bool, sender: &mpsc::Sender<Message>) {
        let (mut bad_lines, mut errors) = (0, Vec::new());
        let mut batch = self.empty();
        let (mut key, mut text) = (String::new(), String::new());
        loop {
            let record = match records.next() {
                Some(Ok(record)) => record,
                Some(Err(error @ FileError::Line { .. })) if skip => {
                    bad_lines += 1;
                    if errors.len() < ERRORS_KEPT {
                        errors.push(error.to_string());
                    }
                    continue;
                }
                Some(Err(error)) => {
                    let _ = sender.blocking_send(Message::Failed(error));
                    return;
                }
                None => break,
            };
            self.add(&mut batch, &record, &mut key, &mut text);
            if batch.entities as usize >= self.batch {
                batch.bytes = records.bytes_read();
                if sender.blocking_send(Message::Batch(std::mem::replace(&mut batch, self.empty()))).is_err() {
                    return;
                }
            }
        }
        if batch.entities > 0 {
            batch.bytes = records.bytes_read();
            if sender.blocking_send(Message::Batch(batch)).is_err() {
                return;
            }
        }
        let _ = sender.blocking_send(Message::Done { bad_lines, errors });
    }

    fn empty(&self) -> Batch {
        let mut pipe = Pipeline::with_capacity(2 * self.batch);
        pipe.atomic();
        Batch { pipe, entities: 0, values: 0, bytes: 0 }
    }

    fn add(&self, batch: &mut Batch, record: &Record, key: &mut String, text: &mut String) {
        key.clear();
        let _ = write!(key, "{}:{}:{}", self.prefix, record.entity, record.id);
        batch.pipe.cmd("DEL").arg(&*key).ignore();
        if !record.features.is_empty() || record.tags.is_some() {
            batch.pipe.cmd("HSET").arg(&*key);
            for (name, value) in &record.features {
                batch.pipe.arg(name.as_str());
                match self.encoding {
                    Encoding::Decimal => {
                        text.clear();
                        // `{}` of an f32 is the shortest text that reads back as the same f32.
                        let _ = write!(text, "{value}");
                        batch.pipe.arg(&*text);
                    }
                    Encoding::F32le => {
                        batch.pipe.arg(&value.to_le_bytes()[..]);
                    }
                }
            }
            if let Some(list) = &record.tags {
                let tags = serde_json::to_string(list).expect("strings serialise");
                batch.pipe.arg(TAGS_FIELD).arg(tags);
            }
            batch.pipe.ignore();
        }
        batch.entities += 1;
        batch.values += record.features.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::features::redis::tests::{Prefix, URL};

    fn hgetall(prefix: &Prefix, entity: &str, id: &str) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = ::redis::cmd("HGETALL")
            .arg(format!("{}:{entity}:{id}", prefix.prefix))
            .query(&mut prefix.connection())
            .unwrap();
        all.sort();
        all
    }

    #[tokio::test]
    async fn loading_is_idempotent_and_a_removed_feature_is_gone() {
        let prefix = Prefix::new(URL);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"entity": "venue", "id": "v1", "features": {"rating": 4.5, "eta_min": 25, "tiny": 1e-7}, "#,
                r#""tags": ["pizza", "it\"alian"]}"#,
                "\n",
                r#"{"entity": "user", "id": "u1", "features": {"affinity.pizza": 0.1}}"#,
                "\n",
            ),
        )
        .unwrap();
        let first = load(&path, URL, &prefix.prefix, LoadOptions::default()).await.unwrap();
        assert_eq!((first.entities, first.values), (2, 4));
        let expected = vec![
            ("_tags".to_owned(), r#"["pizza","it\"alian"]"#.to_owned()),
            ("eta_min".to_owned(), "25".to_owned()),
            ("rating".to_owned(), "4.5".to_owned()),
            ("tiny".to_owned(), "0.0000001".to_owned()),
        ];
        assert_eq!(hgetall(&prefix, "venue", "v1"), expected);
        assert_eq!(hgetall(&prefix, "user", "u1"), [("affinity.pizza".to_owned(), "0.1".to_owned())]);
        // Again: the same state.
        load(&path, URL, &prefix.prefix, LoadOptions::default()).await.unwrap();
        assert_eq!(hgetall(&prefix, "venue", "v1"), expected);
        // Without eta_min and tags: they are gone.
        std::fs::write(&path, r#"{"entity": "venue", "id": "v1", "features": {"rating": 4}}"#).unwrap();
        load(&path, URL, &prefix.prefix, LoadOptions::default()).await.unwrap();
        assert_eq!(hgetall(&prefix, "venue", "v1"), [("rating".to_owned(), "4".to_owned())]);
        assert_eq!(hgetall(&prefix, "user", "u1").len(), 1, "entities not in the file stay");
    }

    #[tokio::test]
    async fn a_bad_line_stops_the_load_unless_skipped() {
        let prefix = Prefix::new(URL);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.csv");
        std::fs::write(&path, "entity,id,rating\nvenue,v1,4\nvenue,v2,1e39\nvenue,v3,2\n").unwrap();
        let error = load(&path, URL, &prefix.prefix, LoadOptions::default()).await.unwrap_err().to_string();
        assert!(error.contains("features.csv:3: feature `rating`"), "{error}");
        let options = LoadOptions { skip_bad_lines: true, ..LoadOptions::default() };
        let report = load(&path, URL, &prefix.prefix, options).await.unwrap();
        assert_eq!((report.entities, report.bad_lines), (2, 1));
        assert!(report.errors[0].contains(":3:"), "{:?}", report.errors);
        assert_eq!(hgetall(&prefix, "venue", "v3"), [("rating".to_owned(), "2".to_owned())]);
    }

    #[tokio::test]
    async fn a_later_line_wins_and_progress_is_reported_per_batch() {
        let prefix = Prefix::new(URL);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.jsonl");
        let mut text = String::new();
        for n in 0..2500 {
            let _ = writeln!(text, r#"{{"entity": "venue", "id": "v{}", "features": {{"n": {n}}}}}"#, n % 2000);
        }
        std::fs::write(&path, &text).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let progress = {
            let seen = seen.clone();
            Box::new(move |p: &Progress| seen.lock().unwrap().push(p.entities))
        };
        let options = LoadOptions { batch: 100, in_flight: 3, progress: Some(progress), ..LoadOptions::default() };
        let report = load(&path, URL, &prefix.prefix, options).await.unwrap();
        assert_eq!(report.entities, 2500);
        assert_eq!(seen.lock().unwrap().len(), 25);
        assert_eq!(*seen.lock().unwrap().last().unwrap(), 2500);
        for (id, n) in [(0, 2000), (499, 2499), (1000, 1000)] {
            assert_eq!(hgetall(&prefix, "venue", &format!("v{id}")), [("n".to_owned(), format!("{n}"))]);
        }
    }

    /// Loads 100 000 venues and 1 000 000 users and prints the rate (run with `--ignored
    /// --nocapture`; in release for the production figure).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a test"]
    async fn load_rate() {
        let prefix = Prefix::new(URL);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("features.jsonl");
        let mut text = String::with_capacity(120 << 20);
        for n in 0..100_000 {
            let _ = writeln!(
                text,
                concat!(
                    r#"{{"entity":"venue","id":"venue-{}","features":"#,
                    r#"{{"rating":{},"eta_min":{},"price":{}}},"tags":["t{}"]}}"#
                ),
                n,
                (n % 50) as f32 / 10.0,
                n % 60,
                n % 4,
                n % 20
            );
        }
        for n in 0..1_000_000 {
            let _ = writeln!(
                text,
                concat!(
                    r#"{{"entity":"user","id":"u-{}","features":"#,
                    r#"{{"affinity.pizza":{},"affinity.sushi":{},"orders":{}}}}}"#
                ),
                n,
                (n % 100) as f32 / 100.0,
                (n % 7) as f32 / 7.0,
                n % 30
            );
        }
        std::fs::write(&path, &text).unwrap();
        let report = load(&path, URL, &prefix.prefix, LoadOptions::default()).await.unwrap();
        println!(
            "loaded {} entities ({} values, {} MB) in {:.2?}: {:.0} entities/s",
            report.entities,
            report.values,
            text.len() >> 20,
            report.elapsed,
            report.per_second()
        );
    }
}
