//! Version 2.0.0 of `tagger`: answers in input order and gives every item the reason code
//! `v2`, so a test can tell from the items alone which version computed an answer (and check
//! that it matches the version the response names).

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct Tagger;

impl Policy for Tagger {
    const SPEC: &'static Spec = &Spec {
        name: "tagger",
        version: "2.0.0",
        description: "Input order, every item tagged with the version.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let mut ranking = Ranking::with_capacity(request.limit());
        for i in 0..request.limit() {
            ranking.push_with_reason(i, 2.0, "v2");
        }
        Ok(ranking)
    }
}

relish_guest::export_policy!(Tagger);
