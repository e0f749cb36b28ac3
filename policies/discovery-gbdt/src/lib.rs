//! `discovery-gbdt`: venue ranking by a gradient-boosted tree model carried inside the component.
//!
//! The score of a venue is the model's probability that the user orders from it: a LightGBM
//! binary classifier (80 trees, at most 16 leaves and depth 5) trained by `model/train.py` on
//! synthetic venues with a known ground truth. Its inputs, built from the request for every
//! candidate ([`forest::INPUTS`], in the model's order):
//!
//! - the candidate columns `rating`, `eta_min`, `orders_7d`, `user_orders`,
//!   `user_last_order_days`, as sent (missing = NaN);
//! - `conversion_rate_7d`: `conversions_7d / impressions_7d`, NaN unless both are present and
//!   impressions > 0;
//! - `affinity`: the user's best `affinity.<tag>` over the venue's tags (0 when none), NaN for
//!   users without features, so the model has its own cold-start branch;
//! - `daypart_match`: 1 if the venue carries the local daypart's tag.
//!
//! Promises: the scores are LightGBM's own predictions for those inputs (within 1e-5; tested
//! through the host against `model/reference.json`), missing values follow the model's
//! missing-value rule at every split, and closed venues (`is_open` = 0) come last.
//!
//! # Shipping a retrained model
//!
//! The model is compiled in: `build.rs` turns `model/model.json` (LightGBM's `dump_model()`
//! JSON) into static arrays, so a component never parses JSON or loads a file. To ship a new
//! model:
//!
//! 1. change and run `python3 policies/discovery-gbdt/model/train.py` (it needs `pip install
//!    lightgbm==4.7.0 numpy`); it rewrites `model/model.json`, `model/reference.json` and the
//!    `tests/fixtures/discovery-gbdt-*.json` fixtures;
//! 2. bump `version` in this crate's `Cargo.toml`: a new model is a new component version;
//! 3. `cargo test --workspace` (the e2e test checks the component against the new reference),
//!    `relish build`, then register and activate the new version like any other; rolling back
//!    the model is rolling back the version.
//!
//! A model that reads a new candidate column needs no code change (any input name that is not
//! derived is read as a column; add it to the spec's features); a new derived input needs an
//! [`forest::Input`] variant here, in `build.rs` and in `train.py`.

pub mod forest;

use forest::{INPUTS, Input, MODEL};
use relish_guest::score;
use relish_guest::{Feature, Policy, RankError, Ranking, Request, Spec};
use relish_venue_signals::open_flags;

/// The discovery-gbdt policy.
pub struct DiscoveryGbdt;

const FEATURES: &[Feature] = &[
    Feature::candidate("rating", "Model input: average rating, 0..10."),
    Feature::candidate("eta_min", "Model input: delivery estimate in minutes."),
    Feature::candidate("orders_7d", "Model input: orders, last 7 days."),
    Feature::candidate("conversions_7d", "Numerator of the conversion_rate_7d model input."),
    Feature::candidate("impressions_7d", "Denominator of the conversion_rate_7d model input."),
    Feature::candidate("user_orders", "Model input: this user's past orders from the venue."),
    Feature::candidate("user_last_order_days", "Model input: days since this user's last order from the venue."),
    Feature::user("affinity.*", "The user's tag affinities; their best over the venue's tags is the affinity input."),
    Feature::candidate("is_open", "1 if the venue takes orders now, 0 if closed (last); missing = open."),
];

impl Policy for DiscoveryGbdt {
    const SPEC: &'static Spec = &Spec {
        name: "discovery-gbdt",
        version: env!("CARGO_PKG_VERSION"),
        description: "Venue ranking by an embedded LightGBM model's order probability; closed venues last.",
        surfaces: &["discovery"],
        params: &[],
        features: FEATURES,
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let d = INPUTS.len();
        let inputs = model_inputs(request);
        let scores: Vec<f32> = MODEL.probabilities(&inputs, d).into_iter().map(|p| p as f32).collect();
        let open = open_flags(request);
        Ok(Ranking::preferring(&scores, &open, request.limit(), |i| if open[i] { "model" } else { "closed" }))
    }
}

relish_guest::export_policy!(DiscoveryGbdt);

/// The model inputs of every candidate, row-major (`n × INPUTS.len()`), widened to f64 for the
/// splits. Derived inputs are computed in f32, exactly as `model/train.py` computes them.
pub fn model_inputs(request: &Request) -> Vec<f64> {
    let candidates = request.candidates();
    let n = candidates.len();
    let affinity_by_tag = request.user().has_features().then(|| request.user().features_by_tag("affinity."));
    let daypart_tag = request.daypart().and_then(|daypart| request.tags().id(daypart.tag()));
    let (conversions, impressions) = (candidates.feature("conversions_7d"), candidates.feature("impressions_7d"));
    let columns: Vec<_> = INPUTS
        .iter()
        .map(|input| if let Input::Column(name) = input { Some(candidates.feature(name)) } else { None })
        .collect();
    let mut matrix = Vec::with_capacity(n * INPUTS.len());
    for i in 0..n {
        for (input, column) in INPUTS.iter().zip(&columns) {
            let value = match input {
                Input::Column(_) => column.as_ref().and_then(|c| c.get(i)).unwrap_or(f32::NAN),
                Input::ConversionRate => match (conversions.get(i), impressions.get(i)) {
                    (Some(c), Some(m)) if m > 0.0 => c / m,
                    _ => f32::NAN,
                },
                Input::Affinity => {
                    affinity_by_tag.as_ref().map_or(f32::NAN, |by_tag| score::best_of_tags(by_tag, candidates.tags(i)))
                }
                Input::DaypartMatch => {
                    if daypart_tag.is_some_and(|tag| candidates.has_tag(i, tag)) {
                        1.0
                    } else {
                        0.0
                    }
                }
            };
            matrix.push(value as f64);
        }
    }
    matrix
}

#[cfg(test)]
mod tests {
    use relish_guest::testing::RequestBuilder;

    use super::*;

    #[test]
    fn every_column_the_model_reads_is_declared() {
        for input in INPUTS {
            if let Input::Column(name) = input {
                assert!(DiscoveryGbdt::SPEC.features.iter().any(|f| f.name == name), "`{name}` is not in the spec");
            }
        }
    }

    #[test]
    fn inputs_are_derived_like_the_training_script_derives_them() {
        let request = RequestBuilder::new("discovery")
            .local_time(19 * 60, relish_guest::bindings::relish::policy::types::Weekday::Friday)
            .user("u-1")
            .user_feature("affinity.pizza", 0.8)
            .candidate("a", &[("conversions_7d", 1.0), ("impressions_7d", 3.0), ("rating", 9.0)], &["pizza", "dinner"])
            .candidate("b", &[("conversions_7d", 1.0), ("impressions_7d", 0.0)], &["sushi"])
            .build();
        let request = Request::new(request, DiscoveryGbdt::SPEC);
        let inputs = model_inputs(&request);
        let d = INPUTS.len();
        let at = |i: usize, input: Input| inputs[i * d + INPUTS.iter().position(|&x| x == input).unwrap()];
        assert_eq!(at(0, Input::ConversionRate), (1.0f32 / 3.0) as f64);
        assert!(at(1, Input::ConversionRate).is_nan());
        assert_eq!(at(0, Input::Affinity), 0.8f32 as f64);
        assert_eq!(at(1, Input::Affinity), 0.0);
        assert_eq!((at(0, Input::DaypartMatch), at(1, Input::DaypartMatch)), (1.0, 0.0));
        assert_eq!(at(0, Input::Column("rating")), 9.0);
        assert!(at(1, Input::Column("rating")).is_nan());
    }

    #[test]
    fn users_without_features_have_a_missing_affinity() {
        let request = RequestBuilder::new("discovery").candidate("a", &[], &["pizza"]).build();
        let inputs = model_inputs(&Request::new(request, DiscoveryGbdt::SPEC));
        assert!(inputs[INPUTS.iter().position(|&x| x == Input::Affinity).unwrap()].is_nan());
    }

    #[test]
    fn closed_venues_come_last_whatever_the_model_says() {
        let ranking = RequestBuilder::new("discovery")
            .candidate("closed-star", &[("is_open", 0.0), ("rating", 9.9), ("orders_7d", 900.0)], &[])
            .candidate("open-plain", &[("rating", 5.0), ("eta_min", 60.0)], &[])
            .rank::<DiscoveryGbdt>()
            .unwrap();
        assert_eq!(ranking.order(), &[1, 0]);
        assert_eq!(ranking.reason(1), Some("closed"));
    }
}
