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

/// Course categories of menu items: the categories the default cross-sell complement table names.
pub const COURSES: [&str; 4] = ["main", "side", "drink", "dessert"];

/// A local time at the user's location (minutes since midnight), as `context.time` (UTC+2).
fn local_time(minute_of_day: u64) -> String {
    format!("2026-11-28T{:02}:{:02}:00+02:00", minute_of_day / 60, minute_of_day % 60)
}

/// One venue's menu in the row shape: `n` items with a course tag (and sometimes a daypart tag),
/// recent orders, a price, availability and the user's own orders; a user with a `price_level`;
/// and the first `cart` items of the menu in the cart. The surface is `surface` (`venue-items` or
/// `cart-cross-sell`).
pub fn menu(surface: &str, n: usize, cart: usize, seed: u64) -> Value {
    let mut rng = Rng::from_seed(seed);
    let items: Vec<Value> = (0..n)
        .map(|i| {
            let course = COURSES[rng.below(COURSES.len() as u64) as usize];
            let mut tags = vec![course];
            if rng.f64() < 0.3 {
                tags.push(DAYPARTS[rng.below(3) as usize]);
            }
            let mut features = serde_json::Map::new();
            features.insert("orders_7d".into(), json!((rng.f64() * 400.0).round()));
            features.insert("price".into(), json!((20.0 + rng.f64() * 250.0).round() / 10.0));
            features.insert("is_available".into(), json!(if rng.f64() < 0.9 { 1 } else { 0 }));
            if rng.f64() < 0.1 {
                features.insert("user_orders".into(), json!((1.0 + rng.f64() * 5.0).round()));
                features.insert("user_last_order_days".into(), json!((rng.f64() * 90.0).round()));
            }
            json!({"id": format!("item-{i}"), "features": features, "tags": tags})
        })
        .collect();
    let cart: Vec<Value> =
        items.iter().take(cart).map(|item| json!({"id": item["id"], "tags": item["tags"]})).collect();
    json!({
        "request_id": format!("r-{seed}"),
        "surface": surface,
        "user": {"id": format!("u-{seed}"), "features": {"price_level": 1 + rng.below(4)}},
        "context": {"country": "FI", "city": "helsinki", "time": local_time(rng.below(1440)), "cart": cart},
        "candidates": items,
        "limit": 20,
    })
}

/// `n` banners with their own record, a city-level prior and the user's impressions today.
pub fn banners(n: usize, seed: u64) -> Value {
    let mut rng = Rng::from_seed(seed);
    let banners: Vec<Value> = (0..n)
        .map(|i| {
            let impressions = (rng.f64() * 20_000.0).round();
            json!({"id": format!("banner-{i}"), "features": {
                "impressions": impressions,
                "clicks": (impressions * rng.f64() * 0.06).round(),
                "prior_impressions": 500_000,
                "prior_clicks": 15_000,
                "user_impressions_today": rng.below(5),
            }})
        })
        .collect();
    json!({
        "request_id": format!("r-{seed}"),
        "surface": "banners",
        "user": {"id": format!("u-{seed}"), "features": {}},
        "candidates": banners,
        "limit": 5,
    })
}

/// `n` entry points (brands or food categories, by `surface`) with cuisine and daypart tags,
/// orders, impressions (some new), availability and the user's orders; a user with affinities.
pub fn entries(surface: &str, n: usize, seed: u64) -> Value {
    let mut rng = Rng::from_seed(seed);
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            let mut tags = vec![CUISINES[rng.below(CUISINES.len() as u64) as usize]];
            if rng.f64() < 0.3 {
                tags.push(DAYPARTS[rng.below(3) as usize]);
            }
            let new = rng.f64() < 0.2;
            json!({"id": format!("{surface}-{i}"), "tags": tags, "features": {
                "orders_7d": (rng.f64() * 5000.0).round(),
                "impressions_7d": if new { (rng.f64() * 400.0).round() } else { (1000.0 + rng.f64() * 50_000.0).round() },
                "is_open": if rng.f64() < 0.9 { 1 } else { 0 },
                "venues_open": rng.below(30),
                "user_orders": if rng.f64() < 0.15 { rng.below(10) } else { 0 },
                "user_last_order_days": rng.below(120),
            }})
        })
        .collect();
    let affinities: serde_json::Map<String, Value> =
        CUISINES.iter().map(|c| (format!("affinity.{c}"), json!((rng.f64() * 100.0).round() / 100.0))).collect();
    json!({
        "request_id": format!("r-{seed}"),
        "surface": surface,
        "user": {"id": format!("u-{seed}"), "features": affinities},
        "context": {"country": "FI", "city": "helsinki", "time": local_time(rng.below(1440))},
        "candidates": entries,
        "limit": 12,
    })
}

/// Every candidate feature a bundled policy reads.
pub const ALL_FEATURES: [&str; 16] = [
    "is_open",
    "rating",
    "eta_min",
    "orders_7d",
    "conversions_7d",
    "impressions_7d",
    "user_orders",
    "user_last_order_days",
    "price",
    "is_available",
    "clicks",
    "impressions",
    "prior_clicks",
    "prior_impressions",
    "user_impressions_today",
    "venues_open",
];

/// A request of any shape, for property tests: 0 to 1,000 candidates carrying a random subset of
/// [`ALL_FEATURES`], each value missing at a random rate, with 0 to 3 tags each (or none in the
/// whole request); an anonymous user, a user without features or one with random affinities and
/// a price level; an empty cart or one with known and unknown items; any local time, seed and
/// limit.
pub fn any(seed: u64) -> Value {
    let mut rng = Rng::from_seed(seed);
    let n = rng.below(1001) as usize;
    let features: Vec<&str> = ALL_FEATURES.iter().copied().filter(|_| rng.f64() < 0.7).collect();
    let missing = rng.f64() * 0.6;
    let tagged = rng.f64() < 0.8;
    let pool: Vec<&str> = CUISINES.iter().chain(&COURSES).chain(&DAYPARTS).copied().collect();
    let random_tags = |rng: &mut Rng| -> Vec<&str> {
        if !tagged {
            return Vec::new();
        }
        let mut tags: Vec<&str> = (0..rng.below(4)).map(|_| pool[rng.below(pool.len() as u64) as usize]).collect();
        tags.sort_unstable();
        tags.dedup();
        tags
    };
    let candidates: Vec<Value> = (0..n)
        .map(|i| {
            let mut row = serde_json::Map::new();
            for &name in &features {
                if rng.f64() >= missing {
                    let value = match rng.below(20) {
                        0 => 0.0,
                        1 => -1.0,
                        _ => (rng.f64() * 1000.0).round() / 10.0,
                    };
                    row.insert(name.to_owned(), json!(value));
                }
            }
            json!({"id": format!("c-{i}"), "features": row, "tags": random_tags(&mut rng)})
        })
        .collect();
    let user = match rng.below(3) {
        0 => Value::Null,
        1 => json!({"id": format!("u-{seed}")}),
        _ => {
            let mut features = serde_json::Map::new();
            for tag in &pool {
                if rng.f64() < 0.3 {
                    features.insert(format!("affinity.{tag}"), json!((rng.f64() * 100.0).round() / 100.0));
                }
            }
            features.insert("price_level".into(), json!(1 + rng.below(4)));
            json!({"id": format!("u-{seed}"), "features": features})
        }
    };
    let cart: Vec<Value> = (0..rng.below(6))
        .map(|k| {
            let id = if n > 0 && rng.f64() < 0.7 { format!("c-{}", rng.below(n as u64)) } else { format!("other-{k}") };
            json!({"id": id, "tags": random_tags(&mut rng)})
        })
        .collect();
    json!({
        "request_id": format!("r-any-{seed}"),
        "seed": rng.next_u64(),
        "user": user,
        "context": {"time": local_time(rng.below(1440)), "cart": cart},
        "candidates": candidates,
        "limit": rng.below(1200),
    })
}

/// The feature-store form of a row-shaped request: one JSONL line per entity, `{"entity", "id",
/// "features", "tags"}` (the format of `relish features load` and of the memory store), the user
/// as entity `user` and the candidates as `entity`.
pub fn entities_jsonl(request: &Value, entity: &str) -> String {
    let mut out = String::new();
    let user = &request["user"];
    if let Some(id) = user["id"].as_str() {
        let line =
            json!({"entity": "user", "id": id, "features": user["features"].as_object().cloned().unwrap_or_default()});
        out.push_str(&line.to_string());
        out.push('\n');
    }
    for candidate in request["candidates"].as_array().into_iter().flatten() {
        let mut line = json!({"entity": entity, "id": candidate["id"], "features": candidate["features"]});
        if let Some(tags) = candidate["tags"].as_array().filter(|t| !t.is_empty()) {
            line["tags"] = json!(tags);
        }
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// The same request with ids only: the user's id and each candidate's id, no features, no tags.
pub fn ids_only(request: &Value) -> Value {
    let mut ids = request.clone();
    if let Some(user) = ids["user"].as_object_mut() {
        user.remove("features");
    }
    for candidate in ids["candidates"].as_array_mut().into_iter().flatten() {
        let id = candidate["id"].clone();
        *candidate = json!({"id": id});
    }
    ids
}
