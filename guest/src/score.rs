//! The scoring steps most policies share: normalisation, decay, smoothing, top-k selection and
//! diversity re-ranking.
//!
//! Every function is deterministic: ties break by candidate index, NaN (a missing value) never
//! poisons its neighbours, and transcendental functions come from [`crate::math`].

use crate::math;
use crate::request::Column;

/// Rescales the present (non-NaN) values to `[0, 1]` in place; NaN stays NaN. A column whose present
/// values are all equal carries no information and becomes all `0.0`.
pub fn min_max(values: &mut [f32]) {
    // Without a branch per value: `math::min` and `math::max` already pass over a NaN `v`, and
    // `(NaN - lo) / range` is NaN, so the loop over a usable range vectorises.
    let (lo, hi) =
        values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (math::min(lo, v), math::max(hi, v)));
    let range = hi - lo;
    if range > 0.0 && range.is_finite() {
        for v in values.iter_mut() {
            *v = (*v - lo) / range;
        }
    } else {
        for v in values.iter_mut().filter(|v| !v.is_nan()) {
            *v = 0.0;
        }
    }
}

/// Standardises the present values to mean 0 and standard deviation 1 in place; NaN stays NaN. A
/// constant column becomes all `0.0`.
pub fn z_score(values: &mut [f32]) {
    let present = values.iter().filter(|v| !v.is_nan()).count();
    if present == 0 {
        return;
    }
    let mean = values.iter().filter(|v| !v.is_nan()).map(|&v| v as f64).sum::<f64>() / present as f64;
    let variance =
        values.iter().filter(|v| !v.is_nan()).map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / present as f64;
    let sd = variance.sqrt();
    for v in values.iter_mut().filter(|v| !v.is_nan()) {
        *v = if sd > 0.0 { ((*v as f64 - mean) / sd) as f32 } else { 0.0 };
    }
}

/// Exponential decay with a half-life: `1` at `age = 0`, `0.5` at `age = half_life`, towards `0`
/// after. Negative ages count as `0`.
#[inline]
pub fn decay(age: f32, half_life: f32) -> f32 {
    math::exp(-std::f32::consts::LN_2 * math::max(age, 0.0) / half_life)
}

/// A rate shrunk toward a prior: `(successes + prior_rate * prior_weight) / (trials + prior_weight)`.
///
/// With few trials the answer stays near `prior_rate`; with many it approaches the observed rate.
/// This is the posterior mean of a Beta–Binomial model with `prior_weight` pseudo-trials.
#[inline]
pub fn smoothed_rate(successes: f32, trials: f32, prior_rate: f32, prior_weight: f32) -> f32 {
    (math::max(successes, 0.0) + prior_rate * prior_weight) / (math::max(trials, 0.0) + prior_weight)
}

/// `ln(1 + x)` for non-negative counts, a common squashing of popularity counts.
#[inline]
pub fn log_count(count: f32) -> f32 {
    math::ln_1p(math::max(count, 0.0))
}

/// A count column (orders, clicks) as scores in `[0, 1]`: each count squashed by [`log_count`]
/// (a missing count is 0), then [`min_max`] normalised.
pub fn log_count_scores(counts: Column<'_>) -> Vec<f32> {
    let mut scores: Vec<f32> = (0..counts.len()).map(|i| log_count(counts.get_or(i, 0.0))).collect();
    min_max(&mut scores);
    scores
}

/// Replaces the present values with their percentile among the present values, in `[0, 1]` in
/// place: the smallest becomes `0`, the largest `1`, ties share their mid-rank; NaN stays NaN. A
/// column whose present values are all equal (or a single value) becomes all `0.5`.
///
/// Unlike [`min_max`], one outlier (a 60 € platter on a 10 € menu) does not squash the rest.
pub fn percentile(values: &mut [f32]) {
    let mut keys: Vec<u64> =
        values.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(i, &v)| key_ascending(v, i)).collect();
    keys.sort_unstable();
    let last = keys.len().saturating_sub(1);
    let mut start = 0;
    while start < keys.len() {
        let value_key = keys[start] >> 32;
        let end = start + keys[start..].iter().take_while(|&&k| k >> 32 == value_key).count();
        let mid = (start + end - 1) as f32 / 2.0;
        let rank = if last == 0 { 0.5 } else { mid / last as f32 };
        for &k in &keys[start..end] {
            values[k as u32 as usize] = rank;
        }
        start = end;
    }
}

/// Value key in the high half, index in the low half: sorts ascending by value, ties by index.
#[inline]
fn key_ascending(value: f32, i: usize) -> u64 {
    ((sort_key(value) as u64) << 32) | i as u64
}

/// The largest of the values a user feature has for a candidate's tags, and never below `0`:
/// `max(0, by_tag[t] for t in tags)`, where `by_tag` comes from [`crate::User::features_by_tag`]
/// (for example the user's `affinity.<tag>` for every tag of the request). A candidate none of
/// whose tags has a value gets `0`.
#[inline]
pub fn best_of_tags(by_tag: &[Option<f32>], tags: &[u32]) -> f32 {
    tags.iter().filter_map(|&t| by_tag[t as usize]).fold(0.0, math::max)
}

/// A re-order signal in `[0, 1]`: `min(1, count / saturation)`, decayed by `age` with
/// `half_life` (see [`decay`]). A missing or non-positive count gives `0`; a missing age does not
/// decay.
///
/// For example the user's past orders from a venue (`user_orders`) and the days since the last
/// one (`user_last_order_days`): five orders last week say more than one order last year.
#[inline]
pub fn reorder(count: Option<f32>, age: Option<f32>, saturation: f32, half_life: f32) -> f32 {
    match count {
        Some(count) if count > 0.0 => math::min(count / saturation, 1.0) * age.map_or(1.0, |age| decay(age, half_life)),
        _ => 0.0,
    }
}

/// [`reorder`] for every candidate, from its count and age columns (usually `user_orders` and
/// `user_last_order_days`).
pub fn reorders(counts: Column<'_>, ages: Column<'_>, saturation: f32, half_life: f32) -> Vec<f32> {
    (0..counts.len()).map(|i| reorder(counts.get(i), ages.get(i), saturation, half_life)).collect()
}

/// The reason code of the largest positive contribution to a score, `otherwise` when none is
/// positive; the first wins a tie. The usual answer to "why this candidate" for a weighted sum:
///
/// ```
/// use relish_guest::score::strongest;
///
/// assert_eq!(strongest(&[(0.2, "affinity"), (0.5, "reorder")], "popular"), "reorder");
/// assert_eq!(strongest(&[(0.0, "affinity"), (-1.0, "daypart")], "popular"), "popular");
/// ```
#[inline]
pub fn strongest<'a>(contributions: &[(f32, &'a str)], otherwise: &'a str) -> &'a str {
    contributions
        .iter()
        .fold((0.0, otherwise), |best, &(value, reason)| if value > best.0 { (value, reason) } else { best })
        .1
}

/// Maps a score to a `u32` that sorts the same way, with every NaN below every number. Sorting
/// integers is much cheaper than sorting floats through a comparator, in wasm especially.
#[inline]
pub fn sort_key(score: f32) -> u32 {
    if score.is_nan() {
        return 0;
    }
    let bits = score.to_bits();
    if bits & 0x8000_0000 != 0 { !bits } else { bits | 0x8000_0000 }
}

/// Keys that order candidates best score first, ties by index: score key in the high half,
/// inverted index in the low half, so one descending integer sort does both.
#[inline]
fn key(scores: &[f32], i: u32) -> u64 {
    ((sort_key(scores[i as usize]) as u64) << 32) | (u32::MAX - i) as u64
}

#[inline]
fn index(key: u64) -> u32 {
    u32::MAX - key as u32
}

/// The indices of the `k` best scores, best first. Ties keep input order; NaN scores come last.
///
/// Selects in `O(n)` and sorts only the top `k`.
pub fn top_k(scores: &[f32], k: usize) -> Vec<u32> {
    top_k_of(0..scores.len() as u32, scores, k)
}

/// [`top_k`] restricted to some candidates: the `k` best of `candidates`, best first.
pub fn top_k_of(candidates: impl IntoIterator<Item = u32>, scores: &[f32], k: usize) -> Vec<u32> {
    let keys: Vec<u64> = candidates.into_iter().map(|i| key(scores, i)).collect();
    largest(keys, k).into_iter().map(index).collect()
}

/// The `k` largest keys, largest first: selects in `O(n)` and sorts only the top `k`.
fn largest(mut keys: Vec<u64>, k: usize) -> Vec<u64> {
    let k = k.min(keys.len());
    if k == 0 {
        return Vec::new();
    }
    if k < keys.len() {
        keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        keys.truncate(k);
    }
    keys.sort_unstable_by(|a, b| b.cmp(a));
    keys
}

/// The low 31 bits of a [`top_k_preferring`] key: the inverted candidate index.
const LOW_31: u32 = (1 << 31) - 1;

/// The `k` best candidates with the preferred ones first: every candidate with `preferred[i]`
/// (best score first) before any other (best score first); ties keep input order, NaN scores come
/// last within their group.
///
/// The shape of "open venues first", "available items first": a hard rule above the scores.
/// One selection over every candidate, without a branch per candidate: the preferred flag is the
/// key's top bit, above the score key and the inverted index (in 31 bits: a request has far fewer
/// candidates).
pub fn top_k_preferring(scores: &[f32], preferred: &[bool], k: usize) -> Vec<u32> {
    assert!(scores.len() <= LOW_31 as usize, "candidate indices fit in 31 bits");
    let keys: Vec<u64> = (0..scores.len() as u32)
        .map(|i| {
            ((preferred[i as usize] as u64) << 63) | ((sort_key(scores[i as usize]) as u64) << 31) | (LOW_31 - i) as u64
        })
        .collect();
    largest(keys, k).into_iter().map(|key| LOW_31 - (key as u32 & LOW_31)).collect()
}

/// Sorts a list of candidate indices by score, best first (ties keep index order, NaN last).
pub fn sort_by_score(indices: &mut [u32], scores: &[f32]) {
    indices.sort_unstable_by_key(|&i| std::cmp::Reverse(key(scores, i)));
}

/// Jaccard similarity of two tag sets (`|a ∩ b| / |a ∪ b|`), for the short tag lists candidates
/// carry. Two empty sets are not similar (`0`).
pub fn jaccard(a: &[u32], b: &[u32]) -> f32 {
    if a.is_empty() && b.is_empty() {
        return 0.0;
    }
    let common = a.iter().filter(|t| b.contains(t)).count();
    common as f32 / (a.len() + b.len() - common) as f32
}

/// Tag sets of some candidates as bitsets over the request's tag vocabulary, for similarity
/// computations that run many times per request (MMR): Jaccard similarity becomes a few AND, OR
/// and popcount instructions instead of nested scans of tag lists.
#[derive(Debug, Clone)]
pub struct TagSets {
    words: usize,
    bits: Vec<u64>,
}

impl TagSets {
    /// The tag sets of `sets` (each a candidate's tag ids), keeping only tags with `keep[tag]`
    /// (for example cuisines, not dayparts). `vocabulary` is the number of distinct tags.
    pub fn new<'a>(vocabulary: usize, sets: impl IntoIterator<Item = &'a [u32]>, keep: &[bool]) -> Self {
        let words = vocabulary.div_ceil(64).max(1);
        let mut bits = Vec::new();
        for tags in sets {
            let start = bits.len();
            bits.resize(start + words, 0u64);
            for &tag in tags.iter().filter(|&&t| keep.get(t as usize).copied().unwrap_or(false)) {
                bits[start + tag as usize / 64] |= 1 << (tag % 64);
            }
        }
        TagSets { words, bits }
    }

    // Inlined into `jaccard`, which MMR calls |pool| times per pick: LLVM left it a call for
    // wasm, where each call pays Cranelift's prologue and a deadline check (measured: a
    // `discovery` call 16–18 % faster in wasm, 7–10 % natively).
    #[inline]
    fn set(&self, i: usize) -> &[u64] {
        &self.bits[i * self.words..(i + 1) * self.words]
    }

    /// Jaccard similarity of sets `a` and `b` (positions in the order given to [`TagSets::new`]).
    /// Two empty sets are not similar (`0`).
    #[inline]
    pub fn jaccard(&self, a: usize, b: usize) -> f32 {
        let (mut common, mut union) = (0u32, 0u32);
        for (x, y) in self.set(a).iter().zip(self.set(b)) {
            common += (x & y).count_ones();
            union += (x | y).count_ones();
        }
        if union == 0 { 0.0 } else { common as f32 / union as f32 }
    }
}

/// [`jaccard`] over the tags for which `keep[tag]` is true (for example cuisines only, leaving out
/// daypart tags), without allocating.
pub fn jaccard_where(a: &[u32], b: &[u32], keep: &[bool]) -> f32 {
    let kept = |t: &&u32| keep[**t as usize];
    let (len_a, len_b) = (a.iter().filter(kept).count(), b.iter().filter(kept).count());
    if len_a == 0 && len_b == 0 {
        return 0.0;
    }
    let common = a.iter().filter(kept).filter(|t| b.contains(t)).count();
    common as f32 / (len_a + len_b - common) as f32
}

/// Maximal marginal relevance: picks `k` of `pool` greedily, each time the candidate maximising
/// `lambda * relevance[i] - (1 - lambda) * max_similarity(i, already picked)`.
///
/// `lambda = 1` is pure relevance order; lower values trade relevance for diversity. Relevance
/// should be on a comparable scale to similarity (for example [`min_max`]-normalised to `[0, 1]`).
/// Ties break by position in `pool`. Costs `O(k · |pool|)` similarity calls.
pub fn mmr(
    pool: &[u32],
    relevance: &[f32],
    k: usize,
    lambda: f32,
    mut similarity: impl FnMut(u32, u32) -> f32,
) -> Vec<u32> {
    let k = k.min(pool.len());
    let mut picked = Vec::with_capacity(k);
    let mut remaining: Vec<u32> = pool.to_vec();
    let mut max_similarity = vec![0.0f32; remaining.len()];
    while picked.len() < k {
        let mut best = 0;
        let mut best_value = f32::NEG_INFINITY;
        for (slot, &i) in remaining.iter().enumerate() {
            let rel = relevance[i as usize];
            let rel = if rel.is_nan() { f32::MIN } else { rel };
            let value = lambda * rel - (1.0 - lambda) * max_similarity[slot];
            if value > best_value {
                best_value = value;
                best = slot;
            }
        }
        let chosen = remaining.remove(best);
        max_similarity.remove(best);
        for (slot, &i) in remaining.iter().enumerate() {
            max_similarity[slot] = math::max(max_similarity[slot], similarity(chosen, i));
        }
        picked.push(chosen);
    }
    picked
}

/// Re-orders `order` so that among its first `window` items no key appears more than `max_per_key`
/// times, whenever the rest of the list makes that possible; items keep their relative order
/// otherwise. Items whose key is `None` are never limited.
///
/// This is the hard guarantee behind "the top of the page is not all one cuisine": for example
/// `max_per_key = 2, window = 5` puts at least three distinct keys in the top five when three exist.
pub fn cap_per_key<K: PartialEq>(
    order: &[u32],
    window: usize,
    max_per_key: usize,
    key: impl Fn(u32) -> Option<K>,
) -> Vec<u32> {
    let mut remaining: Vec<(u32, Option<K>)> = order.iter().map(|&i| (i, key(i))).collect();
    let mut counts: Vec<(K, usize)> = Vec::new();
    let mut result = Vec::with_capacity(order.len());
    while result.len() < window.min(order.len()) {
        let allowed = remaining.iter().position(|(_, k)| match k {
            None => true,
            Some(k) => counts.iter().find(|(c, _)| c == k).is_none_or(|(_, n)| *n < max_per_key),
        });
        let (i, k) = remaining.remove(allowed.unwrap_or(0));
        if let Some(k) = k {
            match counts.iter_mut().find(|(c, _)| *c == k) {
                Some((_, n)) => *n += 1,
                None => counts.push((k, 1)),
            }
        }
        result.push(i);
    }
    result.extend(remaining.into_iter().map(|(i, _)| i));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_helpers_read_every_candidate_with_missing_values_defaulted() {
        let raw = crate::testing::RequestBuilder::new("discovery")
            .candidate("a", &[("orders_7d", 0.0), ("is_open", 0.0), ("user_orders", 4.0)], &[])
            .candidate("b", &[("orders_7d", 100.0), ("is_open", 1.0)], &[])
            .candidate("c", &[], &[])
            .build();
        static SPEC: crate::Spec = crate::Spec {
            name: "test",
            version: "0.1.0",
            description: "",
            surfaces: &["*"],
            params: &[],
            features: &[],
        };
        let request = crate::Request::new(raw, &SPEC);
        let candidates = request.candidates();
        assert_eq!(candidates.feature("is_open").flags(true), [false, true, true]);
        assert_eq!(candidates.feature("is_open").flags(false), [false, true, false]);
        assert_eq!(log_count_scores(candidates.feature("orders_7d")), [0.0, 1.0, 0.0], "a missing count is 0");
        let reorder =
            reorders(candidates.feature("user_orders"), candidates.feature("user_last_order_days"), 2.0, 30.0);
        assert_eq!(reorder, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn min_max_keeps_missing_values_missing() {
        let mut values = [2.0, f32::NAN, 4.0, 3.0];
        min_max(&mut values);
        assert_eq!(values[0], 0.0);
        assert!(values[1].is_nan());
        assert_eq!(values[2], 1.0);
        assert_eq!(values[3], 0.5);
        let mut constant = [5.0, 5.0];
        min_max(&mut constant);
        assert_eq!(constant, [0.0, 0.0]);
    }

    #[test]
    fn z_score_centres_and_scales() {
        let mut values = [1.0, 2.0, 3.0, f32::NAN];
        z_score(&mut values);
        assert!((values[0] + values[2]).abs() < 1e-6 && values[1].abs() < 1e-6);
        assert!(values[3].is_nan());
    }

    #[test]
    fn decay_halves_at_the_half_life() {
        assert_eq!(decay(0.0, 10.0), 1.0);
        assert!((decay(10.0, 10.0) - 0.5).abs() < 1e-6);
        assert!((decay(20.0, 10.0) - 0.25).abs() < 1e-6);
    }

    #[test]
    fn smoothed_rate_moves_from_prior_to_observation() {
        assert!((smoothed_rate(0.0, 0.0, 0.1, 50.0) - 0.1).abs() < 1e-6);
        assert!((smoothed_rate(5_000.0, 10_000.0, 0.1, 50.0) - 0.498).abs() < 1e-3);
    }

    #[test]
    fn percentile_ranks_present_values_and_shares_ties() {
        let mut values = [30.0, f32::NAN, 10.0, 20.0, 20.0, 1000.0];
        percentile(&mut values);
        assert_eq!(values[0], 0.75);
        assert!(values[1].is_nan());
        assert_eq!([values[2], values[3], values[4], values[5]], [0.0, 0.375, 0.375, 1.0]);
        let mut constant = [4.0, 4.0, f32::NAN];
        percentile(&mut constant);
        assert_eq!(constant[..2], [0.5, 0.5]);
        let mut single = [7.0];
        percentile(&mut single);
        assert_eq!(single, [0.5]);
        percentile(&mut []);
    }

    #[test]
    fn best_of_tags_takes_the_largest_present_value_floored_at_zero() {
        let by_tag = [Some(0.2), None, Some(0.9), Some(-0.5)];
        assert_eq!(best_of_tags(&by_tag, &[0, 1, 2]), 0.9);
        assert_eq!(best_of_tags(&by_tag, &[1]), 0.0);
        assert_eq!(best_of_tags(&by_tag, &[3]), 0.0);
        assert_eq!(best_of_tags(&by_tag, &[]), 0.0);
    }

    #[test]
    fn reorder_saturates_and_decays() {
        assert_eq!(reorder(None, Some(1.0), 5.0, 30.0), 0.0);
        assert_eq!(reorder(Some(0.0), None, 5.0, 30.0), 0.0);
        assert_eq!(reorder(Some(10.0), None, 5.0, 30.0), 1.0);
        assert!((reorder(Some(2.5), Some(30.0), 5.0, 30.0) - 0.25).abs() < 1e-6);
    }

    #[test]
    fn top_k_selects_and_orders() {
        let scores = [0.1, 0.9, f32::NAN, 0.5, 0.9, 0.3];
        assert_eq!(top_k(&scores, 3), vec![1, 4, 3]);
        assert_eq!(top_k(&scores, 10), vec![1, 4, 3, 5, 0, 2]);
        assert!(top_k(&scores, 0).is_empty());
    }

    #[test]
    fn top_k_of_a_subset_and_sorting_agree_with_top_k() {
        let scores = [0.3, -0.0, 0.0, -2.0, f32::NAN, 7.5, 0.3];
        assert_eq!(top_k_of([6, 0, 3], &scores, 2), vec![0, 6]);
        let mut all: Vec<u32> = (0..7).collect();
        sort_by_score(&mut all, &scores);
        assert_eq!(all, top_k(&scores, 7));
        assert_eq!(all, vec![5, 0, 6, 2, 1, 3, 4]);
    }

    #[test]
    fn top_k_preferring_puts_the_preferred_group_first() {
        let scores = [0.9, 0.1, 0.5, 0.7];
        let preferred = [false, true, true, false];
        assert_eq!(top_k_preferring(&scores, &preferred, 4), vec![2, 1, 0, 3]);
        assert_eq!(top_k_preferring(&scores, &preferred, 3), vec![2, 1, 0]);
        assert_eq!(top_k_preferring(&scores, &preferred, 1), vec![2]);
    }

    #[test]
    fn top_k_preferring_is_the_preferred_top_k_then_the_rest() {
        // Few distinct values (ties), NaN, both zeros, infinities: every case of the key.
        const VALUES: [f32; 7] = [f32::NAN, -0.0, 0.0, 1.5, -2.0, f32::INFINITY, f32::NEG_INFINITY];
        let mut rng = crate::Rng::from_seed(16);
        for round in 0..500 {
            let n = rng.below(40) as usize;
            let scores: Vec<f32> = (0..n).map(|_| VALUES[rng.below(VALUES.len() as u64) as usize]).collect();
            let preferred: Vec<bool> = (0..n).map(|_| rng.below(3) > 0).collect();
            let k = rng.below(n as u64 + 3) as usize;
            let all = 0..n as u32;
            let mut expected = top_k_of(all.clone().filter(|&i| preferred[i as usize]), &scores, k);
            let rest = k - expected.len().min(k);
            expected.extend(top_k_of(all.filter(|&i| !preferred[i as usize]), &scores, rest));
            assert_eq!(
                top_k_preferring(&scores, &preferred, k),
                expected,
                "round {round}: {scores:?} {preferred:?} {k}"
            );
        }
    }

    #[test]
    fn sort_keys_keep_the_order_of_numbers() {
        let values = [f32::NEG_INFINITY, -3.0, -0.5, -0.0, 0.0, 1e-30, 0.5, 9.0, f32::INFINITY];
        for pair in values.windows(2) {
            assert!(sort_key(pair[0]) < sort_key(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        assert!(sort_key(f32::NAN) < sort_key(f32::NEG_INFINITY));
    }

    #[test]
    fn mmr_with_lambda_one_is_relevance_order() {
        let relevance = [0.2, 1.0, 0.5];
        assert_eq!(mmr(&[0, 1, 2], &relevance, 3, 1.0, |_, _| 1.0), vec![1, 2, 0]);
    }

    #[test]
    fn mmr_penalises_items_similar_to_those_picked() {
        // 0 and 1 are near-duplicates; 2 is different and a little less relevant.
        let relevance = [1.0, 0.95, 0.8];
        let similar = |a: u32, b: u32| if a.min(b) == 0 && a.max(b) == 1 { 1.0 } else { 0.0 };
        assert_eq!(mmr(&[0, 1, 2], &relevance, 3, 0.7, similar), vec![0, 2, 1]);
    }

    #[test]
    fn cap_per_key_spreads_the_window() {
        let keys = ['a', 'a', 'a', 'a', 'b', 'b', 'b', 'c'];
        let order: Vec<u32> = (0..8).collect();
        let capped = cap_per_key(&order, 5, 2, |i| Some(keys[i as usize]));
        assert_eq!(capped, vec![0, 1, 4, 5, 7, 2, 3, 6]);
        let distinct: std::collections::BTreeSet<char> = capped[..5].iter().map(|&i| keys[i as usize]).collect();
        assert_eq!(distinct.len(), 3);
    }

    #[test]
    fn cap_per_key_falls_back_to_order_when_keys_run_out() {
        let order = [0, 1, 2];
        assert_eq!(cap_per_key(&order, 3, 1, |_| Some('a')), vec![0, 1, 2]);
    }

    #[test]
    fn tag_sets_agree_with_jaccard_where() {
        let keep = [true, true, false, true, true];
        let sets: [&[u32]; 4] = [&[0, 1], &[1, 2, 3], &[2], &[4, 0, 1, 3]];
        let tag_sets = TagSets::new(5, sets, &keep);
        for a in 0..4 {
            for b in 0..4 {
                assert_eq!(tag_sets.jaccard(a, b), jaccard_where(sets[a], sets[b], &keep), "{a} {b}");
            }
        }
        let wide = TagSets::new(200, [&[150u32, 3][..], &[150][..]], &[true; 200]);
        assert_eq!(wide.jaccard(0, 1), 0.5);
    }

    #[test]
    fn jaccard_of_tag_sets() {
        assert_eq!(jaccard(&[1, 2], &[2, 3]), 1.0 / 3.0);
        assert_eq!(jaccard(&[], &[]), 0.0);
        assert_eq!(jaccard(&[4], &[4]), 1.0);
    }
}
