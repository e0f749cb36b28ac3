//! Declares 320 MiB of initial linear memory (a 320 MiB static table, and the link argument
//! in `build.rs` that makes room for it): beyond any host's per-instance cap, which the host can
//! judge from the component alone, before running anything.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct BigMemory;

/// Zeroed and writable, so it lands in `.bss`: nothing in the file, but part of the memory the
/// module declares.
static mut TABLE: [u8; 320 << 20] = [0; 320 << 20];

impl Policy for BigMemory {
    const SPEC: &'static Spec = &Spec {
        name: "big-memory",
        version: "0.1.0",
        description: "Declares 320 MiB of initial memory.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let index = request.seed() as usize % (320 << 20);
        // SAFETY: in bounds, and nothing writes the table (wasm policies are single-threaded).
        let value = unsafe { std::ptr::read_volatile((&raw const TABLE).cast::<u8>().add(index)) };
        let scores = vec![f32::from(value); request.candidates().len()];
        Ok(Ranking::from_scores(&scores, request.limit()))
    }
}

relish_guest::export_policy!(BigMemory);
