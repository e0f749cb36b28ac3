//! Asks for one 1 GiB buffer on every request, far past any per-call memory cap.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct HugeAlloc;

impl Policy for HugeAlloc {
    const SPEC: &'static Spec = &Spec {
        name: "huge-alloc",
        version: "0.1.0",
        description: "Allocates 1 GiB at once.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let buffer = std::hint::black_box(vec![1u8; 1 << 30]);
        let scores = vec![f32::from(buffer[request.seed() as usize % buffer.len()]); request.candidates().len()];
        Ok(Ranking::from_scores(&scores, request.limit()))
    }
}

relish_guest::export_policy!(HugeAlloc);
