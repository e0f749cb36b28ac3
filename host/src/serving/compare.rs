//! How far two rankings of the same request agree: what a shadow's answer is judged by against
//! the answer the caller got.
//!
//! Every measure is over candidate indices, best first:
//! - **top-1 agreement**: 1 when both put the same candidate first (both empty counts as 1).
//! - **overlap@k**: `|A[..k] ∩ B[..k]| / k` with `k` the length of the answer sent (`A`); 1 when
//!   both are empty.
//! - **rank-biased overlap** (Webber, Moffat and Zobel 2010, the extrapolated `RBO_ext` of their
//!   equation 32) with persistence `p = 0.9`: top-weighted, defined for lists that differ in
//!   content and length, 1 for identical lists.
//! - **Kendall's tau-b** over the candidates both lists contain: 1 for the same order, -1 for the
//!   reverse; 0 when fewer than two candidates are shared (nothing to correlate).

/// Persistence of rank-biased overlap: the top 10 ranks carry about 86 % of the weight.
pub const RBO_PERSISTENCE: f64 = 0.9;

/// The four measures for one pair of answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// 1 if the first items agree, else 0.
    pub top1: f64,
    /// Shared share of the first `k` items.
    pub overlap: f64,
    /// Rank-biased overlap.
    pub rbo: f64,
    /// Kendall's tau-b over the shared items.
    pub tau: f64,
}

/// Compares the answer sent (`sent`) with a shadow's answer (`shadow`).
pub fn compare(sent: &[u32], shadow: &[u32]) -> Agreement {
    Agreement {
        top1: f64::from(u8::from(sent.first() == shadow.first())),
        overlap: overlap_at(sent, shadow, sent.len()),
        rbo: rbo(sent, shadow, RBO_PERSISTENCE),
        tau: kendall_tau(sent, shadow),
    }
}

/// `|a[..k] ∩ b[..k]| / k`; 1 for `k = 0`.
pub fn overlap_at(a: &[u32], b: &[u32], k: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let (a, b) = (&a[..k.min(a.len())], &b[..k.min(b.len())]);
    let shared = a.iter().filter(|x| b.contains(x)).count();
    shared as f64 / k as f64
}

/// Extrapolated rank-biased overlap of two lists without repeats.
pub fn rbo(a: &[u32], b: &[u32], p: f64) -> f64 {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let (l, s) = (long.len(), short.len());
    if l == 0 {
        return 1.0;
    }
    if s == 0 {
        return 0.0;
    }
    let mut seen_long = std::collections::HashSet::with_capacity(l);
    let mut seen_short = std::collections::HashSet::with_capacity(s);
    let mut overlap = 0usize; // X_d: the overlap of the first d items
    let mut sum = 0.0; // Σ_{d=1..l} (X_d / d) p^d, with the short list's tail extrapolated below
    let mut overlap_at_s = 0usize;
    let mut weight = 1.0;
    for d in 1..=l {
        let x = long[d - 1];
        if seen_short.contains(&x) {
            overlap += 1;
        }
        seen_long.insert(x);
        if d <= s {
            let y = short[d - 1];
            if seen_long.contains(&y) {
                overlap += 1;
            }
            // A match is counted once, by whichever of the two arrives second (`x` is in
            // `seen_long` already when `y == x`).
            seen_short.insert(y);
        }
        if d == s {
            overlap_at_s = overlap;
        }
        weight *= p;
        sum += overlap as f64 / d as f64 * weight;
        if d > s {
            // Equation 32's extra term for the depths past the short list: X_s (d - s) / (s d).
            sum += overlap_at_s as f64 * (d - s) as f64 / (s * d) as f64 * weight;
        }
    }
    let (xl, xs) = (overlap as f64, overlap_at_s as f64);
    let (l_f, s_f) = (l as f64, s as f64);
    let tail = ((xl - xs) / l_f + xs / s_f) * p.powi(l as i32);
    ((1.0 - p) / p * sum + tail).clamp(0.0, 1.0)
}

/// Kendall's tau-b over the items both lists contain (no ties within a list, so tau-a = tau-b).
pub fn kendall_tau(a: &[u32], b: &[u32]) -> f64 {
    let positions: Vec<(usize, usize)> =
        a.iter().enumerate().filter_map(|(i, x)| b.iter().position(|y| y == x).map(|j| (i, j))).collect();
    let n = positions.len();
    if n < 2 {
        return 0.0;
    }
    let mut score = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            let (a_order, b_order) = (positions[i].0 < positions[j].0, positions[i].1 < positions[j].1);
            score += if a_order == b_order { 1 } else { -1 };
        }
    }
    score as f64 / (n * (n - 1) / 2) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn identical_answers_agree_fully() {
        let order = [4, 2, 7, 1, 0];
        assert_eq!(compare(&order, &order), Agreement { top1: 1.0, overlap: 1.0, rbo: 1.0, tau: 1.0 });
    }

    #[test]
    fn a_reversed_answer_shares_every_item_in_the_opposite_order() {
        let order = [4, 2, 7, 1, 0];
        let reversed: Vec<u32> = order.iter().rev().copied().collect();
        let agreement = compare(&order, &reversed);
        assert_eq!((agreement.top1, agreement.overlap, agreement.tau), (0.0, 1.0, -1.0));
        assert!(agreement.rbo > 0.0 && agreement.rbo < 1.0, "{agreement:?}");
    }

    #[test]
    fn rbo_matches_a_direct_sum_for_lists_of_equal_length() {
        // For equal lengths RBO_ext = (1-p)/p Σ_{d<=l} A_d p^d + A_l p^l, A_d = |a[..d] ∩ b[..d]| / d.
        let (a, b) = ([1, 2, 3, 4], [2, 1, 4, 5]);
        let p: f64 = 0.9;
        let agreement = |d: usize| overlap_at(&a, &b, d);
        let direct: f64 =
            (1.0 - p) / p * (1..=4).map(|d| agreement(d) * p.powi(d as i32)).sum::<f64>() + agreement(4) * p.powi(4);
        assert!(close(rbo(&a, &b, p), direct), "{} vs {direct}", rbo(&a, &b, p));
        assert!(close(rbo(&[1, 2], &[3, 4], p), 0.0));
    }

    #[test]
    fn disjoint_and_partial_answers() {
        assert_eq!(compare(&[1, 2, 3], &[4, 5, 6]), Agreement { top1: 0.0, overlap: 0.0, rbo: 0.0, tau: 0.0 });
        assert!(close(overlap_at(&[1, 2, 3, 4], &[4, 3, 9, 8], 4), 0.5));
        assert!(close(kendall_tau(&[1, 2, 3], &[1, 3, 2]), 1.0 / 3.0));
        assert_eq!(compare(&[], &[]).top1, 1.0);
        assert!(rbo(&[1, 2, 3], &[1], 0.9) > 0.0);
    }
}
