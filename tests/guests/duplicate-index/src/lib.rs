//! Answers with the first candidate twice.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct Duplicate;

impl Policy for Duplicate {
    const SPEC: &'static Spec = &Spec {
        name: "duplicate-index",
        version: "0.1.0",
        description: "Returns candidate 0 twice.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(_request: &Request) -> Result<Ranking, RankError> {
        let mut ranking = Ranking::new();
        ranking.push(0, 2.0);
        ranking.push(0, 1.0);
        Ok(ranking)
    }
}

relish_guest::export_policy!(Duplicate);
