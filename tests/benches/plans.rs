//! What plans cost per request, side by side in one run: choosing an arm (hash + table lookup)
//! against the whole decision, and the host CPU a 100 % shadow of the same cost adds.
//!
//! ```sh
//! cargo bench -p relish-tests --bench plans
//! ```
//!
//! The arm choice is timed by criterion. The shadow's cost is host CPU (user + system time of the
//! process, from `/proc/self/stat`) per decision over the same number of decisions with and
//! without a shadow, waiting for every shadow call to finish: what the machine pays, which the
//! response time does not show because shadows run off the response path.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use relish_host::control::plan::BUCKETS;
use relish_host::metrics::Metrics;
use relish_host::serving::shadow::ShadowStats;
use relish_host::serving::{ArmBinding, Binding, Bound, Limiter, ShadowBinding};
use relish_tests::bench::process_cpu_seconds;

fn binding(metrics: &Metrics, shadow: bool) -> Arc<Binding> {
    let policy = Arc::new(relish_tests::policy("discovery"));
    let bound = Bound::new(policy);
    let arm = |name: &str| ArmBinding {
        metrics: metrics.binding("discovery", name, "discovery", "0.1.0"),
        name: name.to_owned(),
        bound: bound.clone(),
        weight: BUCKETS / 2,
        params: relish_host::runtime::types::Params::empty(),
        health: None,
    };
    let shadows = if shadow {
        vec![ShadowBinding {
            name: "shadow".to_owned(),
            bound: bound.clone(),
            params: relish_host::runtime::types::Params::empty(),
            threshold: u32::from(BUCKETS),
            stats: Arc::new(ShadowStats::default()),
        }]
    } else {
        Vec::new()
    };
    let mut table = vec![0u8; usize::from(BUCKETS)];
    table[usize::from(BUCKETS / 2)..].fill(1);
    Arc::new(Binding {
        unplanned: metrics.binding("discovery", "none", "none", "none"),
        surface: "discovery".to_owned(),
        revision: 1,
        salt: "bench".to_owned(),
        table: table.into_boxed_slice(),
        arms: vec![arm("a"), arm("b")],
        shadows,
        fallback: None,
        budget: relish_tests::budget(),
        max_candidates: 10_000,
        limiter: None,
        shadow_limiter: Arc::new(Limiter::new(64)),
        features: None,
        log: None,
    })
}

fn plans(c: &mut Criterion) {
    let metrics = Arc::new(Metrics::new());
    let plain = binding(&metrics, false);
    let users: Vec<String> = (0..1024).map(|i| format!("user-{i:08}")).collect();
    let mut group = c.benchmark_group("plans");
    let mut i = 0;
    group.bench_function("assign/user-id", |b| {
        b.iter(|| {
            i = (i + 1) % users.len();
            black_box(plain.assign(Some(black_box(&users[i])), 7))
        })
    });
    let request = relish_tests::decode(&relish_tests::synthetic::venues(50, 1, false).to_string());
    group.bench_function("decide/discovery-50", |b| {
        b.iter(|| black_box(plain.decide(request.clone(), Some("user-1"), &metrics)))
    });
    group.finish();

    // Host CPU per decision, with and without a 100 % shadow of the same cost.
    let shadowed = binding(&metrics, true);
    const DECISIONS: usize = 4000;
    let per_decision = |binding: &Arc<Binding>| {
        let (cpu_before, wall) = (process_cpu_seconds(), Instant::now());
        for i in 0..DECISIONS {
            black_box(binding.decide(request.clone(), Some(&users[i % users.len()]), &metrics));
        }
        let stats = binding.shadows.first().map(|s| s.stats.clone());
        while let Some(stats) = &stats {
            let done = stats.figures().iter().map(|f| f.calls).sum::<u64>() + stats.skipped();
            if done as usize == DECISIONS {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let skipped = stats.map_or(0, |s| s.skipped());
        ((process_cpu_seconds() - cpu_before) * 1e6 / DECISIONS as f64, wall.elapsed(), skipped)
    };
    let (without, _, _) = per_decision(&plain);
    let (with, _, skipped) = per_decision(&shadowed);
    println!(
        "host CPU per decision, discovery 50 x 20: {without:.1} µs without a shadow, {with:.1} µs with a 100 % shadow \
         of the same version (x{:.2}; {skipped} of {DECISIONS} shadow calls skipped at the limit)",
        with / without
    );
}

criterion_group!(benches, plans);
criterion_main!(benches);
