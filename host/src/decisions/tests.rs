use std::collections::BTreeMap;
use std::sync::Arc;

use super::record::LoggedRequest;
use super::*;
use crate::wire::{self, DecodeOptions};

const BODY: &str = r#"{"request_id": "r-1", "surface": "discovery", "seed": 7,
    "context": {"time": "2026-12-02T18:30:00+02:00", "country": "FI", "city": "helsinki",
                "lat": 60.17, "lon": 24.94, "device": "ios",
                "cart": [{"id": "i-1", "tags": ["burger"]}]},
    "user": {"id": "u-42", "features": {"affinity.pizza": 0.8, "price_level": 2.0}},
    "candidates": [
        {"id": "a", "features": {"rating": 4.5, "eta_min": 25}, "tags": ["pizza"]},
        {"id": "b", "features": {"rating": 0.1}, "tags": ["burger", "pizza"]},
        {"id": "c", "features": {"eta_min": 1e-7}}]}"#;

fn request() -> types::Request {
    let options = DecodeOptions { now_unix_ms: 1_800_000_000_000, ..DecodeOptions::default() };
    wire::decode(BODY.as_bytes(), &options).expect("a valid body").request
}

#[test]
fn a_logged_request_reads_back_as_the_same_request_missing_values_and_all() {
    let original = request();
    let logged = LoggedRequest::from(&original);
    let json = serde_json::to_string(&logged).unwrap();
    let back: LoggedRequest = serde_json::from_str(&json).unwrap();
    // (NaN is never equal to itself: compare what is written.)
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    let rebuilt = back.to_request().unwrap();
    assert_eq!(serde_json::to_string(&LoggedRequest::from(&rebuilt)).unwrap(), json);
    // Bit for bit: every f32, NaN where a value is missing, in the same places.
    let bits = |r: &types::Request| r.candidates.features.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&rebuilt), bits(&original));
    assert!(original.candidates.features.iter().any(|v| v.is_nan()));
    assert_eq!(rebuilt.user_features.names, original.user_features.names);
    assert_eq!(rebuilt.candidates.ids.data, original.candidates.ids.data);
    assert_eq!(rebuilt.candidates.ids.offsets, original.candidates.ids.offsets);
    assert_eq!(rebuilt.local_weekday, original.local_weekday);
    // Format 1 wrote the features as numbers and nulls: it reads as the same column.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let numbers: Vec<serde_json::Value> = original
        .candidates
        .features
        .iter()
        .map(|v| if v.is_nan() { serde_json::Value::Null } else { serde_json::json!(v) })
        .collect();
    value["features"] = serde_json::Value::Array(numbers);
    let format_1: LoggedRequest = serde_json::from_value(value).unwrap();
    assert_eq!(bits(&format_1.to_request().unwrap()), bits(&original));
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value["features"] = serde_json::json!("AAAA!");
    let error = serde_json::from_value::<LoggedRequest>(value).unwrap_err().to_string();
    assert!(error.contains("not base64"), "{error}");
    assert_eq!(
        (rebuilt.seed, rebuilt.time_unix_ms, rebuilt.local_minute_of_day),
        (7, original.time_unix_ms, original.local_minute_of_day)
    );
}

#[test]
fn a_record_whose_columns_do_not_fit_is_refused_saying_what() {
    let mut logged = LoggedRequest::from(&request());
    logged.features.pop();
    assert!(logged.to_request().unwrap_err().contains("request.features"));
    let mut logged = LoggedRequest::from(&request());
    logged.candidate_tags.indices[0] = 99;
    assert!(logged.to_request().unwrap_err().contains("candidate_tags"));
    let mut logged = LoggedRequest::from(&request());
    logged.local_weekday = "caturday".into();
    assert!(logged.to_request().unwrap_err().contains("local_weekday"));
}

#[test]
fn sampling_keeps_its_share_and_always_picks_the_same_users() {
    let settings = LogSettings { threshold: 3_000, mask: BTreeMap::new() };
    let users: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
    let sampled = users.iter().filter(|u| settings.sampled("discovery", Some(u), 0)).count();
    let share = sampled as f64 / users.len() as f64;
    assert!((share - 0.3).abs() < 0.01, "{share}");
    for user in &users[..500] {
        let first = settings.sampled("discovery", Some(user), 1);
        assert!((0..20).all(|seed| settings.sampled("discovery", Some(user), seed) == first), "{user}");
    }
    let none = LogSettings { threshold: 0, mask: BTreeMap::new() };
    assert!(!none.sampled("discovery", Some("u"), 0));
    let all = LogSettings { threshold: 10_000, mask: BTreeMap::new() };
    assert!(users.iter().all(|u| all.sampled("discovery", Some(u), 0)));
}

#[test]
fn masking_drops_or_hashes_with_the_key_and_says_what_it_did() {
    let original = LoggedRequest::from(&request());
    let rules = BTreeMap::from([
        (MaskField::UserId, MaskRule::Hash),
        (MaskField::Location, MaskRule::Drop),
        (MaskField::CartItems, MaskRule::Drop),
    ]);
    let mut masked = original.clone();
    let changed = mask(&mut masked, &rules, "secret");
    assert_eq!(changed, ["user.id: hashed", "context.location: dropped", "cart.items: dropped"]);
    let hashed_id = masked.user_id.clone().unwrap();
    assert!(hashed_id.starts_with("h:") && hashed_id.len() == 18, "{hashed_id}");
    assert_ne!(Some(hashed_id.clone()), original.user_id);
    assert_eq!((masked.latitude, masked.longitude), (None, None));
    assert!(masked.cart_items.is_empty());
    assert!(masked.to_request().is_ok(), "a masked request still replays");
    // The same id hashes alike under one key (records of a user still join), differently under another.
    let mut again = original.clone();
    mask(&mut again, &rules, "secret");
    assert_eq!(again.user_id.as_deref(), Some(hashed_id.as_str()));
    let mut other = original.clone();
    mask(&mut other, &rules, "other");
    assert_ne!(other.user_id.as_deref(), Some(hashed_id.as_str()));
}

fn entry(id: usize, request: &Arc<types::Request>) -> Entry {
    Entry {
        id: format!("d-{id}"),
        logged_at_ms: 1,
        surface: "discovery".into(),
        revision: 3,
        arm: Some(record::LoggedArm {
            index: 0,
            name: "p@1".into(),
            policy: "p".into(),
            version: "1".into(),
            digest: "sha256:00".into(),
        }),
        contract: runtime::Contract::V0_3,
        bucket: 17,
        sticky: true,
        request: request.clone(),
        ranking: Ranking::from_order(vec![2, 0, 1]),
        fallback: None,
        shadows: 0,
        shadow_results: Vec::new(),
        settings: Arc::new(LogSettings { threshold: 10_000, mask: BTreeMap::new() }),
    }
}

#[test]
fn records_are_written_rotated_and_read_back_and_a_torn_tail_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { max_file_mb: 1, keep_files: 100, flush_ms: 10, ..LogConfig::default() };
    let registry = Registry::new();
    let log = DecisionLog::start(&config, dir.path().to_owned(), &registry, None).unwrap();
    let request = Arc::new(request());
    for id in 0..50 {
        log.offer(entry(id, &request));
    }
    log.close();
    log.offer(entry(99, &request));
    let files = log_files(dir.path());
    assert_eq!(files.len(), 1);
    let mut ids = Vec::new();
    let report = read(&files[0], |r| ids.push(r.id)).unwrap();
    assert_eq!(report, ReadReport { records: 50, bad: Vec::new(), torn: false });
    assert_eq!(ids, (0..50).map(|i| format!("d-{i}")).collect::<Vec<_>>());
    let mut first = None;
    read(&files[0], |r| {
        first.get_or_insert(r);
    })
    .unwrap();
    let first = first.unwrap();
    assert_eq!(first.answer.ids, ["c", "a", "b"]);
    assert_eq!(first.answer.order, [2, 0, 1]);
    assert_eq!(first.contract, runtime::CONTRACT);
    let scrape = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    assert!(scrape.contains("relish_decisions_logged_total{surface=\"discovery\"} 50"), "{scrape}");
    assert!(scrape.contains("relish_decisions_dropped_total{reason=\"closed\"} 1"), "{scrape}");

    // Cut the file short: what came before the cut reads, the tail is torn.
    let bytes = std::fs::read(&files[0]).unwrap();
    let cut = dir.path().join("decisions-cut.jsonl.zst");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let report = read(&cut, |_| {}).unwrap();
    assert!(report.torn, "{report:?}");
    assert!(report.records < 50);

    // A log the previous host wrote: gzip, format 1 (features as numbers and nulls), contract
    // 0.1.0, no propensities or shadow results. It is listed, reads, and its requests rebuild
    // bit for bit.
    let mut zst = String::new();
    zstd::Decoder::new(File::open(&files[0]).unwrap()).unwrap().read_to_string(&mut zst).unwrap();
    let old_line = {
        let mut value: serde_json::Value = serde_json::from_str(zst.lines().next().unwrap()).unwrap();
        let numbers: Vec<serde_json::Value> = request
            .candidates
            .features
            .iter()
            .map(|v| if v.is_nan() { serde_json::Value::Null } else { serde_json::json!(v) })
            .collect();
        value["format"] = serde_json::json!(1);
        value["contract"] = serde_json::json!("relish:policy@0.1.0");
        value["request"]["features"] = serde_json::Value::Array(numbers);
        value.as_object_mut().unwrap().remove("shadow_results");
        value.to_string()
    };
    let previous = dir.path().join("decisions-20261130T000000000Z-7-1.jsonl.gz");
    let mut gzip = flate2::write::GzEncoder::new(File::create(&previous).unwrap(), flate2::Compression::fast());
    gzip.write_all(format!("{old_line}\n").as_bytes()).unwrap();
    gzip.finish().unwrap();
    assert_eq!(log_files(dir.path())[0], previous);
    let mut old_records = Vec::new();
    assert_eq!(read(&previous, |r| old_records.push(r)).unwrap().records, 1);
    let rebuilt = old_records[0].request.to_request().unwrap();
    let bits = |r: &types::Request| r.candidates.features.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&rebuilt), bits(&request));
    assert_eq!(old_records[0].contract, "relish:policy@0.1.0");
    assert!(old_records[0].answer.propensities.is_empty());
    std::fs::remove_file(&previous).unwrap();

    // A gzip file, as hosts before zstd wrote, reads too, and counts as a log file.
    let mut text = String::new();
    zstd::Decoder::new(File::open(&files[0]).unwrap()).unwrap().read_to_string(&mut text).unwrap();
    let old = dir.path().join("decisions-20261201T000000000Z-1-1.jsonl.gz");
    let mut gzip = flate2::write::GzEncoder::new(File::create(&old).unwrap(), flate2::Compression::fast());
    gzip.write_all(text.as_bytes()).unwrap();
    gzip.finish().unwrap();
    assert_eq!(log_files(dir.path())[0], old, "the older file sorts first");
    let report = read(&old, |_| {}).unwrap();
    assert_eq!(report, ReadReport { records: 50, bad: Vec::new(), torn: false });
}

#[test]
fn a_line_that_is_not_a_record_is_named_and_the_rest_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { flush_ms: 10, ..LogConfig::default() };
    let log = DecisionLog::start(&config, dir.path().to_owned(), &Registry::new(), None).unwrap();
    let request = Arc::new(request());
    log.offer(entry(1, &request));
    log.close();
    let mut text = String::new();
    zstd::Decoder::new(File::open(&log_files(dir.path())[0]).unwrap()).unwrap().read_to_string(&mut text).unwrap();
    let good = text.lines().next().unwrap().to_owned();
    let other_format = good.replacen("\"format\":2", "\"format\":7", 1);
    let other_contract = good.replace("relish:policy@0.3.0", "relish:policy@9.0.0");
    // A decision of a 0.1.0 component (or logged by a host before 0.2.0) still reads.
    let older_contract = good.replace("relish:policy@0.3.0", "relish:policy@0.1.0");
    let plain = dir.path().join("mixed.jsonl");
    std::fs::write(&plain, format!("{good}\nnot json\n{other_format}\n{other_contract}\n{good}\n{older_contract}\n"))
        .unwrap();
    let mut contracts = Vec::new();
    let report = read(&plain, |r| contracts.push(r.contract)).unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(contracts, ["relish:policy@0.3.0", "relish:policy@0.3.0", "relish:policy@0.1.0"]);
    let lines: Vec<(usize, &str)> = report.bad.iter().map(|b| (b.line, b.message.as_str())).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0].0, 2);
    assert!(lines[1].1.contains("format 7"), "{lines:?}");
    assert!(lines[2].1.contains("relish:policy@9.0.0"), "{lines:?}");
    assert!(report.bad[0].to_string().starts_with(&format!("{}:2: ", plain.display())));
}

/// Stalls the writers of some directories: a stalled disk, as the writer sees one.
static STALLS: std::sync::Mutex<Vec<(PathBuf, Arc<std::sync::Mutex<()>>)>> = std::sync::Mutex::new(Vec::new());

/// Where the writer stops while a test holds its directory's stall (before every write).
pub(super) fn stall_point(dir: &Path) {
    let gate = STALLS.lock().unwrap().iter().find(|(d, _)| d == dir).map(|(_, gate)| gate.clone());
    if let Some(gate) = gate {
        drop(gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

#[test]
fn a_stalled_disk_never_makes_a_request_wait_and_its_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(std::sync::Mutex::new(()));
    STALLS.lock().unwrap().push((dir.path().to_owned(), gate.clone()));
    let stalled = gate.lock().unwrap();
    let config = LogConfig { queue: 8, flush_ms: 10, ..LogConfig::default() };
    let registry = Registry::new();
    let log = DecisionLog::start(&config, dir.path().to_owned(), &registry, None).unwrap();
    let request = Arc::new(request());
    // The handlers offer while the writer is stuck in a write: every offer returns.
    let (done, offered) = std::sync::mpsc::channel();
    let handler = {
        let (log, request) = (log.clone(), request.clone());
        std::thread::spawn(move || {
            for id in 0..100 {
                log.offer(entry(id, &request));
            }
            done.send(()).unwrap();
        })
    };
    offered.recv_timeout(Duration::from_secs(60)).expect("an offer waited for the stalled writer");
    handler.join().unwrap();
    let scrape = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    let dropped: u64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("relish_decisions_dropped_total{reason=\"queue-full\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{scrape}"));
    // 8 wait in the queue and at most one is in the stalled writer's hands: the rest dropped.
    assert!((91..=92).contains(&dropped), "{dropped} dropped\n{scrape}");
    drop(stalled);
    log.close();
    let mut written = 0;
    read(&log_files(dir.path())[0], |_| written += 1).unwrap();
    assert_eq!(written + dropped, 100, "what was not dropped is written once the disk is back");
}

#[test]
fn the_queue_is_bounded_by_the_memory_its_requests_hold() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { queue_mb: 1, flush_ms: 10, ..LogConfig::default() };
    let registry = Registry::new();
    let log = DecisionLog::start(&config, dir.path().to_owned(), &registry, None).unwrap();
    // A request holding 2 MiB of features never fits a 1 MiB queue, whatever the writer does.
    let mut big = request();
    big.candidates.features = vec![1.0; 512 << 10];
    log.offer(entry(1, &Arc::new(big)));
    log.offer(entry(2, &Arc::new(request())));
    log.close();
    let mut ids = Vec::new();
    read(&log_files(dir.path())[0], |r| ids.push(r.id)).unwrap();
    assert_eq!(ids, ["d-2"]);
    let scrape = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    assert!(scrape.contains("relish_decisions_dropped_total{reason=\"queue-full\"} 1"), "{scrape}");
}

#[test]
#[ignore = "a measurement, not a test"]
fn record_cost() {
    let mut big = request();
    let n = 500;
    let d = 20;
    big.candidates.ids = (0..n).map(|i| format!("venue-{i:06}")).collect();
    big.candidates.feature_names = (0..d).map(|j| format!("feature_{j}")).collect();
    big.candidates.tags = types::TagColumn { offsets: (0..=n as u32).collect(), indices: vec![0; n] };
    let rounds = 200;
    // Every request its own features: ratings, distances, counts, as a real one would have.
    let requests: Vec<Arc<types::Request>> = (0..rounds)
        .map(|i| {
            let mut request = big.clone();
            let mut state = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            request.candidates.features = (0..n * d)
                .map(|k| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let x = (state >> 40) as f32 / (1u64 << 24) as f32;
                    match k % d {
                        0 => (x * 50.0).round() / 10.0,
                        1 => (x * 60.0).round(),
                        _ => x * 1000.0,
                    }
                })
                .collect();
            Arc::new(request)
        })
        .collect();
    let started = Instant::now();
    let mut total = 0;
    let mut records = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let record = entry(i, request).into_record("k");
        records.push(record);
    }
    let t_record = started.elapsed() / rounds as u32;
    let started = Instant::now();
    let mut lines = Vec::new();
    for record in &records {
        let line = serde_json::to_vec(record).unwrap();
        total += line.len();
        lines.push(line);
    }
    let t_json = started.elapsed() / rounds as u32;
    let started = Instant::now();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for line in &lines {
        encoder.write_all(line).unwrap();
    }
    let compressed = encoder.finish().unwrap().len();
    let t_gzip = started.elapsed() / rounds as u32;
    eprintln!(
        "per record: build {t_record:?}, json {t_json:?} ({} bytes), gzip {t_gzip:?} ({} bytes)",
        total / rounds,
        compressed / rounds
    );
    for level in [1, 3] {
        let started = Instant::now();
        let mut encoder = zstd::Encoder::new(Vec::new(), level).unwrap();
        for line in &lines {
            encoder.write_all(line).unwrap();
        }
        let compressed = encoder.finish().unwrap().len();
        eprintln!("zstd {level}: {:?} ({} bytes)", started.elapsed() / rounds as u32, compressed / rounds);
    }
}
