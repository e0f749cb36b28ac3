//! What containment costs and how well it holds, in one run.
//!
//! `cargo bench -p relish-tests --bench containment`
//!
//! 1. The cost of epoch interruption on a normal call: the same policies and requests on two
//!    engines that differ only in `epoch_interruption` (compiled-in deadline checks plus the
//!    ticker thread), each call on a fresh pooled instance as a server makes it. Both engines
//!    are measured alternately, in rounds, so that drift in the machine's load hits both alike.
//! 2. How long after its deadline a looping policy is stopped: `infinite-loop` under deadlines
//!    of 1 to 20 ms with the default 1 ms epoch tick, wall time from the call's start to its
//!    return minus the deadline.

use std::hint::black_box;
use std::time::{Duration, Instant};

use relish_host::runtime::{Budget, CallError, PolicyPre, Runtime, RuntimeConfig, types};
use relish_tests::{decode, policy_bytes, synthetic};

/// Per-call nanoseconds of `rank` over `calls` calls.
fn per_call(policy: &PolicyPre, request: &types::Request, budget: &Budget, calls: u32) -> f64 {
    let started = Instant::now();
    for _ in 0..calls {
        black_box(policy.rank(black_box(request), budget).expect("the policy answers"));
    }
    started.elapsed().as_nanos() as f64 / f64::from(calls)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn epoch_cost() {
    let with = Runtime::new(RuntimeConfig::default()).expect("an engine");
    let without = Runtime::new(RuntimeConfig { epoch_interruption: false, ..RuntimeConfig::default() })
        .expect("an engine without epoch interruption");
    let budget = Budget { deadline: Duration::from_secs(1), ..Budget::default() };
    println!("## Epoch interruption: cost on a normal call (fresh instance per call)\n");
    println!("| policy | request | with epochs | without | with / without |");
    println!("|---|---|---:|---:|---:|");
    for (name, candidates) in [("discovery", 500), ("discovery", 50), ("popularity", 500), ("discovery-gbdt", 500)] {
        let bytes = policy_bytes(name);
        let (on, off) = (with.load(&bytes).expect("loads"), without.load(&bytes).expect("loads"));
        let request = decode(&synthetic::venues(candidates, 7, false).to_string());
        let calls = if candidates > 100 { 200 } else { 2000 };
        per_call(&on, &request, &budget, calls);
        per_call(&off, &request, &budget, calls);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            a.push(per_call(&on, &request, &budget, calls));
            b.push(per_call(&off, &request, &budget, calls));
        }
        let (a, b) = (median(a), median(b));
        println!("| {name} | {candidates}x20 | {:.1} µs | {:.1} µs | {:.3} |", a / 1000.0, b / 1000.0, a / b);
    }
    println!();
}

fn deadline_overshoot() {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("an engine");
    let looping = runtime.load(&relish_tests::guest_bytes("infinite-loop")).expect("loads");
    let request = decode(&synthetic::venues(50, 1, false).to_string());
    let tick = runtime.config().epoch_tick;
    println!("## Deadline overshoot: a looping policy, {tick:?} epoch tick\n");
    println!("Wall time from the start of the call to its return, minus the deadline; 200 calls each.\n");
    println!("| deadline | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|");
    for deadline_ms in [1u64, 2, 5, 20] {
        let deadline = Duration::from_millis(deadline_ms);
        let budget = Budget { deadline, ..Budget::default() };
        let mut overshoot: Vec<f64> = (0..200)
            .map(|_| {
                let started = Instant::now();
                let result = looping.rank(&request, &budget);
                let elapsed = started.elapsed();
                assert!(matches!(result, Err(CallError::Timeout(_))), "the loop is interrupted: {result:?}");
                elapsed.as_secs_f64() * 1000.0 - deadline.as_secs_f64() * 1000.0
            })
            .collect();
        overshoot.sort_by(f64::total_cmp);
        println!(
            "| {deadline_ms} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            percentile(&overshoot, 0.5),
            percentile(&overshoot, 0.99),
            overshoot[overshoot.len() - 1]
        );
    }
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported (the run is short).
    epoch_cost();
    deadline_overshoot();
}
