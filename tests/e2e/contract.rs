//! Contract versions: components built against the frozen 0.1.0 and 0.2.0 contracts keep loading
//! and serving (0.2.0's with the request in its own shape, names as lists of strings), and the 0.2.0
//! addition, propensities, is reported by the exploring policies and checked by the host.

use relish_host::runtime::{Budget, CallError, Contract, InvalidOutput, Ranking, types};
use relish_tests::{budget, decode, fixture, guest, policy};

#[test]
fn a_component_built_against_0_1_0_loads_and_ranks_as_its_current_twin() {
    let legacy = guest("contract-0-1");
    let current = guest("ordered");
    assert_eq!(legacy.contract(), Contract::V0_1);
    assert_eq!(current.contract(), Contract::V0_3);
    assert_eq!(legacy.metadata().name, "contract-0-1");
    assert_eq!(legacy.metadata().params[0].name, "reverse");
    let mut request = decode(&fixture("discovery-evening.json"));
    for reverse in ["false", "true"] {
        request.params = [("reverse", reverse)].into_iter().collect();
        let old = legacy.rank(&request, &budget()).expect("a 0.1.0 component ranks");
        let new = current.rank(&request, &budget()).expect("its twin ranks");
        assert_eq!(old.order(), new.order(), "reverse = {reverse}");
        assert_eq!(old.scores(), new.scores(), "reverse = {reverse}");
        assert_eq!(old.reason(0), Some("legacy"));
        assert!(!old.has_propensities() && old.propensity(0) == 1.0, "0.1.0 reports no propensities");
    }
    request.params = [("reverse", "maybe")].into_iter().collect();
    let error = legacy.rank(&request, &budget()).expect_err("its own errors come through");
    assert!(error.to_string().contains("`reverse` must be true or false"), "{error}");
}

#[test]
fn a_component_built_against_0_2_0_gets_every_name_and_context_string_it_got_before_0_3_0() {
    let legacy = guest("contract-0-2");
    assert_eq!(legacy.contract(), Contract::V0_2);
    let mut request = decode(&fixture("discovery-evening.json"));
    assert!(!request.user_features.names.is_empty() && !request.tag_vocabulary.is_empty(), "the fixture has both");
    let d = request.candidates.feature_names.len();
    let fingerprint = |request: &types::Request| {
        let c = &request.context;
        let word = |s: Option<&str>| s.unwrap_or("none").to_lowercase();
        format!(
            "{}-{}-{d}-{}-{}-{}",
            word(c.country()),
            word(c.device()),
            request.tag_vocabulary.len(),
            request.user_features.names.len(),
            c.cart.item_ids.len()
        )
    };
    for by in ["rating", "eta_min"] {
        request.params = [("by", by)].into_iter().collect();
        let ranking = legacy.rank(&request, &budget()).expect("a 0.2.0 component ranks");
        let j = request.candidates.feature_names.position(by).expect("the fixture has the feature");
        let value = |i: u32| request.candidates.features[i as usize * d + j];
        let present: Vec<f32> = ranking.order().iter().map(|&i| value(i)).filter(|v| !v.is_nan()).collect();
        assert!(!present.is_empty() && present.windows(2).all(|w| w[0] >= w[1]), "by {by}, highest first: {present:?}");
        assert_eq!(ranking.reason(0), Some(fingerprint(&request).as_str()), "by {by}");
        assert!(ranking.has_propensities() && ranking.propensity(0) == 1.0, "0.2.0 answers carry propensities");
    }
    assert_eq!(
        fingerprint(&request),
        format!("fi-ios-{d}-{}-{}-0", request.tag_vocabulary.len(), request.user_features.names.len())
    );
}

#[test]
fn the_exploring_policies_report_propensities_and_the_deterministic_ones_none() {
    for (name, fixture_name) in [
        ("banners", "banners-home.json"),
        ("brands", "brands-home.json"),
        ("food-categories", "food-categories-home.json"),
    ] {
        let policy = policy(name);
        let request = decode(&fixture(fixture_name));
        let mut explored = false;
        for seed in 0..20 {
            let request = types::Request { seed, ..request.clone() };
            let ranking = policy.rank(&request, &budget()).unwrap_or_else(|e| panic!("{name}: {e}"));
            explored |= ranking.has_propensities() && (0..ranking.len()).any(|k| ranking.propensity(k) < 1.0);
            for k in 0..ranking.len() {
                let p = ranking.propensity(k);
                assert!(p > 0.0 && p <= 1.0, "{name} seed {seed} item {k}: {p}");
            }
        }
        assert!(explored, "{name} explores on its fixture, so some propensity is below 1");
    }
    let discovery = policy("discovery").rank(&decode(&fixture("discovery-evening.json")), &budget()).unwrap();
    assert!(!discovery.has_propensities(), "discovery does not randomise");
}

#[test]
fn propensities_outside_0_1_or_of_the_wrong_length_are_refused() {
    let request = decode(&fixture("banners-home.json"));
    let answer = |propensities: Vec<f32>| types::Ranking {
        order: vec![0, 1],
        scores: vec![1.0, 0.5],
        reasons: Vec::new(),
        reason_codes: Vec::new(),
        propensities,
    };
    assert!(Ranking::validate(answer(vec![0.5, 1.0]), &request, &Budget::default()).is_ok());
    assert!(Ranking::validate(answer(Vec::new()), &request, &Budget::default()).is_ok());
    for (bad, expected) in [
        (vec![0.0, 1.0], InvalidOutput::Propensity { position: 0, propensity: "0".into() }),
        (vec![0.5, 1.5], InvalidOutput::Propensity { position: 1, propensity: "1.5".into() }),
        (vec![f32::NAN, 0.5], InvalidOutput::Propensity { position: 0, propensity: "NaN".into() }),
        (vec![0.5], InvalidOutput::Length { field: "propensities", len: 1, items: 2 }),
    ] {
        match Ranking::validate(answer(bad.clone()), &request, &Budget::default()) {
            Err(CallError::InvalidOutput(error)) => assert_eq!(error, expected, "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}
