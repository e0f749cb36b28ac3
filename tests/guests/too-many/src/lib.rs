//! Answers with every candidate, ignoring the limit.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct TooMany;

impl Policy for TooMany {
    const SPEC: &'static Spec = &Spec {
        name: "too-many",
        version: "0.1.0",
        description: "Returns more items than the limit.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let mut ranking = Ranking::new();
        for i in 0..request.candidates().len() {
            ranking.push(i, 1.0);
        }
        Ok(ranking)
    }
}

relish_guest::export_policy!(TooMany);
