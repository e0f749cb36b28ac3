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
    assert_eq!(back, logged);
    let rebuilt = back.to_request().unwrap();
    assert_eq!(LoggedRequest::from(&rebuilt), logged);
    // Bit for bit: every f32, NaN where a value is missing, in the same places.
    let bits = |r: &types::Request| r.candidates.features.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&rebuilt), bits(&original));
    assert!(original.candidates.features.iter().any(|v| v.is_nan()));
    assert_eq!(rebuilt.user_features.names, original.user_features.names);
    assert_eq!(rebuilt.candidates.ids.data, original.candidates.ids.data);
    assert_eq!(rebuilt.candidates.ids.offsets, original.candidates.ids.offsets);
    assert_eq!(rebuilt.local_weekday, original.local_weekday);
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
        contract: runtime::Contract::V0_2,
        bucket: 17,
        sticky: true,
        request: request.clone(),
        ranking: Ranking::from_order(vec![2, 0, 1]),
        fallback: None,
        shadows: 0,
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
    let cut = dir.path().join("decisions-cut.jsonl.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let report = read(&cut, |_| {}).unwrap();
    assert!(report.torn, "{report:?}");
    assert!(report.records < 50);
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
    flate2::read::MultiGzDecoder::new(File::open(&log_files(dir.path())[0]).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let good = text.lines().next().unwrap().to_owned();
    let other_format = good.replacen("\"format\":1", "\"format\":7", 1);
    let other_contract = good.replace("relish:policy@0.2.0", "relish:policy@9.0.0");
    // A decision of a 0.1.0 component (or logged by a host before 0.2.0) still reads.
    let older_contract = good.replace("relish:policy@0.2.0", "relish:policy@0.1.0");
    let plain = dir.path().join("mixed.jsonl");
    std::fs::write(&plain, format!("{good}\nnot json\n{other_format}\n{other_contract}\n{good}\n{older_contract}\n"))
        .unwrap();
    let mut contracts = Vec::new();
    let report = read(&plain, |r| contracts.push(r.contract)).unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(contracts, ["relish:policy@0.2.0", "relish:policy@0.2.0", "relish:policy@0.1.0"]);
    let lines: Vec<(usize, &str)> = report.bad.iter().map(|b| (b.line, b.message.as_str())).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0].0, 2);
    assert!(lines[1].1.contains("format 7"), "{lines:?}");
    assert!(lines[2].1.contains("relish:policy@9.0.0"), "{lines:?}");
    assert!(report.bad[0].to_string().starts_with(&format!("{}:2: ", plain.display())));
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
