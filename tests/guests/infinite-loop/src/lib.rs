//! Loops forever on every request: only the host's deadline stops it.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct InfiniteLoop;

impl Policy for InfiniteLoop {
    const SPEC: &'static Spec = &Spec {
        name: "infinite-loop",
        version: "0.1.0",
        description: "Never returns.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let mut counter = request.seed();
        loop {
            // Opaque to the optimiser, so the loop is really executed.
            counter = std::hint::black_box(counter.wrapping_mul(6364136223846793005).wrapping_add(1));
            if counter == u64::MAX {
                break;
            }
        }
        Ok(Ranking::from_scores(&[], 0))
    }
}

relish_guest::export_policy!(InfiniteLoop);
