//! Signals shared by the entry-point policies (`brands`, `food-categories`): the tiles on the home
//! screen that lead to a brand's venues or to a food category.
//!
//! Not a policy itself (it has no `cdylib` target, so `relish build` skips it). Both policies
//! score entries as a sum of weighted contributions: the same three, [`signals`], and their own.
//! They answer with [`rank_entries`], which keeps unavailable entries last, gives each entry the
//! reason code of its strongest contribution, and opens one seeded exploration slot.
//!
//! Feature conventions: entries carry tags (cuisines such as `pizza`, dayparts such as
//! `breakfast`); `orders_7d` counts orders through the entry and `impressions_7d` its
//! impressions, both over the last seven days. User features: `affinity.<tag>` in 0..1.
//!
//! # The exploration slot
//!
//! New entries never earn impressions if the page is always ordered by what users already know,
//! so one place of the answer goes to an entry drawn at random from the *exploration pool*: the
//! available entries with fewer than `explore_max_impressions` impressions (a missing count is
//! 0). The position (uniform in `explore_min_position..=explore_max_position`, counted from 1)
//! and the entry (uniform over the pool, in candidate order) are drawn from the request seed's
//! own stream, and from nothing else: the same seed and candidates give the same slot whoever the
//! user is and whatever the time, and a different seed usually a different one. Because the
//! choice ignores the user, clicks on the slot are an unbiased sample of how new entries do at
//! that position. The entry takes that position even when the user's own order had it higher;
//! when the answer has fewer available entries than the position, the slot closes the available
//! part. An empty pool, or `explore_max_position = 0`, opens no slot.

use relish_guest::score::{self, strongest, top_k_preferring};
use relish_guest::{Feature, Param, RankError, Ranking, Request, concat, math};

/// The parameters every entry-point policy reads.
pub mod params {
    use super::Param;

    /// Weight of the user's tag affinity.
    pub const W_AFFINITY: Param =
        Param { name: "w_affinity", default: "1.0", description: "Weight of the user's best tag affinity (0..1)." };
    /// Weight of the daypart match.
    pub const W_DAYPART: Param = Param {
        name: "w_daypart",
        default: "0.3",
        description: "Weight of carrying the local daypart's tag (breakfast/lunch/dinner; 0 or 1).",
    };
    /// Weight of popularity.
    pub const W_POPULARITY: Param = Param {
        name: "w_popularity",
        default: "0.5",
        description: "Weight of ln(1 + orders_7d), min-max normalised across the entries (0..1).",
    };
    /// First position the exploration slot may take.
    pub const EXPLORE_MIN_POSITION: Param = Param {
        name: "explore_min_position",
        default: "3",
        description: "The highest place (counted from 1) the exploration slot may take.",
    };
    /// Last position the exploration slot may take.
    pub const EXPLORE_MAX_POSITION: Param = Param {
        name: "explore_max_position",
        default: "8",
        description: "The lowest place (counted from 1) the exploration slot may take; 0 turns exploration off.",
    };
    /// Impressions below which an entry is new enough to explore.
    pub const EXPLORE_MAX_IMPRESSIONS: Param = Param {
        name: "explore_max_impressions",
        default: "500",
        description: "Entries with fewer impressions_7d than this form the exploration pool.",
    };

    /// The weights of [`crate::signals`].
    pub const WEIGHTS: [Param; 3] = [W_AFFINITY, W_DAYPART, W_POPULARITY];
    /// The parameters of the exploration slot.
    pub const EXPLORE: [Param; 3] = [EXPLORE_MIN_POSITION, EXPLORE_MAX_POSITION, EXPLORE_MAX_IMPRESSIONS];
    /// Every parameter of [`crate::signals`] and [`crate::rank_entries`].
    pub const ALL: [Param; 6] = super::concat(&[&WEIGHTS, &EXPLORE]);
}

/// The features every entry-point policy reads.
pub mod features {
    use super::Feature;

    /// The user's tag affinities.
    pub const AFFINITY: Feature =
        Feature::user("affinity.*", "The user's affinity to a tag, 0..1; joined with the entry's tags.");
    /// Orders through the entry.
    pub const ORDERS_7D: Feature = Feature::candidate("orders_7d", "Orders through the entry, last 7 days.");
    /// Impressions of the entry.
    pub const IMPRESSIONS_7D: Feature = Feature::candidate(
        "impressions_7d",
        "Times the entry was shown, last 7 days; below explore_max_impressions it may be explored. Missing = 0.",
    );

    /// Every feature of [`crate::signals`] and [`crate::rank_entries`].
    pub const ALL: [Feature; 3] = [AFFINITY, ORDERS_7D, IMPRESSIONS_7D];
}

/// The random stream the exploration slot draws from (see [`relish_guest::Request::rng_stream`]).
const EXPLORE_STREAM: u64 = u64::from_be_bytes(*b"explore\0");

/// The shared signals of one request's entries, already weighted, one value per entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Signals {
    /// `w_affinity ·` the user's best `affinity.<tag>` over the entry's tags (clamped to 0..1).
    pub affinity: Vec<f32>,
    /// `w_daypart ·` 1 if the entry carries the local daypart's tag, else 0.
    pub daypart: Vec<f32>,
    /// `w_popularity ·` `ln(1 + orders_7d)`, min-max normalised.
    pub popularity: Vec<f32>,
}

impl Signals {
    /// Entry `i`'s weighted contributions with their reason codes (`affinity`, `daypart`,
    /// `popular`), for [`rank_entries`].
    pub fn contributions(&self, i: usize) -> [(f32, &'static str); 3] {
        [(self.affinity[i], "affinity"), (self.daypart[i], "daypart"), (self.popularity[i], "popular")]
    }
}

/// Reads the weights and computes every entry's [`Signals`].
pub fn signals(request: &Request) -> Result<Signals, RankError> {
    let (w_affinity, w_daypart, w_popularity): (f32, f32, f32) = (
        request.param(params::W_AFFINITY.name)?,
        request.param(params::W_DAYPART.name)?,
        request.param(params::W_POPULARITY.name)?,
    );
    let candidates = request.candidates();
    let n = candidates.len();
    let by_tag = request.user().features_by_tag("affinity.");
    let daypart_tag = request.daypart().and_then(|daypart| request.tags().id(daypart.tag()));
    let popularity = score::log_count_scores(candidates.feature("orders_7d"));
    Ok(Signals {
        affinity: (0..n)
            .map(|i| w_affinity * math::clamp(score::best_of_tags(&by_tag, candidates.tags(i)), 0.0, 1.0))
            .collect(),
        daypart: (0..n)
            .map(|i| if daypart_tag.is_some_and(|tag| candidates.has_tag(i, tag)) { w_daypart } else { 0.0 })
            .collect(),
        popularity: popularity.into_iter().map(|p| w_popularity * p).collect(),
    })
}

/// This request's exploration slot: a place in the answer (0-based) and the entry that takes it,
/// and every slot the seed could have drawn (for the answer's propensities).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exploration {
    /// The place, counted from 0.
    pub position: usize,
    /// The candidate index of the explored entry.
    pub entry: u32,
    /// The places the draw chose from (0-based), uniformly.
    pub positions: std::ops::RangeInclusive<usize>,
    /// The entries the draw chose from, uniformly.
    pub pool: Vec<u32>,
}

/// Draws the exploration slot (see the crate docs): from the request seed and the candidates'
/// availability and impressions only. `None` when exploration is off or the pool is empty.
pub fn exploration(request: &Request, available: &[bool]) -> Result<Option<Exploration>, RankError> {
    let min_position: usize = request.param(params::EXPLORE_MIN_POSITION.name)?;
    let max_position: usize = request.param(params::EXPLORE_MAX_POSITION.name)?;
    let max_impressions: f32 = request.param(params::EXPLORE_MAX_IMPRESSIONS.name)?;
    if max_position == 0 {
        return Ok(None);
    }
    if min_position == 0 || min_position > max_position {
        return Err(RankError::InvalidRequest(format!(
            "parameters `explore_min_position` ({min_position}) and `explore_max_position` ({max_position}) must \
             satisfy 1 <= min <= max"
        )));
    }
    let impressions = request.candidates().feature("impressions_7d");
    let pool: Vec<u32> = (0..request.candidates().len())
        .filter(|&i| available[i] && impressions.get_or(i, 0.0) < max_impressions)
        .map(|i| i as u32)
        .collect();
    if pool.is_empty() {
        return Ok(None);
    }
    let mut rng = request.rng_stream(EXPLORE_STREAM);
    let position = min_position - 1 + rng.below((max_position - min_position + 1) as u64) as usize;
    let entry = pool[rng.below(pool.len() as u64) as usize];
    Ok(Some(Exploration { position, entry, positions: min_position - 1..=max_position - 1, pool }))
}

/// `base` (the entries by preference, `limit + 1` of them) with `entry` placed at `position`, or
/// closing the available part when that comes first.
fn place(base: &[u32], available: &[bool], limit: usize, position: usize, entry: u32) -> Vec<u32> {
    let mut order: Vec<u32> = base.iter().copied().filter(|&i| i != entry).collect();
    order.truncate(limit - 1);
    let available_count = order.iter().take_while(|&&i| available[i as usize]).count();
    order.insert(position.min(available_count), entry);
    order
}

/// The answer of an entry-point policy: each entry scores the sum of its weighted
/// `contributions` (value, reason code); available entries come first by score, unavailable ones
/// after (reason `unavailable`), and the [`exploration`] slot (reason `explore`) goes in. Every
/// other entry's reason is its strongest contribution's, `popular` when none is positive.
///
/// With a slot, the answer reports its propensities exactly: the share of all the slots the seed
/// could have drawn (every place times every entry of the pool, each as likely) that put each
/// answered entry where it is.
pub fn rank_entries<const K: usize>(
    request: &Request,
    available: &[bool],
    contributions: impl Fn(usize) -> [(f32, &'static str); K],
) -> Result<Ranking, RankError> {
    let scores: Vec<f32> =
        (0..request.candidates().len()).map(|i| contributions(i).iter().map(|c| c.0).sum()).collect();
    let limit = request.limit();
    let slot = exploration(request, available)?.filter(|_| limit > 0);
    let base = top_k_preferring(&scores, available, limit + 1);
    let order = match &slot {
        Some(slot) => place(&base, available, limit, slot.position, slot.entry),
        None => base[..limit.min(base.len())].to_vec(),
    };
    let mut ranking = Ranking::with_capacity(order.len());
    for &i in &order {
        let i = i as usize;
        let code = if slot.as_ref().is_some_and(|slot| slot.entry as usize == i) {
            "explore"
        } else if !available[i] {
            "unavailable"
        } else {
            strongest(&contributions(i), "popular")
        };
        ranking.push_with_reason(i, scores[i], code);
    }
    if let Some(slot) = &slot {
        let mut hits = vec![0u32; order.len()];
        for position in slot.positions.clone() {
            for &entry in &slot.pool {
                let other = place(&base, available, limit, position, entry);
                for (hit, (a, b)) in hits.iter_mut().zip(order.iter().zip(&other)) {
                    *hit += u32::from(a == b);
                }
            }
        }
        let slots = (slot.positions.clone().count() * slot.pool.len()) as f32;
        ranking.set_propensities(hits.iter().map(|&h| h as f32 / slots).collect());
    }
    Ok(ranking)
}

#[cfg(test)]
mod tests {
    use relish_guest::testing::RequestBuilder;
    use relish_guest::{Feature, Spec};

    use super::*;

    const SPEC: &Spec = &Spec {
        name: "entries",
        version: "0.0.0",
        description: "test",
        surfaces: &["*"],
        params: &params::ALL,
        features: &[Feature::candidate("orders_7d", "")],
    };

    fn entries(seed: u64) -> RequestBuilder {
        let mut builder = RequestBuilder::new("brands").seed(seed);
        for i in 0..12 {
            let impressions = if i % 3 == 0 { 10.0 } else { 50_000.0 };
            builder = builder.candidate(
                &format!("e-{i}"),
                &[("orders_7d", 100.0 * i as f32), ("impressions_7d", impressions)],
                &["pizza"],
            );
        }
        builder
    }

    fn rank(builder: RequestBuilder, available: &[bool]) -> Ranking {
        let request = Request::new(builder.build(), SPEC);
        let signals = signals(&request).unwrap();
        rank_entries(&request, available, |i| [(signals.popularity[i], "popular")]).unwrap()
    }

    #[test]
    fn the_slot_holds_a_pool_entry_at_a_drawn_position() {
        let available = [true; 12];
        for seed in 0..50 {
            let ranking = rank(entries(seed), &available);
            let position = (0..ranking.len()).find(|&p| ranking.reason(p) == Some("explore")).unwrap();
            assert!((2..8).contains(&position), "seed {seed}: position {position}");
            assert_eq!(ranking.order()[position] % 3, 0, "seed {seed}: only new entries are explored");
            assert_eq!(ranking.len(), 12);
        }
    }

    #[test]
    fn propensities_are_the_exact_chances_of_each_place() {
        // Every seed reports the same propensity for the same entry at the same place (they are
        // computed, not estimated), and over many seeds that is how often it is there.
        let available = [true; 12];
        let seeds = 4000;
        let mut seen: std::collections::HashMap<(usize, u32), (u32, f32)> = std::collections::HashMap::new();
        for seed in 0..seeds {
            let ranking = rank(entries(seed), &available);
            for k in 0..ranking.len() {
                let propensity = ranking.propensity(k);
                let slot = seen.entry((k, ranking.order()[k])).or_insert((0, propensity));
                assert_eq!(slot.1, propensity, "seed {seed}, place {k}");
                slot.0 += 1;
            }
        }
        for ((k, entry), (count, propensity)) in seen {
            let share = count as f32 / seeds as f32;
            assert!((share - propensity).abs() < 0.03, "entry {entry} at {k}: seen {share}, reported {propensity}");
        }
        let without_slot = rank(entries(1).param("explore_max_impressions", "5"), &available);
        assert!((0..without_slot.len()).all(|k| without_slot.propensity(k) == 1.0), "no slot: deterministic");
    }

    #[test]
    fn without_new_entries_there_is_no_slot() {
        let request = entries(1).param("explore_max_impressions", "5");
        let ranking = rank(request, &[true; 12]);
        assert!((0..ranking.len()).all(|p| ranking.reason(p) == Some("popular")));
    }

    #[test]
    fn the_slot_stays_among_the_available_entries_of_a_short_answer() {
        let mut available = [false; 12];
        available[0] = true;
        available[11] = true;
        let ranking = rank(entries(3).limit(4), &available);
        assert_eq!(ranking.order()[..2], [11, 0]);
        assert_eq!(ranking.reason(1), Some("explore"));
        assert_eq!(ranking.len(), 4);
    }

    #[test]
    fn bad_positions_are_an_invalid_request() {
        let request = Request::new(entries(0).param("explore_min_position", "9").build(), SPEC);
        assert!(matches!(exploration(&request, &[true; 12]), Err(RankError::InvalidRequest(_))));
    }
}
