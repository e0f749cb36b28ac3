//! Recurses without end on every request: the stack overflows and the instance traps.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct DeepRecursion;

/// Opaque to the optimiser (no tail call, no folding into a loop): every level is a real frame,
/// with a buffer on the shadow stack too.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 16]);
    if std::hint::black_box(depth) == u64::MAX {
        return frame[0];
    }
    descend(depth + 1).wrapping_add(frame[15])
}

impl Policy for DeepRecursion {
    const SPEC: &'static Spec = &Spec {
        name: "deep-recursion",
        version: "0.1.0",
        description: "Recurses until the stack overflows.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let depth = descend(request.seed() % 2);
        let scores = vec![depth as f32; request.candidates().len()];
        Ok(Ranking::from_scores(&scores, request.limit()))
    }
}

relish_guest::export_policy!(DeepRecursion);
