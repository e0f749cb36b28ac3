//! Answers the first `limit` candidates in input order, or the last `limit` reversed with
//! `reverse = true`: two answers whose agreement is known (identical, or each other's reverse).

use relish_guest::{Param, Policy, RankError, Ranking, Request, Spec};

struct Ordered;

impl Policy for Ordered {
    const SPEC: &'static Spec = &Spec {
        name: "ordered",
        version: "0.1.0",
        description: "Candidates in input order, or reversed.",
        surfaces: &["*"],
        params: &[Param { name: "reverse", default: "false", description: "Reverse the input order." }],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let reverse: bool = request.param("reverse")?;
        let n = request.candidates().len();
        let scores: Vec<f32> = (0..n).map(|i| if reverse { i as f32 } else { -(i as f32) }).collect();
        Ok(Ranking::from_scores(&scores, request.limit()))
    }
}

relish_guest::export_policy!(Ordered);
