//! The policy's answer, built item by item.

use crate::bindings::relish::policy::types as raw;
use crate::score;

/// A policy's answer: candidate indices best first, their scores, optional reason codes, and,
/// for a policy that randomises, the propensity of each item.
///
/// The host checks it (indices in range, no duplicates, finite scores, at most `limit` items,
/// propensities in `(0, 1]`); building it with these methods keeps a policy on the right side of
/// that check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranking {
    order: Vec<u32>,
    scores: Vec<f32>,
    reasons: Vec<Option<u32>>,
    reason_codes: Vec<String>,
    propensities: Vec<f32>,
}

impl Ranking {
    /// An empty ranking.
    pub fn new() -> Self {
        Ranking::default()
    }

    /// An empty ranking with room for `capacity` items.
    pub fn with_capacity(capacity: usize) -> Self {
        Ranking {
            order: Vec::with_capacity(capacity),
            scores: Vec::with_capacity(capacity),
            reasons: Vec::with_capacity(capacity),
            reason_codes: Vec::new(),
            propensities: Vec::new(),
        }
    }

    /// The top `limit` candidates by score, best first (ties keep input order; NaN scores last).
    pub fn from_scores(scores: &[f32], limit: usize) -> Self {
        let order = score::top_k(scores, limit);
        let mut ranking = Ranking::with_capacity(order.len());
        for i in order {
            ranking.push(i as usize, scores[i as usize]);
        }
        ranking
    }

    /// The top `limit` candidates with the preferred ones first (see
    /// [`score::top_k_preferring`]: open venues before closed ones, available items before sold-out
    /// ones), each with its score and the reason code `reason(index)`.
    pub fn preferring<'a>(scores: &[f32], preferred: &[bool], limit: usize, reason: impl Fn(usize) -> &'a str) -> Self {
        let order = score::top_k_preferring(scores, preferred, limit);
        let mut ranking = Ranking::with_capacity(order.len());
        for i in order {
            let i = i as usize;
            ranking.push_with_reason(i, scores[i], reason(i));
        }
        ranking
    }

    /// Appends candidate `index` with its score.
    pub fn push(&mut self, index: usize, score: f32) {
        self.order.push(index as u32);
        self.scores.push(score);
        self.reasons.push(None);
    }

    /// Appends candidate `index` with its score and a short reason code (for example `affinity`).
    pub fn push_with_reason(&mut self, index: usize, score: f32, reason: &str) {
        let code = match self.reason_codes.iter().position(|c| crate::columns::same(c, reason)) {
            Some(code) => code,
            None => {
                self.reason_codes.push(reason.to_owned());
                self.reason_codes.len() - 1
            }
        };
        self.order.push(index as u32);
        self.scores.push(score);
        self.reasons.push(Some(code as u32));
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the ranking is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Candidate indices, best first.
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    /// One score per item.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// The reason code of item `position`, if it has one.
    pub fn reason(&self, position: usize) -> Option<&str> {
        self.reasons[position].map(|code| self.reason_codes[code as usize].as_str())
    }

    /// Reports, for a policy whose answer depends on the request's seed, the probability that
    /// each item was placed where it is: one per item, best first, each in `(0, 1]` (see
    /// `propensities` in the contract). Off-policy evaluation of the decision log divides by
    /// them. A policy that does not randomise reports nothing: every item then has
    /// probability 1.
    ///
    /// # Panics
    ///
    /// If there is not exactly one propensity per item (the host would refuse the answer).
    pub fn set_propensities(&mut self, propensities: Vec<f32>) {
        assert_eq!(propensities.len(), self.order.len(), "one propensity per item");
        self.propensities = propensities;
    }

    /// The probability that item `position` was placed where it is (1 unless the policy
    /// reported propensities).
    pub fn propensity(&self, position: usize) -> f32 {
        self.propensities.get(position).copied().unwrap_or(1.0)
    }

    /// Whether candidate `index` is in the ranking.
    pub fn contains(&self, index: usize) -> bool {
        self.order.contains(&(index as u32))
    }

    /// The contract's `ranking` record. Items without a reason get the empty code, which the host
    /// shows as no reason.
    pub fn into_raw(self) -> raw::Ranking {
        let Ranking { order, scores, reasons, mut reason_codes, propensities } = self;
        let reasons = if reasons.iter().all(Option::is_none) {
            Vec::new()
        } else {
            let mut empty = None;
            reasons
                .into_iter()
                .map(|reason| {
                    reason.unwrap_or_else(|| {
                        *empty.get_or_insert_with(|| {
                            reason_codes.push(String::new());
                            (reason_codes.len() - 1) as u32
                        })
                    })
                })
                .collect()
        };
        raw::Ranking { order, scores, reasons, reason_codes, propensities }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_scores_orders_best_first_and_keeps_input_order_on_ties() {
        let ranking = Ranking::from_scores(&[0.5, 2.0, f32::NAN, 2.0, -1.0], 4);
        assert_eq!(ranking.order(), &[1, 3, 0, 4]);
    }

    #[test]
    fn preferring_puts_the_preferred_first_with_their_reasons() {
        let open = [false, true, true];
        let ranking = Ranking::preferring(&[9.0, 1.0, 2.0], &open, 3, |i| if open[i] { "open" } else { "closed" });
        assert_eq!(ranking.order(), &[2, 1, 0]);
        assert_eq!(ranking.scores(), &[2.0, 1.0, 9.0]);
        assert_eq!((ranking.reason(0), ranking.reason(2)), (Some("open"), Some("closed")));
    }

    #[test]
    fn reasons_are_interned_and_missing_ones_become_the_empty_code() {
        let mut ranking = Ranking::new();
        ranking.push_with_reason(2, 1.0, "affinity");
        ranking.push(0, 0.5);
        ranking.push_with_reason(1, 0.2, "affinity");
        assert_eq!(ranking.reason(1), None);
        let raw = ranking.into_raw();
        assert_eq!(raw.reason_codes, vec!["affinity".to_owned(), String::new()]);
        assert_eq!(raw.reasons, vec![0, 1, 0]);
    }

    #[test]
    fn a_ranking_without_reasons_sends_none() {
        let mut ranking = Ranking::new();
        ranking.push(0, 1.0);
        let raw = ranking.into_raw();
        assert!(raw.reasons.is_empty() && raw.reason_codes.is_empty());
    }
}
