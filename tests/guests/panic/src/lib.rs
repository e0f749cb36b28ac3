//! Panics on every request: in wasm a panic is a trap.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct Panic;

impl Policy for Panic {
    const SPEC: &'static Spec = &Spec {
        name: "panic",
        version: "0.1.0",
        description: "Panics on every request.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        panic!("policy bug: cannot rank {} candidates", request.candidates().len());
    }
}

relish_guest::export_policy!(Panic);
