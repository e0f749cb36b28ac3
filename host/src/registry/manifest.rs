//! The manifest: every stored version and every surface's activation history, in one JSON file
//! that is replaced atomically on each change. It is the registry's single source of truth: a
//! component file it does not name is garbage, and a version is stored exactly when it names it.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::control::plan::{Arm, BUCKETS, Plan, Revision};
use crate::runtime::{Digest, Metadata, is_identifier};

/// The manifest format this host writes. It also reads format 1 (single activations, before
/// plans) and migrates it; a manifest of another format is refused rather than misread.
const FORMAT: u32 = 2;

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
    /// Set by hosts before plans when an automatic rollback moved a surface away from this version.
    /// Kept for the record only: failures now belong to plan revisions ([`PlanRevision::failed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<AutoRollback>,
}

/// The record of an automatic rollback away from a version (format 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRollback {
    /// The surface it was rolled back on.
    pub surface: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, as the rollback's caller put it.
    pub reason: String,
}

/// One revision of a surface's plan: an entry of the surface's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRevision {
    /// The revision number: its position in the surface's history, from 1.
    pub revision: Revision,
    /// What served the surface.
    pub plan: Plan,
    /// Who made it (an admin token's name, `config`, or `relish` for the host's own changes).
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, when the change said so (a rollback's reason, an arm removed automatically).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a revision made by a rollback: the revision it restored. Rolling back again goes to
    /// what came before *that* one, so successive rollbacks walk back through the history instead
    /// of swinging between two plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restores: Option<Revision>,
    /// How it ended; `None` while it is the surface's current plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ending>,
    /// Set when the host found this revision failing (an arm's failure rate tripped): an automatic
    /// rollback never returns to it. The failure belongs to the revision (versions and
    /// parameters), not to a version: the same version with other parameters stays eligible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
}

impl PlanRevision {
    /// The arm named `name`.
    pub fn arm(&self, name: &str) -> Option<&Arm> {
        self.plan.arms.iter().find(|a| a.name == name)
    }
}

/// The record of a revision found failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    /// When.
    pub at: DateTime<Utc>,
    /// The arm that failed.
    pub arm: String,
    /// Why, in words (the failure rate over the window).
    pub reason: String,
}

/// How a plan revision ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "kebab-case")]
pub enum Ending {
    /// Another plan took over (a new plan, an activation, or an arm removed automatically).
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
    /// The registry found a version of the plan missing or corrupt when opening the data
    /// directory, and returned the surface to its previous valid plan.
    Repaired {
        /// When.
        at: DateTime<Utc>,
        /// What was wrong.
        reason: String,
    },
}

/// A surface: the place in the app a ranking serves, with its plan history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Surface {
    /// The surface's name.
    pub name: String,
    /// Every plan revision, oldest first, numbers increasing (by one on a host that stands alone;
    /// a fleet host that joined late starts where the fleet's kept history starts). The last one
    /// is current unless it has ended.
    pub history: Vec<PlanRevision>,
}

impl Surface {
    /// The plan serving the surface now, if any.
    pub fn current(&self) -> Option<&PlanRevision> {
        self.history.last().filter(|a| a.ended.is_none())
    }

    /// The latest revision number (0 for a surface without history). A compare-and-swap change
    /// names this.
    pub fn revision(&self) -> Revision {
        self.history.last().map_or(0, |r| r.revision)
    }

    /// One revision.
    pub fn get(&self, revision: Revision) -> Option<&PlanRevision> {
        self.history.binary_search_by_key(&revision, |r| r.revision).ok().map(|index| &self.history[index])
    }

    /// The revision a rollback from the current one returns to: the revision that was current
    /// before it, skipping those `eligible` refuses (deleted versions, failed revisions for an
    /// automatic rollback, plans that no longer fit the surface).
    ///
    /// "Before it" follows rollbacks: for a revision made by a rollback, it is what came before
    /// the revision it restored. So with history `A B C`, rolling back twice goes to `B`, then
    /// `A`, and a third time fails: `C` and `B` were rolled back and are not returned to.
    pub fn rollback_target(&self, eligible: impl Fn(&PlanRevision) -> bool) -> Option<Revision> {
        let current = self.current()?.revision;
        let mut target = self.before(current)?;
        while !eligible(self.get(target)?) {
            target = self.before(target)?;
        }
        Some(target)
    }

    /// The revision that was current before `revision` was made, walking through restores.
    fn before(&self, mut revision: Revision) -> Option<Revision> {
        // `restores` always points back (checked when the manifest is read), so this ends.
        while let Some(restored) = self.get(revision)?.restores {
            revision = restored;
        }
        let index = self.history.binary_search_by_key(&revision, |r| r.revision).ok()?;
        index.checked_sub(1).map(|before| self.history[before].revision)
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

/// Just the format number, read first to pick the reader.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

impl State {
    /// Reads a manifest, migrating one of an older format (see [`legacy`]). Refuses one that is
    /// not JSON of the expected shape (the caller refuses to start rather than lose the
    /// registry); entries that are well-formed but inconsistent are dropped or repaired, each
    /// with a line in the returned list of problems. The flag says whether it was migrated.
    pub(super) fn from_json(bytes: &[u8], now: DateTime<Utc>) -> Result<(State, Vec<String>, bool), String> {
        let FormatOnly { format } = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let (file, migrated) = match format {
            FORMAT => (serde_json::from_slice::<ManifestFile>(bytes).map_err(|e| e.to_string())?, false),
            1 => (legacy::migrate(bytes)?, true),
            other => return Err(format!("format {other} is not a format this host reads (1 or {FORMAT})")),
        };
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
            let mut previous = 0;
            for (index, entry) in surface.history.iter_mut().enumerate() {
                // Numbers increase; a fleet host may have gaps (revisions the fleet no longer kept
                // when the host joined).
                if entry.revision <= previous {
                    let revision = previous + 1;
                    problems.push(format!(
                        "surface {}: entry {index} said revision {} after {previous}; renumbered {revision}",
                        surface.name, entry.revision
                    ));
                    entry.revision = revision;
                }
                previous = entry.revision;
                let revision = entry.revision;
                if entry.restores.is_some_and(|r| r == 0 || r >= revision) {
                    problems.push(format!("surface {}: revision {revision} restores a later one", surface.name));
                    entry.restores = None;
                }
                if let Err(problem) = entry.plan.check_buckets() {
                    problems
                        .push(format!("surface {}: revision {revision}: {problem}; buckets reassigned", surface.name));
                    entry.plan.allocate(None);
                }
            }
            state.surfaces.insert(surface.name.clone(), surface);
        }
        problems.extend(state.repair(&BTreeMap::new(), now));
        Ok((state, problems, migrated))
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

    /// Whether every version `plan` calls is stored with the digest the plan names.
    pub(super) fn holds(&self, plan: &Plan) -> bool {
        plan.versions()
            .all(|(p, v, digest)| self.versions.get(&(p.to_owned(), v.to_owned())).is_some_and(|i| i.digest == digest))
    }

    /// Drops the versions in `broken` (with why), and returns every surface whose current plan
    /// names a version that is gone (or has other bytes) to its previous plan whose versions are
    /// all present, or leaves it without one. Returns what it did, one line each.
    pub(super) fn repair(&mut self, broken: &BTreeMap<(String, String), String>, now: DateTime<Utc>) -> Vec<String> {
        let mut done = Vec::new();
        for (key, why) in broken {
            if self.versions.remove(key).is_some() {
                done.push(format!("dropped {}@{}: {why}", key.0, key.1));
            }
        }
        let versions = std::mem::take(&mut self.versions);
        let holds = |plan: &Plan| State { versions: versions.clone(), surfaces: BTreeMap::new() }.holds(plan);
        for surface in self.surfaces.values_mut() {
            let Some(current) = surface.current() else { continue };
            if holds(&current.plan) {
                continue;
            }
            let missing: Vec<String> = current
                .plan
                .versions()
                .filter(|(p, v, d)| versions.get(&(p.to_string(), v.to_string())).is_none_or(|i| i.digest != *d))
                .map(|(p, v, _)| match broken.get(&(p.to_owned(), v.to_owned())) {
                    Some(why) => format!("{p}@{v} was dropped: {why}"),
                    None => format!("{p}@{v} is not stored"),
                })
                .collect();
            let reason = missing.join("; ");
            let target = surface.rollback_target(|r| holds(&r.plan));
            let revision = surface.revision() + 1;
            surface.history.last_mut().expect("a current plan").ended =
                Some(Ending::Repaired { at: now, reason: reason.clone() });
            match target.and_then(|t| surface.get(t)).cloned() {
                Some(target) => {
                    done.push(format!("surface {}: {reason}; returned to revision {}", surface.name, target.revision));
                    surface.history.push(PlanRevision {
                        revision,
                        plan: target.plan,
                        actor: "relish".to_owned(),
                        at: now,
                        reason: Some(reason),
                        restores: Some(target.revision),
                        ended: None,
                        failed: None,
                    });
                }
                None => done.push(format!("surface {}: {reason}; no earlier plan to return to", surface.name)),
            }
        }
        self.versions = versions;
        done
    }

    /// The surfaces whose current plan calls `policy@version` (as an arm or a shadow).
    pub(super) fn active_on(&self, policy: &str, version: &str) -> Vec<String> {
        self.surfaces
            .values()
            .filter(|s| s.current().is_some_and(|r| r.plan.uses(policy, version)))
            .map(|s| s.name.clone())
            .collect()
    }

    /// The digests of all stored versions.
    pub(super) fn digests(&self) -> BTreeSet<Digest> {
        self.versions.values().map(|v| v.digest).collect()
    }
}

/// Format 1, written by hosts before plans: a surface's history was a list of single-version
/// activations. Each becomes a one-arm plan revision (the arm named `policy@version`, weight
/// 10,000, no salt, no shadow), with its number, restores and ending kept; an activation an
/// automatic rollback ended is marked failed.
mod legacy {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        versions: Vec<VersionInfo>,
        surfaces: Vec<LegacySurface>,
    }

    #[derive(Deserialize)]
    struct LegacySurface {
        name: String,
        history: Vec<Activation>,
    }

    #[derive(Deserialize)]
    struct Activation {
        policy: String,
        version: String,
        digest: Digest,
        params: BTreeMap<String, String>,
        actor: String,
        activated_at: DateTime<Utc>,
        #[serde(default)]
        restores: Option<usize>,
        #[serde(default)]
        ended: Option<Ending>,
    }

    pub(super) fn migrate(bytes: &[u8]) -> Result<ManifestFile, String> {
        let file: File = serde_json::from_slice(bytes).map_err(|e| format!("format 1: {e}"))?;
        let surfaces = file
            .surfaces
            .into_iter()
            .map(|surface| Surface {
                history: surface
                    .history
                    .into_iter()
                    .enumerate()
                    .map(|(index, a)| {
                        let name = format!("{}@{}", a.policy, a.version);
                        let failed = match &a.ended {
                            Some(Ending::RolledBack { at, reason, automatic: true, .. }) => {
                                Some(Failed { at: *at, arm: name.clone(), reason: reason.clone() })
                            }
                            _ => None,
                        };
                        let mut plan = Plan {
                            arms: vec![Arm {
                                name,
                                policy: a.policy,
                                version: a.version,
                                digest: a.digest,
                                weight: BUCKETS,
                                params: a.params,
                                buckets: Vec::new(),
                            }],
                            salt: String::new(),
                            shadows: Vec::new(),
                        };
                        plan.allocate(None);
                        PlanRevision {
                            revision: index as Revision + 1,
                            plan,
                            actor: a.actor,
                            at: a.activated_at,
                            reason: None,
                            restores: a.restores.map(|r| r as Revision + 1),
                            ended: a.ended,
                            failed,
                        }
                    })
                    .collect(),
                name: surface.name,
            })
            .collect();
        Ok(ManifestFile { format: FORMAT, versions: file.versions, surfaces })
    }
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

    fn one_arm(version: &str) -> Plan {
        let mut plan = Plan {
            arms: vec![Arm {
                name: format!("p@{version}"),
                policy: "p".to_owned(),
                version: version.to_owned(),
                digest: Digest::of(format!("p@{version}").as_bytes()),
                weight: BUCKETS,
                params: BTreeMap::new(),
                buckets: Vec::new(),
            }],
            salt: String::new(),
            shadows: Vec::new(),
        };
        plan.allocate(None);
        plan
    }

    fn revision(index: usize, version: &str, restores: Option<Revision>, ended: bool) -> PlanRevision {
        PlanRevision {
            revision: index as Revision + 1,
            plan: one_arm(version),
            actor: "ops".to_owned(),
            at: time(),
            reason: None,
            restores,
            ended: ended.then(|| Ending::Superseded { at: time() }),
            failed: None,
        }
    }

    /// A surface whose history is `entries`: (version, restores); all but the last ended.
    fn surface(entries: &[(&str, Option<Revision>)]) -> Surface {
        let last = entries.len().saturating_sub(1);
        let history = entries.iter().enumerate().map(|(i, (v, r))| revision(i, v, *r, i != last)).collect();
        Surface { name: "home".to_owned(), history }
    }

    fn target_version(surface: &Surface, eligible: impl Fn(&PlanRevision) -> bool) -> Option<String> {
        surface.rollback_target(eligible).map(|r| surface.get(r).unwrap().plan.arms[0].version.clone())
    }

    #[test]
    fn rollback_walks_back_through_history_and_never_returns_to_a_rolled_back_revision() {
        let any = |_: &PlanRevision| true;
        assert_eq!(target_version(&surface(&[("a", None), ("b", None), ("c", None)]), any).as_deref(), Some("b"));
        // A B C, rolled back to B (restores 2): back to A, not to C.
        let twice = surface(&[("a", None), ("b", None), ("c", None), ("b", Some(2))]);
        assert_eq!(target_version(&twice, any).as_deref(), Some("a"));
        let thrice = surface(&[("a", None), ("b", None), ("c", None), ("b", Some(2)), ("a", Some(1))]);
        assert_eq!(target_version(&thrice, any), None);
        // A B, rolled back to A, then D: back to (the restored) A, revision 3.
        let forward = surface(&[("a", None), ("b", None), ("a", Some(1)), ("d", None)]);
        assert_eq!(forward.rollback_target(any), Some(3));
        assert_eq!(target_version(&surface(&[("a", None)]), any), None);
        assert_eq!(target_version(&surface(&[]), any), None);
    }

    #[test]
    fn a_history_that_starts_late_or_has_gaps_rolls_back_by_position() {
        // A fleet host that joined at the fleet's revision 5: 5, 6, 9 (6 and 9 from the fleet).
        let mut history = surface(&[("a", None), ("b", None), ("c", None)]);
        for (entry, number) in history.history.iter_mut().zip([5, 6, 9]) {
            entry.revision = number;
        }
        assert_eq!(history.revision(), 9);
        assert_eq!(history.get(6).unwrap().plan.arms[0].version, "b");
        assert!(history.get(7).is_none());
        assert_eq!(history.rollback_target(|_| true), Some(6));
        // A rollback that restores 5: the next one has nothing before 5 to return to.
        history.history[2].restores = Some(5);
        assert_eq!(history.rollback_target(|_| true), None);
    }

    #[test]
    fn rollback_skips_revisions_that_are_not_eligible() {
        let history = surface(&[("a", None), ("b", None), ("c", None)]);
        assert_eq!(target_version(&history, |r| r.plan.arms[0].version != "b").as_deref(), Some("a"));
        assert_eq!(target_version(&history, |r| r.plan.arms[0].version == "c"), None);
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
        let home = state.surfaces.get_mut("home").unwrap();
        home.history[0].ended = Some(Ending::RolledBack {
            at: time(),
            actor: "ops".to_owned(),
            reason: "slow".to_owned(),
            automatic: true,
        });
        home.history[0].failed = Some(Failed { at: time(), arm: "p@a".to_owned(), reason: "errors".to_owned() });
        let json = state.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"format\": 2"), "{text}");
        assert!(text.contains("\"how\": \"rolled-back\""), "{text}");
        assert_eq!(State::from_json(&json, time()).unwrap(), (state, Vec::new(), false));
    }

    #[test]
    fn an_unreadable_or_foreign_manifest_is_refused() {
        assert!(State::from_json(b"{\"format\": 2, \"versions\": [", time()).is_err());
        let error = State::from_json(br#"{"format": 3, "versions": [], "surfaces": []}"#, time()).unwrap_err();
        assert!(error.contains("format 3"), "{error}");
    }

    /// A format-1 manifest as the previous host wrote it: `p@a` rolled back automatically, then
    /// `p@b` restored by a rollback.
    const FORMAT_1: &str = r#"{
      "format": 1,
      "versions": [],
      "surfaces": [{"name": "home", "history": [
        {"policy": "p", "version": "a", "digest": "sha256:DA", "params": {}, "actor": "ops",
         "activated_at": "2027-01-15T08:00:00Z", "ended": {"how": "superseded", "at": "2027-01-15T08:00:00Z"}},
        {"policy": "p", "version": "b", "digest": "sha256:DB", "params": {"k": "1"}, "actor": "ops",
         "activated_at": "2027-01-15T08:00:00Z", "ended": {"how": "rolled-back", "at": "2027-01-15T08:00:00Z",
         "actor": "relish", "reason": "errors", "automatic": true}},
        {"policy": "p", "version": "a", "digest": "sha256:DA", "params": {}, "actor": "relish",
         "activated_at": "2027-01-15T08:00:00Z", "restores": 0}
      ]}]
    }"#;

    #[test]
    fn a_format_1_manifest_migrates_to_one_arm_plans() {
        let versions = [version("p", "a"), version("p", "b")];
        let mut json: serde_json::Value = serde_json::from_str(
            &FORMAT_1
                .replace("sha256:DA", &versions[0].digest.to_string())
                .replace("sha256:DB", &versions[1].digest.to_string()),
        )
        .unwrap();
        json["versions"] = serde_json::to_value(&versions).unwrap();
        let (state, problems, migrated) = State::from_json(&serde_json::to_vec(&json).unwrap(), time()).unwrap();
        assert!(migrated && problems.is_empty(), "{problems:?}");
        let home = &state.surfaces["home"];
        assert_eq!(home.revision(), 3);
        let current = home.current().unwrap();
        assert_eq!((current.revision, current.restores), (3, Some(1)));
        assert_eq!(current.plan.arms[0].name, "p@a");
        assert_eq!(current.plan.arms[0].buckets, vec![crate::control::plan::BucketRange { start: 0, end: 10_000 }]);
        let b = home.get(2).unwrap();
        assert_eq!(b.plan.arms[0].params["k"], "1");
        assert_eq!(
            b.failed.as_ref().map(|f| f.reason.as_str()),
            Some("errors"),
            "an automatic rollback marks the revision"
        );
        // Written back as format 2, it reads the same without migrating.
        let (again, _, migrated) = State::from_json(&state.to_json(), time()).unwrap();
        assert!(!migrated);
        assert_eq!(again, state);
    }

    #[test]
    fn a_broken_active_version_is_dropped_and_the_surface_returns_to_its_previous_plan() {
        let mut state = state_of(&["a", "b", "c"], surface(&[("a", None), ("b", None), ("c", None)]));
        let broken = BTreeMap::from([(("p".to_owned(), "c".to_owned()), "missing".to_owned())]);
        let done = state.repair(&broken, time());
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(!state.versions.contains_key(&("p".to_owned(), "c".to_owned())));
        let home = &state.surfaces["home"];
        assert!(matches!(&home.history[2].ended, Some(Ending::Repaired { reason, .. }) if reason.contains("missing")));
        let current = home.current().unwrap();
        assert_eq!(
            (current.plan.arms[0].version.as_str(), current.restores, current.actor.as_str()),
            ("b", Some(2), "relish")
        );
        assert_eq!(current.revision, 4);
    }

    #[test]
    fn repair_skips_broken_earlier_versions_and_may_leave_a_surface_without_a_plan() {
        let mut state = state_of(&["a", "b", "c"], surface(&[("a", None), ("b", None), ("c", None)]));
        let broken: BTreeMap<_, _> =
            ["b", "c"].iter().map(|v| (("p".to_owned(), v.to_string()), "corrupt".to_owned())).collect();
        state.repair(&broken, time());
        assert_eq!(state.surfaces["home"].current().unwrap().plan.arms[0].version, "a");

        let mut state = state_of(&["a"], surface(&[("a", None)]));
        state.repair(&BTreeMap::from([(("p".to_owned(), "a".to_owned()), "missing".to_owned())]), time());
        assert!(state.versions.is_empty() && state.surfaces["home"].current().is_none());
    }

    #[test]
    fn reading_a_manifest_repairs_what_is_inconsistent() {
        let mut state = state_of(&["a", "b"], surface(&[("a", None), ("b", None)]));
        state.versions.remove(&("p".to_owned(), "b".to_owned()));
        // A hand-edited manifest: a bad name, a duplicate version, a restore pointing forward.
        let mut json: serde_json::Value = serde_json::from_slice(&state.to_json()).unwrap();
        let good = json["versions"][0].clone();
        let mut bad = good.clone();
        bad["policy"] = "../etc".into();
        json["versions"] = serde_json::json!([good.clone(), good, bad]);
        json["surfaces"][0]["history"][0]["restores"] = 5.into();
        let (read, problems, _) = State::from_json(&serde_json::to_vec(&json).unwrap(), time()).unwrap();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(read.versions.len(), 1);
        let home = &read.surfaces["home"];
        assert_eq!(home.current().unwrap().plan.arms[0].version, "a");
        assert_eq!(home.history[0].restores, None);
    }
}
