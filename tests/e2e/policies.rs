//! The bundled policies keep their promises when run through the host.

use relish_host::runtime::types;
use relish_tests::{budget, decode, fixture, ids, policy, synthetic};

fn rank(name: &str, request: &types::Request) -> Vec<String> {
    let ranking = policy(name).rank(request, &budget()).expect("the policy answers");
    ids(request, ranking.order())
}

#[test]
fn popularity_puts_open_venues_before_closed_ones() {
    let request = decode(&fixture("discovery-evening.json"));
    let order = rank("popularity", &request);
    let closed = ["venue-closed-star", "venue-closed-sushi"];
    let first_closed = order.iter().position(|id| closed.contains(&id.as_str())).expect("closed venues are ranked");
    assert!(order[first_closed..].iter().all(|id| closed.contains(&id.as_str())), "order: {order:?}");
}

#[test]
fn discovery_puts_open_venues_before_closed_ones() {
    let request = decode(&fixture("discovery-evening.json"));
    let order = rank("discovery", &request);
    let first_closed = order.iter().position(|id| id.starts_with("venue-closed")).expect("closed venues are ranked");
    assert_eq!(first_closed, order.len() - 2, "order: {order:?}");
    assert!(order[first_closed..].iter().all(|id| id.starts_with("venue-closed")), "order: {order:?}");
}

#[test]
fn discovery_ranks_a_venue_higher_when_the_user_likes_its_cuisine_more() {
    let position = |affinity: f32| {
        let mut json: serde_json::Value = serde_json::from_str(&fixture("discovery-evening.json")).unwrap();
        json["user"]["features"]["affinity.thai"] = serde_json::json!(affinity);
        let request = decode(&json.to_string());
        rank("discovery", &request).iter().position(|id| id == "venue-thai").unwrap()
    };
    let (cold, warm) = (position(0.0), position(1.0));
    assert!(warm < cold, "thai at {cold} with affinity 0, at {warm} with affinity 1");
}

#[test]
fn discovery_keeps_three_cuisines_in_the_top_five() {
    // A pizza lover with ten strong pizza places: the page must still open with variety.
    for seed in 0..20 {
        let mut json = synthetic::venues(60, seed, false);
        json["user"]["features"]["affinity.pizza"] = serde_json::json!(1.0);
        for (i, candidate) in json["candidates"].as_array_mut().unwrap().iter_mut().enumerate().take(10) {
            candidate["tags"] = serde_json::json!(["pizza"]);
            candidate["features"]["rating"] = serde_json::json!(9.8);
            candidate["features"]["is_open"] = serde_json::json!(1);
            candidate["id"] = serde_json::json!(format!("pizza-{i}"));
        }
        let request = decode(&json.to_string());
        let ranking = policy("discovery").rank(&request, &budget()).unwrap();
        let cuisines: std::collections::BTreeSet<u32> =
            ranking.order()[..5].iter().map(|&i| primary_cuisine(&request, i)).collect();
        assert!(cuisines.len() >= 3, "seed {seed}: top five {:?}", ids(&request, &ranking.order()[..5]));
    }
}

fn primary_cuisine(request: &types::Request, i: u32) -> u32 {
    let tags = &request.candidates.tags;
    let row = &tags.indices[tags.offsets[i as usize] as usize..tags.offsets[i as usize + 1] as usize];
    *row.iter()
        .find(|&&t| !synthetic::DAYPARTS.contains(&request.tag_vocabulary.get(t as usize)))
        .expect("every synthetic venue has a cuisine")
}

#[test]
fn anonymous_users_get_the_popularity_order() {
    for seed in 0..10 {
        let request = decode(&synthetic::venues(200, seed, true).to_string());
        assert_eq!(rank("discovery", &request), rank("popularity", &request), "seed {seed}");
    }
    let request = decode(&fixture("discovery-anonymous.json"));
    assert_eq!(rank("discovery", &request), rank("popularity", &request));
}

#[test]
fn a_null_feature_is_treated_as_missing() {
    // `rating: null` must rank exactly like leaving `rating` out, never like a number.
    let with_null = decode(
        r#"{"candidates": [
            {"id": "a", "features": {"rating": null, "orders_7d": 100}},
            {"id": "b", "features": {"rating": 7.0, "orders_7d": 100}}]}"#,
    );
    let without = decode(
        r#"{"candidates": [
            {"id": "a", "features": {"orders_7d": 100}},
            {"id": "b", "features": {"rating": 7.0, "orders_7d": 100}}]}"#,
    );
    assert!(with_null.candidates.features[0].is_nan(), "the matrix holds NaN for the missing value");
    for name in ["popularity", "discovery"] {
        let a = policy(name).rank(&with_null, &budget()).unwrap();
        let b = policy(name).rank(&without, &budget()).unwrap();
        assert_eq!(a.order(), b.order(), "{name}");
        assert_eq!(a.scores(), b.scores(), "{name}");
        assert_eq!(ids(&with_null, a.order())[0], "b", "{name}: the rated venue wins");
    }
}

#[test]
fn both_policies_answer_randomized_requests_within_the_contract() {
    // Every answer passes the host's validation (rank returns Ok only then), on requests of every
    // size, with and without users.
    for seed in 0..30 {
        let n = [0, 1, 2, 7, 50, 333][seed as usize % 6];
        let request = decode(&synthetic::venues(n, seed, seed % 3 == 0).to_string());
        for name in ["popularity", "discovery"] {
            let ranking = policy(name).rank(&request, &budget());
            let ranking = ranking.unwrap_or_else(|e| panic!("{name}, seed {seed}, {n} candidates: {e}"));
            assert_eq!(ranking.len(), n.min(50), "{name}, seed {seed}");
        }
    }
}
