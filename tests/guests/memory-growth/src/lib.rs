//! Allocates 1 MiB after 1 MiB and never frees, on every request: only the host's memory cap
//! stops it.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct MemoryGrowth;

impl Policy for MemoryGrowth {
    const SPEC: &'static Spec = &Spec {
        name: "memory-growth",
        version: "0.1.0",
        description: "Hoards memory until refused.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every chunk, so the pages are really used, and keep it opaque to the optimiser.
            hoard.push(std::hint::black_box(vec![request.seed() as u8 | 1; 1 << 20]));
            if hoard.len() == usize::MAX {
                break;
            }
        }
        Ok(Ranking::from_scores(&[], 0))
    }
}

relish_guest::export_policy!(MemoryGrowth);
