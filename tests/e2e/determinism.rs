//! The same request and version give byte-identical answers.

use relish_host::wire::Response;
use relish_tests::{budget, decode, guest, policy, runtime, synthetic};

/// The response bytes, without `took_us` (a measurement, not part of the answer).
fn answer(policy: &relish_host::runtime::PolicyPre, json: &str) -> Vec<u8> {
    let request = decode(json);
    let ranking = policy.rank(&request, &budget()).expect("the policy answers");
    let metadata = policy.metadata();
    let digest = policy.digest();
    let response: Response<'_> = Response {
        request_id: &request.request_id,
        items: ranking.items(&request.candidates.ids),
        policy: Some(relish_host::wire::PolicyRef {
            name: &metadata.name,
            version: &metadata.version,
            digest: &digest.0,
        }),
        arm: None,
        fallback: None,
        features: None,
        took_us: 0,
    };
    response.to_json()
}

#[test]
fn repeated_runs_give_byte_identical_answers() {
    let json = synthetic::venues(300, 11, false).to_string();
    for name in ["discovery", "popularity"] {
        let first = answer(&policy(name), &json);
        for _ in 0..20 {
            assert_eq!(answer(&policy(name), &json), first, "{name}");
        }
        // A second, separately compiled copy of the same component answers the same.
        let reloaded = runtime().load(&relish_tests::policy_bytes(name)).unwrap();
        assert_eq!(answer(&reloaded, &json), first, "{name} after reloading");
    }
}

#[test]
fn a_policy_using_the_seeded_rng_is_deterministic_per_seed() {
    let random = guest("seeded-random");
    let request = |seed: u64| {
        let mut json = synthetic::venues(100, 5, false);
        json["seed"] = serde_json::json!(seed);
        json.to_string()
    };
    let first = answer(&random, &request(1));
    for _ in 0..20 {
        assert_eq!(answer(&random, &request(1)), first);
    }
    assert_ne!(answer(&random, &request(2)), first, "another seed draws another order");
}

#[test]
fn without_a_seed_the_request_and_user_ids_decide_it() {
    let random = guest("seeded-random");
    let json = |request_id: &str, user: &str| {
        let mut json = synthetic::venues(100, 5, false);
        json["request_id"] = serde_json::json!(request_id);
        json["user"]["id"] = serde_json::json!(user);
        json.to_string()
    };
    assert_eq!(answer(&random, &json("r-1", "u-1")), answer(&random, &json("r-1", "u-1")));
    assert_ne!(answer(&random, &json("r-1", "u-1")), answer(&random, &json("r-2", "u-1")));
    assert_ne!(answer(&random, &json("r-1", "u-1")), answer(&random, &json("r-1", "u-2")));
}
