//! The manifest: every stored version and every surface's activation history, in one JSON file
//! that is replaced atomically on each change. It is the registry's single source of truth: a
//! component file it does not name is garbage, and a version is stored exactly when it names it.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::runtime::{Digest, Metadata, is_identifier};

/// The manifest format this host reads and writes. A manifest of another format is refused
/// rather than misread.
const FORMAT: u32 = 1;

/// One stored, immutable policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Policy name (equal to the component's metadata name).
    pub policy: String,
    /// Version (equal to the component's metadata version).
    pub version: String,
    /// The digest of the component's bytes.
    pub digest: Digest,
    /// The component's size in bytes.
    pub size: usize,
    /// When it was uploaded.
    pub uploaded_at: DateTime<Utc>,
    /// Who uploaded it: the name of the admin token used.
    pub uploaded_by: String,
    /// What the component says about itself.
    pub metadata: Metadata,
    /// Set when an automatic rollback moved a surface away from this version: it is then never
    /// activated automatically again (an operator may still activate it by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<AutoRollback>,
}

/// The record of an automatic rollback away from a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRollback {
    /// The surface it was rolled back on.
    pub surface: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, as the rollback's caller put it.
    pub reason: String,
}

/// One activation of a policy version on a surface: an entry of the surface's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// Policy name.
    pub policy: String,
    /// Version.
    pub version: String,
    /// The version's digest at activation, so that the entry keeps naming the same bytes.
    pub digest: Digest,
    /// The parameters requests on the surface get.
    pub params: BTreeMap<String, String>,
    /// Who activated it (an admin token's name, or `relish` for the registry's own repairs).
    pub actor: String,
    /// When.
    pub activated_at: DateTime<Utc>,
    /// For an activation made by a rollback: the index in the history of the activation it
    /// restored. Rolling back again goes to what came before *that* one, so successive rollbacks
    /// walk back through the history instead of swinging between two versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restores: Option<usize>,
    /// How it ended; `None` while it is the surface's current activation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ending>,
}

/// How an activation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "kebab-case")]
pub enum Ending {
    /// Another version was activated.
    Superseded {
        /// When.
        at: DateTime<Utc>,
    },
    /// The surface was rolled back.
    RolledBack {
        /// When.
        at: DateTime<Utc>,
        /// Who rolled back (a token's name, or the automatic rollback's name for itself).
        actor: String,
        /// Why.
        reason: String,
        /// Whether it was an automatic rollback.
        automatic: bool,
    },
    /// The registry found the version's component missing or corrupt when opening the data
    /// directory, and returned the surface to its previous valid activation.
    Repaired {
        /// When.
        at: DateTime<Utc>,
        /// What was wrong.
        reason: String,
    },
}

/// A surface: the place in the app a ranking serves, with its activation history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Surface {
    /// The surface's name.
    pub name: String,
    /// Every activation, oldest first. The last one is current unless it has ended.
    pub history: Vec<Activation>,
}

impl Surface {
    /// The activation serving the surface now, if any.
    pub fn current(&self) -> Option<&Activation> {
        self.history.last().filter(|a| a.ended.is_none())
    }

    /// The index of the activation a rollback from the current one returns to: the activation
    /// that was current before it, skipping those `eligible` refuses (deleted versions, or
    /// versions that must not be activated automatically).
    ///
    /// "Before it" follows rollbacks: for an activation made by a rollback, it is what came before
    /// the activation it restored. So with history `A B C`, rolling back twice goes to `B`, then
    /// `A`, and a third time fails: `C` and `B` were rolled back and are not returned to.
    pub(super) fn rollback_target(&self, eligible: impl Fn(&Activation) -> bool) -> Option<usize> {
        let current = self.history.len().checked_sub(1).filter(|_| self.current().is_some())?;
        let mut target = self.before(current)?;
        while !eligible(&self.history[target]) {
            target = self.before(target)?;
        }
        Some(target)
    }

    /// The activation that was current before `index` was activated, walking through restores.
    fn before(&self, mut index: usize) -> Option<usize> {
        // `restores` always points back (checked when the manifest is read), so this ends.
        while let Some(restored) = self.history[index].restores {
            index = restored;
        }
        index.checked_sub(1)
    }
}

/// Everything the manifest holds, as the registry works with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct State {
    /// Versions by (policy, version).
    pub(super) versions: BTreeMap<(String, String), VersionInfo>,
    /// Surfaces by name.
    pub(super) surfaces: BTreeMap<String, Surface>,
}

/// The manifest file's shape.
#[derive(Serialize, Deserialize)]
struct ManifestFile {
    format: u32,
    versions: Vec<VersionInfo>,
    surfaces: Vec<Surface>,
}

impl State {
    /// Reads a manifest. Refuses one that is not JSON of the expected shape (the caller refuses to
    /// start rather than lose the registry); entries that are well-formed but inconsistent are
    /// dropped or repaired, each with a line in the returned list of problems.
    pub(super) fn from_json(bytes: &[u8], now: DateTime<Utc>) -> Result<(State, Vec<String>), String> {
        let file: ManifestFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.format != FORMAT {
            return Err(format!("format {} is not the format {FORMAT} this host reads", file.format));
        }
        let mut problems = Vec::new();
        let mut state = State::default();
        for info in file.versions {
            let name = format!("{}@{}", info.policy, info.version);
            if !is_identifier(&info.policy) || !is_identifier(&info.version) {
                problems.push(format!("dropped {name}: not a valid name or version"));
                continue;
            }
            match state.versions.entry((info.policy.clone(), info.version.clone())) {
                Entry::Vacant(entry) => {
                    entry.insert(info);
                }
                Entry::Occupied(_) => problems.push(format!("dropped a second entry for {name}")),
            }
        }
        for mut surface in file.surfaces {
            if !is_identifier(&surface.name) || state.surfaces.contains_key(&surface.name) {
                problems.push(format!("dropped surface {:?}: an invalid or repeated name", surface.name));
                continue;
            }
            for (index, activation) in surface.history.iter_mut().enumerate() {
                if activation.restores.is_some_and(|r| r >= index) {
                    problems.push(format!("surface {}: activation {index} restores a later one", surface.name));
                    activation.restores = None;
                }
            }
            state.surfaces.insert(surface.name.clone(), surface);
        }
        problems.extend(state.repair(&BTreeMap::new(), now));
        Ok((state, problems))
    }

    /// The manifest file's bytes.
    pub(super) fn to_json(&self) -> Vec<u8> {
        let file = ManifestFile {
            format: FORMAT,
            versions: self.versions.values().cloned().collect(),
            surfaces: self.surfaces.values().cloned().collect(),
        };
        let mut json = serde_json::to_vec_pretty(&file).expect("the manifest serialises");
        json.push(b'\n');
        json
    }

    /// Drops the versions in `broken` (with why), and returns every surface whose current
    /// activation names a version that is gone (or has other bytes) to its previous activation of
    /// a present version, or leaves it without one. Returns what it did, one line each.
    pub(super) fn repair(&mut self, broken: &BTreeMap<(String, String), String>, now: DateTime<Utc>) -> Vec<String> {
        let mut done = Vec::new();
        for (key, why) in broken {
            if self.versions.remove(key).is_some() {
                done.push(format!("dropped {}@{}: {why}", key.0, key.1));
            }
        }
        for surface in self.surfaces.values_mut() {
            let Some(current) = surface.current() else { continue };
            if self.versions.get(&key(current)).is_some_and(|v| v.digest == current.digest) {
                continue;
            }
            let reason = match broken.get(&key(current)) {
                Some(why) => format!("{}@{} was dropped: {why}", current.policy, current.version),
                None => format!("{}@{} is not stored", current.policy, current.version),
            };
            let target = surface.rollback_target(|a| self.versions.get(&key(a)).is_some_and(|v| v.digest == a.digest));
            let last = surface.history.len() - 1;
            surface.history[last].ended = Some(Ending::Repaired { at: now, reason: reason.clone() });
            match target {
                Some(target) => {
                    let restored = Activation {
                        actor: "relish".to_owned(),
                        activated_at: now,
                        restores: Some(target),
                        ended: None,
                        ..surface.history[target].clone()
                    };
                    done.push(format!(
                        "surface {}: {reason}; returned to {}@{}",
                        surface.name, restored.policy, restored.version
                    ));
                    surface.history.push(restored);
                }
                None => done.push(format!("surface {}: {reason}; no earlier version to return to", surface.name)),
            }
        }
        done
    }

    /// The surfaces whose current activation is `policy@version`.
    pub(super) fn active_on(&self, policy: &str, version: &str) -> Vec<String> {
        self.surfaces
            .values()
            .filter(|s| s.current().is_some_and(|a| a.policy == policy && a.version == version))
            .map(|s| s.name.clone())
            .collect()
    }

    /// The digests of all stored versions.
    pub(super) fn digests(&self) -> BTreeSet<Digest> {
        self.versions.values().map(|v| v.digest).collect()
    }
}

/// The key of the version an activation names.
pub(super) fn key(activation: &Activation) -> (String, String) {
    (activation.policy.clone(), activation.version.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn version(policy: &str, version: &str) -> VersionInfo {
        VersionInfo {
            policy: policy.to_owned(),
            version: version.to_owned(),
            digest: Digest::of(format!("{policy}@{version}").as_bytes()),
            size: 1,
            uploaded_at: time(),
            uploaded_by: "ci".to_owned(),
            metadata: Metadata {
                name: policy.to_owned(),
                version: version.to_owned(),
                description: String::new(),
                surfaces: vec!["*".to_owned()],
                params: Vec::new(),
                features: Vec::new(),
            },
            auto_rollback: None,
        }
    }

    fn activation(version: &str, restores: Option<usize>, ended: bool) -> Activation {
        Activation {
            policy: "p".to_owned(),
            version: version.to_owned(),
            digest: Digest::of(format!("p@{version}").as_bytes()),
            params: BTreeMap::new(),
            actor: "ops".to_owned(),
            activated_at: time(),
            restores,
            ended: ended.then(|| Ending::Superseded { at: time() }),
        }
    }

    /// A surface whose history is `entries`: (version, restores); all but the last ended.
    fn surface(entries: &[(&str, Option<usize>)]) -> Surface {
        let last = entries.len().saturating_sub(1);
        let history = entries.iter().enumerate().map(|(i, (v, r))| activation(v, *r, i != last)).collect();
        Surface { name: "home".to_owned(), history }
    }

    fn target_version(surface: &Surface, eligible: impl Fn(&Activation) -> bool) -> Option<String> {
        surface.rollback_target(eligible).map(|i| surface.history[i].version.clone())
    }

    #[test]
    fn rollback_walks_back_through_history_and_never_returns_to_a_rolled_back_activation() {
        let any = |_: &Activation| true;
        // A B C: back to B.
        assert_eq!(target_version(&surface(&[("a", None), ("b", None), ("c", None)]), any).as_deref(), Some("b"));
        // A B C, rolled back to B (restores 1): back to A, not to C.
        let twice = surface(&[("a", None), ("b", None), ("c", None), ("b", Some(1))]);
        assert_eq!(target_version(&twice, any).as_deref(), Some("a"));
        // ... then to A (restores 0): nothing earlier.
        let thrice = surface(&[("a", None), ("b", None), ("c", None), ("b", Some(1)), ("a", Some(0))]);
        assert_eq!(target_version(&thrice, any), None);
        // A B, rolled back to A, then D: back to (the restored) A.
        let forward = surface(&[("a", None), ("b", None), ("a", Some(0)), ("d", None)]);
        assert_eq!(forward.rollback_target(any), Some(2));
        assert_eq!(target_version(&surface(&[("a", None)]), any), None);
        assert_eq!(target_version(&surface(&[]), any), None);
    }

    #[test]
    fn rollback_skips_activations_that_are_not_eligible() {
        let history = surface(&[("a", None), ("b", None), ("c", None)]);
        assert_eq!(target_version(&history, |a| a.version != "b").as_deref(), Some("a"));
        assert_eq!(target_version(&history, |a| a.version == "c"), None);
    }

    #[test]
    fn a_surface_whose_last_activation_ended_has_no_current_one_and_nothing_to_roll_back_from() {
        let mut ended = surface(&[("a", None), ("b", None)]);
        ended.history[1].ended = Some(Ending::Superseded { at: time() });
        assert!(ended.current().is_none());
        assert_eq!(ended.rollback_target(|_| true), None);
    }

    fn state_of(versions: &[&str], history: Surface) -> State {
        State {
            versions: versions.iter().map(|v| (("p".to_owned(), v.to_string()), version("p", v))).collect(),
            surfaces: BTreeMap::from([(history.name.clone(), history)]),
        }
    }

    #[test]
    fn the_manifest_round_trips_through_json() {
        let mut state = state_of(&["a", "b"], surface(&[("a", None), ("b", None)]));
        let b = state.versions.get_mut(&("p".to_owned(), "b".to_owned())).unwrap();
        b.auto_rollback = Some(AutoRollback { surface: "home".to_owned(), at: time(), reason: "errors".to_owned() });
        state.surfaces.get_mut("home").unwrap().history[0].ended = Some(Ending::RolledBack {
            at: time(),
            actor: "ops".to_owned(),
            reason: "slow".to_owned(),
            automatic: false,
        });
        let json = state.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"uploaded_at\": \"2027-01-15T08:00:00Z\""), "{text}");
        assert!(text.contains("\"how\": \"rolled-back\""), "{text}");
        assert_eq!(State::from_json(&json, time()).unwrap(), (state, Vec::new()));
    }

    #[test]
    fn an_unreadable_or_foreign_manifest_is_refused() {
        assert!(State::from_json(b"{\"format\": 1, \"versions\": [", time()).is_err());
        let error = State::from_json(br#"{"format": 2, "versions": [], "surfaces": []}"#, time()).unwrap_err();
        assert!(error.contains("format 2"), "{error}");
    }

    #[test]
    fn a_broken_active_version_is_dropped_and_the_surface_returns_to_its_previous_activation() {
        let mut state = state_of(&["a", "b", "c"], surface(&[("a", None), ("b", None), ("c", None)]));
        let broken = BTreeMap::from([(("p".to_owned(), "c".to_owned()), "missing".to_owned())]);
        let done = state.repair(&broken, time());
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(!state.versions.contains_key(&("p".to_owned(), "c".to_owned())));
        let home = &state.surfaces["home"];
        assert!(matches!(&home.history[2].ended, Some(Ending::Repaired { reason, .. }) if reason.contains("missing")));
        let current = home.current().unwrap();
        assert_eq!((current.version.as_str(), current.restores, current.actor.as_str()), ("b", Some(1), "relish"));
    }

    #[test]
    fn repair_skips_broken_earlier_versions_and_may_leave_a_surface_without_activation() {
        let mut state = state_of(&["a", "b", "c"], surface(&[("a", None), ("b", None), ("c", None)]));
        let broken: BTreeMap<_, _> =
            ["b", "c"].iter().map(|v| (("p".to_owned(), v.to_string()), "corrupt".to_owned())).collect();
        state.repair(&broken, time());
        assert_eq!(state.surfaces["home"].current().unwrap().version, "a");

        let mut state = state_of(&["a"], surface(&[("a", None)]));
        state.repair(&BTreeMap::from([(("p".to_owned(), "a".to_owned()), "missing".to_owned())]), time());
        assert!(state.versions.is_empty() && state.surfaces["home"].current().is_none());
    }

    #[test]
    fn reading_a_manifest_repairs_activations_of_versions_it_does_not_hold() {
        let mut state = state_of(&["a", "b"], surface(&[("a", None), ("b", None)]));
        state.versions.remove(&("p".to_owned(), "b".to_owned()));
        // A hand-edited manifest: a bad name, a duplicate version, a restore pointing forward.
        let mut json: serde_json::Value = serde_json::from_slice(&state.to_json()).unwrap();
        let good = json["versions"][0].clone();
        let mut bad = good.clone();
        bad["policy"] = "../etc".into();
        json["versions"] = serde_json::json!([good.clone(), good, bad]);
        json["surfaces"][0]["history"][0]["restores"] = 5.into();
        let (read, problems) = State::from_json(&serde_json::to_vec(&json).unwrap(), time()).unwrap();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(read.versions.len(), 1);
        let home = &read.surfaces["home"];
        assert_eq!(home.current().unwrap().version, "a");
        assert_eq!(home.history[0].restores, None);
    }
}
