//! The gradient-boosted trees and their evaluation, with LightGBM's exact prediction rules.
//!
//! LightGBM predicts a binary model as `1 / (1 + exp(-sigmoid · Σ leaf))`, summing one leaf per
//! tree in tree order (the initial score is already folded into the first tree's leaves). At a
//! numerical split on feature value `x` (a double; the policy's f32 features widen exactly):
//!
//! - if `x` is NaN and the split's missing type is not `NaN`, `x` counts as `0.0`;
//! - if the missing type is `Zero` and `|x| <= 1e-35`, or `NaN` and `x` is NaN, the split sends
//!   the row to its default side (`default_left`);
//! - otherwise the row goes left when `x <= threshold`, right when not.
//!
//! That is `Tree::NumericalDecision` in LightGBM's `include/LightGBM/tree.h`, and what every test
//! of this crate against LightGBM's own predictions checks.

use relish_guest::math;

/// What LightGBM does with a missing value at a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No missing values seen in training: NaN counts as 0 and is compared.
    None,
    /// Zero (and NaN, which counts as 0) goes to the default side.
    Zero,
    /// NaN goes to the default side.
    NaN,
}

/// A numerical split.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// Go left when the value is `<=` this.
    pub threshold: f64,
    /// The index of the model input the split reads.
    pub feature: u16,
    /// The split's missing-value rule.
    pub missing: Missing,
    /// Where missing values go.
    pub default_left: bool,
    /// The left child: a node index if `>= 0`, else the leaf `!left`.
    pub left: i32,
    /// The right child, encoded like `left`.
    pub right: i32,
}

/// LightGBM's `kZeroThreshold`, a `float` constant compared as a double.
const ZERO_THRESHOLD: f64 = 1e-35f32 as f64;

impl Node {
    /// The child a row with `value` at this split's feature goes to.
    #[inline]
    fn next(&self, value: f64) -> i32 {
        let value = if value.is_nan() && self.missing != Missing::NaN { 0.0 } else { value };
        let missing = match self.missing {
            Missing::None => false,
            Missing::Zero => value > -ZERO_THRESHOLD && value <= ZERO_THRESHOLD,
            Missing::NaN => value.is_nan(),
        };
        if missing {
            if self.default_left { self.left } else { self.right }
        } else if value <= self.threshold {
            self.left
        } else {
            self.right
        }
    }
}

/// A binary LightGBM model: the trees, flattened.
#[derive(Debug, Clone, Copy)]
pub struct Forest {
    /// The objective's sigmoid factor (`binary sigmoid:1` → 1).
    pub sigmoid: f64,
    /// Each tree's root: a node index, or `!leaf` for a single-leaf tree.
    pub roots: &'static [i32],
    /// Every split of every tree.
    pub nodes: &'static [Node],
    /// Every leaf value of every tree.
    pub leaves: &'static [f64],
}

impl Forest {
    /// The raw score (log-odds) of one row of model inputs.
    pub fn raw_score(&self, row: &[f64]) -> f64 {
        let mut sum = 0.0;
        for &root in self.roots {
            let mut child = root;
            while child >= 0 {
                let node = &self.nodes[child as usize];
                child = node.next(row[node.feature as usize]);
            }
            sum += self.leaves[!child as usize];
        }
        sum
    }

    /// The predicted probability of one row, as LightGBM's `predict` gives it.
    pub fn probability(&self, row: &[f64]) -> f64 {
        1.0 / (1.0 + math::exp64(-self.sigmoid * self.raw_score(row)))
    }

    /// The number of trees.
    pub fn trees(&self) -> usize {
        self.roots.len()
    }
}

/// Where a model input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A candidate feature column, as is (NaN when missing).
    Column(&'static str),
    /// `conversions_7d / impressions_7d` in f32; NaN unless both are present and impressions > 0.
    ConversionRate,
    /// `max(0, the user's affinity.<tag> over the venue's tags)`; NaN for users without features.
    Affinity,
    /// 1 if the venue carries the tag of the local daypart, else 0.
    DaypartMatch,
}

include!(concat!(env!("OUT_DIR"), "/model.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    /// `x0 <= 1.5` (NaN right), then `x1` with the given missing type (default left) at 0.0.
    fn tiny(missing: Missing) -> Forest {
        let nodes: &'static [Node] = Box::leak(Box::new([
            Node { threshold: 1.5, feature: 0, missing: Missing::NaN, default_left: false, left: 1, right: !2 },
            Node { threshold: 0.0, feature: 1, missing, default_left: true, left: !0, right: !1 },
        ]));
        Forest { sigmoid: 1.0, roots: &[0, !3], nodes, leaves: &[1.0, 2.0, 3.0, 0.25] }
    }

    #[test]
    fn splits_go_left_on_equal_values() {
        let forest = tiny(Missing::None);
        assert_eq!(forest.raw_score(&[1.5, 5.0]), 2.0 + 0.25, "1.5 <= 1.5 goes left, then 5 > 0 right");
        assert_eq!(forest.raw_score(&[1.5000001, 5.0]), 3.0 + 0.25);
        assert_eq!(forest.raw_score(&[1.0, 0.0]), 1.0 + 0.25, "0 <= 0 goes left");
    }

    #[test]
    fn missing_values_follow_the_split_rule() {
        // NaN-type split, default right.
        assert_eq!(tiny(Missing::None).raw_score(&[f64::NAN, 0.0]), 3.0 + 0.25);
        // None-type split: NaN counts as 0 and is compared (0 <= 0: left).
        assert_eq!(tiny(Missing::None).raw_score(&[1.0, f64::NAN]), 1.0 + 0.25);
        // Zero-type split: 0 and NaN go to the default (left); a tiny non-zero value too.
        let zero = tiny(Missing::Zero);
        assert_eq!(zero.raw_score(&[1.0, f64::NAN]), 1.0 + 0.25);
        assert_eq!(zero.raw_score(&[1.0, 1e-36]), 1.0 + 0.25);
        assert_eq!(zero.raw_score(&[1.0, -1e-30]), 1.0 + 0.25, "-1e-30 <= 0 goes left by comparison");
        assert_eq!(zero.raw_score(&[1.0, 1e-30]), 2.0 + 0.25);
        // NaN-type split, default left: NaN left, 0 compared.
        assert_eq!(tiny(Missing::NaN).raw_score(&[1.0, f64::NAN]), 1.0 + 0.25);
    }

    #[test]
    fn probability_is_the_sigmoid_of_the_raw_score() {
        let forest = tiny(Missing::None);
        let p = forest.probability(&[1.0, 1.0]);
        assert!((p - 1.0 / (1.0 + (-2.25f64).exp())).abs() < 1e-15);
    }

    #[test]
    fn the_embedded_model_is_small_and_reads_known_inputs() {
        assert!((50..=100).contains(&MODEL.trees()), "{} trees", MODEL.trees());
        assert!(MODEL.nodes.iter().all(|n| (n.feature as usize) < INPUTS.len()));
    }
}
