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
//! - `popularity`: the `popularity` policy's score, min-max normalised;
//! - `eta`: the popularity policy's exponential ETA penalty.
//!
//! The top of the page is diversified: MMR (maximal marginal relevance) over tag similarity picks
//! the first `mmr_depth` venues from the `mmr_pool` most relevant ones, then at most
//! `max_per_cuisine` venues of one primary cuisine (a venue's first non-daypart tag) are allowed in
//! the first `diversity_window` places. Closed venues come last. Users without features
//! (anonymous, or unknown to the feature store) get the popularity order unchanged.

use relish_guest::score::{self, TagSets, cap_per_key, decay, mmr};
use relish_guest::{Feature, Param, Policy, RankError, Ranking, Request, Spec, math};
use relish_venue_signals::{Eta, Popularity, open_first, open_flags, popularity_ranking};

/// The discovery policy.
pub struct Discovery;

/// Tags that name a daypart rather than a cuisine.
const DAYPARTS: [&str; 3] = ["breakfast", "lunch", "dinner"];

const PARAMS: &[Param] = &[
    Param { name: "w_affinity", default: "1.0", description: "Weight of the user's tag affinity (0..1)." },
    Param { name: "w_reorder", default: "0.8", description: "Weight of the re-order signal (0..1)." },
    Param { name: "w_daypart", default: "0.3", description: "Weight of matching the local daypart (0 or 1)." },
    Param { name: "w_popularity", default: "0.5", description: "Weight of the normalised popularity score (0..1)." },
    Param {
        name: "reorder_saturation",
        default: "5",
        description: "Past orders at which the re-order signal reaches 1.",
    },
    Param {
        name: "reorder_half_life_days",
        default: "30",
        description: "Days since the last order after which the re-order signal halves.",
    },
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
    relish_venue_signals::params::PRIOR_WEIGHT,
    relish_venue_signals::params::W_CONVERSION,
    relish_venue_signals::params::W_RATING,
    relish_venue_signals::params::W_ORDERS,
    relish_venue_signals::params::ETA_FREE_MIN,
    relish_venue_signals::params::ETA_HALF_LIFE_MIN,
    relish_venue_signals::params::ETA_MISSING_MIN,
];

const FEATURES: &[Feature] = &[
    Feature::user("affinity.*", "The user's affinity to a tag (cuisine), 0..1; joined with the venue's tags."),
    Feature::candidate("user_orders", "How many times this user ordered from the venue."),
    Feature::candidate("user_last_order_days", "Days since this user last ordered from the venue."),
    relish_venue_signals::features::IS_OPEN,
    relish_venue_signals::features::CONVERSIONS_7D,
    relish_venue_signals::features::IMPRESSIONS_7D,
    relish_venue_signals::features::RATING,
    relish_venue_signals::features::ORDERS_7D,
    relish_venue_signals::features::ETA_MIN,
];

impl Policy for Discovery {
    const SPEC: &'static Spec = &Spec {
        name: "discovery",
        version: env!("CARGO_PKG_VERSION"),
        description: "Personalised venue ranking: tag affinity, re-orders, daypart, popularity and ETA, diversified \
                      by cuisine; popularity order for users without features.",
        surfaces: &["discovery", "category"],
        params: PARAMS,
        features: FEATURES,
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
        let by_relevance = open_first(&relevance, &open, request.limit().max(weights.mmr_pool));
        let open_count = by_relevance.iter().take_while(|&&i| open[i as usize]).count();
        let (open_order, closed_order) = by_relevance.split_at(open_count);
        let order = diversify(request, &relevance, open_order, &weights);

        let mut ranking = Ranking::with_capacity(request.limit());
        for &i in order.iter().chain(closed_order).take(request.limit()) {
            let i = i as usize;
            let reason = if open[i] { signals[i].strongest(&weights) } else { "closed" };
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
}

/// One venue's signals, each in `0..=1` (ETA factor in `(0, 1]`).
struct Signals {
    affinity: f32,
    reorder: f32,
    daypart: f32,
    popularity: f32,
    eta: f32,
}

impl Signals {
    /// The reason code: the signal that contributed most.
    fn strongest(&self, w: &Weights) -> &'static str {
        let contributions = [
            (w.affinity * self.affinity, "affinity"),
            (w.reorder * self.reorder, "reorder"),
            (w.daypart * self.daypart, "daypart"),
            (w.popularity * self.popularity, "popular"),
        ];
        contributions.iter().fold((0.0, "popular"), |best, &(v, r)| if v > best.0 { (v, r) } else { best }).1
    }
}

fn signals(request: &Request) -> Result<Vec<Signals>, RankError> {
    let candidates = request.candidates();
    let n = candidates.len();
    let affinity_by_tag = request.user().features_by_tag("affinity.");
    let saturation = math::max(request.param("reorder_saturation")?, 1e-3);
    let half_life = math::max(request.param("reorder_half_life_days")?, 1e-3);
    let (orders, last_days) = (candidates.feature("user_orders"), candidates.feature("user_last_order_days"));
    let daypart_tag = match request.hour() {
        5..=10 => request.tags().id("breakfast"),
        11..=14 => request.tags().id("lunch"),
        17..=22 => request.tags().id("dinner"),
        _ => None,
    };
    let mut popularity = Popularity::read(request)?.scores(request);
    let eta = Eta::read(request)?.factors(request);
    // The popularity score already carries the ETA penalty; undo it so ETA is applied once.
    for (p, e) in popularity.iter_mut().zip(&eta) {
        *p /= e;
    }
    score::min_max(&mut popularity);
    Ok((0..n)
        .map(|i| {
            let affinity =
                candidates.tags(i).iter().filter_map(|&t| affinity_by_tag[t as usize]).fold(0.0f32, math::max);
            let affinity = math::clamp(affinity, 0.0, 1.0);
            let reorder = match orders.get(i) {
                Some(count) if count > 0.0 => {
                    math::min(count / saturation, 1.0) * last_days.get(i).map_or(1.0, |days| decay(days, half_life))
                }
                _ => 0.0,
            };
            let daypart = match daypart_tag {
                Some(tag) if candidates.has_tag(i, tag) => 1.0,
                _ => 0.0,
            };
            Signals { affinity, reorder, daypart, popularity: popularity[i], eta: eta[i] }
        })
        .collect())
}

/// MMR over the most relevant open venues, then the per-cuisine cap on the first places.
fn diversify(request: &Request, relevance: &[f32], open_order: &[u32], w: &Weights) -> Vec<u32> {
    let candidates = request.candidates();
    let is_cuisine: Vec<bool> = request.tags().mask(&DAYPARTS).into_iter().map(|daypart| !daypart).collect();
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
    let picked = order.len();
    order.extend(open_order.iter().filter(|i| !order[..picked].contains(i)).copied().collect::<Vec<_>>());
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
