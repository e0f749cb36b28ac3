//! The policy portfolio keeps its promises when run through the host: one module of tests per
//! policy, each on a fixture request (`tests/fixtures/<policy>-*.json`) and on synthetic ones, and
//! a property test that runs every bundled policy on randomized requests.

use std::collections::BTreeSet;

use relish_host::runtime::{Ranking, types};
use relish_tests::{budget, decode, fixture, ids, policy, synthetic};
use serde_json::{Value, json};

fn answer(name: &str, request: &types::Request) -> Ranking {
    policy(name).rank(request, &budget()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn rank(name: &str, request: &types::Request) -> Vec<String> {
    ids(request, answer(name, request).order())
}

/// A fixture, edited as JSON before decoding.
fn edited(file: &str, edit: impl FnOnce(&mut Value)) -> types::Request {
    let mut json: Value = serde_json::from_str(&fixture(file)).expect("fixtures are JSON");
    edit(&mut json);
    decode(&json.to_string())
}

fn with_param(mut request: types::Request, key: &str, value: &str) -> types::Request {
    request.params.set(key, value);
    request
}

fn position(order: &[String], id: &str) -> usize {
    order.iter().position(|x| x == id).unwrap_or_else(|| panic!("`{id}` is not in {order:?}"))
}

/// The tags of candidate `i`.
fn tags(request: &types::Request, i: u32) -> Vec<&str> {
    let column = &request.candidates.tags;
    column.indices[column.offsets[i as usize] as usize..column.offsets[i as usize + 1] as usize]
        .iter()
        .map(|&t| request.tag_vocabulary.get(t as usize))
        .collect()
}

mod category {
    use super::*;

    const FIXTURE: &str = "category-sushi.json";

    #[test]
    fn closed_venues_come_last() {
        let order = rank("category", &decode(&fixture(FIXTURE)));
        assert_eq!(order.last().map(String::as_str), Some("sushi-closed-star"), "{order:?}");
    }

    #[test]
    fn venues_whose_primary_tag_is_the_category_come_first_then_those_that_list_it() {
        let order = rank("category", &decode(&fixture(FIXTURE)));
        let primary = ["sushi-master", "sushi-green", "sushi-corner", "sushi-express", "sushi-new", "sushi-far"];
        let listing = ["ramen-house", "izakaya"];
        let last_primary = primary.iter().map(|id| position(&order, id)).max().unwrap();
        let listing_positions: Vec<usize> = listing.iter().map(|id| position(&order, id)).collect();
        assert!(listing_positions.iter().all(|&p| p > last_primary), "{order:?}");
        assert!(listing_positions.iter().all(|&p| p < position(&order, "poke-bowl")), "{order:?}");
    }

    #[test]
    fn a_venue_rises_when_the_user_likes_its_other_cuisine() {
        let at = |affinity: f64| {
            let request = edited(FIXTURE, |json| json["user"]["features"]["affinity.vegan"] = json!(affinity));
            position(&rank("category", &request), "sushi-green")
        };
        assert!(at(1.0) < at(0.0), "sushi-green at {} with vegan affinity 1, at {} with 0", at(1.0), at(0.0));
    }

    #[test]
    fn a_long_delivery_costs_rank_within_the_tier() {
        let order = rank("category", &decode(&fixture(FIXTURE)));
        // sushi-far is well rated and popular but 70 minutes away.
        assert!(position(&order, "sushi-express") < position(&order, "sushi-far"), "{order:?}");
    }
}

mod venue_items {
    use super::*;

    const FIXTURE: &str = "venue-items-morning.json";

    fn at(time: &str) -> Vec<String> {
        rank("venue-items", &edited(FIXTURE, |json| json["context"]["time"] = json!(time)))
    }

    #[test]
    fn unavailable_items_come_last() {
        let order = rank("venue-items", &decode(&fixture(FIXTURE)));
        assert_eq!(order.last().map(String::as_str), Some("pancakes"), "{order:?}");
    }

    #[test]
    fn breakfast_items_lead_in_the_morning_and_dinner_items_in_the_evening() {
        let morning = at("2026-11-28T08:15:00+02:00");
        let evening = at("2026-11-28T19:30:00+02:00");
        assert!(position(&morning, "porridge") < position(&morning, "steak"), "{morning:?}");
        assert!(position(&evening, "steak") < position(&evening, "porridge"), "{evening:?}");
        assert!(position(&morning, "croissant") < position(&evening, "croissant"));
    }

    #[test]
    fn the_users_usual_item_rises() {
        let with = rank("venue-items", &decode(&fixture(FIXTURE)));
        let without = rank(
            "venue-items",
            &edited(FIXTURE, |json| {
                let item = &mut json["candidates"][9];
                assert_eq!(item["id"], "club-sandwich");
                item["features"].as_object_mut().unwrap().remove("user_orders");
            }),
        );
        assert!(position(&with, "club-sandwich") < position(&without, "club-sandwich"), "{with:?} / {without:?}");
    }

    #[test]
    fn price_fit_follows_the_users_price_level() {
        let level = |level: u32| {
            let request = edited(FIXTURE, |json| json["user"]["features"]["price_level"] = json!(level));
            position(&rank("venue-items", &request), "lobster")
        };
        assert!(level(4) < level(1), "lobster at {} for level 4, {} for level 1", level(4), level(1));
    }
}

mod cart_cross_sell {
    use super::*;

    const FIXTURE: &str = "cart-cross-sell-burger.json";

    fn cart_ids(request: &types::Request) -> BTreeSet<String> {
        request.context.cart.item_ids.iter().map(str::to_owned).collect()
    }

    /// The fixture and synthetic menus with carts of 0 to 5 items.
    fn requests() -> Vec<types::Request> {
        let mut requests = vec![decode(&fixture(FIXTURE))];
        requests.extend(
            (0..30).map(|seed| decode(&synthetic::menu("cart-cross-sell", 120, seed as usize % 6, seed).to_string())),
        );
        requests
    }

    #[test]
    fn no_cart_item_is_ever_suggested() {
        for request in requests() {
            let suggested = rank("cart-cross-sell", &request);
            let cart = cart_ids(&request);
            assert!(suggested.iter().all(|id| !cart.contains(id)), "cart {cart:?}, suggested {suggested:?}");
        }
    }

    #[test]
    fn at_most_two_suggestions_share_a_category() {
        for request in requests() {
            let ranking = answer("cart-cross-sell", &request);
            let mut counts = std::collections::BTreeMap::new();
            for &i in ranking.order() {
                let category = tags(&request, i).first().map(|t| t.to_string()).unwrap_or_default();
                *counts.entry(category).or_insert(0) += 1;
            }
            assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
        }
    }

    #[test]
    fn complements_of_the_cart_come_first_and_unavailable_items_never() {
        let request = decode(&fixture(FIXTURE));
        let suggested = rank("cart-cross-sell", &request);
        // A main and a drink in the cart: a side is the missing piece; a second drink is weaker.
        assert_eq!(&suggested[..2], ["fries", "onion-rings"], "{suggested:?}");
        assert!(!suggested.contains(&"iced-tea".to_owned()), "{suggested:?}");
        assert!(position(&suggested, "ice-cream") < position(&suggested, "lemonade"), "{suggested:?}");
    }

    #[test]
    fn the_complement_table_is_a_parameter() {
        let request = with_param(decode(&fixture(FIXTURE)), "complements", "main:dessert");
        let suggested = rank("cart-cross-sell", &request);
        assert_eq!(&suggested[..2], ["ice-cream", "brownie"], "{suggested:?}");
        let broken = with_param(decode(&fixture(FIXTURE)), "complements", "main=dessert");
        let error = policy("cart-cross-sell").rank(&broken, &budget()).unwrap_err();
        assert!(error.to_string().contains("complements"), "{error}");
    }
}

mod banners {
    use super::*;

    const FIXTURE: &str = "banners-home.json";

    fn with_seed(seed: u64) -> types::Request {
        let mut request = decode(&fixture(FIXTURE));
        request.seed = seed;
        request
    }

    #[test]
    fn banners_over_the_frequency_cap_are_never_first() {
        for seed in 0..1000 {
            let order = rank("banners", &with_seed(seed));
            assert_ne!(order[0], "seen-too-often", "seed {seed}: {order:?}");
        }
    }

    #[test]
    fn a_clearly_better_banner_is_first_in_most_seeds_but_not_all() {
        let firsts: Vec<String> = (0..1000).map(|seed| rank("banners", &with_seed(seed)).remove(0)).collect();
        let count = |id: &str| firsts.iter().filter(|f| *f == id).count();
        let strong = count("spring-sale");
        assert!(strong > 700 && strong < 1000, "spring-sale first in {strong} of 1000 seeds");
        assert!(count("new-partner") > 0, "a new banner with only the city prior is explored");
    }

    #[test]
    fn one_request_always_gets_the_same_answer_and_seeds_differ() {
        let request = decode(&fixture(FIXTURE));
        let first = answer("banners", &request);
        for _ in 0..5 {
            let again = answer("banners", &request);
            assert_eq!(first.order(), again.order());
            assert_eq!(first.scores(), again.scores());
        }
        let orders: BTreeSet<Vec<u32>> =
            (0..50).map(|seed| answer("banners", &with_seed(seed)).order().to_vec()).collect();
        assert!(orders.len() > 1, "the seed is the source of randomness");
    }

    #[test]
    fn when_every_banner_is_capped_the_answer_is_empty() {
        let request = edited(FIXTURE, |json| {
            for banner in json["candidates"].as_array_mut().unwrap() {
                banner["features"]["user_impressions_today"] = json!(3);
            }
        });
        assert!(answer("banners", &request).is_empty());
    }
}

/// The exploration slot of `brands` and `food-categories`.
mod exploration {
    use super::*;

    /// The explored entry and its position.
    fn slot(name: &str, request: &types::Request) -> Option<(usize, String)> {
        let ranking = answer(name, request);
        (0..ranking.len())
            .find(|&p| ranking.reason(p) == Some("explore"))
            .map(|p| (p, ids(request, &ranking.order()[p..=p]).remove(0)))
    }

    fn check(name: &str, file: &str) {
        let new_entries: BTreeSet<String> = {
            let json: Value = serde_json::from_str(&fixture(file)).unwrap();
            json["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["features"]["impressions_7d"].as_f64().unwrap_or(0.0) < 500.0)
                .filter(|c| c["features"]["is_open"] != json!(0) && c["features"]["venues_open"] != json!(0))
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let mut choices = BTreeSet::new();
        for seed in 0..40u64 {
            let base = edited(file, |json| json["seed"] = json!(seed));
            let choice = slot(name, &base).unwrap_or_else(|| panic!("{name}, seed {seed}: no exploration slot"));
            assert!(new_entries.contains(&choice.1), "{name}: explored {choice:?}, not a new entry");
            assert!((2..8).contains(&choice.0), "{name}: slot at {}", choice.0);
            // Another request, user, profile and time of day, with the same seed: the same slot.
            let other = edited(file, |json| {
                json["seed"] = json!(seed);
                json["request_id"] = json!(format!("another-request-{seed}"));
                json["user"] =
                    json!({"id": "someone-else", "features": {"affinity.poke": 1.0, "affinity.korean": 1.0}});
                json["context"]["time"] = json!("2026-11-30T21:45:00+02:00");
            });
            assert_eq!(slot(name, &other), Some(choice.clone()), "{name}, seed {seed}");
            let anonymous = edited(file, |json| {
                json["seed"] = json!(seed);
                json["user"] = Value::Null;
            });
            assert_eq!(slot(name, &anonymous), Some(choice.clone()), "{name}, seed {seed}, anonymous");
            choices.insert(choice);
        }
        assert!(choices.len() >= 5, "{name}: only {} distinct slots over 40 seeds: {choices:?}", choices.len());
        let entries: BTreeSet<&String> = choices.iter().map(|c| &c.1).collect();
        assert!(entries.len() > 1, "{name}: the explored entry never changes: {entries:?}");
    }

    #[test]
    fn the_brands_exploration_slot_changes_with_the_seed_and_nothing_else() {
        check("brands", "brands-home.json");
    }

    #[test]
    fn the_food_categories_exploration_slot_changes_with_the_seed_and_nothing_else() {
        check("food-categories", "food-categories-home.json");
    }

    #[test]
    fn brands_without_an_open_venue_come_last() {
        // Exploration stays on: the slot only ever holds an open brand.
        let request = edited("brands-home.json", |json| json["limit"] = json!(20));
        let order = rank("brands", &request);
        let tail: BTreeSet<&str> = order[order.len() - 2..].iter().map(String::as_str).collect();
        assert_eq!(tail, BTreeSet::from(["taco-bell", "new-closed-chain"]), "{order:?}");
    }

    #[test]
    fn the_regular_brand_and_the_liked_cuisine_lead() {
        let order = rank("brands", &with_param(decode(&fixture("brands-home.json")), "explore_max_position", "0"));
        assert_eq!(order[0], "mcdonalds", "{order:?}");
        assert!(position(&order, "hesburger") < position(&order, "sushibar"), "{order:?}");
    }

    #[test]
    fn food_categories_follow_the_daypart_and_leave_empty_categories_last() {
        let at = |time: &str| {
            let request = edited("food-categories-home.json", |json| {
                json["context"]["time"] = json!(time);
                json["limit"] = json!(20);
            });
            rank("food-categories", &with_param(request, "explore_max_position", "0"))
        };
        let morning = at("2026-11-28T08:00:00+02:00");
        let evening = at("2026-11-28T19:00:00+02:00");
        assert!(position(&morning, "breakfast") < position(&evening, "breakfast"), "{morning:?} / {evening:?}");
        assert!(position(&evening, "thai") < position(&morning, "thai"), "{morning:?} / {evening:?}");
        assert_eq!(morning.last().map(String::as_str), Some("kebab"));
        assert_eq!(evening.last().map(String::as_str), Some("kebab"));
    }
}

mod discovery_gbdt {
    use super::*;

    /// LightGBM's own predictions, saved by `model/train.py` beside the model.
    fn reference(file: &str) -> serde_json::Map<String, Value> {
        let path = relish_tests::root().join("policies/discovery-gbdt/model/reference.json");
        let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        json["fixtures"][file].as_object().unwrap_or_else(|| panic!("no reference for {file}")).clone()
    }

    #[test]
    fn scores_match_lightgbm_within_1e_5() {
        for file in ["discovery-gbdt-evening.json", "discovery-gbdt-anonymous.json"] {
            let request = decode(&fixture(file));
            let expected = reference(file);
            let ranking = answer("discovery-gbdt", &request);
            let order = ids(&request, ranking.order());
            assert_eq!(order.len(), expected.len(), "{file}: every candidate is ranked");
            for (id, &score) in order.iter().zip(ranking.scores()) {
                let want = expected[id].as_f64().unwrap();
                assert!((score as f64 - want).abs() <= 1e-5, "{file}, {id}: component {score}, LightGBM {want}");
            }
        }
    }

    #[test]
    fn closed_venues_come_last_and_open_ones_by_probability() {
        let request = decode(&fixture("discovery-gbdt-evening.json"));
        let ranking = answer("discovery-gbdt", &request);
        let closed_from =
            (0..ranking.len()).find(|&p| ranking.reason(p) == Some("closed")).expect("the fixture has closed venues");
        assert!((closed_from..ranking.len()).all(|p| ranking.reason(p) == Some("closed")));
        let open = &ranking.scores()[..closed_from];
        assert!(open.windows(2).all(|w| w[0] >= w[1]), "open venues by descending probability");
    }
}

/// Every policy passes the host's output validation (indices in range, no duplicates, finite
/// scores, at most `limit` items: `rank` returns `Ok` only then) on requests of every shape.
#[test]
fn every_policy_answers_randomized_requests_within_the_contract() {
    for seed in 0..40 {
        let json = synthetic::any(seed);
        let request = decode(&json.to_string());
        let n = request.candidates.ids.offsets.len() - 1;
        for name in relish_host::builder::BUNDLED {
            let ranking = policy(name)
                .rank(&request, &budget())
                .unwrap_or_else(|e| panic!("{name}, seed {seed} ({n} candidates, limit {}): {e}", request.limit));
            assert!(ranking.len() <= n.min(request.limit as usize), "{name}, seed {seed}");
        }
    }
}
