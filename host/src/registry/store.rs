//! The data directory (its layout is in the module documentation of [`super`]): durable writes,
//! component blobs, compiled artifacts, the manifest file, and the clean-up of what a crash left
//! behind.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::Error;
use crate::runtime::Digest;

/// The manifest's file name.
pub(super) const MANIFEST: &str = "manifest.json";
/// The lock file's name.
const LOCK: &str = "LOCK";
/// Every temporary file starts with this, so that a crash's leftovers are recognised on open.
const TMP_PREFIX: &str = ".tmp-";
/// The first bytes of an artifact file, followed by the SHA-256 of the rest.
const ARTIFACT_MAGIC: &[u8; 8] = b"RLSHART1";
const ARTIFACT_HEADER: usize = ARTIFACT_MAGIC.len() + 32;

/// Writes `bytes` to `path` so that after a crash at any moment `path` holds either its old
/// contents or all of `bytes`, never a mix or a truncated file.
///
/// The bytes go to a temporary file in the same directory (a rename is atomic only within one
/// file system), which is fsynced before the rename (otherwise the rename may reach the disk
/// before the data, leaving an empty file under the final name); then the directory is fsynced,
/// so that the rename itself survives a power loss. A failed write removes its temporary file; a
/// crash leaves one behind, named `.tmp-*`, which [`Registry::open`](super::Registry::open)
/// removes.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent(path);
    let name = path.file_name().ok_or_else(|| io::Error::other("the path names no file"))?;
    // Unique per process and per write, so concurrent writers of one path never share a temp file.
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{TMP_PREFIX}{}-{unique}-{}", std::process::id(), name.to_string_lossy()));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Makes a directory's entries (a rename, a new or removed file) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, each made durable in its own parent.
fn create_dir_durably(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    let up = parent(dir);
    create_dir_durably(up)?;
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("creating the directory", dir)(e)),
    }
    sync_dir(up).map_err(Error::io("syncing the directory", up))
}

/// Removes a file and makes the removal durable; a file already gone is fine.
fn remove_durably(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)).map_err(Error::io("syncing the directory", parent(path))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", path)(e)),
    }
}

/// Reads a file, `None` if it does not exist.
fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path)(e)),
    }
}

/// A component's stored bytes are absent or are not the bytes they are named after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlobProblem {
    /// No file.
    Missing,
    /// Another size or digest.
    Mismatch,
}

impl std::fmt::Display for BlobProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlobProblem::Missing => "its component file is missing",
            BlobProblem::Mismatch => "its component file does not match its digest",
        })
    }
}

/// A verified artifact file: header checked, code ready for `Runtime::load_artifact`.
pub(super) struct Artifact(Vec<u8>);

impl Artifact {
    /// The compiled code.
    pub(super) fn code(&self) -> &[u8] {
        &self.0[ARTIFACT_HEADER..]
    }
}

/// An open data directory, locked against other processes for as long as this lives.
#[derive(Debug)]
pub(super) struct Store {
    dir: PathBuf,
    engine_key: String,
    /// Held for its lock, released when dropped.
    _lock: File,
}

impl Store {
    /// Creates the directory layout if needed and takes the directory's lock.
    pub(super) fn open(dir: &Path, engine_key: String) -> Result<Store, Error> {
        create_dir_durably(dir)?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(Error::io("opening", &lock_path))?;
        // An advisory lock (flock): two hosts writing one manifest would each overwrite the
        // other's changes. The kernel releases it when the process dies, so a crash leaves no
        // stale lock behind.
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => Error::Locked { dir: dir.to_path_buf() },
            fs::TryLockError::Error(e) => Error::io("locking", &lock_path)(e),
        })?;
        let store = Store { dir: dir.to_path_buf(), engine_key, _lock: lock };
        create_dir_durably(&store.blob_dir())?;
        create_dir_durably(&store.artifact_dir())?;
        Ok(store)
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    fn blob_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    fn artifacts_root(&self) -> PathBuf {
        self.dir.join("artifacts")
    }

    fn artifact_dir(&self) -> PathBuf {
        self.artifacts_root().join(&self.engine_key)
    }

    pub(super) fn blob_path(&self, digest: Digest) -> PathBuf {
        self.blob_dir().join(format!("{}.wasm", digest.hex()))
    }

    pub(super) fn artifact_path(&self, digest: Digest) -> PathBuf {
        self.artifact_dir().join(format!("{}.cwasm", digest.hex()))
    }

    /// The manifest's bytes, `None` if there is no manifest yet.
    pub(super) fn read_manifest(&self) -> Result<Option<Vec<u8>>, Error> {
        read_if_exists(&self.manifest_path())
    }

    /// Replaces the manifest atomically and durably.
    pub(super) fn write_manifest(&self, bytes: &[u8]) -> Result<(), Error> {
        let path = self.manifest_path();
        write_atomically(&path, bytes).map_err(Error::io("writing", path))
    }

    /// Stores a component's bytes under their digest (durably), unless they are already there.
    pub(super) fn write_blob(&self, digest: Digest, bytes: &[u8]) -> Result<(), Error> {
        if self.read_blob(digest, bytes.len())?.is_ok() {
            return Ok(());
        }
        let path = self.blob_path(digest);
        write_atomically(&path, bytes).map_err(Error::io("writing", path))
    }

    /// A component's bytes, checked against the size and digest they are stored under.
    pub(super) fn read_blob(&self, digest: Digest, size: usize) -> Result<Result<Vec<u8>, BlobProblem>, Error> {
        Ok(match read_if_exists(&self.blob_path(digest))? {
            None => Err(BlobProblem::Missing),
            Some(bytes) if bytes.len() == size && Digest::of(&bytes) == digest => Ok(bytes),
            Some(_) => Err(BlobProblem::Mismatch),
        })
    }

    /// Stores the compiled artifact of the component `digest` for this engine, durably, behind a
    /// header holding the artifact's own digest.
    pub(super) fn write_artifact(&self, digest: Digest, code: &[u8]) -> Result<(), Error> {
        let mut file = Vec::with_capacity(ARTIFACT_HEADER + code.len());
        file.extend_from_slice(ARTIFACT_MAGIC);
        file.extend_from_slice(&Digest::of(code).0);
        file.extend_from_slice(code);
        let path = self.artifact_path(digest);
        write_atomically(&path, &file).map_err(Error::io("writing", path))
    }

    /// The compiled artifact of the component `digest` for this engine, if there is one whose
    /// bytes match the digest in its header. One that does not match is removed (with a warning),
    /// so the caller recompiles and stores a good one.
    pub(super) fn read_artifact(&self, digest: Digest) -> Result<Option<Artifact>, Error> {
        let path = self.artifact_path(digest);
        let Some(file) = read_if_exists(&path)? else { return Ok(None) };
        let valid = file.len() >= ARTIFACT_HEADER
            && file.starts_with(ARTIFACT_MAGIC)
            && Digest::of(&file[ARTIFACT_HEADER..]).0[..] == file[ARTIFACT_MAGIC.len()..ARTIFACT_HEADER];
        if valid {
            return Ok(Some(Artifact(file)));
        }
        tracing::warn!(
            path = %path.display(),
            "compiled artifact does not match its digest (corrupt or truncated); removing it and recompiling"
        );
        self.remove_artifact(digest)?;
        Ok(None)
    }

    /// Removes the artifact of component `digest` for this engine.
    pub(super) fn remove_artifact(&self, digest: Digest) -> Result<(), Error> {
        remove_durably(&self.artifact_path(digest))
    }

    /// Removes a component's bytes and its artifact.
    pub(super) fn remove_blob(&self, digest: Digest) -> Result<(), Error> {
        self.remove_artifact(digest)?;
        remove_durably(&self.blob_path(digest))
    }

    /// Whether any component bytes are stored.
    pub(super) fn has_blobs(&self) -> Result<bool, Error> {
        Ok(!digest_files(&self.blob_dir(), "wasm")?.is_empty())
    }

    /// Removes what no manifest entry accounts for: temporary files of interrupted writes,
    /// components whose digest no version has (a crash between storing the bytes and writing the
    /// manifest, or between writing the manifest and removing a deleted version's bytes), their
    /// artifacts, and artifacts of other engines (left by a host upgrade; never loadable here).
    pub(super) fn clean(&self, referenced: &BTreeSet<Digest>) -> Result<(), Error> {
        remove_temporaries(&self.dir)?;

        let blobs = self.blob_dir();
        for (path, digest) in digest_files(&blobs, "wasm")? {
            if !referenced.contains(&digest) {
                tracing::warn!(path = %path.display(), "removing a component no version refers to");
                remove_durably(&path)?;
            }
        }

        let root = self.artifacts_root();
        for entry in fs::read_dir(&root).map_err(Error::io("listing", &root))? {
            let entry = entry.map_err(Error::io("listing", &root))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy() == self.engine_key.as_str() || !path.is_dir() {
                continue;
            }
            tracing::info!(path = %path.display(), "removing compiled artifacts of another engine (a host upgrade)");
            fs::remove_dir_all(&path).map_err(Error::io("removing", &path))?;
            sync_dir(&root).map_err(Error::io("syncing the directory", &root))?;
        }
        for (path, digest) in digest_files(&self.artifact_dir(), "cwasm")? {
            if !referenced.contains(&digest) {
                tracing::info!(path = %path.display(), "removing an artifact no version refers to");
                remove_durably(&path)?;
            }
        }
        Ok(())
    }
}

/// Removes `.tmp-*` files in `dir` and its subdirectories.
fn remove_temporaries(dir: &Path) -> Result<(), Error> {
    for entry in fs::read_dir(dir).map_err(Error::io("listing", dir))? {
        let entry = entry.map_err(Error::io("listing", dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(Error::io("inspecting", &path))?;
        if file_type.is_dir() {
            remove_temporaries(&path)?;
        } else if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            tracing::info!(path = %path.display(), "removing the temporary file of an interrupted write");
            remove_durably(&path)?;
        }
    }
    Ok(())
}

/// The `<digest hex>.<extension>` files of `dir`. Files named otherwise are not ours to judge and
/// are left alone.
fn digest_files(dir: &Path, extension: &str) -> Result<Vec<(PathBuf, Digest)>, Error> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("listing", dir))? {
        let path = entry.map_err(Error::io("listing", dir))?.path();
        if path.extension().is_some_and(|e| e == extension)
            && let Some(digest) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok())
        {
            files.push((path, digest));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Store {
        Store::open(dir, "key".to_owned()).unwrap()
    }

    #[test]
    fn write_atomically_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["file"]);
    }

    #[test]
    fn a_failed_write_removes_its_temporary_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        write_atomically(&path, b"old").unwrap();
        // Renaming a file over a non-empty directory fails after the temporary file was written.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"").unwrap();
        assert!(write_atomically(&blocked, b"new").is_err());
        let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["blocked", "file"]);
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn a_second_open_of_a_locked_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = store(dir.path());
        let error = Store::open(dir.path(), "key".to_owned()).unwrap_err();
        assert!(matches!(error, Error::Locked { .. }), "{error}");
        drop(first);
        store(dir.path());
    }

    #[test]
    fn an_artifact_is_returned_only_while_its_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let digest = Digest::of(b"component");
        assert!(store.read_artifact(digest).unwrap().is_none());
        store.write_artifact(digest, b"machine code").unwrap();
        assert_eq!(store.read_artifact(digest).unwrap().unwrap().code(), b"machine code");

        let path = store.artifact_path(digest);
        let mut file = fs::read(&path).unwrap();
        *file.last_mut().unwrap() ^= 1;
        fs::write(&path, &file).unwrap();
        assert!(store.read_artifact(digest).unwrap().is_none());
        assert!(!path.exists(), "a corrupt artifact is removed");

        fs::write(&path, b"short").unwrap();
        assert!(store.read_artifact(digest).unwrap().is_none());
    }

    #[test]
    fn a_blob_is_checked_against_its_digest_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let digest = Digest::of(b"bytes");
        assert_eq!(store.read_blob(digest, 5).unwrap(), Err(BlobProblem::Missing));
        store.write_blob(digest, b"bytes").unwrap();
        assert_eq!(store.read_blob(digest, 5).unwrap().unwrap(), b"bytes");
        assert_eq!(store.read_blob(digest, 6).unwrap(), Err(BlobProblem::Mismatch));
        fs::write(store.blob_path(digest), b"bytez").unwrap();
        assert_eq!(store.read_blob(digest, 5).unwrap(), Err(BlobProblem::Mismatch));
        store.write_blob(digest, b"bytes").unwrap();
        assert_eq!(store.read_blob(digest, 5).unwrap().unwrap(), b"bytes", "a damaged blob is rewritten");
    }

    #[test]
    fn clean_removes_temporaries_orphans_and_other_engines_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (kept, orphan) = (Digest::of(b"kept"), Digest::of(b"orphan"));
        for (digest, bytes) in [(kept, &b"kept"[..]), (orphan, b"orphan")] {
            store.write_blob(digest, bytes).unwrap();
            store.write_artifact(digest, bytes).unwrap();
        }
        let other_engine = dir.path().join("artifacts/old-key");
        fs::create_dir_all(&other_engine).unwrap();
        fs::write(other_engine.join(format!("{}.cwasm", kept.hex())), b"old").unwrap();
        let temporaries = [
            dir.path().join(".tmp-1-0-manifest.json"),
            store.blob_dir().join(".tmp-1-1-x.wasm"),
            store.artifact_dir().join(".tmp-2"),
        ];
        for path in &temporaries {
            fs::write(path, b"partial").unwrap();
        }
        let unrelated = store.blob_dir().join("README");
        fs::write(&unrelated, b"not ours").unwrap();

        store.clean(&BTreeSet::from([kept])).unwrap();

        assert!(store.read_blob(kept, 4).unwrap().is_ok() && store.read_artifact(kept).unwrap().is_some());
        assert!(!store.blob_path(orphan).exists() && !store.artifact_path(orphan).exists());
        assert!(!other_engine.exists());
        assert!(temporaries.iter().all(|p| !p.exists()));
        assert!(unrelated.exists(), "files the registry did not name are left alone");
    }
}
