//! The decision log: a sampled record of every answer, written off the response path.
//!
//! A surface logs a share of its users (`log_sample`, by a stable hash of the same key that
//! assigns arms, so a sampled user is sampled on every request). The handler hands the decision
//! (the request as the policy saw it, shared, not copied; the answer; the arm) to a bounded queue
//! and goes on: when the queue is full the record is dropped and counted, never waited for. One
//! writer thread masks, serialises and appends records to gzip-compressed JSONL files in the
//! data directory, rotated by size and age, flushed every `flush_ms` (so a host killed loses at
//! most that much, and the file reads back up to its last flush: a torn tail is skipped with a
//! count), finished on a graceful shutdown. The record's fields are in `docs/decision-log.md`.

pub mod ope;
pub mod record;
pub mod replay;
pub mod stream;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use flate2::read::MultiGzDecoder;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Deserialize;

use self::record::{Answer, LoggedArm, LoggedFallback, LoggedRequest, Record};
use crate::runtime::{self, Ranking, types};
use crate::serving::Decision;

/// `[decision_log]`: where and how decisions are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The directory (relative paths are under the data directory).
    pub dir: PathBuf,
    /// A file is finished and a new one started beyond this size (compressed), in MiB.
    pub max_file_mb: u64,
    /// ... or when it is this old, in seconds.
    pub max_file_secs: u64,
    /// The most finished files kept; the oldest are removed beyond.
    pub keep_files: usize,
    /// Records waiting for the writer; beyond, records are dropped and counted.
    pub queue: usize,
    /// ... and the most memory they may hold, in MiB (a queued record keeps its request alive:
    /// 8,192 requests of 500 candidates would be 2 GB).
    pub queue_mb: usize,
    /// How often the writer flushes what it has written (what a killed host can lose).
    pub flush_ms: u64,
    /// The key of masking's `hash` rule (a keyed hash: without the key, a hashed user id cannot
    /// be found by hashing candidate ids). Set it, and keep it secret.
    pub hash_key: String,
    /// On a fleet host, the JetStream stream every record is also published to (`""`: none).
    pub stream: String,
    /// Its subjects: `<stream_subject>.<surface>`.
    pub stream_subject: String,
    /// How long the stream keeps records, in hours.
    pub stream_max_age_hours: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            dir: PathBuf::from("decisions"),
            max_file_mb: 64,
            max_file_secs: 3600,
            keep_files: 168,
            queue: 8192,
            queue_mb: 64,
            flush_ms: 1000,
            hash_key: String::new(),
            stream: "relish-decisions".to_owned(),
            stream_subject: "relish.decisions".to_owned(),
            stream_max_age_hours: 24 * 7,
        }
    }
}

impl LogConfig {
    /// Checks ranges; the error names the field under `decision_log.`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=4096).contains(&self.max_file_mb) {
            return Err(("max_file_mb", "must be between 1 and 4096".to_owned()));
        }
        if !(1..=86_400).contains(&self.max_file_secs) {
            return Err(("max_file_secs", "must be between 1 and 86400".to_owned()));
        }
        if self.keep_files == 0 {
            return Err(("keep_files", "must be at least 1".to_owned()));
        }
        if !(1..=1_000_000).contains(&self.queue) {
            return Err(("queue", "must be between 1 and 1000000".to_owned()));
        }
        if !(1..=65_536).contains(&self.queue_mb) {
            return Err(("queue_mb", "must be between 1 and 65536".to_owned()));
        }
        if !(10..=60_000).contains(&self.flush_ms) {
            return Err(("flush_ms", "must be between 10 and 60000".to_owned()));
        }
        let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !self.stream.is_empty() && !token(&self.stream) {
            return Err(("stream", format!("`{}` is not a stream name: use a-z A-Z 0-9 - _", self.stream)));
        }
        if !self.stream_subject.split('.').all(token) {
            return Err((
                "stream_subject",
                format!("`{}` is not a subject like relish.decisions", self.stream_subject),
            ));
        }
        if !(1..=24 * 365).contains(&self.stream_max_age_hours) {
            return Err(("stream_max_age_hours", "must be between 1 and 8760".to_owned()));
        }
        Ok(())
    }
}

/// A field masking can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MaskField {
    /// `user.id`.
    UserId,
    /// `user.features`.
    UserFeatures,
    /// `context.country`.
    Country,
    /// `context.city`.
    City,
    /// `context.locale`.
    Locale,
    /// `context.latitude` and `context.longitude` (`context.location`).
    Location,
    /// `context.device`.
    Device,
    /// `cart.items`.
    CartItems,
}

/// Every maskable field by its name in the configuration.
pub const MASK_FIELDS: [(&str, MaskField); 8] = [
    ("user.id", MaskField::UserId),
    ("user.features", MaskField::UserFeatures),
    ("context.country", MaskField::Country),
    ("context.city", MaskField::City),
    ("context.locale", MaskField::Locale),
    ("context.location", MaskField::Location),
    ("context.device", MaskField::Device),
    ("cart.items", MaskField::CartItems),
];

/// What masking does to a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskRule {
    /// Leave it out of the record.
    Drop,
    /// Replace each string by a keyed hash of it (`h:` and 16 hex digits): records of one user
    /// still join, the id does not show. Numbers are dropped.
    Hash,
}

/// A surface's logging: the share of keys sampled and the masking, resolved once per binding.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// Sampled when `sample_bucket(key) < threshold`, of 10,000.
    pub threshold: u16,
    /// Masking, by field.
    pub mask: BTreeMap<MaskField, MaskRule>,
}

impl LogSettings {
    /// Whether the request with this key (`user.id`, else `bucket_key`) or, without one, this
    /// seed is logged.
    pub fn sampled(&self, surface: &str, key: Option<&str>, seed: u64) -> bool {
        self.threshold > 0 && sample_bucket(surface, key, seed) < self.threshold
    }
}

/// The sampling bucket: `xxh3_64("relish-log\n" + surface + "\n" + key) mod 10_000` (XXH3, 64
/// bits, seed 0), or `seed mod 10_000` without a key. Like the arm's bucket but its own, so that
/// which users are logged does not depend on which arm they are in.
pub fn sample_bucket(surface: &str, key: Option<&str>, seed: u64) -> u16 {
    match key {
        Some(key) => {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            hasher.update(b"relish-log\n");
            hasher.update(surface.as_bytes());
            hasher.update(b"\n");
            hasher.update(key.as_bytes());
            (hasher.digest() % 10_000) as u16
        }
        None => (seed % 10_000) as u16,
    }
}

/// What the handler hands to the writer: cheap to make (the request is shared).
pub struct Entry {
    /// The decision's id.
    pub id: String,
    /// When the answer was made.
    pub logged_at_ms: i64,
    /// The surface.
    pub surface: String,
    /// The plan revision.
    pub revision: u64,
    /// The arm.
    pub arm: Option<LoggedArm>,
    /// The contract its policy was called through.
    pub contract: runtime::Contract,
    /// The bucket.
    pub bucket: u16,
    /// Whether the bucket came from a key.
    pub sticky: bool,
    /// The request as the policy saw it.
    pub request: Arc<types::Request>,
    /// The answer.
    pub ranking: Ranking,
    /// Set when a fallback answered.
    pub fallback: Option<LoggedFallback>,
    /// Shadow calls started.
    pub shadows: usize,
    /// What the shadows did (filled in once they are done).
    pub shadow_results: Vec<record::LoggedShadow>,
    /// The surface's logging.
    pub settings: Arc<LogSettings>,
}

impl Entry {
    /// The entry of `decision`, to be logged as `id` with the surface's `settings`.
    pub fn new(decision: &Decision, id: String, settings: Arc<LogSettings>) -> Entry {
        let binding = &decision.binding;
        let arm = decision.arm();
        Entry {
            id,
            logged_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
            surface: binding.surface.clone(),
            revision: binding.revision,
            arm: arm.map(|a| LoggedArm {
                index: decision.assignment.arm.unwrap_or_default(),
                name: a.name.clone(),
                policy: a.bound.name.clone(),
                version: a.bound.version.clone(),
                digest: a.bound.digest.to_string(),
            }),
            contract: contract_of(decision),
            bucket: decision.assignment.bucket,
            sticky: decision.assignment.sticky,
            request: decision.request.clone(),
            ranking: decision.ranking.clone(),
            fallback: decision.failure.as_ref().map(|f| LoggedFallback {
                reason: f.reason.to_owned(),
                answered_by: f.answered_by.clone(),
                detail: f.detail.clone(),
            }),
            shadows: decision.shadows,
            shadow_results: Vec::new(),
            settings,
        }
    }

    /// Offers the entry of `decision` to `log`: now, or, when the request has shadows, once they
    /// are done, with their results (off the response path either way).
    pub fn log(self, decision: &Decision, log: &Arc<DecisionLog>) {
        match &decision.shadow_results {
            Some(results) => {
                let log = log.clone();
                log.awaiting_shadows.fetch_add(1, Ordering::Relaxed);
                results.then(move |results| {
                    let mut entry = self;
                    entry.shadow_results = results.iter().map(record::LoggedShadow::from).collect();
                    log.offer(entry);
                    log.awaiting_shadows.fetch_sub(1, Ordering::Relaxed);
                });
            }
            None => log.offer(self),
        }
    }

    /// The record the writer makes of it: masked as its settings say, hashing with `hash_key`.
    pub fn into_record(self, hash_key: &str) -> Record {
        to_record(self, hash_key)
    }
}

/// The contract of what answered: the arm's policy; when a fallback answered, the fallback
/// policy's; the host's own input order answers as the current contract does (no propensities:
/// it does not randomise).
fn contract_of(decision: &Decision) -> runtime::Contract {
    match (&decision.failure, decision.arm()) {
        (None, Some(arm)) => arm.bound.contract,
        (Some(failure), _) => decision
            .binding
            .fallback
            .as_ref()
            .filter(|fallback| fallback.name == failure.answered_by)
            .map_or(runtime::Contract::V0_3, |fallback| fallback.contract),
        (None, None) => runtime::Contract::V0_3,
    }
}

/// The decision log's metrics.
#[derive(Clone)]
struct LogMetrics {
    logged: IntCounterVec,
    streamed: IntCounterVec,
    dropped: IntCounterVec,
    bytes: IntCounter,
    files: IntGauge,
}

impl LogMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let logged = IntCounterVec::new(
            Opts::new("relish_decisions_logged_total", "Decisions written to the decision log"),
            &["surface"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new("relish_decisions_dropped_total", "Sampled decisions not logged, by reason"),
            &["reason"],
        )?;
        let streamed = IntCounterVec::new(
            Opts::new("relish_decisions_streamed_total", "Decisions published to the fleet's decision stream"),
            &["surface"],
        )?;
        let bytes = IntCounter::new("relish_decision_log_bytes_total", "Uncompressed bytes of records written")?;
        let files = IntGauge::new("relish_decision_log_files", "Decision log files in the log directory")?;
        registry.register(Box::new(logged.clone()))?;
        registry.register(Box::new(streamed.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(files.clone()))?;
        Ok(LogMetrics { logged, streamed, dropped, bytes, files })
    }
}

/// The decision log of one host. See the [module documentation](self).
pub struct DecisionLog {
    stream_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    sender: ArcSwapOption<SyncSender<(Entry, usize)>>,
    /// Bytes the queued entries hold (estimated), bounded by `queue_mb`.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Entries waiting for their shadows to finish before they are offered.
    awaiting_shadows: AtomicUsize,
    metrics: LogMetrics,
    dir: PathBuf,
}

impl DecisionLog {
    /// Starts the writer thread on `dir` (created if missing), and with `stream` (a fleet host,
    /// on a tokio runtime) the task publishing to the fleet's decision stream.
    pub fn start(
        config: &LogConfig,
        dir: PathBuf,
        registry: &Registry,
        stream: Option<stream::StreamTarget>,
    ) -> anyhow::Result<Arc<DecisionLog>> {
        fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("decision_log.dir: creating {}: {e}", dir.display()))?;
        let metrics = LogMetrics::new(registry)?;
        let (sender, receiver) = mpsc::sync_channel(config.queue);
        let max_queued = config.queue_mb << 20;
        let queued = Arc::new(AtomicUsize::new(0));
        let (sink, stream_task) = match stream {
            Some(target) => {
                let (sink, task) = stream::StreamSink::start(
                    target,
                    config.queue,
                    max_queued,
                    metrics.streamed.clone(),
                    metrics.dropped.clone(),
                );
                (Some(sink), Some(task))
            }
            None => (None, None),
        };
        let mut writer = Writer::new(config, dir.clone(), metrics.clone(), sink, queued.clone());
        let thread = std::thread::Builder::new().name("relish-decision-log".to_owned()).spawn(move || {
            lower_priority();
            writer.run(&receiver)
        })?;
        Ok(Arc::new(DecisionLog {
            stream_task: std::sync::Mutex::new(stream_task),
            sender: ArcSwapOption::from_pointee(sender),
            queued,
            max_queued,
            writer: std::sync::Mutex::new(Some(thread)),
            awaiting_shadows: AtomicUsize::new(0),
            metrics,
            dir,
        }))
    }

    /// The directory the log is written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hands a decision to the writer without waiting: dropped and counted when the queue is
    /// full (by count or by the memory its requests hold: a stalled disk) or the log is closed.
    pub fn offer(&self, entry: Entry) {
        let guard = self.sender.load();
        let Some(sender) = guard.as_ref() else {
            self.metrics.dropped.with_label_values(&["closed"]).inc();
            return;
        };
        let bytes = request_bytes(&entry.request);
        if self.queued.fetch_add(bytes, Ordering::Relaxed) + bytes > self.max_queued {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            self.metrics.dropped.with_label_values(&["queue-full"]).inc();
            return;
        }
        let refused = match sender.try_send((entry, bytes)) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "queue-full",
            Err(TrySendError::Disconnected(_)) => "writer-gone",
        };
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
        self.metrics.dropped.with_label_values(&[refused]).inc();
    }

    /// The stream task, once: awaited after [`DecisionLog::close`] so that what was published is
    /// acknowledged before the host exits.
    pub fn take_stream_task(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.stream_task.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// Writes what is queued, finishes the current file, and stops the writer. Blocking: it
    /// first waits (at most [`SHADOW_WAIT`]) for the entries whose shadows are still running.
    pub fn close(&self) {
        let waiting = Instant::now();
        while self.awaiting_shadows.load(Ordering::Relaxed) > 0 && waiting.elapsed() < SHADOW_WAIT {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.sender.store(None);
        let thread = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the decision log writer panicked");
        }
    }
}

/// How long [`DecisionLog::close`] waits for shadows still running: a shadow call is bounded by
/// its deadline, but a full shadow queue (at most 1,024 calls) may take a while on a busy host.
const SHADOW_WAIT: Duration = Duration::from_secs(5);

/// Puts the writer thread at nice 10 under `SCHED_BATCH`: when the machine is saturated it
/// yields to the handlers and falls behind (its queue drops records, counted) instead of taking
/// their cores; with headroom it runs as fast as ever. Not `SCHED_IDLE`: a writer that never runs
/// under load would drop every record.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let batch = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
        // 25 of 0..99 is nice 9-10 on Linux.
        let priority =
            ThreadPriorityValue::try_from(25u8).map(ThreadPriority::Crossplatform).unwrap_or(ThreadPriority::Min);
        if let Err(error) = set_thread_priority_and_policy(thread_native_id(), priority, batch) {
            tracing::warn!("the decision log writer keeps its normal priority: {error:?}");
        }
    }
}

/// The writer thread's state.
struct Writer {
    stream: Option<stream::StreamSink>,
    queued: Arc<AtomicUsize>,
    config: LogConfig,
    dir: PathBuf,
    metrics: LogMetrics,
    current: Option<Open>,
    sequence: u64,
}

/// The file being written.
struct Open {
    path: PathBuf,
    encoder: zstd::Encoder<'static, CountingFile>,
    opened: Instant,
}

/// The zstd level files are written at. 1, the fastest: measured on records of 500 × 20
/// requests, it compressed a record in ~190 µs to 38.7 KB where level 3 took ~450 µs for 37.4 KB
/// and gzip's fastest ~410 µs for 42.8 KB (`record_cost` in the decision log's tests); the writer
/// is the log's cost, the disk is not.
const ZSTD_LEVEL: i32 = 1;

/// A file that counts the (compressed) bytes written to it.
struct CountingFile {
    file: File,
    written: u64,
}

impl Write for CountingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Writer {
    fn new(
        config: &LogConfig,
        dir: PathBuf,
        metrics: LogMetrics,
        stream: Option<stream::StreamSink>,
        queued: Arc<AtomicUsize>,
    ) -> Self {
        Writer { stream, queued, config: config.clone(), dir, metrics, current: None, sequence: 0 }
    }

    fn run(&mut self, receiver: &mpsc::Receiver<(Entry, usize)>) {
        self.metrics.files.set(log_files(&self.dir).len() as i64);
        let flush = Duration::from_millis(self.config.flush_ms);
        let mut last_flush = Instant::now();
        loop {
            match receiver.recv_timeout(flush) {
                Ok((entry, bytes)) => {
                    let written = self.write(entry);
                    self.queued.fetch_sub(bytes, Ordering::Relaxed);
                    if let Err(error) = written {
                        self.metrics.dropped.with_label_values(&["write-error"]).inc();
                        tracing::error!(dir = %self.dir.display(), "decision log: {error}");
                        self.current = None;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_flush.elapsed() >= flush {
                last_flush = Instant::now();
                self.flush();
            }
        }
        self.finish();
    }

    fn write(&mut self, entry: Entry) -> io::Result<()> {
        #[cfg(test)]
        tests::stall_point(&self.dir);
        let surface = entry.surface.clone();
        let mut line = serde_json::to_vec(&to_record(entry, &self.config.hash_key)).map_err(io::Error::other)?;
        if let Some(stream) = &self.stream {
            stream.offer(&surface, bytes::Bytes::copy_from_slice(&line));
        }
        line.push(b'\n');
        let rotate = self.current.as_ref().is_some_and(|open| {
            open.encoder.get_ref().written >= self.config.max_file_mb << 20
                || open.opened.elapsed() >= Duration::from_secs(self.config.max_file_secs)
        });
        if rotate {
            self.finish();
        }
        if self.current.is_none() {
            self.current = Some(self.open()?);
        }
        let open = self.current.as_mut().expect("opened above");
        open.encoder.write_all(&line)?;
        self.metrics.bytes.inc_by(line.len() as u64);
        self.metrics.logged.with_label_values(&[&surface]).inc();
        Ok(())
    }

    fn open(&mut self) -> io::Result<Open> {
        self.sequence += 1;
        let stamp = chrono::DateTime::<chrono::Utc>::from(SystemTime::now()).format("%Y%m%dT%H%M%S%3fZ");
        let path = self.dir.join(format!("decisions-{stamp}-{}-{}.jsonl.zst", std::process::id(), self.sequence));
        let file = fs::OpenOptions::new().create_new(true).write(true).open(&path)?;
        self.metrics.files.set(log_files(&self.dir).len() as i64);
        let mut encoder = zstd::Encoder::new(CountingFile { file, written: 0 }, ZSTD_LEVEL)?;
        // The frame header says it is checksummed: a reader tells a damaged file from a good one.
        encoder.include_checksum(true)?;
        Ok(Open { path, encoder, opened: Instant::now() })
    }

    /// Makes what was written readable (the zstd block so far is ended and written out) and
    /// durable enough for a crash of the process (the kernel has it).
    fn flush(&mut self) {
        if let Some(open) = &mut self.current
            && let Err(error) = open.encoder.flush()
        {
            tracing::error!(file = %open.path.display(), "decision log: flushing: {error}");
        }
    }

    /// Finishes the current file (the end of the zstd frame, fsync) and prunes old files.
    fn finish(&mut self) {
        let Some(open) = self.current.take() else { return };
        let result = open.encoder.finish().and_then(|counting| counting.file.sync_all());
        if let Err(error) = result {
            tracing::error!(file = %open.path.display(), "decision log: finishing: {error}");
        }
        let mut files = log_files(&self.dir);
        while files.len() > self.config.keep_files {
            let oldest = files.remove(0);
            if let Err(error) = fs::remove_file(&oldest) {
                tracing::warn!(file = %oldest.display(), "decision log: removing an old file: {error}");
            }
        }
        self.metrics.files.set(files.len() as i64);
    }
}

/// What a queued entry's request holds in memory, roughly: what bounds the queue's memory.
fn request_bytes(request: &types::Request) -> usize {
    let c = &request.candidates;
    let strings = |v: &types::StringColumn| v.data.len() + 4 * v.offsets.len();
    512 + strings(&c.ids)
        + 4 * (c.features.len() + c.tags.offsets.len() + c.tags.indices.len())
        + strings(&c.feature_names)
        + strings(&request.tag_vocabulary)
        + strings(&request.user_features.names)
        + 4 * request.user_features.values.len()
        + strings(&request.context.cart.item_ids)
}

/// The log files in `dir`, oldest first (their names sort by time).
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("decisions-") && (n.ends_with(".jsonl.zst") || n.ends_with(".jsonl.gz")))
        })
        .collect();
    files.sort();
    files
}

/// A keyed hash of a masked string.
fn hashed(key: &str, value: &str) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(key.as_bytes());
    hasher.update(b"\n");
    hasher.update(value.as_bytes());
    format!("h:{:016x}", hasher.digest())
}

/// Masks a logged request as the rules say; returns what was changed.
fn mask(request: &mut LoggedRequest, rules: &BTreeMap<MaskField, MaskRule>, key: &str) -> Vec<String> {
    let mut changed = Vec::new();
    let string = |value: &mut Option<String>, rule: MaskRule| match rule {
        MaskRule::Drop => *value = None,
        MaskRule::Hash => *value = value.take().map(|v| hashed(key, &v)),
    };
    for (&field, &rule) in rules {
        match field {
            MaskField::UserId => string(&mut request.user_id, rule),
            MaskField::Country => string(&mut request.country, rule),
            MaskField::City => string(&mut request.city, rule),
            MaskField::Locale => string(&mut request.locale, rule),
            MaskField::Device => string(&mut request.device, rule),
            MaskField::Location => {
                request.latitude = None;
                request.longitude = None;
            }
            MaskField::UserFeatures => match rule {
                MaskRule::Drop => request.user_features.clear(),
                MaskRule::Hash => {
                    for (name, _) in &mut request.user_features {
                        *name = hashed(key, name);
                    }
                }
            },
            MaskField::CartItems => match rule {
                MaskRule::Drop => {
                    request.cart_items.clear();
                    request.cart_tags = record::LoggedTags { offsets: vec![0], indices: Vec::new() };
                }
                MaskRule::Hash => {
                    for item in &mut request.cart_items {
                        *item = hashed(key, item);
                    }
                }
            },
        }
        let name = MASK_FIELDS.iter().find(|(_, f)| *f == field).map_or("", |(n, _)| n);
        let how = match (rule, field) {
            (MaskRule::Hash, MaskField::Location) | (MaskRule::Drop, _) => "dropped",
            (MaskRule::Hash, _) => "hashed",
        };
        changed.push(format!("{name}: {how}"));
    }
    changed
}

/// The record of an entry, masked.
fn to_record(entry: Entry, key: &str) -> Record {
    let mut request = LoggedRequest::from(entry.request.as_ref());
    let masked = mask(&mut request, &entry.settings.mask, key);
    let order = entry.ranking.order().to_vec();
    let all_ids = &entry.request.candidates.ids;
    let ids = order
        .iter()
        .map(|&i| {
            let (start, end) = (all_ids.offsets[i as usize] as usize, all_ids.offsets[i as usize + 1] as usize);
            all_ids.data[start..end].to_owned()
        })
        .collect();
    let reasons: Vec<Option<String>> = (0..order.len()).map(|p| entry.ranking.reason(p).map(str::to_owned)).collect();
    Record {
        format: record::FORMAT,
        contract: entry.contract.name().to_owned(),
        id: entry.id,
        logged_at_ms: entry.logged_at_ms,
        surface: entry.surface,
        revision: entry.revision,
        arm: entry.arm,
        bucket: entry.bucket,
        sticky: entry.sticky,
        request,
        answer: Answer {
            scores: entry.ranking.scores().to_vec(),
            reasons: if reasons.iter().all(Option::is_none) { Vec::new() } else { reasons },
            propensities: if entry.ranking.has_propensities() {
                (0..order.len()).map(|p| entry.ranking.propensity(p)).collect()
            } else {
                Vec::new()
            },
            order,
            ids,
        },
        fallback: entry.fallback,
        shadows: entry.shadows,
        shadow_results: entry.shadow_results,
        masked,
    }
}

/// A line of a log that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// The file.
    pub file: PathBuf,
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// What reading a log file found besides its records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadReport {
    /// Records read.
    pub records: usize,
    /// Lines that are not records of this format, with where and why; the rest is still read.
    pub bad: Vec<BadLine>,
    /// Whether the file ends in a torn record (a host killed while writing, or a file still
    /// being written): skipped.
    pub torn: bool,
}

/// Reads a decision log file (`.jsonl.zst`; `.jsonl.gz`, as hosts before zstd wrote; or plain
/// `.jsonl`), calling `each` for every record.
pub fn read(path: &Path, mut each: impl FnMut(Record)) -> io::Result<ReadReport> {
    let file = File::open(path)?;
    let reader: Box<dyn Read> = match path.extension().and_then(|e| e.to_str()) {
        Some("zst") => Box::new(zstd::Decoder::new(file)?),
        Some("gz") => Box::new(MultiGzDecoder::new(BufReader::new(file))),
        _ => Box::new(file),
    };
    let mut reader = BufReader::new(reader);
    let mut report = ReadReport::default();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            // A compressed stream cut short: what was flushed before is read, the rest is torn.
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                report.torn = true;
                break;
            }
            Err(error) => return Err(error),
        }
        number += 1;
        if line.last() != Some(&b'\n') {
            report.torn = true;
            break;
        }
        match parse(&line) {
            Ok(record) => {
                report.records += 1;
                each(record);
            }
            Err(message) => report.bad.push(BadLine { file: path.to_owned(), line: number, message }),
        }
    }
    Ok(report)
}

fn parse(line: &[u8]) -> Result<Record, String> {
    #[derive(Deserialize)]
    struct Head {
        format: u32,
        #[serde(default)]
        contract: String,
    }
    let head: Head = serde_json::from_slice(line).map_err(|e| format!("not a decision record: {e}"))?;
    if !record::FORMATS.contains(&head.format) {
        let formats: Vec<String> = record::FORMATS.iter().map(u32::to_string).collect();
        return Err(format!("a record of format {}; this host reads formats {}", head.format, formats.join(" and ")));
    }
    if runtime::Contract::from_name(&head.contract).is_none() {
        let served: Vec<&str> = runtime::Contract::ALL.iter().map(|c| c.name()).collect();
        return Err(format!(
            "a decision through contract `{}`; this host serves {}",
            head.contract,
            served.join(" and ")
        ));
    }
    serde_json::from_slice(line).map_err(|e| format!("not a decision record: {e}"))
}

#[cfg(test)]
mod tests;
