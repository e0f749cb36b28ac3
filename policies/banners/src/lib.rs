//! `banners`: which banners to show, in which order, by Beta–Bernoulli Thompson sampling.
//!
//! Each banner's click rate gets a Beta posterior. The prior comes from a wider level (for
//! example the city's numbers for the same banner or campaign type): with `p0 =
//! prior_clicks / prior_impressions` and `s = prior_strength` pseudo-impressions,
//!
//! ```text
//! alpha = s · p0 + clicks          beta = s · (1 - p0) + (impressions - clicks)
//! ```
//!
//! A banner without a usable prior (`prior_impressions` missing or 0) takes `default_ctr` as
//! `p0`. The policy draws one sample from every banner's posterior, with the request's seeded
//! generator, and orders banners by their samples: a banner with a clearly better record is
//! usually first, but a new banner (whose posterior is the wide prior) regularly gets its turn,
//! which is how it earns a record of its own.
//!
//! Frequency cap: a banner the user has already seen `frequency_cap` times today
//! (`user_impressions_today >= frequency_cap`) is never first. Capped banners go after every
//! banner under the cap (in the order of their samples), so a carousel keeps its length; when
//! every banner is capped the answer is empty, since any answer would open on a capped banner.
//! A missing `user_impressions_today` counts as 0.
//!
//! Randomness comes only from the request seed ([`relish_guest::Request::rng`]): one request
//! always gets the same answer, and the samples are drawn in candidate order, so the answer does
//! not depend on anything but the request. Scores are the samples (click-rate draws in 0..1).
//!
//! Propensities (for off-policy evaluation of the decision log): the probability that each
//! answered banner is at its position is estimated as Open Bandit Pipeline does for its Thompson
//! sampling logs, by drawing the whole order again `propensity_draws` times from the same
//! posteriors, on a random stream of the seed of its own (so the answer itself is unchanged):
//! `(1 + hits) / (1 + draws)`, the answer's own draw counted as one of them, which also keeps every
//! estimate above 0. The cost is `propensity_draws` times the sampling of one answer.

use relish_guest::{Feature, Param, Policy, RankError, Ranking, Request, Spec, math, score};

/// The banners policy.
pub struct Banners;

const PARAMS: &[Param] = &[
    Param {
        name: "prior_strength",
        default: "100",
        description: "Pseudo-impressions the wider-level prior is worth: higher keeps new banners near the \
                      prior rate for longer (1..10000).",
    },
    Param {
        name: "default_ctr",
        default: "0.02",
        description: "Prior click rate for a banner without prior_clicks/prior_impressions (0..1).",
    },
    Param {
        name: "frequency_cap",
        default: "3",
        description: "A banner the user saw this many times today is never first (see the policy docs).",
    },
    Param {
        name: "propensity_draws",
        default: "200",
        description: "Draws of the whole order that estimate each answered banner's propensity (1..100000): \
                      more is more exact and costs as many samplings of the answer.",
    },
];

const FEATURES: &[Feature] = &[
    Feature::candidate("clicks", "Clicks on the banner (its own record)."),
    Feature::candidate("impressions", "Impressions of the banner (its own record)."),
    Feature::candidate("prior_clicks", "Clicks at the wider level the prior comes from (for example the city)."),
    Feature::candidate("prior_impressions", "Impressions at the wider level the prior comes from."),
    Feature::candidate("user_impressions_today", "How many times this user saw the banner today; missing = 0."),
];

/// The smallest Beta parameter: keeps the Gamma draws defined for a zero prior or rate.
const MIN_SHAPE: f64 = 1e-3;

/// The random stream the propensity estimate draws from (see [`Request::rng_stream`]).
const PROPENSITY_STREAM: u64 = u64::from_be_bytes(*b"propensi");

impl Policy for Banners {
    const SPEC: &'static Spec = &Spec {
        name: "banners",
        version: env!("CARGO_PKG_VERSION"),
        description: "Banner choice by Beta-Bernoulli Thompson sampling with a wider-level prior, seeded by the \
                      request; banners over the user's daily frequency cap are never first.",
        surfaces: &["banners"],
        params: PARAMS,
        features: FEATURES,
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let strength: f64 = request.param("prior_strength")?;
        let default_ctr: f64 = request.param("default_ctr")?;
        let cap: f32 = request.param("frequency_cap")?;
        if !(strength.is_finite() && strength > 0.0) {
            let message = format!("parameter `prior_strength` must be a positive number, got {strength}");
            return Err(RankError::InvalidRequest(message));
        }
        if !(0.0..=1.0).contains(&default_ctr) {
            return Err(RankError::InvalidRequest(format!(
                "parameter `default_ctr` must be in 0..=1, got {default_ctr}"
            )));
        }
        let candidates = request.candidates();
        let n = candidates.len();
        let (clicks, impressions) = (candidates.feature("clicks"), candidates.feature("impressions"));
        let (prior_clicks, prior_impressions) =
            (candidates.feature("prior_clicks"), candidates.feature("prior_impressions"));
        let seen_today = candidates.feature("user_impressions_today");

        let draws: u32 = request.param("propensity_draws")?;
        if !(1..=100_000).contains(&draws) {
            return Err(RankError::InvalidRequest(format!(
                "parameter `propensity_draws` must be in 1..=100000, got {draws}"
            )));
        }
        let posteriors: Vec<(f64, f64)> = (0..n)
            .map(|i| {
                let p0 = match (prior_clicks.get(i), prior_impressions.get(i)) {
                    (Some(c), Some(m)) if m > 0.0 => math::clamp(c / m, 0.0, 1.0) as f64,
                    _ => default_ctr,
                };
                let shown = math::max(impressions.get_or(i, 0.0), 0.0);
                let clicked = math::clamp(clicks.get_or(i, 0.0), 0.0, shown);
                let alpha = strength * p0 + clicked as f64;
                let beta = strength * (1.0 - p0) + (shown - clicked) as f64;
                (alpha.max(MIN_SHAPE), beta.max(MIN_SHAPE))
            })
            .collect();
        let sample = |rng: &mut relish_guest::Rng| -> Vec<f32> {
            posteriors.iter().map(|&(alpha, beta)| rng.beta(alpha, beta) as f32).collect()
        };
        let samples = sample(&mut request.rng());
        let under_cap: Vec<bool> = (0..n).map(|i| seen_today.get_or(i, 0.0) < cap).collect();

        if !under_cap.contains(&true) {
            return Ok(Ranking::new());
        }
        let mut ranking =
            Ranking::preferring(
                &samples,
                &under_cap,
                request.limit(),
                |i| if under_cap[i] { "sampled" } else { "capped" },
            );
        let mut hits = vec![0u32; ranking.len()];
        let mut rng = request.rng_stream(PROPENSITY_STREAM);
        for _ in 0..draws {
            let order = score::top_k_preferring(&sample(&mut rng), &under_cap, request.limit());
            for (hit, (drawn, answered)) in hits.iter_mut().zip(order.iter().zip(ranking.order())) {
                *hit += u32::from(drawn == answered);
            }
        }
        ranking.set_propensities(hits.iter().map(|&h| (1 + h) as f32 / (1 + draws) as f32).collect());
        Ok(ranking)
    }
}

relish_guest::export_policy!(Banners);

#[cfg(test)]
mod tests {
    use relish_guest::testing::RequestBuilder;

    use super::*;

    fn banners() -> RequestBuilder {
        let prior = [("prior_clicks", 300.0), ("prior_impressions", 10_000.0)];
        let with = |own: &[(&'static str, f32)]| [own, &prior[..]].concat();
        RequestBuilder::new("banners")
            .candidate("strong", &with(&[("clicks", 60.0), ("impressions", 1000.0)]), &[])
            .candidate("weak", &with(&[("clicks", 10.0), ("impressions", 1000.0)]), &[])
            .candidate("new", &with(&[]), &[])
    }

    fn first(builder: RequestBuilder) -> String {
        let view = Request::new(builder.build(), Banners::SPEC);
        let ranking = Banners::rank(&view).unwrap();
        view.candidates().id(ranking.order()[0] as usize).to_owned()
    }

    #[test]
    fn the_better_banner_usually_wins_and_the_new_one_sometimes() {
        let firsts: Vec<String> = (0..500).map(|seed| first(banners().seed(seed))).collect();
        let count = |id: &str| firsts.iter().filter(|f| *f == id).count();
        assert!(count("strong") > 350, "strong first {} of 500", count("strong"));
        assert!(count("new") > 0, "the new banner is explored");
        assert_eq!(count("weak"), 0, "weak: 1 % observed on 1000 impressions never beats 6 %");
    }

    #[test]
    fn propensities_are_the_share_of_draws_that_answer_the_same() {
        // The posteriors are the same on every seed, so the share of seeds on which `strong` is
        // first is its top-slot probability, and the propensity of every answer that has it first
        // estimates that same probability.
        let runs = 400;
        let mut first_strong = 0;
        let mut estimated = 0.0;
        for seed in 0..runs {
            let view = Request::new(banners().seed(seed).build(), Banners::SPEC);
            let ranking = Banners::rank(&view).unwrap();
            assert!((0..ranking.len()).all(|k| ranking.propensity(k) > 0.0 && ranking.propensity(k) <= 1.0));
            let strong_first = view.candidates().id(ranking.order()[0] as usize) == "strong";
            first_strong += u32::from(strong_first);
            if strong_first {
                estimated += f64::from(ranking.propensity(0));
            }
        }
        let share = f64::from(first_strong) / runs as f64;
        let mean_estimate = estimated / f64::from(first_strong);
        assert!((share - mean_estimate).abs() < 0.05, "observed {share}, estimated {mean_estimate}");
    }

    #[test]
    fn one_seed_gives_one_answer() {
        let a = banners().seed(7).rank::<Banners>().unwrap();
        let b = banners().seed(7).rank::<Banners>().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn capped_banners_are_never_first_and_all_capped_is_empty() {
        for seed in 0..200 {
            let capped = banners().seed(seed).param("frequency_cap", "2");
            let view = Request::new(
                capped
                    .candidate(
                        "seen",
                        &[("clicks", 900.0), ("impressions", 1000.0), ("user_impressions_today", 2.0)],
                        &[],
                    )
                    .build(),
                Banners::SPEC,
            );
            let ranking = Banners::rank(&view).unwrap();
            assert_ne!(view.candidates().id(ranking.order()[0] as usize), "seen", "seed {seed}");
            assert_eq!(ranking.reason(3), Some("capped"));
        }
        let all_capped = RequestBuilder::new("banners").candidate("a", &[("user_impressions_today", 5.0)], &[]);
        assert!(all_capped.rank::<Banners>().unwrap().is_empty());
    }
}
