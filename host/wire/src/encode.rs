//! Encoding the response: JSON, or protobuf (`relish.v1.RankResponse`).

use prost::Message as _;
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};

use crate::protobuf;

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
    serializer.serialize_str(std::str::from_utf8(&sha256_text(digest)).expect("hex is ASCII"))
}

/// `sha256:<hex>`.
fn sha256_text(digest: &[u8; 32]) -> [u8; 7 + 64] {
    let mut text = [0u8; 7 + 64];
    text[..7].copy_from_slice(b"sha256:");
    hex::encode_to_slice(digest, &mut text[7..]).expect("64 hex digits fit");
    text
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
    /// The items as `(id, score, reason)`, best first.
    fn iter(&self) -> impl Iterator<Item = (&str, f32, Option<&str>)> {
        self.order.iter().zip(self.scores).enumerate().map(|(position, (&index, &score))| {
            let (start, end) = (self.id_offsets[index as usize] as usize, self.id_offsets[index as usize + 1] as usize);
            (&self.id_data[start..end], score, self.reason(position))
        })
    }

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
        for (id, score, reason) in self.iter() {
            seq.serialize_element(&Item { id, score, reason })?;
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

impl<F: Serialize> Response<'_, F> {
    /// The response as a `relish.v1.RankResponse`, the same content as [`Response::to_json`];
    /// `features` is the host's report of its feature lookup in protobuf form (the JSON form
    /// serialises `F`).
    pub fn to_protobuf(&self, features: Option<protobuf::FeatureLookup>) -> protobuf::RankResponse {
        protobuf::RankResponse {
            request_id: self.request_id.to_owned(),
            items: self
                .items
                .iter()
                .map(|(id, score, reason)| protobuf::Item {
                    id: id.to_owned(),
                    score,
                    reason: reason.map(str::to_owned),
                })
                .collect(),
            policy: self.policy.as_ref().map(|p| protobuf::PolicyRef {
                name: p.name.to_owned(),
                version: p.version.to_owned(),
                digest: String::from_utf8(sha256_text(p.digest).to_vec()).expect("hex is ASCII"),
            }),
            arm: self.arm.as_ref().map(|a| protobuf::ArmRef {
                index: u32::try_from(a.index).unwrap_or(u32::MAX),
                name: a.name.to_owned(),
                revision: a.revision,
                bucket: u32::from(a.bucket),
                sticky: a.sticky,
            }),
            fallback: self.fallback.as_ref().map(|f| protobuf::Fallback {
                reason: f.reason.to_owned(),
                answered_by: f.answered_by.to_owned(),
                detail: f.detail.to_owned(),
                fallback_reason: f.fallback_reason.map(str::to_owned),
                fallback_detail: f.fallback_detail.map(str::to_owned),
            }),
            features,
            took_us: self.took_us,
        }
    }

    /// [`Response::to_protobuf`], encoded.
    pub fn to_protobuf_bytes(&self, features: Option<protobuf::FeatureLookup>) -> Vec<u8> {
        self.to_protobuf(features).encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protobuf_response_has_the_content_of_the_json_one() {
        let digest = [0xab; 32];
        let reason_codes = ["".to_owned(), "affinity".to_owned()];
        let response: Response<'_, ()> = Response {
            request_id: "r-1",
            items: Items {
                order: &[2, 0],
                scores: &[1.5, 0.25],
                reasons: &[1, 0],
                reason_codes: &reason_codes,
                id_data: "v-1v-22v-333",
                id_offsets: &[0, 3, 7, 12],
            },
            policy: Some(PolicyRef { name: "discovery", version: "0.2.0", digest: &digest }),
            arm: Some(ArmRef { index: 1, name: "canary", revision: 7, bucket: 4711, sticky: true }),
            fallback: Some(Fallback {
                reason: "timeout",
                answered_by: "popularity",
                detail: "past 5ms",
                fallback_reason: None,
                fallback_detail: None,
            }),
            features: None,
            took_us: 85,
        };
        let json: serde_json::Value = serde_json::from_slice(&response.to_json()).unwrap();
        let message = protobuf::RankResponse::decode(&*response.to_protobuf_bytes(None)).unwrap();
        let items: Vec<serde_json::Value> = message
            .items
            .iter()
            .map(|i| match &i.reason {
                Some(reason) => serde_json::json!({"id": i.id, "score": i.score, "reason": reason}),
                None => serde_json::json!({"id": i.id, "score": i.score}),
            })
            .collect();
        assert_eq!(serde_json::Value::Array(items), json["items"]);
        let policy = message.policy.unwrap();
        assert_eq!(
            serde_json::json!({"name": policy.name, "version": policy.version, "digest": policy.digest}),
            json["policy"]
        );
        let arm = message.arm.unwrap();
        assert_eq!(
            serde_json::json!({"index": arm.index, "name": arm.name, "revision": arm.revision, "bucket": arm.bucket, "sticky": arm.sticky}),
            json["arm"]
        );
        let fallback = message.fallback.unwrap();
        assert_eq!(
            serde_json::json!({"reason": fallback.reason, "answered_by": fallback.answered_by, "detail": fallback.detail}),
            json["fallback"]
        );
        assert_eq!((message.request_id.as_str(), message.took_us, message.features), ("r-1", 85, None));
        assert_eq!(json["items"][0]["id"], "v-333");
    }
}
