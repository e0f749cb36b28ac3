//! Encoding the JSON response.

use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

/// Which policy version answered, or was asked to answer, a request.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRef<'a> {
    /// Policy name.
    pub name: &'a str,
    /// Policy version.
    pub version: &'a str,
    /// The SHA-256 digest of the component's bytes, written `sha256:<hex>`.
    #[serde(serialize_with = "sha256")]
    pub digest: &'a [u8; 32],
}

fn sha256<S: Serializer>(digest: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
    let mut text = [0u8; 7 + 64];
    text[..7].copy_from_slice(b"sha256:");
    hex::encode_to_slice(digest, &mut text[7..]).expect("64 hex digits fit");
    serializer.serialize_str(std::str::from_utf8(&text).expect("hex is ASCII"))
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

/// A ranking response; `F` is the host's report of its feature lookup.
#[derive(Debug, Clone, Serialize)]
pub struct Response<'a, F: Serialize = ()> {
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
    pub features: Option<&'a F>,
    /// Microseconds from receiving the request to encoding the answer.
    pub took_us: u64,
}

/// The items of a response, serialised straight from the policy's answer and the request's id
/// column (the answer has been validated against the request: every index is in range).
#[derive(Debug, Clone, Copy)]
pub struct Items<'a> {
    /// Candidate indices, best first.
    pub order: &'a [u32],
    /// One score per entry of `order`.
    pub scores: &'a [f32],
    /// Empty, or one index into `reason_codes` per entry of `order`.
    pub reasons: &'a [u32],
    /// The reason codes `reasons` refers to; an empty code is no reason.
    pub reason_codes: &'a [String],
    /// The request's packed candidate ids (`StringColumn::data`).
    pub id_data: &'a str,
    /// Their `n + 1` offsets (`StringColumn::offsets`).
    pub id_offsets: &'a [u32],
}

impl Items<'_> {
    /// The reason code of the item at `position`, if it has one.
    fn reason(&self, position: usize) -> Option<&str> {
        let code = *self.reasons.get(position)?;
        self.reason_codes.get(code as usize).map(String::as_str).filter(|r| !r.is_empty())
    }
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
        let mut seq = serializer.serialize_seq(Some(self.order.len()))?;
        for (position, (&index, &score)) in self.order.iter().zip(self.scores).enumerate() {
            let (start, end) = (self.id_offsets[index as usize] as usize, self.id_offsets[index as usize + 1] as usize);
            seq.serialize_element(&Item { id: &self.id_data[start..end], score, reason: self.reason(position) })?;
        }
        seq.end()
    }
}

impl<F: Serialize> Response<'_, F> {
    /// The response as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.items.order.len() * 48);
        serde_json::to_writer(&mut out, self).expect("a response always serialises");
        out
    }
}
