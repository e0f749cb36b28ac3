//! What can go wrong in the registry, in the caller's terms, and the HTTP status each becomes.

use std::io;
use std::path::PathBuf;

use crate::runtime::{Digest, IDENTIFIER_RULE, LoadError};

/// What a name names, for [`Error::InvalidName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A policy name.
    Policy,
    /// A policy version.
    Version,
    /// A surface name.
    Surface,
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::Policy => "policy name",
            NameKind::Version => "version",
            NameKind::Surface => "surface name",
        })
    }
}

/// Why a registry call failed. Each message names the policy, version or surface and says what to
/// do; [`Error::status`] is the HTTP status the admin API answers with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A policy, version or surface name outside the safe character set.
    #[error("{kind} {value:?} is not allowed: use {IDENTIFIER_RULE}")]
    InvalidName {
        /// What the name names.
        kind: NameKind,
        /// The name as given (printed escaped, so NUL and control characters show).
        value: String,
    },
    /// The upload is bigger than [`RegistryOptions::max_component_bytes`](super::RegistryOptions).
    #[error(
        "{policy}@{version} is {size} bytes, over the {limit} byte limit for a component: build it with \
         `relish build` (optimised, debug info stripped) or raise the registry's size limit"
    )]
    TooLarge {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
        /// The upload's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The upload is not a usable policy component; nothing was stored.
    #[error("{policy}@{version} was refused, nothing was stored: {source}")]
    InvalidComponent {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
        /// Why the runtime refused it.
        source: LoadError,
    },
    /// The component calls itself something else than the name or version it was uploaded as.
    #[error(
        "{policy}@{version} was refused, nothing was stored: the component's metadata says its {field} is \
         `{declared}`. Upload it as {declared_path}, or change the {field} in the policy crate and rebuild"
    )]
    MetadataMismatch {
        /// Policy name it was uploaded as.
        policy: String,
        /// Version it was uploaded as.
        version: String,
        /// `name` or `version`.
        field: &'static str,
        /// What the component's metadata says.
        declared: String,
        /// Where the upload would fit, `policy@version` from the metadata.
        declared_path: String,
    },
    /// Different bytes under a version that already exists.
    #[error(
        "{policy}@{version} already exists with other contents ({existing}, the upload is {uploaded}): versions \
         are immutable, upload the change as a new version"
    )]
    VersionConflict {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
        /// The stored digest.
        existing: Digest,
        /// The upload's digest.
        uploaded: Digest,
    },
    /// No such version.
    #[error("there is no version {version} of policy {policy}: list the policy's versions, or upload it first")]
    UnknownVersion {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
    },
    /// The surface never had a plan.
    #[error("surface {surface} has no plan: activate a policy version on it, or set a plan, first")]
    UnknownSurface {
        /// Surface name.
        surface: String,
    },
    /// Deleting a version that serves traffic.
    #[error(
        "{policy}@{version} is in the current plan of {}: change the plan there (or roll back) before deleting it",
        surfaces.join(", ")
    )]
    VersionActive {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
        /// The surfaces it is active on.
        surfaces: Vec<String>,
    },
    /// Activating a policy on a surface its metadata does not list.
    #[error(
        "{policy}@{version} is not made for surface {surface}: its metadata lists {}. Pick another policy, or add \
         the surface to the policy's metadata",
        supported.join(", ")
    )]
    UnsupportedSurface {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
        /// The surface asked for.
        surface: String,
        /// The surfaces the policy lists.
        supported: Vec<String>,
    },
    /// An activation parameter the policy does not declare.
    #[error("{policy}@{version} has no parameter `{param}`: it declares {}", quoted_list(known))]
    UnknownParam {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
        /// The undeclared key.
        param: String,
        /// The keys it declares.
        known: Vec<String>,
    },
    /// A compare-and-swap change decided on a revision the surface has moved on from.
    #[error(
        "surface {surface} is at plan revision {current}, not {expected}: another change came first; read the \
         surface's plan again and retry with `expected_revision` {current}"
    )]
    RevisionConflict {
        /// Surface name.
        surface: String,
        /// The revision the change expected.
        expected: u64,
        /// The surface's revision now.
        current: u64,
    },
    /// Rolling back a surface with nothing earlier to return to.
    #[error(
        "surface {surface} has no earlier plan to roll back to{}: set a plan explicitly",
        if *automatic { " that did not fail and still fits the surface" } else { " that still fits the surface" }
    )]
    NoRollbackTarget {
        /// Surface name.
        surface: String,
        /// Whether it was an automatic rollback (which skips versions rolled back automatically before).
        automatic: bool,
    },
    /// A stored version could not be loaded by this host.
    #[error(
        "{policy}@{version} is stored but this host cannot load it: {source}. If the host was upgraded, run the \
         previous host or activate a version this host accepts"
    )]
    Load {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
        /// Why.
        source: LoadError,
    },
    /// A stored component no longer has the digest it was stored under (disk corruption or tampering).
    #[error(
        "{policy}@{version}: the stored component {} is missing or does not match its digest {digest}: restore the \
         data directory from a backup, or delete the version and upload it again",
        path.display()
    )]
    Corrupt {
        /// Policy name.
        policy: String,
        /// Version.
        version: String,
        /// The expected digest.
        digest: Digest,
        /// The file.
        path: PathBuf,
    },
    /// The manifest cannot be read; the registry refuses to start rather than forget what it holds.
    #[error(
        "the registry manifest {} is unreadable ({detail}): restore it from a backup, or move the data directory \
         away to start with an empty registry",
        path.display()
    )]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Another process has the data directory open.
    #[error(
        "the registry data directory {} is in use by another process (its `LOCK` file is locked): stop that \
         process, or give this one another directory",
        dir.display()
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("{action} {}: {source}: check the data directory's permissions and free space", path.display())]
    Io {
        /// What was being done, e.g. `writing`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// `a`, `b` and `c` as "`a`, `b`, `c`", or "none".
fn quoted_list(items: &[String]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items.iter().map(|item| format!("`{item}`")).collect::<Vec<_>>().join(", ")
}

impl Error {
    /// The HTTP status the admin API should answer with: 404 for what does not exist, 409 for a
    /// conflict with the registry's state, 413 for a too large upload, 422 for invalid input and
    /// 500 for the host's own trouble (storage, a stored version it cannot load).
    pub fn status(&self) -> u16 {
        match self {
            Error::UnknownVersion { .. } | Error::UnknownSurface { .. } => 404,
            Error::VersionConflict { .. }
            | Error::VersionActive { .. }
            | Error::NoRollbackTarget { .. }
            | Error::RevisionConflict { .. } => 409,
            Error::TooLarge { .. } => 413,
            Error::InvalidName { .. }
            | Error::InvalidComponent { .. }
            | Error::MetadataMismatch { .. }
            | Error::UnsupportedSurface { .. }
            | Error::UnknownParam { .. } => 422,
            Error::Load { .. }
            | Error::Corrupt { .. }
            | Error::Manifest { .. }
            | Error::Locked { .. }
            | Error::Io { .. } => 500,
        }
    }

    pub(super) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
