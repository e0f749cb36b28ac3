//! A policy's native build and its component agree bit for bit on the same request.

use relish_guest::Policy;
use relish_host::runtime::types;
use relish_policy_discovery::Discovery;
use relish_policy_popularity::Popularity;
use relish_tests::{budget, decode, fixture, policy, synthetic, to_guest};

fn agree<P: Policy>(name: &str, request: &types::Request) {
    let wasm = policy(name).rank(request, &budget()).expect("the component answers");
    let native = relish_guest::rank_raw::<P>(to_guest(request)).expect("the native build answers");
    assert_eq!(wasm.order(), native.order.as_slice(), "{name}: order");
    let bits = |scores: &[f32]| scores.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(wasm.scores()), bits(&native.scores), "{name}: scores, bit for bit");
}

#[test]
fn native_and_wasm_agree_on_the_fixtures() {
    for file in ["discovery-evening.json", "discovery-anonymous.json"] {
        let request = decode(&fixture(file));
        agree::<Discovery>("discovery", &request);
        agree::<Popularity>("popularity", &request);
    }
}

#[test]
fn native_and_wasm_agree_on_synthetic_requests() {
    for seed in 0..10 {
        let request = decode(&synthetic::venues(500, seed, seed % 4 == 0).to_string());
        agree::<Discovery>("discovery", &request);
        agree::<Popularity>("popularity", &request);
    }
}
