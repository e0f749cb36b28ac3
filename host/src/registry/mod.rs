//! The policy registry: stored policy versions, every surface's plan history, and the loaded
//! versions that serve traffic. It is storage: what a change means (validation, buckets,
//! rollback targets) is decided by the control plane ([`crate::control`]), its only writer of
//! plans.
//!
//! - **Versions are immutable.** [`Registry::put_version`] checks the component fully (the
//!   runtime loads it: a component of the `ranker` world, allowed imports, compiles, answers its
//!   metadata call) before anything is stored. The name and version it is uploaded as must be the
//!   ones its metadata declares: responses and policy log lines name a version by its metadata,
//!   so a registry that allowed `popularity@2.0` to say it is `0.1.0` would have every response
//!   and log line contradict the admin API. The same bytes again is a no-op; other bytes under an
//!   existing version are refused.
//! - **Plans are per surface, with history.** [`Registry::commit`] appends a plan revision to a
//!   surface's history, compare-and-swap on the surface's latest revision, after loading every
//!   version the plan calls.
//! - **Crash-safe storage.** Component bytes are stored by digest, compiled artifacts by digest
//!   under the engine's compatibility key, and one manifest names every version and activation.
//!   Every file is written with [`write_atomically`], and a change writes the component's files
//!   first and the manifest last, so after a crash at any point each version is either fully
//!   present or absent, and every plan names present versions. [`Registry::open`] removes what a
//!   crash left behind, and migrates a manifest of the previous format (single activations) to
//!   one-arm plans, keeping a copy of the old file as `manifest.v1.json`.
//! - **Memory.** Versions that current plans call stay loaded; others are loaded on demand into an LRU cache. A
//!   load prefers the stored artifact (its digest checked first) over compiling, so a restart
//!   compiles nothing.
//!
//! The data directory:
//!
//! ```text
//! LOCK                                   locked (flock) while a registry has the directory open
//! manifest.json                          every version and plan revision: the single source of truth
//! manifest.v1.json                       the format-1 manifest a migration started from (kept)
//! blobs/sha256/<digest>.wasm             component bytes, named by their SHA-256 (hex)
//! artifacts/<engine key>/<digest>.cwasm  the component compiled by engines with that
//!                                        compatibility key: a magic number, the SHA-256 of the
//!                                        compiled code, the code
//! **/.tmp-*                              a write in progress, or interrupted by a crash
//! ```
//!
//! The registry is shared as `Arc<Registry>`. Mutations do blocking file
//! I/O and may compile (seconds): call them from `spawn_blocking`. They are serialised by one
//! lock, except that an upload compiles before taking it, so a slow upload does not hold up a
//! plan change.

mod error;
mod manifest;
mod store;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lru::LruCache;

pub use error::{Error, NameKind};
use manifest::State;
pub use manifest::{AutoRollback, Ending, Failed, PlanRevision, Surface, VersionInfo};
use store::Store;
pub use store::write_atomically;

use crate::control::plan::{Plan, Revision};
use crate::runtime::{Digest, PolicyPre, Runtime, is_identifier};

/// How a registry is sized.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The largest component [`Registry::put_version`] accepts, in bytes. The bundled policies are
    /// about 120 KB; the default of 16 MiB leaves room for policies with embedded tables.
    pub max_component_bytes: usize,
    /// How many versions no current plan calls stay loaded. Versions of current plans are always
    /// loaded and do not count.
    pub cache_capacity: NonZeroUsize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions { max_component_bytes: 16 << 20, cache_capacity: NonZeroUsize::new(16).expect("not zero") }
    }
}

/// What [`Registry::put_version`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// The version was stored.
    Created(VersionInfo),
    /// The same bytes were already stored under this version; nothing changed.
    Unchanged(VersionInfo),
}

impl Put {
    /// The stored version.
    pub fn version(&self) -> &VersionInfo {
        match self {
            Put::Created(info) | Put::Unchanged(info) => info,
        }
    }
}

/// What [`Registry::prepare_version`] found.
#[derive(Debug)]
pub enum Prepare {
    /// The version is stored already (the same bytes: `Unchanged`).
    Stored(Box<Put>),
    /// Checked and compiled, ready for [`Registry::store_version`].
    Ready(Box<Prepared>),
}

/// A component checked and compiled for storing as a version.
pub struct Prepared {
    /// Policy name.
    pub policy: String,
    /// Version.
    pub version: String,
    /// The digest of `bytes`.
    pub digest: Digest,
    bytes: Vec<u8>,
    loaded: PolicyPre,
    artifact: Vec<u8>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prepared({}@{}, {})", self.policy, self.version, self.digest)
    }
}

impl Prepared {
    /// The component's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A new plan revision, as the control plane decided it; [`Registry::commit`] stores it.
#[derive(Debug, Clone)]
pub struct NewRevision {
    /// The surface.
    pub surface: String,
    /// The surface's latest revision the change was decided on: the commit is refused with
    /// [`Error::RevisionConflict`] if the surface has moved on since.
    pub expected: Revision,
    /// The plan.
    pub plan: Plan,
    /// Who makes the change.
    pub actor: String,
    /// Why, if the change says.
    pub reason: Option<String>,
    /// The revision a rollback restores.
    pub restores: Option<Revision>,
    /// Set for a rollback: the current revision ends rolled back, by whom and whether
    /// automatically; otherwise it ends superseded.
    pub rolled_back: Option<(String, bool)>,
    /// Marks the current revision failed: the arm and why.
    pub failed: Option<(String, String)>,
    /// The revision number to store it as (it must be above the latest), when another host
    /// decided it; the next number if `None`.
    pub revision: Option<Revision>,
    /// When it was decided, if not now.
    pub at: Option<DateTime<Utc>>,
}

/// The policy registry of one data directory. See the [module documentation](self).
pub struct Registry {
    runtime: Arc<Runtime>,
    store: Store,
    max_component_bytes: usize,
    /// Serialises mutations, and loads that may write an artifact (so a load never writes the
    /// artifact of a version being deleted).
    write: Mutex<()>,
    /// The manifest as last written. Replaced whole, after the manifest file, by a mutation that
    /// holds `write`; readers clone the `Arc`.
    state: RwLock<Arc<State>>,
    /// The loaded versions current plans call, by digest. Replaced whole, after `state`.
    pinned: RwLock<Arc<BTreeMap<Digest, Arc<PolicyPre>>>>,
    /// Loaded versions that are not active, by digest.
    cache: Mutex<LruCache<Digest, Arc<PolicyPre>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("dir", &self.store.dir()).finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poisoning: the registry's shared state is only ever replaced whole
/// (an `Arc` swapped after the manifest is written), so a panic while a lock was held cannot have
/// left it half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn replace<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(PoisonError::into_inner) = value;
}

fn now() -> DateTime<Utc> {
    SystemTime::now().into()
}

/// Checks a policy name, version or surface name against the safe character set.
fn check_name(kind: NameKind, value: &str) -> Result<(), Error> {
    if is_identifier(value) { Ok(()) } else { Err(Error::InvalidName { kind, value: value.to_owned() }) }
}

fn unknown_version(policy: &str, version: &str) -> Error {
    Error::UnknownVersion { policy: policy.to_owned(), version: version.to_owned() }
}

impl Registry {
    /// Opens the registry in `dir` (created if missing), restoring every version and plan, and
    /// loads the versions current plans call from their stored artifacts (compiling only those
    /// without a valid artifact for this engine).
    ///
    /// What a crash can leave behind is cleaned up: temporary files, component files and artifacts
    /// no version refers to, artifacts of other engines. A version whose component file is
    /// missing or corrupt (which the write order rules out, short of disk damage or tampering) is
    /// dropped with an error log, and a surface whose plan called it returns to its previous valid
    /// plan. The directory is locked against other processes while the registry lives.
    ///
    /// Fails if the manifest is unreadable (rather than forgetting every version), or if a version
    /// of a current plan cannot be loaded by this host (rather than serving something else than
    /// the admin API shows; after an upgrade, this keeps the new host from turning ready).
    pub fn open(dir: &Path, runtime: Arc<Runtime>, options: RegistryOptions) -> Result<Registry, Error> {
        let store = Store::open(dir, runtime.artifact_key())?;
        let now = now();
        let (mut state, mut repairs, new) = match store.read_manifest()? {
            Some(bytes) => {
                let (state, repairs, migrated) = State::from_json(&bytes, now)
                    .map_err(|detail| Error::Manifest { path: store.manifest_path(), detail })?;
                if migrated {
                    // Keep what the previous host wrote: a downgrade, or an audit, can go back to it.
                    let backup = store.dir().join("manifest.v1.json");
                    write_atomically(&backup, &bytes).map_err(Error::io("writing", &backup))?;
                    tracing::info!(dir = %dir.display(), "registry migrated from format 1 (activations) to plans");
                }
                (state, repairs, migrated)
            }
            // The manifest is written on the first open, before any upload, so components
            // without a manifest mean it was lost: refuse rather than delete them as garbage.
            None if store.has_blobs()? => {
                return Err(Error::Manifest {
                    path: store.manifest_path(),
                    detail: "it is missing, but blobs/ holds components".to_owned(),
                });
            }
            None => (State::default(), Vec::new(), true),
        };

        let mut broken = BTreeMap::new();
        for (key, info) in &state.versions {
            if let Err(problem) = store.read_blob(info.digest, info.size)? {
                broken.insert(key.clone(), format!("{problem} ({})", store.blob_path(info.digest).display()));
            }
        }
        repairs.extend(state.repair(&broken, now));
        for repair in &repairs {
            tracing::error!(dir = %dir.display(), "registry repair: {repair}");
        }
        if new || !repairs.is_empty() {
            store.write_manifest(&state.to_json())?;
        }
        store.clean(&state.digests())?;

        let mut pinned = BTreeMap::new();
        for surface in state.surfaces.values() {
            let Some(current) = surface.current() else { continue };
            for (policy, version, digest) in current.plan.versions() {
                if pinned.contains_key(&digest) {
                    continue;
                }
                let info = &state.versions[&(policy.to_owned(), version.to_owned())];
                let loaded = load_stored(&runtime, &store, info).inspect_err(|error| {
                    tracing::error!(surface = %surface.name, "a version of the current plan does not load: {error}");
                })?;
                pinned.insert(digest, Arc::new(loaded));
            }
        }
        tracing::info!(
            dir = %dir.display(),
            versions = state.versions.len(),
            loaded = pinned.len(),
            "registry opened"
        );
        Ok(Registry {
            runtime,
            store,
            max_component_bytes: options.max_component_bytes,
            write: Mutex::new(()),
            state: RwLock::new(Arc::new(state)),
            pinned: RwLock::new(Arc::new(pinned)),
            cache: Mutex::new(LruCache::new(options.cache_capacity)),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    /// Stores `bytes` as `policy@version`, uploaded by `uploader` (an admin token's name).
    ///
    /// The component is loaded and checked before anything is stored, and its metadata must
    /// declare exactly this name and version. The same bytes under an existing version is
    /// [`Put::Unchanged`]; other bytes is [`Error::VersionConflict`]. Concurrent uploads of one
    /// version end in one stored version: the rest are `Unchanged` or conflicts.
    ///
    /// Blocks on file I/O and compiles the component (half a second for a bundled policy in a
    /// debug build).
    pub fn put_version(&self, policy: &str, version: &str, bytes: &[u8], uploader: &str) -> Result<Put, Error> {
        match self.prepare_version(policy, version, bytes)? {
            Prepare::Stored(put) => Ok(*put),
            Prepare::Ready(prepared) => self.store_version(*prepared, uploader, None),
        }
    }

    /// The checking half of [`Registry::put_version`]: the component loaded (compiled) and its
    /// metadata checked, nothing stored. A fleet host checks an upload this way before it writes
    /// the version to the fleet, and stores it when the fleet delivers it back.
    pub fn prepare_version(&self, policy: &str, version: &str, bytes: &[u8]) -> Result<Prepare, Error> {
        check_name(NameKind::Policy, policy)?;
        check_name(NameKind::Version, version)?;
        if bytes.len() > self.max_component_bytes {
            return Err(Error::TooLarge {
                policy: policy.to_owned(),
                version: version.to_owned(),
                size: bytes.len(),
                limit: self.max_component_bytes,
            });
        }
        let digest = Digest::of(bytes);
        let existing = self.state().versions.get(&(policy.to_owned(), version.to_owned())).cloned();
        if let Some(existing) = existing.as_ref().filter(|existing| existing.digest == digest) {
            return Ok(Prepare::Stored(Box::new(Put::Unchanged(existing.clone()))));
        }
        // Other bytes under a stored version are a conflict, but only once they are a usable
        // component of this name and version: a truncated or corrupt upload is refused as what it
        // is (and counted), whatever version it names.
        let (loaded, artifact) = self.runtime.load_and_serialize(bytes).map_err(|source| Error::InvalidComponent {
            policy: policy.to_owned(),
            version: version.to_owned(),
            source,
        })?;
        let metadata = loaded.metadata();
        for (field, declared, given) in [("name", &metadata.name, policy), ("version", &metadata.version, version)] {
            if declared != given {
                return Err(Error::MetadataMismatch {
                    policy: policy.to_owned(),
                    version: version.to_owned(),
                    field,
                    declared: declared.clone(),
                    declared_path: format!("{}@{}", metadata.name, metadata.version),
                });
            }
        }
        if let Some(existing) = existing {
            return same_or_conflict(&existing, digest).map(|put| Prepare::Stored(Box::new(put)));
        }
        Ok(Prepare::Ready(Box::new(Prepared {
            policy: policy.to_owned(),
            version: version.to_owned(),
            digest,
            bytes: bytes.to_vec(),
            loaded,
            artifact,
        })))
    }

    /// The storing half of [`Registry::put_version`]; `at` is the upload time when another host
    /// took the upload (now if `None`).
    pub fn store_version(&self, prepared: Prepared, uploader: &str, at: Option<DateTime<Utc>>) -> Result<Put, Error> {
        let Prepared { policy, version, digest, bytes, loaded, artifact } = prepared;
        let key = (policy.clone(), version.clone());
        let _write = lock(&self.write);
        let state = self.state();
        if let Some(existing) = state.versions.get(&key) {
            return same_or_conflict(existing, digest);
        }
        let info = VersionInfo {
            policy: policy.clone(),
            version: version.clone(),
            digest,
            size: bytes.len(),
            uploaded_at: at.unwrap_or_else(now),
            uploaded_by: uploader.to_owned(),
            metadata: loaded.metadata().clone(),
            auto_rollback: None,
        };
        let mut next = (*state).clone();
        next.versions.insert(key, info.clone());
        // Bytes and artifact first, manifest last: a crash in between leaves files that the next
        // open removes, never a manifest entry without its bytes.
        let stored = self.store.write_blob(digest, &bytes).and_then(|()| self.store.write_artifact(digest, &artifact));
        if let Err(error) = stored {
            if !state.digests().contains(&digest) {
                // Best effort: what is left is removed by the next open.
                let _ = self.store.remove_blob(digest);
            }
            return Err(error);
        }
        // A failed manifest write leaves the files alone: it may have failed after the rename (in
        // the directory fsync), so that the new manifest names them after all.
        self.commit_state(next)?;
        lock(&self.cache).put(digest, Arc::new(loaded));
        tracing::info!(policy, version, %digest, uploader, "policy version stored");
        Ok(Put::Created(info))
    }

    /// The stored bytes of a version's component (checked against its digest).
    pub fn component(&self, policy: &str, version: &str) -> Result<Vec<u8>, Error> {
        let info = self.version(policy, version)?;
        self.store.read_blob(info.digest, info.size)?.map_err(|_| Error::Corrupt {
            policy: policy.to_owned(),
            version: version.to_owned(),
            digest: info.digest,
            path: self.store.blob_path(info.digest),
        })
    }

    /// Deletes a version that no current plan calls, and its files (unless another version
    /// has the same bytes). History entries that name it stay; rollbacks skip them.
    pub fn delete_version(&self, policy: &str, version: &str) -> Result<VersionInfo, Error> {
        check_name(NameKind::Policy, policy)?;
        check_name(NameKind::Version, version)?;
        let _write = lock(&self.write);
        let state = self.state();
        let key = (policy.to_owned(), version.to_owned());
        let info = state.versions.get(&key).ok_or_else(|| unknown_version(policy, version))?.clone();
        let surfaces = state.active_on(policy, version);
        if !surfaces.is_empty() {
            return Err(Error::VersionActive { policy: policy.to_owned(), version: version.to_owned(), surfaces });
        }
        let mut next = (*state).clone();
        next.versions.remove(&key);
        let next = self.commit_state(next)?;
        if !next.digests().contains(&info.digest) {
            lock(&self.cache).pop(&info.digest);
            // The manifest no longer names the files, so a failure here only leaves garbage that
            // the next open removes.
            if let Err(error) = self.store.remove_blob(info.digest) {
                tracing::warn!(policy, version, "could not remove a deleted version's files: {error}");
            }
        }
        tracing::info!(policy, version, digest = %info.digest, "policy version deleted");
        Ok(info)
    }

    /// Every stored version, by policy name then version.
    pub fn versions(&self) -> Vec<VersionInfo> {
        self.state().versions.values().cloned().collect()
    }

    /// One stored version.
    pub fn version(&self, policy: &str, version: &str) -> Result<VersionInfo, Error> {
        check_name(NameKind::Policy, policy)?;
        check_name(NameKind::Version, version)?;
        self.state()
            .versions
            .get(&(policy.to_owned(), version.to_owned()))
            .cloned()
            .ok_or_else(|| unknown_version(policy, version))
    }

    /// A stored version, loaded: the active one, or from the cache of inactive ones, or from its
    /// artifact (compiling it only if there is no valid artifact for this engine).
    pub fn policy(&self, policy: &str, version: &str) -> Result<Arc<PolicyPre>, Error> {
        let digest = self.version(policy, version)?.digest;
        if let Some(loaded) = self.loaded(digest) {
            return Ok(loaded);
        }
        let _write = lock(&self.write);
        // Deleted while waiting for the lock?
        let info = self.version(policy, version)?;
        let loaded = self.load(&info)?;
        if !self.pinned().contains_key(&info.digest) {
            lock(&self.cache).put(info.digest, loaded.clone());
        }
        Ok(loaded)
    }

    /// Appends a plan revision to a surface's history (see [`NewRevision`]), after loading every
    /// version the plan calls; requests bound after it get the new plan. The surface's latest
    /// revision must still be `new.expected`, and every version the plan names must be stored with
    /// the digest it names.
    pub fn commit(&self, new: NewRevision) -> Result<PlanRevision, Error> {
        check_name(NameKind::Surface, &new.surface)?;
        let _write = lock(&self.write);
        let state = self.state();
        let record = state.surfaces.get(&new.surface);
        let current = record.map_or(0, Surface::revision);
        if current != new.expected {
            return Err(Error::RevisionConflict { surface: new.surface, expected: new.expected, current });
        }
        for (policy, version, digest) in new.plan.versions() {
            match state.versions.get(&(policy.to_owned(), version.to_owned())) {
                Some(info) if info.digest == digest => {}
                _ => return Err(unknown_version(policy, version)),
            }
        }
        let mut loaded = BTreeMap::new();
        for (policy, version, digest) in new.plan.versions() {
            if let std::collections::btree_map::Entry::Vacant(slot) = loaded.entry(digest) {
                slot.insert(self.load(&state.versions[&(policy.to_owned(), version.to_owned())])?);
            }
        }

        let number = match new.revision {
            Some(number) if number <= current => {
                return Err(Error::RevisionConflict {
                    surface: new.surface,
                    expected: number.saturating_sub(1),
                    current,
                });
            }
            Some(number) => number,
            None => current + 1,
        };
        let now = new.at.unwrap_or_else(now);
        let revision = PlanRevision {
            revision: number,
            plan: new.plan,
            actor: new.actor,
            at: now,
            reason: new.reason.clone(),
            restores: new.restores,
            ended: None,
            failed: None,
        };
        let mut next = (*state).clone();
        let history = &mut next
            .surfaces
            .entry(new.surface.clone())
            .or_insert_with(|| Surface { name: new.surface.clone(), history: Vec::new() })
            .history;
        if let Some(last) = history.last_mut().filter(|r| r.ended.is_none()) {
            last.ended = Some(match &new.rolled_back {
                Some((actor, automatic)) => Ending::RolledBack {
                    at: now,
                    actor: actor.clone(),
                    reason: new.reason.clone().unwrap_or_default(),
                    automatic: *automatic,
                },
                None => Ending::Superseded { at: now },
            });
            if let Some((arm, reason)) = new.failed {
                last.failed = Some(Failed { at: now, arm, reason });
            }
        }
        history.push(revision.clone());
        let next = self.commit_state(next)?;
        self.repin(&next, loaded);
        tracing::info!(surface = %new.surface, revision = revision.revision, actor = %revision.actor, "plan revision stored");
        Ok(revision)
    }

    /// The surfaces whose current plan calls `policy@version`.
    pub fn active_on(&self, policy: &str, version: &str) -> Vec<String> {
        self.state().active_on(policy, version)
    }

    /// Whether every version `plan` calls is stored with the digest the plan names.
    pub fn holds(&self, plan: &Plan) -> bool {
        self.state().holds(plan)
    }

    /// Every surface that ever had a plan, with its history, by name.
    pub fn surfaces(&self) -> Vec<Surface> {
        self.state().surfaces.values().cloned().collect()
    }

    /// One surface with its history.
    pub fn surface(&self, surface: &str) -> Result<Surface, Error> {
        check_name(NameKind::Surface, surface)?;
        self.state().surfaces.get(surface).cloned().ok_or_else(|| Error::UnknownSurface { surface: surface.to_owned() })
    }

    fn pinned(&self) -> Arc<BTreeMap<Digest, Arc<PolicyPre>>> {
        read(&self.pinned)
    }

    fn state(&self) -> Arc<State> {
        read(&self.state)
    }

    /// Writes the manifest, then makes `next` the state readers see.
    fn commit_state(&self, next: State) -> Result<Arc<State>, Error> {
        self.store.write_manifest(&next.to_json())?;
        let next = Arc::new(next);
        replace(&self.state, next.clone());
        Ok(next)
    }

    /// Pins the versions the current plans of `state` call (`loaded` holds those of the plan
    /// just committed); versions no longer called move to the cache, so a rollback to them is
    /// instant.
    fn repin(&self, state: &State, mut loaded: BTreeMap<Digest, Arc<PolicyPre>>) {
        let old = self.pinned();
        let mut pinned = BTreeMap::new();
        for surface in state.surfaces.values() {
            let Some(current) = surface.current() else { continue };
            for (_, _, digest) in current.plan.versions() {
                if let Some(policy) = loaded.remove(&digest).or_else(|| old.get(&digest).cloned()) {
                    pinned.insert(digest, policy);
                }
            }
        }
        let mut cache = lock(&self.cache);
        for (digest, policy) in old.iter() {
            if !pinned.contains_key(digest) {
                cache.put(*digest, policy.clone());
            }
        }
        for digest in pinned.keys() {
            cache.pop(digest);
        }
        replace(&self.pinned, Arc::new(pinned));
    }

    /// The loaded version with `digest`, if it is pinned or cached.
    fn loaded(&self, digest: Digest) -> Option<Arc<PolicyPre>> {
        if let Some(pinned) = self.pinned().get(&digest) {
            return Some(pinned.clone());
        }
        lock(&self.cache).get(&digest).cloned()
    }

    /// Loads a stored version. The caller holds `write`.
    fn load(&self, info: &VersionInfo) -> Result<Arc<PolicyPre>, Error> {
        match self.loaded(info.digest) {
            Some(loaded) => Ok(loaded),
            None => Ok(Arc::new(load_stored(&self.runtime, &self.store, info)?)),
        }
    }
}

/// The answer to a second upload of an existing version.
fn same_or_conflict(existing: &VersionInfo, digest: Digest) -> Result<Put, Error> {
    if existing.digest == digest {
        Ok(Put::Unchanged(existing.clone()))
    } else {
        Err(Error::VersionConflict {
            policy: existing.policy.clone(),
            version: existing.version.clone(),
            existing: existing.digest,
            uploaded: digest,
        })
    }
}

/// Loads a stored version from its artifact if this engine has a valid one, otherwise compiles
/// its component and stores the artifact for next time.
fn load_stored(runtime: &Runtime, store: &Store, info: &VersionInfo) -> Result<PolicyPre, Error> {
    let (policy, version) = (info.policy.as_str(), info.version.as_str());
    let load_error = |source| Error::Load { policy: policy.to_owned(), version: version.to_owned(), source };
    if let Some(artifact) = store.read_artifact(info.digest)? {
        match load_artifact(runtime, artifact.code(), info) {
            Ok(loaded) => return Ok(loaded),
            Err(error) => {
                tracing::warn!(policy, version, "stored artifact does not load ({error}); recompiling");
                store.remove_artifact(info.digest)?;
            }
        }
    }
    let bytes = store.read_blob(info.digest, info.size)?.map_err(|_| Error::Corrupt {
        policy: policy.to_owned(),
        version: version.to_owned(),
        digest: info.digest,
        path: store.blob_path(info.digest),
    })?;
    let (loaded, artifact) = runtime.load_and_serialize(&bytes).map_err(load_error)?;
    if let Err(error) = store.write_artifact(info.digest, &artifact) {
        tracing::warn!(policy, version, "could not store the compiled artifact, the next load compiles again: {error}");
    }
    tracing::info!(policy, version, "compiled (no valid artifact for this engine)");
    Ok(loaded)
}

#[expect(unsafe_code, reason = "loading our own compiled artifact, after checking its digest")]
fn load_artifact(runtime: &Runtime, code: &[u8], info: &VersionInfo) -> Result<PolicyPre, crate::runtime::LoadError> {
    // SAFETY: `Runtime::load_artifact` needs bytes this engine produced and that were not altered
    // since. The file lies under this engine's compatibility key, where only `write_artifact` puts
    // the output of this engine's `load_and_serialize`, and `read_artifact` has just checked the
    // code against the SHA-256 stored in its header, which rules out a torn write or disk damage.
    // (It cannot rule out someone with write access to the data directory; they could as well
    // replace the manifest and the components, so the directory must be as protected as the
    // host's binary.)
    let loaded = unsafe { runtime.load_artifact(code, info.digest, info.size) }?;
    // An intact artifact of another component (a file misplaced by hand or by a bug) would serve
    // the wrong policy under this version's name: the metadata it describes must be the one
    // stored at upload.
    if loaded.metadata() != &info.metadata {
        let found = format!("{}@{}", loaded.metadata().name, loaded.metadata().version);
        return Err(crate::runtime::LoadError::Artifact(format!(
            "it describes itself as {found}, not as {}@{} of the manifest",
            info.policy, info.version
        )));
    }
    Ok(loaded)
}
