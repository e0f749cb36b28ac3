//! Allocates 1 MiB after 1 MiB and never frees, on every request: only the host's memory cap
//! stops it. With the `stop_after_mb` parameter it stops by itself after that many MiB, so a test
//! can tell which cap applies.

use relish_guest::{Param, Policy, RankError, Ranking, Request, Spec};

struct MemoryGrowth;

impl Policy for MemoryGrowth {
    const SPEC: &'static Spec = &Spec {
        name: "memory-growth",
        version: "0.1.0",
        description: "Hoards memory until refused.",
        surfaces: &["*"],
        params: &[Param {
            name: "stop_after_mb",
            default: "0",
            description: "Stop after this many MiB and answer (0: never stop).",
        }],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let stop_after: usize = request.param("stop_after_mb")?;
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        while stop_after == 0 || hoard.len() < stop_after {
            // Touch every chunk, so the pages are really used, and keep it opaque to the optimiser.
            hoard.push(std::hint::black_box(vec![request.seed() as u8 | 1; 1 << 20]));
        }
        Ok(Ranking::from_scores(&[], 0))
    }
}

relish_guest::export_policy!(MemoryGrowth);
