//! The parameter check: a version is called once on a small request with the parameters a plan
//! gives it, before the plan is accepted.
//!
//! The policy is the authority on its own parameters (their type and range live in its code, where
//! `request.param::<T>()` parses them and the policy checks their range), so the host asks it:
//! three candidates at a fixed time and seed, once with every declared feature set and once
//! anonymous with none. A policy must answer such requests (the contract says every field may be
//! absent), so a `rank-error::invalid-request` here is the policy refusing the parameters, and
//! the plan is refused with the policy's message. Any other failure (a trap, a timeout, an
//! invalid answer) is not about the parameters and is only logged: containment handles it at
//! serving time, and the hostile-guest suite relies on such versions being activatable.

use std::collections::BTreeMap;

use crate::runtime::{Budget, CallError, PolicyError, PolicyPre};
use crate::wire::{self, DecodeOptions};

/// The probe requests: three candidates at a fixed time, once for a signed-in user with every
/// feature the policy declares (so a policy that answers anonymous users without reading its
/// parameters still reads them), once anonymous with nothing but ids.
fn probes(policy: &PolicyPre) -> Vec<serde_json::Value> {
    let metadata = policy.metadata();
    let mut user = serde_json::Map::new();
    let mut candidate = serde_json::Map::new();
    for feature in &metadata.features {
        let name = match feature.name.strip_suffix('*') {
            Some(prefix) => format!("{prefix}probe"),
            None => feature.name.clone(),
        };
        let target = if feature.scope == "user" { &mut user } else { &mut candidate };
        target.insert(name, 1.0.into());
    }
    let candidates = |features: &serde_json::Map<String, serde_json::Value>| -> Vec<serde_json::Value> {
        (0..3).map(|i| serde_json::json!({"id": format!("probe-{i}"), "features": features})).collect()
    };
    let context = serde_json::json!({"time": "2026-01-05T12:00:00Z"});
    vec![
        serde_json::json!({"request_id": "relish-parameter-check", "seed": 1, "limit": 3, "context": context,
            "user": {"id": "relish-probe", "features": user}, "candidates": candidates(&candidate)}),
        serde_json::json!({"request_id": "relish-parameter-check", "seed": 1, "limit": 3, "context": context,
            "candidates": candidates(&serde_json::Map::new())}),
    ]
}

/// Calls `policy` on the probe requests for `surface` with `params`; `Err` carries the policy's
/// own words when it refuses them.
pub fn check_params(
    policy: &PolicyPre,
    surface: &str,
    params: &BTreeMap<String, String>,
    budget: &Budget,
) -> Result<(), String> {
    let options = DecodeOptions { surface: Some(surface), ..DecodeOptions::default() };
    for probe in probes(policy) {
        let body = serde_json::to_vec(&probe).expect("the probe serialises");
        let mut request = match wire::decode(&body, &options) {
            Ok(decoded) => decoded.request,
            // A declared feature name the wire refuses: that probe cannot be made.
            Err(error) => {
                tracing::warn!(policy = %policy.metadata().name, "no parameter check probe: {error}");
                continue;
            }
        };
        request.params = params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        match policy.rank(&request, budget) {
            Ok(_) => {}
            Err(CallError::Policy(PolicyError::InvalidRequest(message))) => return Err(message),
            Err(other) => {
                let metadata = policy.metadata();
                tracing::warn!(
                    policy = %metadata.name,
                    version = %metadata.version,
                    surface,
                    reason = other.reason(),
                    "the parameter check call failed for another reason than the parameters: {other}"
                );
            }
        }
    }
    Ok(())
}
