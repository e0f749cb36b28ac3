//! Answers that do not come from the active policy.
//!
//! When a policy times out, traps, runs out of memory or answers something invalid, the caller
//! still gets an ordering: the surface's fallback policy if it has one, else the candidates in the
//! order the caller sent them. The response says which, and why.

use crate::runtime::{Ranking, types};

/// The last step of every fallback chain: the first `limit` candidates, in input order.
pub fn input_order(request: &types::Request) -> Ranking {
    let candidates = request.candidates.ids.offsets.len().saturating_sub(1);
    let limit = (request.limit as usize).min(candidates);
    Ranking::from_order((0..limit as u32).collect())
}

/// The name the response gives the input-order step.
pub const INPUT_ORDER: &str = "input-order";
