//! Logs a long line without end on every request: the host's log budget stops it.

use relish_guest::{Policy, RankError, Ranking, Request, Spec, log};

struct LogSpam;

impl Policy for LogSpam {
    const SPEC: &'static Spec = &Spec {
        name: "log-spam",
        version: "0.1.0",
        description: "Floods the log.",
        surfaces: &["*"],
        params: &[],
        features: &[],
    };

    fn rank(request: &Request) -> Result<Ranking, RankError> {
        let line = "spam ".repeat(2_000);
        for i in 0..u64::MAX {
            log::info(&format!("{i}: {line}"));
        }
        let scores = vec![1.0; request.candidates().len()];
        Ok(Ranking::from_scores(&scores, request.limit()))
    }
}

relish_guest::export_policy!(LogSpam);
