//! Answers with a non-finite score: NaN by default, or the value of the `score` parameter
//! (`inf`, `-inf`), so one guest covers every kind.

use relish_guest::{Param, Policy, RankError, Ranking, Request, Spec};

struct NanScore;

impl Policy for NanScore {
    const SPEC: &'static Spec = &Spec {
        name: "nan-score",
        version: "0.1.0",
        description: "Returns a non-finite score first.",
        surfaces: &["*"],
        params: &[Param { name: "score", default: "NaN", description: "The first item's score." }],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let first: f32 = request.param("score")?;
        let mut ranking = Ranking::new();
        for i in 0..request.limit() {
            ranking.push(i, if i == 0 { first } else { 1.0 });
        }
        Ok(ranking)
    }
}

relish_guest::export_policy!(NanScore);
