//! Reads the wall clock: built for wasm32-wasip2, it imports WASI, which the host must refuse.

use relish_guest::{Policy, RankError, Ranking, Request, Spec};

struct WasiImport;

impl Policy for WasiImport {
    const SPEC: &'static Spec = &Spec {
        name: "wasi-import",
        version: "0.1.0",
        description: "Reads the wall clock through WASI.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let scores = vec![now.as_secs_f32(); request.candidates().len()];
        Ok(Ranking::from_scores(&scores, request.limit()))
    }
}

relish_guest::export_policy!(WasiImport);
