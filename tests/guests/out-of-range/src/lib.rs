//! Answers with an index one past the last candidate.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct OutOfRange;

impl Policy for OutOfRange {
    const SPEC: &'static Spec = &Spec {
        name: "out-of-range",
        version: "0.1.0",
        description: "Returns an index past the end.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let mut ranking = Ranking::new();
        ranking.push(request.candidates().len(), 1.0);
        Ok(ranking)
    }
}

relish_guest::export_policy!(OutOfRange);
