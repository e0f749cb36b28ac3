//! Orders candidates by draws from the request-seeded RNG: the determinism test policy.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct SeededRandom;

impl Policy for SeededRandom {
    const SPEC: &'static Spec = &Spec {
        name: "seeded-random",
        version: "0.1.0",
        description: "Scores are draws from the request's seeded RNG.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let mut rng = request.rng();
        let scores: Vec<f32> = (0..request.candidates().len()).map(|_| rng.beta(2.0, 5.0) as f32).collect();
        Ok(Ranking::from_scores(&scores, request.limit()))
    }
}

relish_guest::export_policy!(SeededRandom);
