//! The cost of one policy call, wasm against native, in one run.
//!
//! `cargo bench -p relish-tests --bench call`
//!
//! For each bundled policy and request size: the call through the host on a fresh pooled instance
//! (what a server request pays: new store, instantiate, copy the request in, rank, copy the answer
//! out, validate), the call on one reused instance (the same minus instantiation), and the same
//! algorithm compiled natively, ranking the same request already in memory (no copy at all: the
//! strictest baseline).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use relish_guest::{Policy, Request};
use relish_host::runtime::{Budget, types};
use relish_policy_discovery::Discovery;
use relish_policy_popularity::Popularity;
use relish_tests::{decode, policy, synthetic, to_guest};

fn compare<P: Policy>(c: &mut Criterion, name: &str, request: &types::Request, label: &str) {
    let budget = Budget { deadline: std::time::Duration::from_secs(1), ..Budget::default() };
    let loaded = policy(name);
    let native = Request::new(to_guest(request), P::SPEC);
    let mut group = c.benchmark_group(format!("{name}/{label}"));
    group.bench_function("wasm fresh instance", |b| {
        b.iter(|| black_box(loaded.rank(black_box(request), &budget).expect("the policy answers")))
    });
    let mut instance = loaded.instance(&budget).expect("an instance");
    group.bench_function("wasm reused instance", |b| {
        b.iter(|| black_box(instance.rank(black_box(request)).expect("the policy answers")))
    });
    group.bench_function("native", |b| b.iter(|| black_box(P::rank(black_box(&native)).expect("the policy answers"))));
    group.finish();
}

/// The fixed cost of a fresh instance: store, pooled slot, instantiation, teardown.
fn instantiation(c: &mut Criterion) {
    let budget = Budget { deadline: std::time::Duration::from_secs(1), ..Budget::default() };
    let loaded = policy("popularity");
    c.bench_function("instantiate and drop", |b| b.iter(|| black_box(loaded.instance(&budget).expect("an instance"))));
}

fn calls(c: &mut Criterion) {
    let personal = decode(&synthetic::venues(500, 1, false).to_string());
    assert_eq!(personal.candidates.feature_names.len(), 20, "the benchmark request has 20 features");
    compare::<Discovery>(c, "discovery", &personal, "500x20");
    compare::<Popularity>(c, "popularity", &personal, "500x20");
    let small = decode(&synthetic::venues(50, 2, false).to_string());
    compare::<Discovery>(c, "discovery", &small, "50x20");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = instantiation, calls
}
criterion_main!(benches);
