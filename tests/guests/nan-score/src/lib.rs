//! Answers with a NaN score.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct NanScore;

impl Policy for NanScore {
    const SPEC: &'static Spec = &Spec {
        name: "nan-score",
        version: "0.1.0",
        description: "Returns a NaN score.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let mut ranking = Ranking::new();
        for i in 0..request.limit() {
            ranking.push(i, if i == 0 { f32::NAN } else { 1.0 });
        }
        Ok(ranking)
    }
}

relish_guest::export_policy!(NanScore);
