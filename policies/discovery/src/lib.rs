//! `discovery`: personalised venue ranking for the discovery page.
//!
//! For a user with features, each open venue's relevance is
//!
//! ```text
//! (w_affinity · affinity + w_reorder · reorder + w_daypart · daypart + w_popularity · popularity) · eta
//! ```
//!
//! - `affinity`: the user's best `affinity.<tag>` over the venue's tags (0..1, missing = 0);
//! - `reorder`: `min(1, user_orders / reorder_saturation)`, decayed by `user_last_order_days`
//!   with a half-life of `reorder_half_life_days`;
//! - `daypart`: 1 if the venue carries the tag of the user's local daypart (`breakfast` 05:00–10:59,
//!   `lunch` 11:00–14:59, `dinner` 17:00–22:59), else 0;
//! - `popularity`: the `popularity` policy's score before its ETA penalty, min-max normalised;
//! - `eta`: the popularity policy's exponential ETA penalty.
//!
//! The top of the page is diversified: MMR (maximal marginal relevance) over tag similarity picks
//! the first `mmr_depth` venues from the `mmr_pool` most relevant ones, then at most
//! `max_per_cuisine` venues of one primary cuisine (a venue's first non-daypart tag) are allowed in
//! the first `diversity_window` places. Closed venues come last. Users without features
//! (anonymous, or unknown to the feature store) get the popularity order unchanged.

use relish_guest::score::{self, TagSets, cap_per_key, mmr};
use relish_guest::{Daypart, Param, Policy, RankError, Ranking, Request, Spec, concat};
use relish_venue_signals::{Signals, features, open_flags, params, popularity_ranking, signals};

/// The discovery policy.
pub struct Discovery;

const OWN_PARAMS: [Param; 9] = [
    Param { name: "w_affinity", default: "1.0", description: "Weight of the user's tag affinity (0..1)." },
    Param { name: "w_reorder", default: "0.8", description: "Weight of the re-order signal (0..1)." },
    Param { name: "w_daypart", default: "0.3", description: "Weight of matching the local daypart (0 or 1)." },
    Param { name: "w_popularity", default: "0.5", description: "Weight of the normalised popularity score (0..1)." },
    Param {
        name: "diversity",
        default: "0.3",
        description: "MMR trade-off: 0 is pure relevance, 1 is pure novelty (uses 1 - lambda).",
    },
    Param { name: "mmr_depth", default: "20", description: "How many top places MMR fills." },
    Param { name: "mmr_pool", default: "100", description: "How many of the most relevant venues MMR picks from." },
    Param {
        name: "max_per_cuisine",
        default: "2",
        description: "At most this many venues of one primary cuisine in the diversity window.",
    },
    Param { name: "diversity_window", default: "5", description: "The top places the cuisine cap applies to." },
];

const PARAMS: [Param; 18] = concat(&[&OWN_PARAMS, &params::SIGNALS]);

impl Policy for Discovery {
    const SPEC: &'static Spec = &Spec {
        name: "discovery",
        version: env!("CARGO_PKG_VERSION"),
        description: "Personalised venue ranking: tag affinity, re-orders, daypart, popularity and ETA, diversified \
                      by cuisine; popularity order for users without features.",
        surfaces: &["discovery", "category"],
        params: &PARAMS,
        features: &features::SIGNALS,
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        if !request.user().has_features() {
            return popularity_ranking(request);
        }
        let weights = Weights::read(request)?;
        let n = request.candidates().len();
        let signals = signals(request)?;
        let relevance: Vec<f32> = (0..n)
            .map(|i| {
                let s = &signals[i];
                (weights.affinity * s.affinity
                    + weights.reorder * s.reorder
                    + weights.daypart * s.daypart
                    + weights.popularity * s.popularity)
                    * s.eta
            })
            .collect();

        let open = open_flags(request);
        // Only the places that can be shown matter: the MMR pool or the limit, whichever is more.
        let by_relevance = score::top_k_preferring(&relevance, &open, request.limit().max(weights.mmr_pool));
        let open_count = by_relevance.iter().take_while(|&&i| open[i as usize]).count();
        let (open_order, closed_order) = by_relevance.split_at(open_count);
        let order = diversify(request, &relevance, open_order, &weights);

        let mut ranking = Ranking::with_capacity(request.limit());
        for &i in order.iter().chain(closed_order).take(request.limit()) {
            let i = i as usize;
            let reason = if open[i] { weights.strongest(&signals[i]) } else { "closed" };
            ranking.push_with_reason(i, relevance[i], reason);
        }
        Ok(ranking)
    }
}

relish_guest::export_policy!(Discovery);

struct Weights {
    affinity: f32,
    reorder: f32,
    daypart: f32,
    popularity: f32,
    lambda: f32,
    mmr_depth: usize,
    mmr_pool: usize,
    max_per_cuisine: usize,
    window: usize,
}

impl Weights {
    fn read(request: &Request) -> Result<Self, RankError> {
        let diversity: f32 = request.param("diversity")?;
        if !(0.0..=1.0).contains(&diversity) {
            return Err(RankError::InvalidRequest(format!("parameter `diversity` must be in 0..=1, got {diversity}")));
        }
        Ok(Weights {
            affinity: request.param("w_affinity")?,
            reorder: request.param("w_reorder")?,
            daypart: request.param("w_daypart")?,
            popularity: request.param("w_popularity")?,
            lambda: 1.0 - diversity,
            mmr_depth: request.param("mmr_depth")?,
            mmr_pool: request.param("mmr_pool")?,
            max_per_cuisine: request.param::<usize>("max_per_cuisine")?.max(1),
            window: request.param("diversity_window")?,
        })
    }

    /// The reason code: the signal that contributed most.
    fn strongest(&self, s: &Signals) -> &'static str {
        score::strongest(
            &[
                (self.affinity * s.affinity, "affinity"),
                (self.reorder * s.reorder, "reorder"),
                (self.daypart * s.daypart, "daypart"),
                (self.popularity * s.popularity, "popular"),
            ],
            "popular",
        )
    }
}

/// MMR over the most relevant open venues, then the per-cuisine cap on the first places.
fn diversify(request: &Request, relevance: &[f32], open_order: &[u32], w: &Weights) -> Vec<u32> {
    let candidates = request.candidates();
    let is_cuisine: Vec<bool> = request.tags().mask(&Daypart::TAGS).into_iter().map(|daypart| !daypart).collect();
    let primary_cuisine = |i: u32| candidates.tags(i as usize).iter().copied().find(|&t| is_cuisine[t as usize]);

    let pool = &open_order[..open_order.len().min(w.mmr_pool)];
    let mut normalised = relevance.to_vec();
    score::min_max(&mut normalised);
    // MMR compares every pick with every remaining venue of the pool: bitsets make that cheap.
    let position: Vec<u32> = {
        let mut position = vec![u32::MAX; candidates.len()];
        for (slot, &i) in pool.iter().enumerate() {
            position[i as usize] = slot as u32;
        }
        position
    };
    let cuisines = TagSets::new(request.tags().len(), pool.iter().map(|&i| candidates.tags(i as usize)), &is_cuisine);
    let mut order = mmr(pool, &normalised, w.mmr_depth, w.lambda, |a, b| {
        cuisines.jaccard(position[a as usize] as usize, position[b as usize] as usize)
    });
    let mut picked = vec![false; candidates.len()];
    for &i in &order {
        picked[i as usize] = true;
    }
    order.extend(open_order.iter().copied().filter(|&i| !picked[i as usize]));
    cap_per_key(&order, w.window, w.max_per_cuisine, primary_cuisine)
}

#[cfg(test)]
mod tests {
    use relish_guest::testing::RequestBuilder;

    use super::*;

    fn top_ids(builder: RequestBuilder) -> Vec<String> {
        let request = builder.build();
        let view = Request::new(request.clone(), Discovery::SPEC);
        let ranking = Discovery::rank(&view).unwrap();
        ranking.order().iter().map(|&i| view.candidates().id(i as usize).to_owned()).collect()
    }

    #[test]
    fn higher_affinity_raises_rank() {
        let base = || {
            RequestBuilder::new("discovery")
                .user("u-1")
                .candidate("pizza-place", &[("rating", 8.0)], &["pizza"])
                .candidate("sushi-place", &[("rating", 8.0)], &["sushi"])
        };
        assert_eq!(top_ids(base().user_feature("affinity.pizza", 0.9))[0], "pizza-place");
        assert_eq!(top_ids(base().user_feature("affinity.sushi", 0.9))[0], "sushi-place");
    }

    #[test]
    fn users_without_features_get_the_popularity_order() {
        let builder = RequestBuilder::new("discovery")
            .candidate("a", &[("rating", 6.0)], &["pizza"])
            .candidate("b", &[("rating", 9.5), ("orders_7d", 300.0)], &["sushi"])
            .candidate("c", &[("rating", 8.0), ("is_open", 0.0)], &["thai"]);
        let request = builder.clone().build();
        let popularity = popularity_ranking(&Request::new(request.clone(), Discovery::SPEC)).unwrap();
        let discovery = Discovery::rank(&Request::new(request, Discovery::SPEC)).unwrap();
        assert_eq!(discovery, popularity);
    }

    #[test]
    fn the_top_five_holds_three_cuisines_when_possible() {
        let mut builder = RequestBuilder::new("discovery").user("u-1").user_feature("affinity.pizza", 1.0);
        for i in 0..8 {
            builder = builder.candidate(&format!("pizza-{i}"), &[("rating", 9.0)], &["pizza"]);
        }
        builder =
            builder.candidate("sushi", &[("rating", 5.0)], &["sushi"]).candidate("thai", &[("rating", 5.0)], &["thai"]);
        let top = top_ids(builder);
        let cuisines: std::collections::BTreeSet<&str> =
            top[..5].iter().map(|id| id.split('-').next().unwrap()).collect();
        assert!(cuisines.len() >= 3, "top five: {:?}", &top[..5]);
    }
}
