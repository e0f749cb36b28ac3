//! The policy registry: stored policy versions, their activation on surfaces, and the loaded
//! versions that serve traffic. The admin API and `relish serve` sit on top of it.
//!
//! - **Versions are immutable.** [`Registry::put_version`] checks the component fully (the
//!   runtime loads it: a component of the `ranker` world, allowed imports, compiles, answers its
//!   metadata call) before anything is stored. The name and version it is uploaded as must be the
//!   ones its metadata declares: responses and policy log lines name a version by its metadata,
//!   so a registry that allowed `popularity@2.0` to say it is `0.1.0` would have every response
//!   and log line contradict the admin API. The same bytes again is a no-op; other bytes under an
//!   existing version are refused.
//! - **Activation is per surface, with history.** [`Registry::activate`] puts a version on a
//!   surface with parameters; [`Registry::rollback`] returns to the previous activation. An
//!   automatic rollback marks the version it leaves, which is then never activated automatically
//!   again.
//! - **Crash-safe storage.** Component bytes are stored by digest, compiled artifacts by digest
//!   under the engine's compatibility key, and one manifest names every version and activation.
//!   Every file is written with [`write_atomically`], and a change writes the component's files
//!   first and the manifest last, so after a crash at any point each version is either fully
//!   present or absent, and every activation names a present version. [`Registry::open`]
//!   removes what a crash left behind.
//! - **Memory.** Active versions stay loaded; others are loaded on demand into an LRU cache. A
//!   load prefers the stored artifact (its digest checked first) over compiling, so a restart
//!   compiles nothing.
//!
//! The data directory:
//!
//! ```text
//! LOCK                                   locked (flock) while a registry has the directory open
//! manifest.json                          every version and activation: the single source of truth
//! blobs/sha256/<digest>.wasm             component bytes, named by their SHA-256 (hex)
//! artifacts/<engine key>/<digest>.cwasm  the component compiled by engines with that
//!                                        compatibility key: a magic number, the SHA-256 of the
//!                                        compiled code, the code
//! **/.tmp-*                              a write in progress, or interrupted by a crash
//! ```
//!
//! The registry is shared as `Arc<Registry>`. Reading the active set ([`Registry::active`]) is a
//! read lock and a reference count, cheap enough for every request. Mutations do blocking file
//! I/O and may compile (seconds): call them from `spawn_blocking`. They are serialised by one
//! lock, except that an upload compiles before taking it, so a slow upload does not hold up an
//! activation or a rollback.

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
pub use manifest::{Activation, AutoRollback, Ending, Surface, VersionInfo};
use manifest::{State, key};
use store::Store;
pub use store::write_atomically;

use crate::runtime::{Digest, PolicyPre, Runtime, is_identifier};

/// How a registry is sized.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The largest component [`Registry::put_version`] accepts, in bytes. The bundled policies are
    /// about 120 KB; the default of 16 MiB leaves room for policies with embedded tables.
    pub max_component_bytes: usize,
    /// How many inactive versions stay loaded. Active versions are always loaded and do not count.
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

/// A surface's current activation with its loaded policy: what the server routes requests to.
#[derive(Debug, Clone)]
pub struct Active {
    /// The loaded version. Requests in flight keep their own `Arc`, so a switch never affects them.
    pub policy: Arc<PolicyPre>,
    /// The activation (policy, version, parameters, who and when).
    pub activation: Activation,
}

/// Every surface with a current activation, by surface name.
pub type ActiveSet = BTreeMap<String, Active>;

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
    /// The loaded current activations. Replaced whole, after `state`, by a mutation.
    active: RwLock<Arc<ActiveSet>>,
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
    /// Opens the registry in `dir` (created if missing), restoring every version and activation,
    /// and loads the active versions from their stored artifacts (compiling only those without a
    /// valid artifact for this engine).
    ///
    /// What a crash can leave behind is cleaned up: temporary files, component files and artifacts
    /// no version refers to, artifacts of other engines. A version whose component file is
    /// missing or corrupt (which the write order rules out, short of disk damage or tampering) is
    /// dropped with an error log, and a surface it was active on returns to its previous valid
    /// activation. The directory is locked against other processes while the registry lives.
    ///
    /// Fails if the manifest is unreadable (rather than forgetting every version), or if an
    /// active version cannot be loaded by this host (rather than serving something else than the
    /// admin API shows; after an upgrade, this keeps the new host from turning ready).
    pub fn open(dir: &Path, runtime: Arc<Runtime>, options: RegistryOptions) -> Result<Registry, Error> {
        let store = Store::open(dir, runtime.artifact_key())?;
        let now = now();
        let (mut state, mut repairs, new) = match store.read_manifest()? {
            Some(bytes) => {
                let (state, repairs) = State::from_json(&bytes, now)
                    .map_err(|detail| Error::Manifest { path: store.manifest_path(), detail })?;
                (state, repairs, false)
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

        let mut active = ActiveSet::new();
        for surface in state.surfaces.values() {
            let Some(activation) = surface.current() else { continue };
            let info = &state.versions[&key(activation)];
            let policy = match active.values().find(|a: &&Active| a.policy.digest() == info.digest) {
                Some(same) => same.policy.clone(),
                None => Arc::new(load_stored(&runtime, &store, info).inspect_err(|error| {
                    tracing::error!(surface = %surface.name, "the active version does not load: {error}");
                })?),
            };
            active.insert(surface.name.clone(), Active { policy, activation: activation.clone() });
        }
        tracing::info!(
            dir = %dir.display(),
            versions = state.versions.len(),
            active = active.len(),
            "registry opened"
        );
        Ok(Registry {
            runtime,
            store,
            max_component_bytes: options.max_component_bytes,
            write: Mutex::new(()),
            state: RwLock::new(Arc::new(state)),
            active: RwLock::new(Arc::new(active)),
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
        let key = (policy.to_owned(), version.to_owned());
        if let Some(existing) = self.state().versions.get(&key) {
            return same_or_conflict(existing, digest);
        }

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

        let _write = lock(&self.write);
        let state = self.state();
        if let Some(existing) = state.versions.get(&key) {
            return same_or_conflict(existing, digest);
        }
        let info = VersionInfo {
            policy: policy.to_owned(),
            version: version.to_owned(),
            digest,
            size: bytes.len(),
            uploaded_at: now(),
            uploaded_by: uploader.to_owned(),
            metadata: metadata.clone(),
            auto_rollback: None,
        };
        let mut next = (*state).clone();
        next.versions.insert(key, info.clone());
        // Bytes and artifact first, manifest last: a crash in between leaves files that the next
        // open removes, never a manifest entry without its bytes.
        let stored = self.store.write_blob(digest, bytes).and_then(|()| self.store.write_artifact(digest, &artifact));
        if let Err(error) = stored {
            if !state.digests().contains(&digest) {
                // Best effort: what is left is removed by the next open.
                let _ = self.store.remove_blob(digest);
            }
            return Err(error);
        }
        // A failed manifest write leaves the files alone: it may have failed after the rename (in
        // the directory fsync), so that the new manifest names them after all.
        self.commit(next)?;
        lock(&self.cache).put(digest, Arc::new(loaded));
        tracing::info!(policy, version, %digest, uploader, "policy version stored");
        Ok(Put::Created(info))
    }

    /// Deletes a version that is not active on any surface, and its files (unless another version
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
        let next = self.commit(next)?;
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
        if !self.active().values().any(|a| a.policy.digest() == info.digest) {
            lock(&self.cache).put(info.digest, loaded.clone());
        }
        Ok(loaded)
    }

    /// Activates `policy@version` on `surface` with `params`, on behalf of `actor`.
    ///
    /// The surface must be one the policy's metadata lists, and every parameter one it declares.
    /// The version is loaded and the manifest written before this returns; requests that start
    /// after it get the new version. Activating what is already current (same version and
    /// parameters) changes nothing and returns the current activation.
    pub fn activate(
        &self,
        surface: &str,
        policy: &str,
        version: &str,
        params: BTreeMap<String, String>,
        actor: &str,
    ) -> Result<Activation, Error> {
        check_name(NameKind::Surface, surface)?;
        check_name(NameKind::Policy, policy)?;
        check_name(NameKind::Version, version)?;
        let _write = lock(&self.write);
        let state = self.state();
        let info = state
            .versions
            .get(&(policy.to_owned(), version.to_owned()))
            .ok_or_else(|| unknown_version(policy, version))?;
        let metadata = &info.metadata;
        if !metadata.supports(surface) {
            return Err(Error::UnsupportedSurface {
                policy: policy.to_owned(),
                version: version.to_owned(),
                surface: surface.to_owned(),
                supported: metadata.surfaces.clone(),
            });
        }
        if let Some(param) = params.keys().find(|k| !metadata.params.iter().any(|p| &&p.name == k)) {
            return Err(Error::UnknownParam {
                policy: policy.to_owned(),
                version: version.to_owned(),
                param: param.clone(),
                known: metadata.params.iter().map(|p| p.name.clone()).collect(),
            });
        }
        let current = state.surfaces.get(surface).and_then(Surface::current);
        if let Some(current) = current
            && (current.policy.as_str(), current.version.as_str(), current.digest) == (policy, version, info.digest)
            && current.params == params
        {
            return Ok(current.clone());
        }

        let loaded = self.load(info)?;
        let now = now();
        let activation = Activation {
            policy: policy.to_owned(),
            version: version.to_owned(),
            digest: info.digest,
            params,
            actor: actor.to_owned(),
            activated_at: now,
            restores: None,
            ended: None,
        };
        let mut next = (*state).clone();
        let history = &mut next
            .surfaces
            .entry(surface.to_owned())
            .or_insert_with(|| Surface { name: surface.to_owned(), history: Vec::new() })
            .history;
        if let Some(last) = history.last_mut().filter(|a| a.ended.is_none()) {
            last.ended = Some(Ending::Superseded { at: now });
        }
        history.push(activation.clone());
        self.commit(next)?;
        self.publish(surface, Active { policy: loaded, activation: activation.clone() });
        tracing::info!(surface, policy, version, actor, "policy version activated");
        Ok(activation)
    }

    /// Returns `surface` to the activation before its current one, skipping activations whose
    /// version was deleted since, and returns the new current activation. Successive rollbacks
    /// walk back through the history (see [`Activation::restores`]): with `A B C`, to `B`, then
    /// to `A`, then [`Error::NoRollbackTarget`].
    ///
    /// An `automatic` rollback (by the host, on errors) also marks the version it leaves
    /// ([`VersionInfo::auto_rollback`]), and never returns to a version so marked.
    pub fn rollback(&self, surface: &str, actor: &str, reason: &str, automatic: bool) -> Result<Activation, Error> {
        check_name(NameKind::Surface, surface)?;
        let _write = lock(&self.write);
        let state = self.state();
        let record =
            state.surfaces.get(surface).ok_or_else(|| Error::UnknownSurface { surface: surface.to_owned() })?;
        let no_target = || Error::NoRollbackTarget { surface: surface.to_owned(), automatic };
        let current = record.current().ok_or_else(no_target)?;
        let target = record
            .rollback_target(|a| {
                state
                    .versions
                    .get(&key(a))
                    .is_some_and(|v| v.digest == a.digest && !(automatic && v.auto_rollback.is_some()))
            })
            .ok_or_else(no_target)?;
        let restored = &record.history[target];
        let loaded = self.load(&state.versions[&key(restored)])?;

        let now = now();
        let activation = Activation {
            actor: actor.to_owned(),
            activated_at: now,
            restores: Some(target),
            ended: None,
            ..restored.clone()
        };
        let mut next = (*state).clone();
        if automatic && let Some(left) = next.versions.get_mut(&key(current)) {
            left.auto_rollback = Some(AutoRollback { surface: surface.to_owned(), at: now, reason: reason.to_owned() });
        }
        let history = &mut next.surfaces.get_mut(surface).expect("the surface exists").history;
        let ending = Ending::RolledBack { at: now, actor: actor.to_owned(), reason: reason.to_owned(), automatic };
        history.last_mut().expect("a current activation").ended = Some(ending);
        history.push(activation.clone());
        self.commit(next)?;
        self.publish(surface, Active { policy: loaded, activation: activation.clone() });
        tracing::info!(
            surface,
            from = %format!("{}@{}", current.policy, current.version),
            to = %format!("{}@{}", activation.policy, activation.version),
            actor,
            reason,
            automatic,
            "surface rolled back"
        );
        Ok(activation)
    }

    /// Every surface that was ever activated, with its history, by name.
    pub fn surfaces(&self) -> Vec<Surface> {
        self.state().surfaces.values().cloned().collect()
    }

    /// One surface with its history.
    pub fn surface(&self, surface: &str) -> Result<Surface, Error> {
        check_name(NameKind::Surface, surface)?;
        self.state().surfaces.get(surface).cloned().ok_or_else(|| Error::UnknownSurface { surface: surface.to_owned() })
    }

    /// The current activations with their loaded versions: what requests are routed by. Cheap (a
    /// read lock and a reference count); a request should take it once and keep what it got.
    pub fn active(&self) -> Arc<ActiveSet> {
        read(&self.active)
    }

    fn state(&self) -> Arc<State> {
        read(&self.state)
    }

    /// Writes the manifest, then makes `next` the state readers see.
    fn commit(&self, next: State) -> Result<Arc<State>, Error> {
        self.store.write_manifest(&next.to_json())?;
        let next = Arc::new(next);
        replace(&self.state, next.clone());
        Ok(next)
    }

    /// Makes `active` current on `surface` for readers. The version it replaces moves to the cache
    /// (a rollback to it is then instant), unless it is still active elsewhere.
    fn publish(&self, surface: &str, active: Active) {
        let mut set = (*self.active()).clone();
        let digest = active.policy.digest();
        let replaced = set.insert(surface.to_owned(), active);
        let mut cache = lock(&self.cache);
        cache.pop(&digest);
        if let Some(old) = replaced
            && !set.values().any(|a| a.policy.digest() == old.policy.digest())
        {
            cache.put(old.policy.digest(), old.policy);
        }
        replace(&self.active, Arc::new(set));
    }

    /// The loaded version with `digest`, if it is active or cached.
    fn loaded(&self, digest: Digest) -> Option<Arc<PolicyPre>> {
        if let Some(active) = self.active().values().find(|a| a.policy.digest() == digest) {
            return Some(active.policy.clone());
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
