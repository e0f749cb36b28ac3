//! Encoding the JSON response.

use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

use crate::runtime::{Digest, Ranking, types};

/// Which policy version answered, or was asked to answer, a request.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRef<'a> {
    /// Policy name.
    pub name: &'a str,
    /// Policy version.
    pub version: &'a str,
    /// The digest of the component's bytes.
    pub digest: Digest,
}

/// Why the answer is not the active policy's, and who answered instead.
#[derive(Debug, Clone, Serialize)]
pub struct Fallback<'a> {
    /// The reason code: `timeout`, `trap`, `memory`, `invalid-output`, `error`, `log-limit`,
    /// `capacity`, `overloaded`, `no-policy`.
    pub reason: &'a str,
    /// What answered: the fallback policy's name, or `input-order`.
    pub answered_by: &'a str,
    /// The failure in words, for logs and debugging.
    pub detail: &'a str,
    /// Set when the fallback policy failed too and the input order answered: its reason code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<&'a str>,
    /// The fallback policy's failure in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_detail: Option<&'a str>,
}

/// Which arm of the surface's plan was asked to answer.
#[derive(Debug, Clone, Serialize)]
pub struct ArmRef<'a> {
    /// The arm's position in the plan.
    pub index: usize,
    /// The arm's name (`policy@version` unless the plan names it).
    pub name: &'a str,
    /// The plan revision.
    pub revision: u64,
    /// The request's bucket, `0..10000`.
    pub bucket: u16,
    /// Whether the assignment is sticky (came from `user.id` or `bucket_key`), not from the seed.
    pub sticky: bool,
}

/// A ranking response.
#[derive(Debug, Clone, Serialize)]
pub struct Response<'a> {
    /// The request id (the caller's, or the one the host generated).
    pub request_id: &'a str,
    /// The chosen candidates, best first.
    pub items: Items<'a>,
    /// The policy version of the arm that was asked to answer.
    pub policy: Option<PolicyRef<'a>>,
    /// The arm of the surface's plan that was asked to answer.
    pub arm: Option<ArmRef<'a>>,
    /// Set when a fallback answered instead of the active policy.
    pub fallback: Option<Fallback<'a>>,
    /// What the feature lookup did, on surfaces that use a feature store (absent elsewhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<&'a crate::serving::enrich::FeatureReport>,
    /// Microseconds from receiving the request to encoding the answer.
    pub took_us: u64,
}

/// The items of a response, serialised straight from the ranking and the request's id column.
#[derive(Debug, Clone, Copy)]
pub struct Items<'a> {
    /// The answer.
    pub ranking: &'a Ranking,
    /// The request it answers (for candidate ids).
    pub request: &'a types::Request,
}

#[derive(Serialize)]
struct Item<'a> {
    id: &'a str,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ids = &self.request.candidates.ids;
        let mut seq = serializer.serialize_seq(Some(self.ranking.len()))?;
        for (position, (&index, &score)) in self.ranking.order().iter().zip(self.ranking.scores()).enumerate() {
            let (start, end) = (ids.offsets[index as usize] as usize, ids.offsets[index as usize + 1] as usize);
            seq.serialize_element(&Item { id: &ids.data[start..end], score, reason: self.ranking.reason(position) })?;
        }
        seq.end()
    }
}

impl Response<'_> {
    /// The response as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.items.ranking.len() * 48);
        serde_json::to_writer(&mut out, self).expect("a response always serialises");
        out
    }
}
