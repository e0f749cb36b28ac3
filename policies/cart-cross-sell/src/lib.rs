//! `cart-cross-sell`: items to suggest beside the cart ("add a drink?").
//!
//! Items and cart items carry category tags (`main`, `side`, `drink`, `dessert`, ...). A
//! complement table, the `complements` parameter, says which categories go with which and how
//! strongly:
//!
//! ```text
//! main:drink=1|side=0.9|dessert=0.8;side:drink=0.8|dessert=0.6;drink:side=0.5|dessert=0.5;dessert:drink=0.6
//! ```
//!
//! Rules are separated by `;`; a rule `from:to=w|to=w|...` says that an item tagged `to`
//! complements a cart holding an item tagged `from`, with weight `w` (a number `>= 0`; `=w` may be
//! left out and means `1`). Spaces around names and numbers are ignored; several rules for one
//! `from` add up their targets. Each candidate item scores
//!
//! ```text
//! w_complement · complement + w_popularity · popularity
//! ```
//!
//! - `complement`: the best weight of a rule from a tag in the cart to a tag of the item, times
//!   `covered_factor` when the cart already holds an item of that target category (a second drink
//!   is a weaker suggestion than a first one); `0` when the cart is empty or nothing matches;
//! - `popularity`: `ln(1 + orders_7d)`, min-max normalised over the candidates.
//!
//! Promises: an item already in the cart (same id) is never suggested, nor is an unavailable one
//! (`is_available` = 0), so the answer may be shorter than the limit; at most `max_per_category`
//! suggestions share one category. An item's category is its first tag that the complement table
//! names, else its first tag; items without tags form one category of their own. With an empty
//! cart the answer is the most popular items, still capped per category.

use relish_guest::score::{self, top_k_of};
use relish_guest::{Feature, Param, Policy, RankError, Ranking, Request, Spec, Tags};

/// The cart cross-sell policy.
pub struct CartCrossSell;

/// The default complement table: drinks, sides and desserts beside a main; a drink or a dessert
/// beside a side; a little of each beside a drink; a drink beside a dessert.
pub const DEFAULT_COMPLEMENTS: &str =
    "main:drink=1|side=0.9|dessert=0.8;side:drink=0.8|dessert=0.6;drink:side=0.5|dessert=0.5;dessert:drink=0.6";

const PARAMS: &[Param] = &[
    Param {
        name: "complements",
        default: DEFAULT_COMPLEMENTS,
        description: "The complement table: `from:to=w|to=w;...`, where an item tagged `to` complements a cart \
                      item tagged `from` with weight w >= 0 (`=w` optional, meaning 1).",
    },
    Param {
        name: "covered_factor",
        default: "0.3",
        description: "Multiplies the complement weight of a category the cart already holds (0..1; 0 hides it \
                      from the complement score entirely).",
    },
    Param { name: "w_complement", default: "1.0", description: "Weight of the complement score (0..1)." },
    Param { name: "w_popularity", default: "0.3", description: "Weight of the item's normalised popularity (0..1)." },
    Param { name: "max_per_category", default: "2", description: "At most this many suggestions of one category." },
];

const FEATURES: &[Feature] = &[
    Feature::candidate("orders_7d", "Orders of the item, last 7 days."),
    Feature::candidate("is_available", "1 if the item can be ordered now, 0 if sold out; missing = available."),
];

impl Policy for CartCrossSell {
    const SPEC: &'static Spec = &Spec {
        name: "cart-cross-sell",
        version: env!("CARGO_PKG_VERSION"),
        description: "Cart cross-sell: complements of the cart's categories from a configurable table, then \
                      popularity; never a cart item, at most max_per_category per category.",
        surfaces: &["cart-cross-sell"],
        params: PARAMS,
        features: FEATURES,
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let table = Complements::parse(request.param_str("complements")?)?;
        let covered_factor: f32 = request.param("covered_factor")?;
        let (w_complement, w_popularity): (f32, f32) = (request.param("w_complement")?, request.param("w_popularity")?);
        let max_per_category: usize = request.param("max_per_category")?;

        let candidates = request.candidates();
        let n = candidates.len();
        let tags = request.tags();
        let rules = table.resolve(&tags);
        let cart = request.context().cart();
        let mut in_cart = vec![false; tags.len()];
        for item in 0..cart.len() {
            for &t in cart.tags(item) {
                in_cart[t as usize] = true;
            }
        }
        let popularity = score::log_count_scores(candidates.feature("orders_7d"));
        let complement: Vec<f32> = (0..n)
            .map(|i| {
                let item_tags = candidates.tags(i);
                rules
                    .iter()
                    .filter(|rule| in_cart[rule.from as usize] && item_tags.contains(&rule.to))
                    .map(|rule| if in_cart[rule.to as usize] { rule.weight * covered_factor } else { rule.weight })
                    .fold(0.0, relish_guest::math::max)
            })
            .collect();
        let scores: Vec<f32> = (0..n).map(|i| w_complement * complement[i] + w_popularity * popularity[i]).collect();

        let available = candidates.feature("is_available").flags(true);
        let eligible = (0..n as u32).filter(|&i| available[i as usize] && !cart.contains(candidates.id(i as usize)));
        let by_score = top_k_of(eligible, &scores, n);
        let in_table = table.mask(&tags);
        let category = |i: usize| {
            let item_tags = candidates.tags(i);
            item_tags.iter().copied().find(|&t| in_table[t as usize]).or(item_tags.first().copied())
        };
        let mut taken: Vec<(Option<u32>, usize)> = Vec::new();
        let mut ranking = Ranking::with_capacity(request.limit());
        for i in by_score {
            if ranking.len() == request.limit() {
                break;
            }
            let i = i as usize;
            let key = category(i);
            let count = match taken.iter_mut().find(|(k, _)| *k == key) {
                Some((_, count)) => count,
                None => {
                    taken.push((key, 0));
                    &mut taken.last_mut().expect("just pushed").1
                }
            };
            if *count >= max_per_category {
                continue;
            }
            *count += 1;
            ranking.push_with_reason(i, scores[i], if complement[i] > 0.0 { "complement" } else { "popular" });
        }
        Ok(ranking)
    }
}

relish_guest::export_policy!(CartCrossSell);

/// A parsed complement table: `(from, to, weight)` by tag name.
#[derive(Debug, Clone, PartialEq)]
pub struct Complements<'a> {
    rules: Vec<(&'a str, &'a str, f32)>,
}

/// A complement rule resolved to the request's tag ids.
struct Rule {
    from: u32,
    to: u32,
    weight: f32,
}

impl<'a> Complements<'a> {
    /// Parses the `complements` format (see the crate docs). An empty string is an empty table.
    pub fn parse(table: &'a str) -> Result<Self, RankError> {
        let invalid = |rule: &str, problem: &str| {
            RankError::InvalidRequest(format!("parameter `complements`: rule `{rule}`: {problem}"))
        };
        let mut rules = Vec::new();
        for rule in table.split(';').map(str::trim).filter(|rule| !rule.is_empty()) {
            let (from, targets) = rule.split_once(':').ok_or_else(|| invalid(rule, "expected `from:to|to`"))?;
            let from = from.trim();
            if from.is_empty() {
                return Err(invalid(rule, "empty category before `:`"));
            }
            for target in targets.split('|') {
                let (to, weight) = match target.split_once('=') {
                    Some((to, weight)) => {
                        let weight: f32 =
                            weight.trim().parse().map_err(|_| invalid(rule, "a weight is not a number"))?;
                        (to.trim(), weight)
                    }
                    None => (target.trim(), 1.0),
                };
                if to.is_empty() {
                    return Err(invalid(rule, "empty target category"));
                }
                if !(weight.is_finite() && weight >= 0.0) {
                    return Err(invalid(rule, "weights must be finite and >= 0"));
                }
                rules.push((from, to, weight));
            }
        }
        Ok(Complements { rules })
    }

    /// The weight of the rule `from → to`, if the table has one.
    pub fn weight(&self, from: &str, to: &str) -> Option<f32> {
        self.rules.iter().find(|(f, t, _)| *f == from && *t == to).map(|r| r.2)
    }

    /// The rules whose both tags occur in this request.
    fn resolve(&self, tags: &Tags) -> Vec<Rule> {
        self.rules
            .iter()
            .filter_map(|&(from, to, weight)| Some(Rule { from: tags.id(from)?, to: tags.id(to)?, weight }))
            .collect()
    }

    /// For every tag id of the request, whether the table names it.
    fn mask(&self, tags: &Tags) -> Vec<bool> {
        let names: Vec<&str> = self.rules.iter().flat_map(|&(from, to, _)| [from, to]).collect();
        tags.mask(&names)
    }
}

#[cfg(test)]
mod tests {
    use relish_guest::testing::RequestBuilder;

    use super::*;

    fn suggest(builder: RequestBuilder) -> Vec<String> {
        builder.ranked_ids::<CartCrossSell>().unwrap()
    }

    fn menu() -> RequestBuilder {
        RequestBuilder::new("cart-cross-sell")
            .candidate("burger", &[("orders_7d", 900.0)], &["main", "burger"])
            .candidate("cola", &[("orders_7d", 300.0)], &["drink"])
            .candidate("lemonade", &[("orders_7d", 200.0)], &["drink"])
            .candidate("water", &[("orders_7d", 100.0)], &["drink"])
            .candidate("fries", &[("orders_7d", 400.0)], &["side"])
            .candidate("brownie", &[("orders_7d", 50.0)], &["dessert"])
    }

    #[test]
    fn the_default_table_parses() {
        let table = Complements::parse(DEFAULT_COMPLEMENTS).unwrap();
        assert_eq!(table.weight("main", "drink"), Some(1.0));
        assert_eq!(table.weight("dessert", "drink"), Some(0.6));
        assert_eq!(table.weight("drink", "main"), None);
        let short = Complements::parse(" main : drink | side=0.5 ;").unwrap();
        assert_eq!(short.weight("main", "drink"), Some(1.0));
        assert_eq!(short.weight("main", "side"), Some(0.5));
    }

    #[test]
    fn a_malformed_table_is_an_invalid_request_naming_the_rule() {
        for bad in ["main", "main:drink=x", ":drink", "main:|drink", "main:drink=-1"] {
            let error = Complements::parse(bad).unwrap_err();
            assert!(matches!(&error, RankError::InvalidRequest(m) if m.contains("complements")), "{bad}: {error}");
        }
    }

    #[test]
    fn complements_of_the_cart_come_first_and_cart_items_never() {
        let suggested = suggest(menu().cart_item("burger", &["main", "burger"]));
        assert!(!suggested.contains(&"burger".to_owned()), "{suggested:?}");
        assert_eq!(&suggested[..3], ["cola", "lemonade", "fries"], "{suggested:?}");
    }

    #[test]
    fn no_more_than_two_of_one_category() {
        let suggested = suggest(menu().cart_item("burger", &["main"]));
        assert_eq!(suggested.iter().filter(|id| ["cola", "lemonade", "water"].contains(&id.as_str())).count(), 2);
        assert_eq!(suggest(menu().param("max_per_category", "1")).len(), 4);
    }

    #[test]
    fn a_category_already_in_the_cart_is_a_weaker_suggestion() {
        let suggested = suggest(menu().cart_item("burger", &["main"]).cart_item("cola", &["drink"]));
        assert_eq!(suggested[0], "fries", "{suggested:?}");
    }

    #[test]
    fn an_empty_cart_gets_the_popular_items() {
        assert_eq!(&suggest(menu())[..2], ["burger", "fries"]);
    }
}
