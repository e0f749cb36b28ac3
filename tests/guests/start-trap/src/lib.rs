//! Traps while being instantiated: wit-component runs a module's `_initialize` export when the
//! component is instantiated, and this one hits `unreachable`. No call ever reaches `rank`.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct StartTrap;

impl Policy for StartTrap {
    const SPEC: &'static Spec = &Spec {
        name: "start-trap",
        version: "0.1.0",
        description: "Traps in its initialiser.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let scores = vec![1.0; request.candidates().len()];
        Ok(Ranking::from_scores(&scores, request.limit()))
    }
}

/// The module initialiser.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    core::arch::wasm32::unreachable();
}

relish_guest::export_policy!(StartTrap);
