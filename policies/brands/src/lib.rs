//! `brands`: the brand tiles of the home screen (chains such as a burger or a sushi chain), in
//! the order one user is most likely to tap.
//!
//! Each available brand scores
//!
//! ```text
//! w_affinity · affinity + w_reorder · reorder + w_daypart · daypart + w_popularity · popularity
//! ```
//!
//! - `affinity`: the user's best `affinity.<tag>` over the brand's tags (its cuisines);
//! - `reorder`: the user's own orders from the brand, `min(1, user_orders /
//!   reorder_saturation)`, decayed by `user_last_order_days` (half-life `reorder_half_life_days`);
//! - `daypart`: 1 if the brand carries the local daypart's tag (a breakfast chain in the morning);
//! - `popularity`: `ln(1 + orders_7d)`, min-max normalised over the brands.
//!
//! Promises: brands with no open venue near the user (`is_open` = 0) come after every other
//! (missing = open); one place between `explore_min_position` and `explore_max_position` goes to
//! a brand with few impressions, drawn from the request seed only (see [`relish_entry_signals`]),
//! so new brands get seen; anonymous users get the daypart and popularity order plus that slot.

use relish_entry_signals::{features, params, rank_entries, signals};
use relish_guest::{Feature, Param, Policy, RankError, Ranking, Request, Spec, concat, math, score};

/// The brands policy.
pub struct Brands;

const OWN_PARAMS: [Param; 3] = [
    Param { name: "w_reorder", default: "1.0", description: "Weight of the user's own orders from the brand (0..1)." },
    Param { name: "reorder_saturation", default: "5", description: "Orders from a brand at which re-order reaches 1." },
    Param {
        name: "reorder_half_life_days",
        default: "30",
        description: "Days since the user's last order from the brand after which re-order halves.",
    },
];
const PARAMS: [Param; 9] = concat(&[&params::WEIGHTS, &OWN_PARAMS, &params::EXPLORE]);

const OWN_FEATURES: [Feature; 3] = [
    Feature::candidate("user_orders", "How many times this user ordered from the brand."),
    Feature::candidate("user_last_order_days", "Days since this user last ordered from the brand."),
    Feature::candidate("is_open", "1 if a venue of the brand delivers to the user now, 0 if none; missing = open."),
];
const FEATURES: [Feature; 6] = concat(&[&features::ALL, &OWN_FEATURES]);

impl Policy for Brands {
    const SPEC: &'static Spec = &Spec {
        name: "brands",
        version: env!("CARGO_PKG_VERSION"),
        description: "Brand entry points: affinity, re-orders, daypart and popularity, closed brands last, one \
                      seeded exploration slot for new brands.",
        surfaces: &["brands"],
        params: &PARAMS,
        features: &FEATURES,
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let shared = signals(request)?;
        let w_reorder: f32 = request.param("w_reorder")?;
        let saturation = math::max(request.param("reorder_saturation")?, 1e-3);
        let half_life = math::max(request.param("reorder_half_life_days")?, 1e-3);
        let candidates = request.candidates();
        let (orders, last_days) = (candidates.feature("user_orders"), candidates.feature("user_last_order_days"));
        let reorder = score::reorders(orders, last_days, saturation, half_life);
        let open = candidates.feature("is_open").flags(true);
        rank_entries(request, &open, |i| {
            let [affinity, daypart, popularity] = shared.contributions(i);
            [affinity, (w_reorder * reorder[i], "reorder"), daypart, popularity]
        })
    }
}

relish_guest::export_policy!(Brands);

#[cfg(test)]
mod tests {
    use relish_guest::testing::RequestBuilder;

    use super::*;

    fn order(builder: RequestBuilder) -> Vec<String> {
        builder.param("explore_max_position", "0").ranked_ids::<Brands>().unwrap()
    }

    fn brands() -> RequestBuilder {
        RequestBuilder::new("brands")
            .user("u-1")
            .candidate("burger-chain", &[("orders_7d", 5000.0)], &["burger"])
            .candidate("sushi-chain", &[("orders_7d", 800.0)], &["sushi"])
            .candidate("bakery-chain", &[("orders_7d", 400.0)], &["cafe", "breakfast"])
    }

    #[test]
    fn affinity_and_reorders_beat_plain_popularity() {
        assert_eq!(order(brands())[0], "burger-chain");
        assert_eq!(order(brands().user_feature("affinity.sushi", 1.0))[0], "sushi-chain");
        let regular = RequestBuilder::new("brands")
            .candidate("burger-chain", &[("orders_7d", 5000.0)], &["burger"])
            .candidate("my-pizza-chain", &[("orders_7d", 100.0), ("user_orders", 6.0)], &["pizza"]);
        assert_eq!(order(regular)[0], "my-pizza-chain");
    }

    #[test]
    fn a_breakfast_brand_rises_in_the_morning() {
        use relish_guest::bindings::relish::policy::types::Weekday;
        let at = |minute| order(brands().local_time(minute, Weekday::Monday));
        let bakery = |ranked: Vec<String>| ranked.iter().position(|id| id == "bakery-chain").unwrap();
        assert!(bakery(at(8 * 60)) < bakery(at(19 * 60)));
    }

    #[test]
    fn closed_brands_come_last() {
        let ranked = order(brands().candidate("closed-chain", &[("orders_7d", 9000.0), ("is_open", 0.0)], &["burger"]));
        assert_eq!(ranked.last().map(String::as_str), Some("closed-chain"));
    }
}
