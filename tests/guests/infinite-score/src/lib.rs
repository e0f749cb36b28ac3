//! Answers with an infinite score.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct InfiniteScore;

impl Policy for InfiniteScore {
    const SPEC: &'static Spec = &Spec {
        name: "infinite-score",
        version: "0.1.0",
        description: "Returns an infinite score.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let mut ranking = Ranking::new();
        for i in 0..request.limit() {
            ranking.push(i, if i == 0 { f32::INFINITY } else { 1.0 });
        }
        Ok(ranking)
    }
}

relish_guest::export_policy!(InfiniteScore);
