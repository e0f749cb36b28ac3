//! Venue signals shared by the venue policies (`popularity`, `discovery`, `category`).
//!
//! Not a policy itself (it has no `cdylib` target, so `relish build` skips it): a library of the
//! signals every venue ranking is made of, so that the personalised policies' cold-start answer
//! *is* the popularity order, not a copy of it, and so that `discovery` and `category` read a
//! user the same way. Each policy lists the parameters and features it reads from here in its own
//! [`relish_guest::Spec`].
//!
//! Feature conventions (candidate features): `is_open` is a 0/1 flag, missing means open;
//! `conversions_7d` and `impressions_7d` are counts over the last seven days; `rating` is 0–10;
//! `orders_7d` is a count; `eta_min` is the delivery estimate in minutes; `user_orders` counts the
//! user's past orders from the venue and `user_last_order_days` the days since the last one. User
//! features: `affinity.<tag>` in 0..1.

use relish_guest::score::{self, decay, smoothed_rate};
use relish_guest::{Feature, Param, RankError, Request, concat, math};

/// The parameters of the popularity score.
pub mod params {
    use super::Param;

    /// Pseudo-impressions of the conversion prior.
    pub const PRIOR_WEIGHT: Param = Param {
        name: "prior_weight",
        default: "200",
        description: "Pseudo-impressions given to the prior conversion rate (the pooled rate of all candidates); \
                      higher trusts small venues' own numbers less. 0..10000.",
    };
    /// Weight of the smoothed conversion rate.
    pub const W_CONVERSION: Param = Param {
        name: "w_conversion",
        default: "1.0",
        description: "Weight of the smoothed conversion rate (normalised to 0..1 across candidates).",
    };
    /// Weight of the rating.
    pub const W_RATING: Param = Param {
        name: "w_rating",
        default: "0.6",
        description: "Weight of the rating (0..10, scaled to 0..1; a missing rating counts as 0).",
    };
    /// Weight of recent orders.
    pub const W_ORDERS: Param = Param {
        name: "w_orders",
        default: "0.4",
        description: "Weight of ln(1 + orders_7d), normalised to 0..1 across candidates.",
    };
    /// ETA below which there is no penalty.
    pub const ETA_FREE_MIN: Param = Param {
        name: "eta_free_min",
        default: "20",
        description: "Delivery estimate in minutes up to which there is no ETA penalty.",
    };
    /// Half-life of the ETA penalty.
    pub const ETA_HALF_LIFE_MIN: Param = Param {
        name: "eta_half_life_min",
        default: "25",
        description: "Every this many minutes beyond eta_free_min halve the score (exponential penalty).",
    };
    /// ETA assumed when missing.
    pub const ETA_MISSING_MIN: Param = Param {
        name: "eta_missing_min",
        default: "45",
        description: "Delivery estimate assumed for candidates without eta_min.",
    };

    /// Every popularity parameter.
    pub const ALL: [Param; 7] =
        [PRIOR_WEIGHT, W_CONVERSION, W_RATING, W_ORDERS, ETA_FREE_MIN, ETA_HALF_LIFE_MIN, ETA_MISSING_MIN];

    /// Orders at which the re-order signal saturates.
    pub const REORDER_SATURATION: Param = Param {
        name: "reorder_saturation",
        default: "5",
        description: "Past orders at which the re-order signal reaches 1.",
    };
    /// Half-life of the re-order signal.
    pub const REORDER_HALF_LIFE_DAYS: Param = Param {
        name: "reorder_half_life_days",
        default: "30",
        description: "Days since the last order after which the re-order signal halves.",
    };

    /// Every parameter of [`crate::signals`]: the re-order parameters and the popularity ones.
    pub const SIGNALS: [Param; 9] = super::concat(&[&[REORDER_SATURATION, REORDER_HALF_LIFE_DAYS], &ALL]);
}

/// The candidate features the popularity score reads.
pub mod features {
    use super::Feature;

    /// Open flag.
    pub const IS_OPEN: Feature =
        Feature::candidate("is_open", "1 if the venue takes orders now, 0 if closed; missing = open.");
    /// Conversions.
    pub const CONVERSIONS_7D: Feature =
        Feature::candidate("conversions_7d", "Orders placed after seeing the venue, last 7 days.");
    /// Impressions.
    pub const IMPRESSIONS_7D: Feature = Feature::candidate("impressions_7d", "Times the venue was shown, last 7 days.");
    /// Rating.
    pub const RATING: Feature = Feature::candidate("rating", "Average rating, 0..10.");
    /// Orders.
    pub const ORDERS_7D: Feature = Feature::candidate("orders_7d", "Orders, last 7 days.");
    /// ETA.
    pub const ETA_MIN: Feature = Feature::candidate("eta_min", "Delivery estimate in minutes.");

    /// Every popularity feature.
    pub const ALL: [Feature; 6] = [IS_OPEN, CONVERSIONS_7D, IMPRESSIONS_7D, RATING, ORDERS_7D, ETA_MIN];

    /// The user's tag affinities.
    pub const AFFINITY: Feature =
        Feature::user("affinity.*", "The user's affinity to a tag (cuisine), 0..1; joined with the venue's tags.");
    /// The user's past orders from the venue.
    pub const USER_ORDERS: Feature =
        Feature::candidate("user_orders", "How many times this user ordered from the venue.");
    /// Days since the user's last order from the venue.
    pub const USER_LAST_ORDER_DAYS: Feature =
        Feature::candidate("user_last_order_days", "Days since this user last ordered from the venue.");

    /// Every feature of [`crate::signals`]: the personal ones and the popularity ones.
    pub const SIGNALS: [Feature; 9] = super::concat(&[&[AFFINITY, USER_ORDERS, USER_LAST_ORDER_DAYS], &ALL]);
}

/// The popularity parameters, read once per request.
#[derive(Debug, Clone, Copy)]
pub struct Popularity {
    prior_weight: f32,
    w_conversion: f32,
    w_rating: f32,
    w_orders: f32,
    eta: Eta,
}

/// The ETA penalty parameters.
#[derive(Debug, Clone, Copy)]
pub struct Eta {
    free_min: f32,
    half_life_min: f32,
    missing_min: f32,
}

impl Eta {
    /// Reads the ETA parameters.
    pub fn read(request: &Request) -> Result<Self, RankError> {
        let eta = Eta {
            free_min: request.param(params::ETA_FREE_MIN.name)?,
            half_life_min: request.param(params::ETA_HALF_LIFE_MIN.name)?,
            missing_min: request.param(params::ETA_MISSING_MIN.name)?,
        };
        if eta.half_life_min <= 0.0 || !eta.half_life_min.is_finite() {
            return Err(RankError::InvalidRequest(format!(
                "parameter `eta_half_life_min` must be positive, got {}",
                eta.half_life_min
            )));
        }
        Ok(eta)
    }

    /// Each candidate's ETA factor in `(0, 1]`: 1 up to `eta_free_min`, halving every
    /// `eta_half_life_min` minutes beyond.
    pub fn factors(&self, request: &Request) -> Vec<f32> {
        let eta = request.candidates().feature("eta_min");
        (0..request.candidates().len())
            .map(|i| decay(eta.get_or(i, self.missing_min) - self.free_min, self.half_life_min))
            .collect()
    }
}

impl Popularity {
    /// Reads the popularity parameters.
    pub fn read(request: &Request) -> Result<Self, RankError> {
        Ok(Popularity {
            prior_weight: math::max(request.param(params::PRIOR_WEIGHT.name)?, 0.0),
            w_conversion: request.param(params::W_CONVERSION.name)?,
            w_rating: request.param(params::W_RATING.name)?,
            w_orders: request.param(params::W_ORDERS.name)?,
            eta: Eta::read(request)?,
        })
    }

    /// Each candidate's popularity score (higher is better), ETA penalty included:
    /// [`Popularity::base_scores`] times the [`Eta`] factor.
    pub fn scores(&self, request: &Request) -> Vec<f32> {
        let mut scores = self.base_scores(request);
        for (score, eta) in scores.iter_mut().zip(self.eta.factors(request)) {
            *score *= eta;
        }
        scores
    }

    /// Each candidate's popularity score before the ETA penalty:
    /// `w_conversion · conversion + w_rating · rating / 10 + w_orders · orders`, where conversion
    /// is the rate shrunk toward the pooled rate of all candidates and then min-max normalised, and
    /// orders is `ln(1 + orders_7d)` min-max normalised.
    pub fn base_scores(&self, request: &Request) -> Vec<f32> {
        let candidates = request.candidates();
        let n = candidates.len();
        let (conversions, impressions) = (candidates.feature("conversions_7d"), candidates.feature("impressions_7d"));
        let (total_conversions, total_impressions) = (0..n).fold((0.0f32, 0.0f32), |(c, i), k| {
            (c + math::max(conversions.get_or(k, 0.0), 0.0), i + math::max(impressions.get_or(k, 0.0), 0.0))
        });
        let prior_rate = if total_impressions > 0.0 { total_conversions / total_impressions } else { 0.0 };
        let mut conversion: Vec<f32> = (0..n)
            .map(|k| {
                smoothed_rate(conversions.get_or(k, 0.0), impressions.get_or(k, 0.0), prior_rate, self.prior_weight)
            })
            .collect();
        score::min_max(&mut conversion);
        let orders = score::log_count_scores(candidates.feature("orders_7d"));
        let rating = candidates.feature("rating");
        (0..n)
            .map(|k| {
                let rating = math::clamp(rating.get_or(k, 0.0) / 10.0, 0.0, 1.0);
                self.w_conversion * conversion[k] + self.w_rating * rating + self.w_orders * orders[k]
            })
            .collect()
    }
}

/// One venue's signals for one user, each in `0..=1` (the ETA factor in `(0, 1]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    /// The user's best `affinity.<tag>` over the venue's tags, clamped to `0..=1` (0 if none).
    pub affinity: f32,
    /// `min(1, user_orders / reorder_saturation)`, decayed by `user_last_order_days` with a
    /// half-life of `reorder_half_life_days` (see [`relish_guest::score::reorder`]).
    pub reorder: f32,
    /// 1 if the venue carries the tag of the local [`relish_guest::Daypart`], else 0.
    pub daypart: f32,
    /// The popularity score before the ETA penalty, min-max normalised across the candidates.
    pub popularity: f32,
    /// The [`Eta`] factor.
    pub eta: f32,
}

/// Every venue's [`Signals`] for this request's user (for users without features, affinity and
/// re-order are simply 0).
pub fn signals(request: &Request) -> Result<Vec<Signals>, RankError> {
    let candidates = request.candidates();
    let affinity_by_tag = request.user().features_by_tag("affinity.");
    let saturation = math::max(request.param(params::REORDER_SATURATION.name)?, 1e-3);
    let half_life = math::max(request.param(params::REORDER_HALF_LIFE_DAYS.name)?, 1e-3);
    let (orders, last_days) = (candidates.feature("user_orders"), candidates.feature("user_last_order_days"));
    let daypart_tag = request.daypart().and_then(|daypart| request.tags().id(daypart.tag()));
    let scorer = Popularity::read(request)?;
    let mut popularity = scorer.base_scores(request);
    score::min_max(&mut popularity);
    let eta = scorer.eta.factors(request);
    Ok((0..candidates.len())
        .map(|i| Signals {
            affinity: math::clamp(score::best_of_tags(&affinity_by_tag, candidates.tags(i)), 0.0, 1.0),
            reorder: score::reorder(orders.get(i), last_days.get(i), saturation, half_life),
            daypart: match daypart_tag {
                Some(tag) if candidates.has_tag(i, tag) => 1.0,
                _ => 0.0,
            },
            popularity: popularity[i],
            eta: eta[i],
        })
        .collect())
}

/// Whether each candidate is open (`is_open` missing counts as open: the caller did not say it is
/// closed).
pub fn open_flags(request: &Request) -> Vec<bool> {
    request.candidates().feature("is_open").flags(true)
}

/// The popularity ranking: open venues first, then by popularity score.
pub fn popularity_ranking(request: &Request) -> Result<relish_guest::Ranking, RankError> {
    let scores = Popularity::read(request)?.scores(request);
    let open = open_flags(request);
    Ok(relish_guest::Ranking::preferring(
        &scores,
        &open,
        request.limit(),
        |i| if open[i] { "popular" } else { "closed" },
    ))
}
