//! Declines every request with `rank-error::internal`, as a policy whose model failed to load
//! would.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct Declines;

impl Policy for Declines {
    const SPEC: &'static Spec = &Spec {
        name: "declines",
        version: "0.1.0",
        description: "Declines every request.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        Err(RankError::Internal(format!("model not loaded; cannot rank {} candidates", request.candidates().len())))
    }
}

relish_guest::export_policy!(Declines);
