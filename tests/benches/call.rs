//! The cost of one policy call, wasm against native, in one run.
//!
//! `cargo bench -p relish-tests --bench call`
//!
//! For each bundled policy at its typical request size: the call through the host on a fresh pooled instance
//! (what a server request pays: new store, instantiate, copy the request in, rank, copy the answer
//! out, validate), the call on one reused instance (the same minus instantiation), and the same
//! algorithm compiled natively, ranking the same request already in memory (no copy at all: the
//! strictest baseline). Last, goal 4's ratios: `discovery` on a fresh instance (and on a reused
//! one) against native, timed in alternation ([`interleaved`]), whose ratio the drift of a shared
//! machine cannot skew as it can skew two criterion cases measured seconds apart.

use std::hint::black_box;

use criterion::{Criterion, criterion_group};
use relish_guest::{Policy, Request};
use relish_host::runtime::{Budget, types};
use relish_policy_banners::Banners;
use relish_policy_brands::Brands;
use relish_policy_cart_cross_sell::CartCrossSell;
use relish_policy_category::Category;
use relish_policy_discovery::Discovery;
use relish_policy_discovery_gbdt::DiscoveryGbdt;
use relish_policy_food_categories::FoodCategories;
use relish_policy_popularity::Popularity;
use relish_policy_venue_items::VenueItems;
use relish_tests::{decode, policy, synthetic, to_guest};

#[path = "../../host/wire/benches/support/interleave.rs"]
mod interleave;

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
    // Goal 4's policy: its core module is larger (more functions, data and table entries).
    let loaded = policy("discovery");
    c.bench_function("instantiate and drop/discovery", |b| {
        b.iter(|| black_box(loaded.instance(&budget).expect("an instance")))
    });
    // What a call's deadline adds to it: one read of the thread's CPU clock when it starts (see
    // `runtime::deadline`).
    c.bench_function("thread CPU clock read", |b| {
        b.iter(|| black_box(rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime)))
    });
}

/// The `discovery` requests of goal 4: 500 (seed 1) and 50 (seed 2) venues with 20 features, a
/// user with features.
const PERSONAL: [(usize, u64); 2] = [(500, 1), (50, 2)];

fn personal(n: usize, seed: u64) -> types::Request {
    let request = decode(&synthetic::venues(n, seed, false).to_string());
    assert_eq!(request.candidates.feature_names.len(), 20, "the benchmark request has 20 features");
    request
}

fn calls(c: &mut Criterion) {
    let [(n, seed), (small_n, small_seed)] = PERSONAL;
    let personal_500 = personal(n, seed);
    compare::<Discovery>(c, "discovery", &personal_500, "500x20");
    compare::<Popularity>(c, "popularity", &personal_500, "500x20");
    compare::<Discovery>(c, "discovery", &personal(small_n, small_seed), "50x20");

    // The portfolio, each at its typical request size.
    let page = decode(&synthetic::venues(300, 3, false).to_string());
    compare::<Category>(c, "category", &page, "300 venues");
    compare::<DiscoveryGbdt>(c, "discovery-gbdt", &personal_500, "500 venues");
    let menu = decode(&synthetic::menu("venue-items", 150, 0, 4).to_string());
    compare::<VenueItems>(c, "venue-items", &menu, "150 items");
    let cart = decode(&synthetic::menu("cart-cross-sell", 200, 3, 5).to_string());
    compare::<CartCrossSell>(c, "cart-cross-sell", &cart, "200 items, 3 in cart");
    compare::<Banners>(c, "banners", &decode(&synthetic::banners(20, 6).to_string()), "20 banners");
    compare::<Brands>(c, "brands", &decode(&synthetic::entries("brands", 40, 7).to_string()), "40 brands");
    let categories = decode(&synthetic::entries("food-categories", 30, 8).to_string());
    compare::<FoodCategories>(c, "food-categories", &categories, "30 categories");
}

/// Goal 4's ratios, interleaved (see [`interleave`]): `discovery` on a fresh instance, and on a
/// reused one, against native.
fn interleaved() {
    let budget = Budget { deadline: std::time::Duration::from_secs(1), ..Budget::default() };
    let loaded = policy("discovery");
    println!(
        "\ndiscovery, wasm / native, interleaved ({} rounds of about 2 ms of native each): median [quartiles]",
        interleave::ROUNDS
    );
    for (n, seed) in PERSONAL {
        let request = personal(n, seed);
        let native = Request::new(to_guest(&request), Discovery::SPEC);
        let native = || drop(black_box(Discovery::rank(black_box(&native)).expect("the policy answers")));
        let fresh = || drop(black_box(loaded.rank(black_box(&request), &budget).expect("the policy answers")));
        let instance = std::cell::RefCell::new(loaded.instance(&budget).expect("an instance"));
        let reused = || drop(black_box(instance.borrow_mut().rank(black_box(&request)).expect("the policy answers")));
        println!("{n}x20: fresh / native {}", interleave::ratio(&fresh, &native, 2e-3));
        println!("{n}x20: reused / native {}", interleave::ratio(&reused, &native, 2e-3));
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(3));
    targets = instantiation, calls
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if interleave::wanted(std::env::args().skip(1)) {
        interleaved();
    }
}
