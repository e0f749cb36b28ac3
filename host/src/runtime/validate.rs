//! The checks on a policy's answer: a [`Ranking`] is an answer that passed them, an
//! [`InvalidOutput`] says which one it failed.

use super::{Budget, CallError, types};

/// A validated answer: indices in range and distinct, finite scores, at most `limit` items,
/// propensities (if any) one per item in `(0, 1]`.
#[derive(Debug, Clone)]
pub struct Ranking {
    raw: types::Ranking,
}

impl Ranking {
    /// Checks a policy's raw answer against the request it answers.
    pub fn validate(raw: types::Ranking, request: &types::Request, budget: &Budget) -> Result<Self, CallError> {
        let candidates = request.candidates.ids.offsets.len().saturating_sub(1);
        let limit = (request.limit as usize).min(candidates);
        let items = raw.order.len();
        if items > limit {
            return Err(InvalidOutput::TooMany { items, limit }.into());
        }
        if raw.scores.len() != items {
            return Err(InvalidOutput::Length { field: "scores", len: raw.scores.len(), items }.into());
        }
        if !raw.reasons.is_empty() && raw.reasons.len() != items {
            return Err(InvalidOutput::Length { field: "reasons", len: raw.reasons.len(), items }.into());
        }
        if !raw.propensities.is_empty() && raw.propensities.len() != items {
            return Err(InvalidOutput::Length { field: "propensities", len: raw.propensities.len(), items }.into());
        }
        if let Some((position, p)) = raw.propensities.iter().enumerate().find(|(_, p)| !(**p > 0.0 && **p <= 1.0)) {
            return Err(InvalidOutput::Propensity { position, propensity: p.to_string() }.into());
        }
        // Positions of each candidate seen so far; u32::MAX = not seen. One pass, no hashing.
        let mut seen = vec![u32::MAX; candidates];
        for (position, (&index, &score)) in raw.order.iter().zip(&raw.scores).enumerate() {
            let Some(slot) = seen.get_mut(index as usize) else {
                return Err(InvalidOutput::IndexOutOfRange { position, index, candidates }.into());
            };
            if *slot != u32::MAX {
                return Err(InvalidOutput::Duplicate { index, first: *slot as usize, second: position }.into());
            }
            *slot = position as u32;
            if !score.is_finite() {
                return Err(InvalidOutput::NonFiniteScore { position, score: score.to_string() }.into());
            }
        }
        if raw.reason_codes.len() > budget.reason_codes {
            let message = format!("{} codes, at most {} allowed", raw.reason_codes.len(), budget.reason_codes);
            return Err(InvalidOutput::Reasons(message).into());
        }
        if let Some(code) = raw.reason_codes.iter().find(|c| c.len() > budget.reason_code_bytes) {
            let message = format!("`{code}` is longer than {} bytes", budget.reason_code_bytes);
            return Err(InvalidOutput::Reasons(message).into());
        }
        if let Some(&bad) = raw.reasons.iter().find(|&&r| r as usize >= raw.reason_codes.len()) {
            let message = format!("reason {bad} is not one of the {} codes", raw.reason_codes.len());
            return Err(InvalidOutput::Reasons(message).into());
        }
        Ok(Ranking { raw })
    }

    /// An answer made by the host itself (the input-order fallback): already valid.
    pub fn from_order(order: Vec<u32>) -> Self {
        let scores = vec![0.0; order.len()];
        Ranking {
            raw: types::Ranking {
                order,
                scores,
                reasons: Vec::new(),
                reason_codes: Vec::new(),
                propensities: Vec::new(),
            },
        }
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.raw.order.len()
    }

    /// Whether the answer is empty.
    pub fn is_empty(&self) -> bool {
        self.raw.order.is_empty()
    }

    /// Candidate indices, best first.
    pub fn order(&self) -> &[u32] {
        &self.raw.order
    }

    /// One score per item.
    pub fn scores(&self) -> &[f32] {
        &self.raw.scores
    }

    /// The probability that the policy put item `position` where it is (1 for an answer that did
    /// not depend on the seed).
    pub fn propensity(&self, position: usize) -> f32 {
        self.raw.propensities.get(position).copied().unwrap_or(1.0)
    }

    /// Whether the policy reported propensities (it randomised).
    pub fn has_propensities(&self) -> bool {
        !self.raw.propensities.is_empty()
    }

    /// The answer as the response's items, with the ids of the request it answers.
    pub fn items<'a>(&'a self, ids: &'a types::StringColumn) -> relish_wire::Items<'a> {
        relish_wire::Items {
            order: &self.raw.order,
            scores: &self.raw.scores,
            reasons: &self.raw.reasons,
            reason_codes: &self.raw.reason_codes,
            id_data: &ids.data,
            id_offsets: &ids.offsets,
        }
    }

    /// Item `position`'s reason code, if any (the empty code counts as none).
    pub fn reason(&self, position: usize) -> Option<&str> {
        let code = *self.raw.reasons.get(position)?;
        Some(self.raw.reason_codes[code as usize].as_str()).filter(|r| !r.is_empty())
    }
}

/// How a policy's answer broke the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidOutput {
    /// An index `>= n`.
    #[error("item {position} is candidate {index}, but there are only {candidates} candidates")]
    IndexOutOfRange {
        /// Position in the answer.
        position: usize,
        /// The index given.
        index: u32,
        /// The number of candidates.
        candidates: usize,
    },
    /// The same index twice.
    #[error("candidate {index} appears twice (items {first} and {second})")]
    Duplicate {
        /// The repeated index.
        index: u32,
        /// Its first position.
        first: usize,
        /// Its second position.
        second: usize,
    },
    /// More items than the limit.
    #[error("{items} items, but the limit is {limit}")]
    TooMany {
        /// Items returned.
        items: usize,
        /// The request's limit.
        limit: usize,
    },
    /// NaN or infinite score.
    #[error("item {position} has the non-finite score {score}")]
    NonFiniteScore {
        /// Position in the answer.
        position: usize,
        /// The score, printed.
        score: String,
    },
    /// A propensity outside `(0, 1]`.
    #[error("item {position} has the propensity {propensity}, which is not in (0, 1]")]
    Propensity {
        /// Position in the answer.
        position: usize,
        /// The value, printed.
        propensity: String,
    },
    /// `scores`, `reasons` or `propensities` of the wrong length.
    #[error("{field} has {len} entries for {items} items")]
    Length {
        /// `scores`, `reasons` or `propensities`.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The number of items.
        items: usize,
    },
    /// Reason code problems.
    #[error("reason codes: {0}")]
    Reasons(String),
}
