//! What the fleet's buckets hold: the KV keys, their JSON values, and the persisted position of
//! this host's watch.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::now;
use crate::control::plan::{Plan, Revision};
use crate::registry::{NewRevision, VersionInfo, write_atomically};
use crate::runtime::Digest;

/// The format of every value written; a value of another format is refused with its key named.
pub const FORMAT: u32 = 1;

/// The key of a version's record: `versions.<policy>/<version>` (policy names and versions
/// never hold `/`, so the key is unambiguous).
pub fn version_key(policy: &str, version: &str) -> String {
    format!("versions.{policy}/{version}")
}

/// The key of a surface's current plan revision.
pub fn plan_key(surface: &str) -> String {
    format!("plans.{surface}")
}

/// The object a component's bytes are stored under: named by their digest, so never reused for
/// other bytes (an object store `put` under an existing name replaces the object).
pub fn object_name(digest: Digest) -> String {
    format!("sha256/{}", digest.hex())
}

/// What a key of the state bucket names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `versions.<policy>/<version>`.
    Version {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
    },
    /// `plans.<surface>`.
    Plan(String),
}

impl Key {
    /// Parses a key of the state bucket; `None` for a key this version of Relish does not write.
    pub fn parse(key: &str) -> Option<Key> {
        if let Some(rest) = key.strip_prefix("versions.") {
            let (policy, version) = rest.split_once('/')?;
            return Some(Key::Version { policy: policy.to_owned(), version: version.to_owned() });
        }
        key.strip_prefix("plans.").map(|surface| Key::Plan(surface.to_owned()))
    }
}

/// `versions.<policy>/<version>`: a version stored in the fleet. Its bytes are the object
/// [`object_name`] of its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRecord {
    /// [`FORMAT`].
    pub format: u32,
    /// Policy name.
    pub policy: String,
    /// Version.
    pub version: String,
    /// The component's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: usize,
    /// The admin token that uploaded it.
    pub uploaded_by: String,
    /// When.
    pub uploaded_at: DateTime<Utc>,
    /// The host that took the upload.
    pub host: String,
}

impl VersionRecord {
    /// The record of a version as a host stores it.
    pub fn of(info: &VersionInfo, host: &str) -> Self {
        VersionRecord {
            format: FORMAT,
            policy: info.policy.clone(),
            version: info.version.clone(),
            digest: info.digest,
            size: info.size,
            uploaded_by: info.uploaded_by.clone(),
            uploaded_at: info.uploaded_at,
            host: host.to_owned(),
        }
    }
}

/// How the revision a plan record replaced ended, when not simply superseded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolledBack {
    /// Who rolled back.
    pub actor: String,
    /// Whether it was an automatic rollback.
    pub automatic: bool,
}

/// The arm found failing in the revision a plan record replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedArm {
    /// The arm.
    pub arm: String,
    /// Why.
    pub reason: String,
}

/// `plans.<surface>`: a surface's current plan revision, as the host that decided it wrote it.
/// Every host stores it under the same revision number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRecord {
    /// [`FORMAT`].
    pub format: u32,
    /// The surface.
    pub surface: String,
    /// The plan revision number.
    pub revision: Revision,
    /// The plan.
    pub plan: Plan,
    /// Who made the change.
    pub actor: String,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// Why, if the change said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a rollback: the revision it restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restores: Option<Revision>,
    /// For a rollback: by whom, and whether automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
    /// For an automatic change: the arm of the previous revision that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedArm>,
    /// The host that decided it.
    pub host: String,
}

impl PlanRecord {
    /// The record of a revision a host decided, numbered after its `expected` revision.
    pub fn decided(new: NewRevision, host: &str) -> Self {
        PlanRecord {
            format: FORMAT,
            revision: new.revision.unwrap_or(new.expected + 1),
            at: new.at.unwrap_or_else(now),
            surface: new.surface,
            plan: new.plan,
            actor: new.actor,
            reason: new.reason,
            restores: new.restores,
            rolled_back: new.rolled_back.map(|(actor, automatic)| RolledBack { actor, automatic }),
            failed: new.failed.map(|(arm, reason)| FailedArm { arm, reason }),
            host: host.to_owned(),
        }
    }

    /// The change that stores it on a host (its `expected` revision is the host's own).
    pub fn into_revision(self) -> NewRevision {
        NewRevision {
            surface: self.surface,
            expected: 0,
            plan: self.plan,
            actor: self.actor,
            reason: self.reason,
            restores: self.restores,
            rolled_back: self.rolled_back.map(|r| (r.actor, r.automatic)),
            failed: self.failed.map(|f| (f.arm, f.reason)),
            revision: Some(self.revision),
            at: Some(self.at),
        }
    }
}

/// Decodes a value of the state bucket, naming the key when it is not what this host writes.
pub fn decode<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T, String> {
    #[derive(Deserialize)]
    struct Versioned {
        format: u32,
    }
    match serde_json::from_slice::<Versioned>(value) {
        Ok(Versioned { format: FORMAT }) => {}
        Ok(Versioned { format }) => {
            return Err(format!("`{key}` is of format {format}; this host reads format {FORMAT} (upgrade it)"));
        }
        Err(error) => return Err(format!("`{key}` is not a Relish record: {error}")),
    }
    serde_json::from_slice(value).map_err(|error| format!("`{key}`: {error}"))
}

/// Where this host's watch of the fleet stands, kept in the data directory (`fleet.json`) so a
/// restart resumes from it instead of replaying the whole bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Position {
    /// [`FORMAT`].
    pub format: u32,
    /// The state bucket's name.
    pub bucket: String,
    /// When the bucket's stream was created (nanoseconds since the epoch), so that a bucket
    /// deleted and created again (its revisions start over) is not mistaken for the same one.
    pub created: i128,
    /// The last revision of the bucket this host applied (or refused, with the reason logged).
    pub applied: u64,
}

impl Position {
    /// The file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("fleet.json")
    }

    /// Reads the position; a missing or unreadable file is "nothing applied" (the watch then
    /// replays the bucket, which is idempotent).
    pub fn read(dir: &Path) -> Option<Position> {
        let bytes = std::fs::read(Self::path(dir)).ok()?;
        match serde_json::from_slice::<Position>(&bytes) {
            Ok(position) if position.format == FORMAT => Some(position),
            Ok(position) => {
                tracing::warn!(format = position.format, "fleet.json of an unknown format: replaying the fleet");
                None
            }
            Err(error) => {
                tracing::warn!("fleet.json is unreadable ({error}): replaying the fleet");
                None
            }
        }
    }

    /// Writes the position atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        write_atomically(&Self::path(dir), &serde_json::to_vec_pretty(self).expect("a position serialises"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_foreign_keys_are_not_ours() {
        let key = version_key("discovery", "0.1.0");
        assert_eq!(key, "versions.discovery/0.1.0");
        assert_eq!(Key::parse(&key), Some(Key::Version { policy: "discovery".into(), version: "0.1.0".into() }));
        assert_eq!(Key::parse(&plan_key("menu.items")), Some(Key::Plan("menu.items".into())));
        assert_eq!(Key::parse("versions.no-slash"), None);
        assert_eq!(Key::parse("something.else"), None);
    }

    #[test]
    fn a_record_of_another_format_is_refused_with_its_key() {
        let error = decode::<VersionRecord>("versions.a/1", br#"{"format": 2}"#).unwrap_err();
        assert!(error.contains("versions.a/1") && error.contains("format 2"), "{error}");
        let error = decode::<VersionRecord>("versions.a/1", b"not json").unwrap_err();
        assert!(error.contains("not a Relish record"), "{error}");
    }

    #[test]
    fn the_position_survives_a_restart_and_a_broken_file_means_replay() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Position::read(dir.path()), None);
        let position = Position { format: FORMAT, bucket: "b".into(), created: 7, applied: 42 };
        position.write(dir.path()).unwrap();
        assert_eq!(Position::read(dir.path()), Some(position));
        std::fs::write(Position::path(dir.path()), b"{").unwrap();
        assert_eq!(Position::read(dir.path()), None);
    }
}
