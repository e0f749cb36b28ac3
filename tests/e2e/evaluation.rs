//! Off-policy evaluation on data with a known answer: banner decisions logged from the exploring
//! `banners` policy (through the serving pipeline and the decision log's record), clicks drawn
//! from known click rates, and the estimates of a different policy's click rate checked against
//! the true value over 50 seeded runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use relish_host::decisions::ope::Rewards;
use relish_host::decisions::record::Record;
use relish_host::decisions::replay::{Candidate, ReplayOptions, replay_records};
use relish_host::decisions::{Entry, LogSettings};
use relish_host::metrics::Metrics;
use relish_host::runtime::Budget;
use relish_host::serving::Binding;
use relish_tests::{budget, decode, guest_bytes, policy, runtime};

/// The banners, with a short record each so that Thompson sampling explores widely.
const BANNERS: [(&str, f32, f32); 4] =
    [("summer", 6.0, 100.0), ("pizza-week", 4.0, 100.0), ("free-delivery", 3.0, 100.0), ("new-partner", 2.0, 100.0)];
/// The true click rate of each banner at the top slot: not what the records above suggest.
const CLICK_RATE: [f64; 4] = [0.10, 0.04, 0.07, 0.02];
/// How much less a slot further down is looked at (a position-based click model).
const EXAMINED: [f64; 3] = [1.0, 0.5, 0.25];
const DECISIONS: usize = 1500;
const RUNS: u64 = 50;

fn request() -> String {
    let candidates: Vec<String> = BANNERS
        .iter()
        .map(|(id, clicks, impressions)| {
            format!(r#"{{"id": "{id}", "features": {{"clicks": {clicks}, "impressions": {impressions}}}, "tags": []}}"#)
        })
        .collect();
    format!(
        r#"{{"request_id": "sim", "surface": "banners", "user": {{"id": "u", "features": {{}}}}, "limit": 3,
            "candidates": [{}]}}"#,
        candidates.join(", ")
    )
}

/// One run: `DECISIONS` logged decisions with their clicks, as records and a rewards file.
fn simulate(run: u64, binding: &Arc<Binding>, metrics: &Arc<Metrics>, dir: &std::path::Path) -> (Vec<Record>, Rewards) {
    let template = decode(&request());
    let settings = Arc::new(LogSettings { threshold: 10_000, mask: BTreeMap::new() });
    // The simulation's own randomness, seeded per run (the SDK's generator; nothing to do with
    // the policy's, which comes from each request's seed).
    let mut draws = relish_guest::Rng::from_seed(run ^ 0xabad_cafe);
    let mut records = Vec::new();
    let mut rewards = String::from("decision_id,item_id,reward\n");
    for i in 0..DECISIONS {
        let mut request = template.clone();
        request.seed = draws.next_u64();
        let decision = binding.decide(request, Some(&format!("user-{run}-{i}")), metrics);
        assert!(decision.failure.is_none(), "the logged policy answers");
        let record = Entry::new(&decision, format!("d-{run}-{i}"), settings.clone()).into_record("simulation-hash-key");
        for (k, item) in record.answer.ids.iter().enumerate() {
            let banner = BANNERS.iter().position(|(id, ..)| id == item).unwrap();
            if draws.f64() < EXAMINED[k] * CLICK_RATE[banner] {
                rewards.push_str(&format!("{},{item},1\n", record.id));
            }
        }
        records.push(record);
    }
    let path = dir.join(format!("rewards-{run}.csv"));
    std::fs::write(&path, rewards).unwrap();
    (records, Rewards::read(&path).unwrap())
}

#[test]
fn off_policy_estimates_contain_the_true_click_rate_in_at_least_90_percent_of_50_runs() {
    // The target: the `ordered` test guest, which shows the banners in input order: its true
    // clicks per decision are known exactly.
    let truth: f64 = (0..3).map(|k| EXAMINED[k] * CLICK_RATE[k]).sum();
    let logged = Arc::new(policy("banners"));
    let metrics = Arc::new(Metrics::new());
    let params = vec![("prior_strength".to_owned(), "20".to_owned()), ("default_ctr".to_owned(), "0.03".to_owned())];
    let binding = Arc::new(Binding::single("banners", logged, params, budget(), &metrics));
    let dir = tempfile::tempdir().unwrap();
    let mut covered = [0; 3];
    let mut sums = [0.0; 3];
    let mut figures = Vec::new();
    for run in 0..RUNS {
        let (records, rewards) = simulate(run, &binding, &metrics, dir.path());
        let options = ReplayOptions {
            data_dir: dir.path().to_owned(),
            candidate: Some(Candidate::Component(guest_bytes("ordered"))),
            params: Vec::new(),
            jobs: 2,
            deadline: Budget::default().deadline * 100,
            progress: None,
            rewards: Some(rewards),
            positions: None,
            draws: 1,
        };
        let report = replay_records(&runtime(), &records, &options).unwrap();
        let evaluation = &report.evaluation[0];
        assert_eq!((evaluation.decisions, evaluation.positions), (DECISIONS, 3));
        assert!(evaluation.refused.is_none(), "{:?}", evaluation.refused);
        let estimates = [evaluation.ips.unwrap(), evaluation.snips.unwrap(), evaluation.dr.unwrap()];
        for (index, estimate) in estimates.iter().enumerate() {
            covered[index] += usize::from(estimate.low <= truth && truth <= estimate.high);
            sums[index] += estimate.value;
        }
        assert!(evaluation.ess > 100.0, "run {run}: effective sample size {}", evaluation.ess);
        figures.push(format!(
            "run {run}: IPS {:.4} [{:.4}, {:.4}], SNIPS {:.4}, DR {:.4}, logged {:.4}, ESS {:.0}",
            estimates[0].value,
            estimates[0].low,
            estimates[0].high,
            estimates[1].value,
            estimates[2].value,
            evaluation.logged.value,
            evaluation.ess
        ));
    }
    let means = sums.map(|s| s / RUNS as f64);
    let summary = format!(
        "truth {truth:.4}; covered by IPS {}/50, SNIPS {}/50, DR {}/50; mean estimates {means:.4?}\n{}",
        covered[0],
        covered[1],
        covered[2],
        figures.join("\n")
    );
    assert!(covered.iter().all(|&c| c >= 45), "{summary}");
    // And no estimator is off on average (the mean of 50 runs has a fiftieth of one run's variance).
    for mean in means {
        assert!((mean - truth).abs() < 0.01, "{summary}");
    }
    eprintln!("{}", summary.lines().next().unwrap());
}
