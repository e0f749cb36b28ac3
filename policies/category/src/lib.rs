//! `category`: venue ranking for a category page (for example "sushi").
//!
//! The contract carries no "page category" field, so the policy reads it from the candidates:
//! the caller filled the page with venues of that category, so the category is the tag the most
//! candidates carry (daypart tags aside; ties go to the tag that is more often a venue's first
//! tag, then to the tag seen first). Each open venue then scores
//!
//! ```text
//! w_category · category + (w_affinity · affinity + w_reorder · reorder + w_popularity · popularity) · eta
//! ```
//!
//! - `category`: how central the page's category is to the venue, from its tags: `1` when it is
//!   the venue's first (primary) non-daypart tag, `secondary_relevance` when it is a later tag,
//!   `0` when the venue does not carry it (callers pad thin pages with related venues);
//! - `affinity`, `reorder`, `popularity`, `eta`: the discovery signals
//!   ([`relish_venue_signals::signals`]): the user's best `affinity.<tag>`, the decayed re-order
//!   signal, the popularity score (smoothed conversion, rating, orders) normalised, and the ETA
//!   penalty. Anonymous users simply have no affinity and no re-orders.
//!
//! Promises: closed venues come last, whatever their score. With the default weights a step in
//! category relevance (untagged → secondary → primary) is worth more than every other signal
//! together, so venues whose primary tag is the category come first, then those that list it,
//! then the rest; lowering `w_category` lets strong venues cross those tiers. There is no
//! diversity re-ranking: on a category page the cuisine is the point.

use relish_guest::score;
use relish_guest::{Daypart, Param, Policy, RankError, Ranking, Request, Spec, concat};
use relish_venue_signals::{Signals, features, open_flags, params, signals};

/// The category-page policy.
pub struct Category;

const OWN_PARAMS: [Param; 5] = [
    Param {
        name: "w_category",
        default: "5.0",
        description: "Weight of category relevance (0..1). At the default a half step in relevance (2.5) outweighs \
                      every other signal together (at most 2.3), so relevance tiers never cross; lower it to blend.",
    },
    Param {
        name: "secondary_relevance",
        default: "0.5",
        description: "Category relevance of a venue that lists the category but not as its first tag (0..1).",
    },
    Param { name: "w_affinity", default: "1.0", description: "Weight of the user's tag affinity (0..1)." },
    Param { name: "w_reorder", default: "0.8", description: "Weight of the re-order signal (0..1)." },
    Param { name: "w_popularity", default: "0.5", description: "Weight of the normalised popularity score (0..1)." },
];

const PARAMS: [Param; 14] = concat(&[&OWN_PARAMS, &params::SIGNALS]);

impl Policy for Category {
    const SPEC: &'static Spec = &Spec {
        name: "category",
        version: env!("CARGO_PKG_VERSION"),
        description: "Category-page venue ranking: relevance to the page's category from tags, then affinity, \
                      re-orders, popularity and ETA; closed venues last.",
        surfaces: &["category"],
        params: &PARAMS,
        features: &features::SIGNALS,
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let weights = Weights::read(request)?;
        let relevance = category_relevance(request, weights.secondary);
        let signals = signals(request)?;
        let scores: Vec<f32> = signals
            .iter()
            .zip(&relevance)
            .map(|(s, &category)| weights.category * category + weights.venue(s) * s.eta)
            .collect();
        let open = open_flags(request);
        Ok(Ranking::preferring(&scores, &open, request.limit(), |i| {
            if open[i] { weights.strongest(&signals[i]) } else { "closed" }
        }))
    }
}

relish_guest::export_policy!(Category);

struct Weights {
    category: f32,
    secondary: f32,
    affinity: f32,
    reorder: f32,
    popularity: f32,
}

impl Weights {
    fn read(request: &Request) -> Result<Self, RankError> {
        Ok(Weights {
            category: request.param("w_category")?,
            secondary: request.param("secondary_relevance")?,
            affinity: request.param("w_affinity")?,
            reorder: request.param("w_reorder")?,
            popularity: request.param("w_popularity")?,
        })
    }

    /// The venue's own relevance to the user, before the ETA penalty.
    fn venue(&self, s: &Signals) -> f32 {
        self.affinity * s.affinity + self.reorder * s.reorder + self.popularity * s.popularity
    }

    fn strongest(&self, s: &Signals) -> &'static str {
        score::strongest(
            &[
                (self.affinity * s.affinity, "affinity"),
                (self.reorder * s.reorder, "reorder"),
                (self.popularity * s.popularity, "popular"),
            ],
            "popular",
        )
    }
}

/// The tag id of the page's category: the tag the most candidates carry, daypart tags aside;
/// ties go to the tag that is more often a venue's first tag, then to the lower tag id (the tag
/// the request mentions first). `None` when no candidate has a tag.
pub fn page_category(request: &Request) -> Option<u32> {
    let candidates = request.candidates();
    let is_daypart = request.tags().mask(&Daypart::TAGS);
    // Per tag: (candidates carrying it, candidates carrying it first).
    let mut counts = vec![(0u32, 0u32); request.tags().len()];
    for i in 0..candidates.len() {
        let mut cuisines = candidates.tags(i).iter().filter(|&&t| !is_daypart[t as usize]);
        if let Some(&first) = cuisines.next() {
            counts[first as usize].1 += 1;
            counts[first as usize].0 += 1;
        }
        for &t in cuisines {
            counts[t as usize].0 += 1;
        }
    }
    // `max_by_key` keeps the last maximum; reversing makes ties go to the lowest tag id.
    counts.iter().enumerate().rev().filter(|(_, c)| c.0 > 0).max_by_key(|(_, c)| **c).map(|(t, _)| t as u32)
}

/// Each candidate's relevance to the page's category: 1 if it is its first non-daypart tag,
/// `secondary` if a later one, 0 if absent.
fn category_relevance(request: &Request, secondary: f32) -> Vec<f32> {
    let candidates = request.candidates();
    let Some(category) = page_category(request) else {
        return vec![0.0; candidates.len()];
    };
    let is_daypart = request.tags().mask(&Daypart::TAGS);
    (0..candidates.len())
        .map(|i| match candidates.tags(i).iter().filter(|&&t| !is_daypart[t as usize]).position(|&t| t == category) {
            Some(0) => 1.0,
            Some(_) => secondary,
            None => 0.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use relish_guest::testing::RequestBuilder;

    use super::*;

    fn order(builder: RequestBuilder) -> Vec<String> {
        builder.ranked_ids::<Category>().unwrap()
    }

    fn sushi_page() -> RequestBuilder {
        RequestBuilder::new("category")
            .candidate("ramen-with-sushi", &[("rating", 9.5), ("orders_7d", 900.0)], &["ramen", "sushi"])
            .candidate("sushi-bar", &[("rating", 7.0), ("orders_7d", 50.0)], &["sushi", "dinner"])
            .candidate("poke", &[("rating", 9.9), ("orders_7d", 990.0)], &["poke"])
            .candidate("sushi-house", &[("rating", 8.0), ("orders_7d", 80.0)], &["sushi"])
    }

    #[test]
    fn the_category_is_the_tag_most_candidates_carry() {
        let request = Request::new(sushi_page().build(), Category::SPEC);
        assert_eq!(page_category(&request).map(|t| request.tags().name(t)), Some("sushi"));
        let empty = Request::new(RequestBuilder::new("category").candidate("a", &[], &[]).build(), Category::SPEC);
        assert_eq!(page_category(&empty), None);
    }

    #[test]
    fn primary_venues_come_before_those_that_list_the_category_then_the_rest() {
        assert_eq!(order(sushi_page()), ["sushi-house", "sushi-bar", "ramen-with-sushi", "poke"]);
    }

    #[test]
    fn a_lower_category_weight_lets_strong_venues_cross_tiers() {
        assert_eq!(order(sushi_page().param("w_category", "0"))[0], "poke");
    }

    #[test]
    fn affinity_orders_venues_within_a_tier() {
        let page = || {
            RequestBuilder::new("category")
                .user("u-1")
                .candidate("sushi-vegan", &[("rating", 8.0)], &["sushi", "vegan"])
                .candidate("sushi-fusion", &[("rating", 8.0)], &["sushi", "fusion"])
        };
        assert_eq!(order(page().user_feature("affinity.vegan", 0.9))[0], "sushi-vegan");
        assert_eq!(order(page().user_feature("affinity.fusion", 0.9))[0], "sushi-fusion");
    }

    #[test]
    fn closed_venues_come_last() {
        let ranked = order(sushi_page().candidate("sushi-closed", &[("is_open", 0.0), ("rating", 10.0)], &["sushi"]));
        assert_eq!(ranked.last().map(String::as_str), Some("sushi-closed"));
    }
}
