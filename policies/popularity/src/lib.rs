//! `popularity`: the non-personalised baseline venue ranking.
//!
//! Open venues first, then by a popularity score: a smoothed conversion rate (`conversions_7d` /
//! `impressions_7d` shrunk toward the pooled rate of all candidates), the `rating` and recent
//! `orders_7d`, with an exponential penalty on `eta_min` beyond a free allowance. The host uses it
//! as the fallback for any surface without its own policy, and the personalised venue policies
//! answer with it for users they know nothing about.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};
use relish_venue_signals::{features, params, popularity_ranking};

/// The popularity policy.
pub struct Popularity;

impl Policy for Popularity {
    const SPEC: &'static Spec = &Spec {
        name: "popularity",
        version: env!("CARGO_PKG_VERSION"),
        description: "Non-personalised venue ranking: open first, then smoothed conversion, rating and orders, \
                      penalised by ETA.",
        surfaces: &["*"],
        params: &params::ALL,
        features: &features::ALL,
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        popularity_ranking(request)
    }
}

relish_guest::export_policy!(Popularity);

#[cfg(test)]
mod tests {
    use relish_guest::testing::RequestBuilder;

    use super::*;

    fn ids(request: &relish_guest::RawRequest, ranking: &Ranking) -> Vec<String> {
        let candidates = Request::new(request.clone(), Popularity::SPEC);
        ranking.order().iter().map(|&i| candidates.candidates().id(i as usize).to_owned()).collect()
    }

    #[test]
    fn open_venues_come_before_closed_ones() {
        let request = RequestBuilder::new("discovery")
            .candidate("closed-star", &[("is_open", 0.0), ("rating", 10.0), ("orders_7d", 900.0)], &[])
            .candidate("open-plain", &[("is_open", 1.0), ("rating", 6.0), ("orders_7d", 10.0)], &[])
            .build();
        let ranking = Popularity::rank(&Request::new(request.clone(), Popularity::SPEC)).unwrap();
        assert_eq!(ids(&request, &ranking), ["open-plain", "closed-star"]);
        assert_eq!(ranking.reason(1), Some("closed"));
    }

    #[test]
    fn a_long_eta_costs_rank() {
        let request = RequestBuilder::new("discovery")
            .candidate("far", &[("rating", 9.0), ("eta_min", 70.0)], &[])
            .candidate("near", &[("rating", 9.0), ("eta_min", 15.0)], &[])
            .build();
        let ranking = Popularity::rank(&Request::new(request.clone(), Popularity::SPEC)).unwrap();
        assert_eq!(ids(&request, &ranking), ["near", "far"]);
    }

    #[test]
    fn few_impressions_are_shrunk_toward_the_pooled_rate() {
        // 1 of 1 is a 100 % rate, but on one impression it should not beat 400 of 2000.
        let request = RequestBuilder::new("discovery")
            .candidate("lucky", &[("conversions_7d", 1.0), ("impressions_7d", 1.0)], &[])
            .candidate("proven", &[("conversions_7d", 400.0), ("impressions_7d", 2000.0)], &[])
            .candidate("weak", &[("conversions_7d", 10.0), ("impressions_7d", 2000.0)], &[])
            .build();
        let ranking = Popularity::rank(&Request::new(request.clone(), Popularity::SPEC)).unwrap();
        assert_eq!(ids(&request, &ranking)[0], "proven");
    }

    #[test]
    fn a_bad_parameter_is_an_invalid_request() {
        let error = RequestBuilder::new("discovery")
            .candidate("a", &[], &[])
            .param("w_rating", "lots")
            .rank::<Popularity>()
            .unwrap_err();
        assert!(matches!(error, RankError::InvalidRequest(m) if m.contains("w_rating")));
    }
}
