//! Synthetic but realistic requests, generated from a seed: for property tests and benchmarks.

use relish_guest::Rng;
use serde_json::{Value, json};

/// Cuisine tags venues draw from.
pub const CUISINES: [&str; 12] =
    ["pizza", "sushi", "burger", "thai", "indian", "mexican", "vegan", "chinese", "kebab", "salad", "korean", "greek"];
/// Daypart tags.
pub const DAYPARTS: [&str; 3] = ["breakfast", "lunch", "dinner"];

/// A discovery request in the row shape: `n` venues with 20 features each (some missing), one or
/// two cuisine tags and maybe a daypart tag, and a user with affinities (unless `anonymous`).
pub fn venues(n: usize, seed: u64, anonymous: bool) -> Value {
    let mut rng = Rng::from_seed(seed);
    let candidates: Vec<Value> = (0..n)
        .map(|i| {
            let impressions = (rng.f64() * 5000.0).round();
            let mut features = serde_json::Map::new();
            let mut put = |name: &str, value: f64| {
                features.insert(name.to_owned(), json!(value));
            };
            put("is_open", if rng.f64() < 0.85 { 1.0 } else { 0.0 });
            put("impressions_7d", impressions);
            put("conversions_7d", (impressions * rng.f64() * 0.2).round());
            put("rating", (50.0 + rng.f64() * 50.0).round() / 10.0);
            put("orders_7d", (rng.f64() * 800.0).round());
            put("eta_min", (10.0 + rng.f64() * 50.0).round());
            put("user_orders", if rng.f64() < 0.1 { (rng.f64() * 8.0).round() } else { 0.0 });
            put("user_last_order_days", (rng.f64() * 120.0).round());
            put("price_level", (1.0 + rng.f64() * 3.0).round());
            put("distance_km", rng.f64() * 8.0);
            put("delivery_fee", (rng.f64() * 6.0 * 100.0).round() / 100.0);
            put("min_order", (rng.f64() * 20.0).round());
            put("photos", (rng.f64() * 30.0).round());
            put("menu_items", (10.0 + rng.f64() * 150.0).round());
            put("promo", if rng.f64() < 0.2 { 1.0 } else { 0.0 });
            put("new_venue", if rng.f64() < 0.05 { 1.0 } else { 0.0 });
            put("sponsored", if rng.f64() < 0.03 { 1.0 } else { 0.0 });
            put("repeat_rate", rng.f64());
            put("cancel_rate", rng.f64() * 0.05);
            put("avg_basket_eur", 10.0 + rng.f64() * 40.0);
            // Some venues lack some features: the caller does not always know them.
            if rng.f64() < 0.1 {
                features.remove("rating");
            }
            if rng.f64() < 0.05 {
                features.remove("eta_min");
            }
            let mut tags = vec![CUISINES[rng.below(CUISINES.len() as u64) as usize]];
            if rng.f64() < 0.4 {
                let second = CUISINES[rng.below(CUISINES.len() as u64) as usize];
                if second != tags[0] {
                    tags.push(second);
                }
            }
            if rng.f64() < 0.5 {
                tags.push(DAYPARTS[rng.below(3) as usize]);
            }
            json!({"id": format!("venue-{i}"), "features": features, "tags": tags})
        })
        .collect();
    let user = if anonymous {
        Value::Null
    } else {
        let affinities: serde_json::Map<String, Value> =
            CUISINES.iter().map(|c| (format!("affinity.{c}"), json!((rng.f64() * 100.0).round() / 100.0))).collect();
        json!({"id": format!("u-{seed}"), "features": affinities})
    };
    json!({
        "request_id": format!("r-{seed}"),
        "surface": "discovery",
        "user": user,
        "context": {"country": "FI", "city": "helsinki", "locale": "fi-FI", "device": "ios",
                    "time": "2026-11-28T18:30:00+02:00"},
        "candidates": candidates,
        "limit": 50,
    })
}
