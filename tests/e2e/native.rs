//! A policy's native build and its component agree bit for bit on the same request.

use relish_guest::Policy;
use relish_host::runtime::types;
use relish_policy_banners::Banners;
use relish_policy_brands::Brands;
use relish_policy_cart_cross_sell::CartCrossSell;
use relish_policy_category::Category;
use relish_policy_discovery::Discovery;
use relish_policy_discovery_gbdt::DiscoveryGbdt;
use relish_policy_food_categories::FoodCategories;
use relish_policy_popularity::Popularity;
use relish_policy_venue_items::VenueItems;
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

#[test]
fn the_portfolio_agrees_natively_and_in_wasm_on_its_fixtures() {
    let request = |file: &str| decode(&fixture(file));
    agree::<Category>("category", &request("category-sushi.json"));
    agree::<VenueItems>("venue-items", &request("venue-items-morning.json"));
    agree::<CartCrossSell>("cart-cross-sell", &request("cart-cross-sell-burger.json"));
    agree::<Banners>("banners", &request("banners-home.json"));
    agree::<Brands>("brands", &request("brands-home.json"));
    agree::<FoodCategories>("food-categories", &request("food-categories-home.json"));
    for file in ["discovery-gbdt-evening.json", "discovery-gbdt-anonymous.json"] {
        agree::<DiscoveryGbdt>("discovery-gbdt", &request(file));
    }
}

#[test]
fn the_portfolio_agrees_natively_and_in_wasm_on_synthetic_requests() {
    for seed in 0..5 {
        agree::<VenueItems>("venue-items", &decode(&synthetic::menu("venue-items", 150, 0, seed).to_string()));
        agree::<CartCrossSell>(
            "cart-cross-sell",
            &decode(&synthetic::menu("cart-cross-sell", 200, 3, seed).to_string()),
        );
        agree::<Banners>("banners", &decode(&synthetic::banners(20, seed).to_string()));
        agree::<Brands>("brands", &decode(&synthetic::entries("brands", 40, seed).to_string()));
        agree::<FoodCategories>(
            "food-categories",
            &decode(&synthetic::entries("food-categories", 30, seed).to_string()),
        );
        let venues = decode(&synthetic::venues(300, seed, seed % 2 == 0).to_string());
        agree::<Category>("category", &venues);
        agree::<DiscoveryGbdt>("discovery-gbdt", &venues);
    }
}
