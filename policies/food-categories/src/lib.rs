//! `food-categories`: the food-category tiles of the home screen ("Pizza", "Breakfast",
//! "Groceries"), in the order one user is most likely to tap.
//!
//! Each category with something to show scores
//!
//! ```text
//! w_affinity · affinity + w_daypart · daypart + w_popularity · popularity
//! ```
//!
//! - `affinity`: the user's best `affinity.<tag>` over the category's tags (a category carries
//!   its own tag, `pizza`, and may carry related ones);
//! - `daypart`: 1 if the category carries the local daypart's tag; weighted more than on other
//!   surfaces by default, because some categories exist for one time of day (breakfast, late-night
//!   snacks);
//! - `popularity`: `ln(1 + orders_7d)`, min-max normalised over the categories.
//!
//! Promises: categories with no open venue near the user (`venues_open` = 0) come after every
//! other, since the tile would lead to an empty page (missing = some open); one place between
//! `explore_min_position` and `explore_max_position` goes to a category with few impressions,
//! drawn from the request seed only (see [`relish_entry_signals`]), so new categories get seen.

use relish_entry_signals::{features, params, rank_entries, signals};
use relish_guest::{Feature, Param, Policy, RankError, Ranking, Request, Spec, concat};

/// The food-categories policy.
pub struct FoodCategories;

/// The shared weights, with the daypart weighted up.
const WEIGHTS: [Param; 3] = [params::W_AFFINITY, Param { default: "0.6", ..params::W_DAYPART }, params::W_POPULARITY];
const PARAMS: [Param; 6] = concat(&[&WEIGHTS, &params::EXPLORE]);

const VENUES_OPEN: Feature =
    Feature::candidate("venues_open", "How many venues of the category deliver to the user now; missing = some.");
const FEATURES: [Feature; 4] = concat(&[&features::ALL, &[VENUES_OPEN]]);

impl Policy for FoodCategories {
    const SPEC: &'static Spec = &Spec {
        name: "food-categories",
        version: env!("CARGO_PKG_VERSION"),
        description: "Food-category entry points: affinity, daypart and popularity, empty categories last, one \
                      seeded exploration slot for new categories.",
        surfaces: &["food-categories"],
        params: &PARAMS,
        features: &FEATURES,
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let shared = signals(request)?;
        let candidates = request.candidates();
        let venues_open = candidates.feature("venues_open");
        let available: Vec<bool> = (0..candidates.len()).map(|i| venues_open.get(i).is_none_or(|n| n > 0.0)).collect();
        rank_entries(request, &available, |i| shared.contributions(i))
    }
}

relish_guest::export_policy!(FoodCategories);

#[cfg(test)]
mod tests {
    use relish_guest::bindings::relish::policy::types::Weekday;
    use relish_guest::testing::RequestBuilder;

    use super::*;

    fn order(builder: RequestBuilder) -> Vec<String> {
        builder.param("explore_max_position", "0").ranked_ids::<FoodCategories>().unwrap()
    }

    fn categories(minute: u16) -> RequestBuilder {
        RequestBuilder::new("food-categories")
            .local_time(minute, Weekday::Wednesday)
            .candidate("pizza", &[("orders_7d", 3000.0)], &["pizza", "lunch", "dinner"])
            .candidate("breakfast", &[("orders_7d", 1500.0)], &["breakfast"])
            .candidate("sushi", &[("orders_7d", 1000.0)], &["sushi", "dinner"])
    }

    #[test]
    fn breakfast_leads_in_the_morning_only() {
        assert_eq!(order(categories(8 * 60))[0], "breakfast");
        assert_eq!(order(categories(19 * 60))[0], "pizza");
    }

    #[test]
    fn affinity_raises_a_category() {
        let ranked = order(categories(19 * 60).user("u-1").user_feature("affinity.sushi", 1.0));
        assert_eq!(ranked[0], "sushi");
    }

    #[test]
    fn empty_categories_come_last() {
        let ranked =
            order(categories(12 * 60).candidate("kebab", &[("orders_7d", 9000.0), ("venues_open", 0.0)], &["kebab"]));
        assert_eq!(ranked.last().map(String::as_str), Some("kebab"));
    }
}
