//! `venue-items`: the items of one venue's menu, ordered for one user.
//!
//! Each available item scores
//!
//! ```text
//! w_popularity · popularity + w_reorder · reorder + w_daypart · daypart + w_price · price
//! ```
//!
//! - `popularity`: `ln(1 + orders_7d)`, min-max normalised over the menu (0..1);
//! - `reorder`: the user's own past orders of the item, `min(1, user_orders / reorder_saturation)`,
//!   decayed by `user_last_order_days` with a half-life of `reorder_half_life_days` (0..1);
//! - `daypart`: `+1` if the item carries the tag of the local [`relish_guest::Daypart`]
//!   (`breakfast`, `lunch`, `dinner`), `-1` if it carries only other daypart tags (porridge at
//!   dinner time), `0` if it has no daypart tag or the local time is in no daypart;
//! - `price`: how well the item's price suits the user's `price_level` (a user feature, `1` =
//!   cheapest to `price_levels` = priciest): the level maps to a target position `0..1` in this
//!   menu's price range, the item's position is its price percentile on the menu, and the fit is
//!   `1 - 2 · |position - target|` (`-1..1`). Users without `price_level` and items without
//!   `price` get `0`: no opinion.
//!
//! Promises: unavailable items (`is_available` = 0) come after every available one, whatever
//! their score (a missing flag counts as available). Anonymous users get the popularity and
//! daypart order. The percentile makes the price fit independent of the menu's currency and
//! price range, and of outliers.

use relish_guest::score;
use relish_guest::{Daypart, Feature, Param, Policy, RankError, Ranking, Request, Spec, math};

/// The venue-items policy.
pub struct VenueItems;

const PARAMS: &[Param] = &[
    Param { name: "w_popularity", default: "1.0", description: "Weight of the item's normalised popularity (0..1)." },
    Param {
        name: "w_reorder",
        default: "1.2",
        description: "Weight of the user's own past orders of the item (0..1).",
    },
    Param { name: "w_daypart", default: "0.5", description: "Weight of the daypart fit (-1..1)." },
    Param { name: "w_price", default: "0.3", description: "Weight of the price fit (-1..1)." },
    Param {
        name: "reorder_saturation",
        default: "3",
        description: "Past orders of an item at which the user's own signal reaches 1.",
    },
    Param {
        name: "reorder_half_life_days",
        default: "60",
        description: "Days since the user last ordered the item after which that signal halves.",
    },
    Param {
        name: "price_levels",
        default: "4",
        description: "The number of price levels of the `price_level` user feature (1 = cheapest ..= price_levels).",
    },
];

const FEATURES: &[Feature] = &[
    Feature::candidate("orders_7d", "Orders of the item in this venue, last 7 days."),
    Feature::candidate("user_orders", "How many times this user ordered the item."),
    Feature::candidate("user_last_order_days", "Days since this user last ordered the item."),
    Feature::candidate("price", "The item's price, in the menu's currency."),
    Feature::candidate("is_available", "1 if the item can be ordered now, 0 if sold out; missing = available."),
    Feature::user("price_level", "The price level the user usually orders at, 1 (cheapest) ..= price_levels."),
];

impl Policy for VenueItems {
    const SPEC: &'static Spec = &Spec {
        name: "venue-items",
        version: env!("CARGO_PKG_VERSION"),
        description: "Menu item ranking: popularity in the venue, the user's own past orders, daypart fit and price \
                      fit; unavailable items last.",
        surfaces: &["venue-items"],
        params: PARAMS,
        features: FEATURES,
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let w = Weights::read(request)?;
        let candidates = request.candidates();
        let n = candidates.len();
        let popularity = score::log_count_scores(candidates.feature("orders_7d"));
        let (orders, last_days) = (candidates.feature("user_orders"), candidates.feature("user_last_order_days"));
        let reorder = score::reorders(orders, last_days, w.saturation, w.half_life);
        let daypart = daypart_fit(request);
        let price = price_fit(request, w.price_levels);

        let contributions = |i: usize| {
            [
                (w.popularity * popularity[i], "popular"),
                (w.reorder * reorder[i], "reorder"),
                (w.daypart * daypart[i], "daypart"),
                (w.price * price[i], "price"),
            ]
        };
        let scores: Vec<f32> = (0..n).map(|i| contributions(i).iter().map(|c| c.0).sum()).collect();
        let available = candidates.feature("is_available").flags(true);

        Ok(Ranking::preferring(&scores, &available, request.limit(), |i| {
            if available[i] { score::strongest(&contributions(i), "popular") } else { "unavailable" }
        }))
    }
}

relish_guest::export_policy!(VenueItems);

struct Weights {
    popularity: f32,
    reorder: f32,
    daypart: f32,
    price: f32,
    saturation: f32,
    half_life: f32,
    price_levels: f32,
}

impl Weights {
    fn read(request: &Request) -> Result<Self, RankError> {
        let price_levels: f32 = request.param("price_levels")?;
        if price_levels.is_nan() || price_levels < 2.0 {
            return Err(RankError::InvalidRequest(format!(
                "parameter `price_levels` must be at least 2, got {price_levels}"
            )));
        }
        Ok(Weights {
            popularity: request.param("w_popularity")?,
            reorder: request.param("w_reorder")?,
            daypart: request.param("w_daypart")?,
            price: request.param("w_price")?,
            saturation: math::max(request.param("reorder_saturation")?, 1e-3),
            half_life: math::max(request.param("reorder_half_life_days")?, 1e-3),
            price_levels,
        })
    }
}

/// Each item's daypart fit: +1 for the local daypart's tag, -1 for only other daypart tags, else 0.
fn daypart_fit(request: &Request) -> Vec<f32> {
    let candidates = request.candidates();
    let Some(now) = request.daypart() else {
        return vec![0.0; candidates.len()];
    };
    let tags = request.tags();
    let now_tag = tags.id(now.tag());
    let is_daypart = tags.mask(&Daypart::TAGS);
    (0..candidates.len())
        .map(|i| {
            let item_tags = candidates.tags(i);
            if now_tag.is_some_and(|tag| item_tags.contains(&tag)) {
                1.0
            } else if item_tags.iter().any(|&t| is_daypart[t as usize]) {
                -1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// Each item's price fit for the user's `price_level`, in -1..1 (0 when either side is unknown).
fn price_fit(request: &Request, levels: f32) -> Vec<f32> {
    let n = request.candidates().len();
    let Some(level) = request.user().feature("price_level") else {
        return vec![0.0; n];
    };
    let target = math::clamp((level - 1.0) / (levels - 1.0), 0.0, 1.0);
    let price = request.candidates().feature("price");
    let mut position: Vec<f32> = (0..n).map(|i| price.get(i).unwrap_or(f32::NAN)).collect();
    score::percentile(&mut position);
    position.iter().map(|&p| if p.is_nan() { 0.0 } else { 1.0 - 2.0 * (p - target).abs() }).collect()
}

#[cfg(test)]
mod tests {
    use relish_guest::bindings::relish::policy::types::Weekday;
    use relish_guest::testing::RequestBuilder;

    use super::*;

    fn order(builder: RequestBuilder) -> Vec<String> {
        builder.ranked_ids::<VenueItems>().unwrap()
    }

    #[test]
    fn unavailable_items_come_last() {
        let ranked = order(
            RequestBuilder::new("venue-items")
                .candidate("sold-out-bestseller", &[("orders_7d", 900.0), ("is_available", 0.0)], &[])
                .candidate("plain", &[("orders_7d", 3.0)], &[])
                .candidate("ok", &[("orders_7d", 30.0), ("is_available", 1.0)], &[]),
        );
        assert_eq!(ranked, ["ok", "plain", "sold-out-bestseller"]);
    }

    #[test]
    fn the_users_own_favourite_rises() {
        let menu = RequestBuilder::new("venue-items")
            .user("u-1")
            .candidate("bestseller", &[("orders_7d", 500.0)], &[])
            .candidate("my-usual", &[("orders_7d", 100.0), ("user_orders", 4.0), ("user_last_order_days", 3.0)], &[]);
        assert_eq!(order(menu)[0], "my-usual");
    }

    #[test]
    fn breakfast_items_lead_in_the_morning_and_sink_at_dinner() {
        let menu = |minute| {
            RequestBuilder::new("venue-items")
                .local_time(minute, Weekday::Tuesday)
                .candidate("porridge", &[("orders_7d", 100.0)], &["breakfast"])
                .candidate("burger", &[("orders_7d", 100.0)], &["lunch", "dinner"])
        };
        assert_eq!(order(menu(8 * 60)), ["porridge", "burger"]);
        assert_eq!(order(menu(19 * 60)), ["burger", "porridge"]);
    }

    #[test]
    fn price_fit_follows_the_users_price_level() {
        let menu = |level| {
            RequestBuilder::new("venue-items")
                .user("u-1")
                .user_feature("price_level", level)
                .candidate("cheap", &[("price", 6.0)], &[])
                .candidate("mid", &[("price", 12.0)], &[])
                .candidate("dear", &[("price", 29.0)], &[])
        };
        assert_eq!(order(menu(1.0))[0], "cheap");
        assert_eq!(order(menu(4.0))[0], "dear");
        assert_eq!(order(menu(2.5))[0], "mid");
    }

    #[test]
    fn a_price_level_count_below_two_is_an_invalid_request() {
        let error = RequestBuilder::new("venue-items")
            .param("price_levels", "1")
            .candidate("a", &[], &[])
            .rank::<VenueItems>()
            .unwrap_err();
        assert!(matches!(error, RankError::InvalidRequest(message) if message.contains("price_levels")));
    }
}
