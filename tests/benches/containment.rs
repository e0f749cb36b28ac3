//! What containment costs and how well it holds, in one run.
//!
//! `cargo bench -p relish-tests --bench containment`
//!
//! 1. The cost of epoch interruption on a normal call: the same policies and requests on engines
//!    that differ only in `epoch_interruption` (compiled-in deadline checks plus the ticker
//!    thread) and the tick, each call on a fresh pooled instance as a server makes it. The
//!    engines are measured alternately, in rounds, so that drift in the machine's load hits all
//!    alike. A 100 ms tick leaves the ticker thread nearly idle: the difference between it and
//!    the 1 ms tick is the ticker's share, the rest is the checks compiled into the policy.
//! 2. How long after its deadline a looping policy is stopped: `infinite-loop` under deadlines of
//!    1 to 20 ms with a 1 ms and a 250 µs epoch tick; wall time from the call's start to its
//!    return minus the deadline. Calls start at a random point of a tick (after a random pause),
//!    as requests do.

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
    let engines = [
        Runtime::new(RuntimeConfig::default()).expect("an engine"),
        Runtime::new(RuntimeConfig { epoch_tick: Duration::from_millis(100), ..RuntimeConfig::default() })
            .expect("an engine with a slow tick"),
        Runtime::new(RuntimeConfig { epoch_interruption: false, ..RuntimeConfig::default() })
            .expect("an engine without epoch interruption"),
    ];
    let budget = Budget { deadline: Duration::from_secs(1), ..Budget::default() };
    println!("## Epoch interruption: cost on a normal call (fresh instance per call)\n");
    println!("Median per-call time of 15 alternating rounds.\n");
    println!("| policy | request | epochs, 1 ms tick | epochs, 100 ms tick | no epochs | 1 ms tick / none |");
    println!("|---|---|---:|---:|---:|---:|");
    for (name, candidates) in [("discovery", 500), ("discovery", 50), ("popularity", 500), ("discovery-gbdt", 500)] {
        let bytes = policy_bytes(name);
        let loaded: Vec<PolicyPre> = engines.iter().map(|engine| engine.load(&bytes).expect("loads")).collect();
        let request = decode(&synthetic::venues(candidates, 7, false).to_string());
        let calls = if candidates > 100 { 200 } else { 2000 };
        let mut times = vec![Vec::new(); loaded.len()];
        for round in 0..16 {
            for (policy, times) in loaded.iter().zip(&mut times) {
                let time = per_call(policy, &request, &budget, calls);
                if round > 0 {
                    times.push(time); // round 0 warms up
                }
            }
        }
        let [fast, slow, none] = [0, 1, 2].map(|i| median(times[i].clone()) / 1000.0);
        println!("| {name} | {candidates}x20 | {fast:.1} µs | {slow:.1} µs | {none:.1} µs | {:.2} |", fast / none);
    }
    println!();
}

fn deadline_overshoot() {
    println!("## Deadline overshoot: a looping policy\n");
    println!("Wall time from the start of the call to its return, minus the deadline; 200 calls each.\n");
    println!("| epoch tick | deadline | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|");
    for tick_us in [1000u64, 250] {
        overshoot(Duration::from_micros(tick_us));
    }
    println!();
}

fn overshoot(tick: Duration) {
    let runtime = Runtime::new(RuntimeConfig { epoch_tick: tick, ..RuntimeConfig::default() }).expect("an engine");
    let looping = runtime.load(&relish_tests::guest_bytes("infinite-loop")).expect("loads");
    let request = decode(&synthetic::venues(50, 1, false).to_string());
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for deadline_ms in [1u64, 2, 5, 20] {
        let deadline = Duration::from_millis(deadline_ms);
        let budget = Budget { deadline, ..Budget::default() };
        let mut overshoot: Vec<f64> = (0..200)
            .map(|_| {
                // A random pause of up to one tick, so the call starts anywhere in a tick.
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let pause = tick.mul_f64((seed >> 11) as f64 / (1u64 << 53) as f64);
                let until = Instant::now() + pause;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                let started = Instant::now();
                let result = looping.rank(&request, &budget);
                let elapsed = started.elapsed();
                assert!(matches!(result, Err(CallError::Timeout(_))), "the loop is interrupted: {result:?}");
                elapsed.as_secs_f64() * 1000.0 - deadline.as_secs_f64() * 1000.0
            })
            .collect();
        overshoot.sort_by(f64::total_cmp);
        println!(
            "| {} µs | {deadline_ms} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            tick.as_micros(),
            percentile(&overshoot, 0.5),
            percentile(&overshoot, 0.99),
            overshoot[overshoot.len() - 1]
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported (the run is short).
    epoch_cost();
    deadline_overshoot();
}
