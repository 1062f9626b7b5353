//! The objects of a `local://` store: one file per object in a flat directory, accessed
//! with plain blocking file operations (one blocking task per call) instead of opendal's
//! Fs service, which spends several blocking tasks per object and never syncs the
//! directory.
//!
//! Durability: [`LocalDir::put`] and [`LocalDir::put_if_absent`] return after the object's
//! bytes and its directory entry are on disk (the file is synced before it is renamed into
//! place, and the directory is synced after), so after a crash or power loss an object is
//! either absent or complete with the content of a successful put. Deletions are not synced:
//! after a power loss a deleted object may reappear (`fsck.s3ql` removes unreferenced
//! objects).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{ObjectInfo, StoreError};

/// The directory of unfinished objects, inside the store directory. It is not a file, so
/// neither it nor a temporary file left in it by a crash is ever listed as an object.
const TMP_DIR: &str = ".tmp";

/// Temporary files created by this process: with the pid, a name no other writer uses.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A store directory and the state shared by all handles of it.
#[derive(Debug)]
pub(super) struct LocalDir {
    dir: PathBuf,
    tmp: PathBuf,
    sync: DirSync,
}

/// Directory fsyncs shared by concurrent writers ("group sync").
///
/// [`DirSync::sync`] returns `Ok` only after an fsync of the directory that started after
/// the call began, so every change to the directory's entries that the caller completed
/// before calling (a rename, a link) is durable. Concurrent callers share fsyncs: while one
/// runs, the others wait, and the next one covers all of them.
#[derive(Debug)]
struct DirSync {
    dir: PathBuf,
    /// Tickets handed out, one per call.
    requested: AtomicU64,
    /// Every ticket up to this one is covered by a completed fsync.
    completed: tokio::sync::Mutex<u64>,
    /// Directory fsyncs run (to check the batching in tests).
    #[cfg(test)]
    fsyncs: AtomicU64,
}

impl DirSync {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            requested: AtomicU64::new(0),
            completed: tokio::sync::Mutex::new(0),
            #[cfg(test)]
            fsyncs: AtomicU64::new(0),
        }
    }

    async fn sync(&self) -> io::Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut completed = self.completed.lock().await;
        if *completed >= ticket {
            return Ok(());
        }
        // Every ticket up to `upto` was taken after its caller's change: the fsync that
        // starts now covers them all.
        let upto = self.requested.load(Ordering::SeqCst);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || File::open(&dir)?.sync_all())
            .await
            .map_err(io::Error::other)??;
        #[cfg(test)]
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        *completed = upto;
        Ok(())
    }
}

/// Runs `f` on the blocking thread pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
}

/// Runs `f` on the blocking thread pool.
async fn blocking_io<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Maps an error of an operation on object `name`.
fn object_err(name: &str, e: io::Error) -> StoreError {
    let what = format!("{name}: {e}");
    match e.kind() {
        io::ErrorKind::NotFound => StoreError::NotFound(name.to_owned()),
        io::ErrorKind::PermissionDenied => StoreError::PermissionDenied(what),
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            StoreError::Unavailable(what)
        }
        _ => StoreError::Backend(what),
    }
}

impl LocalDir {
    /// The store in `dir`, which must exist.
    pub(super) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            tmp: dir.join(TMP_DIR),
            sync: DirSync::new(dir.to_owned()),
        }
    }

    /// The file of object `name`; an error for a name that is not a plain file name of
    /// the directory (or is reserved for the store's own use).
    fn path(&self, name: &str) -> Result<PathBuf, StoreError> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name == TMP_DIR
            || name.contains(['/', '\0'])
        {
            return Err(StoreError::Backend(format!(
                "{name:?} is not a valid object name for a local store"
            )));
        }
        Ok(self.dir.join(name))
    }

    /// Maps an error of a write of object `name`: a missing file there means that the
    /// store directory itself is gone.
    fn write_err(&self, name: &str, e: io::Error) -> StoreError {
        match e.kind() {
            io::ErrorKind::NotFound => StoreError::LocationMissing(self.dir.display().to_string()),
            _ => object_err(name, e),
        }
    }

    /// Writes `data` to a new temporary file and syncs it; returns the file's path. On error
    /// no temporary file is left behind.
    fn write_temp(tmp_dir: &Path, data: &[u8]) -> io::Result<PathBuf> {
        let mut created_dir = false;
        let mut attempts = 0;
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = tmp_dir.join(format!("{}-{n}", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let written = file.write_all(data).and_then(|()| file.sync_data());
                    return match written {
                        Ok(()) => Ok(path),
                        Err(e) => {
                            let _ = fs::remove_file(&path);
                            Err(e)
                        }
                    };
                }
                // Left by a crashed process that had the same pid.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 100 => {
                    attempts += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && !created_dir => {
                    // Not `create_dir_all`: a vanished store directory must stay an error.
                    match fs::create_dir(tmp_dir) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e),
                    }
                    created_dir = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The whole object.
    pub(super) async fn get(&self, name: &str) -> Result<Bytes, StoreError> {
        let path = self.path(name)?;
        let name = name.to_owned();
        blocking(move || {
            fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| object_err(&name, e))
        })
        .await
    }

    /// Bytes `range` of the object, clamped to its end.
    pub(super) async fn get_range(
        &self,
        name: &str,
        range: Range<u64>,
    ) -> Result<Bytes, StoreError> {
        let path = self.path(name)?;
        let name = name.to_owned();
        blocking(move || {
            let read = || -> io::Result<Vec<u8>> {
                let mut file = File::open(&path)?;
                let size = file.metadata()?.len();
                let end = range.end.min(size);
                let Some(len) = end.checked_sub(range.start).filter(|&l| l > 0) else {
                    return Ok(Vec::new());
                };
                file.seek(SeekFrom::Start(range.start))?;
                let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                file.take(len).read_to_end(&mut buf)?;
                Ok(buf)
            };
            read().map(Bytes::from).map_err(|e| object_err(&name, e))
        })
        .await
    }

    /// Stores the object durably (see the module documentation), replacing any previous
    /// one: a reader sees the old or the new content, never a mix.
    pub(super) async fn put(&self, name: &str, data: Bytes) -> Result<(), StoreError> {
        let dest = self.path(name)?;
        let tmp_dir = self.tmp.clone();
        blocking_io(move || {
            let tmp = Self::write_temp(&tmp_dir, &data)?;
            fs::rename(&tmp, &dest).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
        })
        .await
        .map_err(|e| self.write_err(name, e))?;
        self.sync.sync().await.map_err(|e| self.write_err(name, e))
    }

    /// Stores the object durably unless one of that name exists (`false` then, and the
    /// existing object is untouched). Atomic: of concurrent callers, one wins. Uses a hard
    /// link of the synced temporary file; on a filesystem without hard links (FAT, exFAT)
    /// the object is created exclusively and written in place, which a crash can leave
    /// incomplete.
    pub(super) async fn put_if_absent(&self, name: &str, data: Bytes) -> Result<bool, StoreError> {
        let dest = self.path(name)?;
        let tmp_dir = self.tmp.clone();
        let created = blocking_io(move || {
            let tmp = Self::write_temp(&tmp_dir, &data)?;
            let linked = fs::hard_link(&tmp, &dest);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) if no_hard_links(&e) => create_in_place(&dest, &data),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| self.write_err(name, e))?;
        if created {
            self.sync
                .sync()
                .await
                .map_err(|e| self.write_err(name, e))?;
        }
        Ok(created)
    }

    /// Deletes the object (not durably, see the module documentation); a missing object
    /// is no error.
    pub(super) async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let path = self.path(name)?;
        let name = name.to_owned();
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(object_err(&name, e)),
        })
        .await
    }

    /// The object's size, or `None` if there is none.
    pub(super) async fn head(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path(name)?;
        let name = name.to_owned();
        blocking(move || match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(object_err(&name, e)),
        })
        .await
    }

    /// The objects whose names start with `prefix`.
    pub(super) async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let dir = self.dir.clone();
        let prefix = prefix.to_owned();
        blocking(move || list_dir(&dir, &prefix)).await
    }
}

/// Whether a failed `link` means that the filesystem has no hard links.
fn no_hard_links(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP))
}

/// Creates `dest` exclusively with `data`, synced; `false` if it exists. An incomplete
/// file is removed on error.
fn create_in_place(dest: &Path, data: &[u8]) -> io::Result<bool> {
    let mut file = match OpenOptions::new().write(true).create_new(true).open(dest) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    match file.write_all(data).and_then(|()| file.sync_data()) {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = fs::remove_file(dest);
            Err(e)
        }
    }
}

/// The objects of the store `dir` whose names start with `prefix` (its files; the
/// temporary-file directory is no object).
fn list_dir(dir: &Path, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
    let failed = |e: io::Error| StoreError::Backend(format!("{}: {e}", dir.display()));
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => StoreError::LocationMissing(dir.display().to_string()),
        _ => failed(e),
    })?;
    for entry in entries {
        let entry = entry.map_err(failed)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        match entry.metadata() {
            Ok(meta) if meta.is_file() => found.push(ObjectInfo {
                name,
                size: meta.len(),
            }),
            Ok(_) => {}
            // Deleted since the directory was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: Vec<ObjectInfo>) -> Vec<String> {
        let mut v: Vec<String> = list.into_iter().map(|o| o.name).collect();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_puts_land_and_share_directory_syncs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDir::new(dir.path());
        let content = |i: usize| Bytes::from(vec![i as u8; 1000 + i * 37]);
        let puts = (0..64).map(|i| {
            let store = &store;
            async move { store.put(&format!("s3ql_data_{i}"), content(i)).await }
        });
        for r in futures::future::join_all(puts).await {
            r.expect("put");
        }
        for i in 0..64 {
            let got = store.get(&format!("s3ql_data_{i}")).await.expect("get");
            assert_eq!(got, content(i));
        }
        let mut expected: Vec<String> = (0..64).map(|i| format!("s3ql_data_{i}")).collect();
        expected.sort();
        assert_eq!(names(store.list("").await.expect("list")), expected);
        let leftovers = fs::read_dir(dir.path().join(TMP_DIR))
            .expect("tmp dir")
            .count();
        assert_eq!(leftovers, 0);
        let fsyncs = store.sync.fsyncs.load(Ordering::Relaxed);
        assert!((1..=64).contains(&fsyncs), "{fsyncs} directory fsyncs");

        // Replacing keeps one object with the new content.
        store
            .put("s3ql_data_0", Bytes::from_static(b"new"))
            .await
            .expect("put");
        assert_eq!(
            store.get("s3ql_data_0").await.expect("get"),
            Bytes::from_static(b"new")
        );
        assert_eq!(store.list("").await.expect("list").len(), 64);
    }

    #[tokio::test]
    async fn put_if_absent_keeps_the_first_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDir::new(dir.path());
        assert!(store
            .put_if_absent("s3ql_mount_lock", Bytes::from_static(b"first"))
            .await
            .expect("put_if_absent"));
        assert!(!store
            .put_if_absent("s3ql_mount_lock", Bytes::from_static(b"second"))
            .await
            .expect("put_if_absent"));
        assert_eq!(
            store.get("s3ql_mount_lock").await.expect("get"),
            Bytes::from_static(b"first")
        );
        let leftovers = fs::read_dir(dir.path().join(TMP_DIR))
            .expect("tmp dir")
            .count();
        assert_eq!(leftovers, 0);
        assert_eq!(
            names(store.list("s3ql_").await.expect("list")),
            ["s3ql_mount_lock"]
        );
    }

    #[tokio::test]
    async fn reads_deletes_and_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalDir::new(dir.path());
        assert!(matches!(
            store.get("missing").await,
            Err(StoreError::NotFound(n)) if n == "missing"
        ));
        assert!(matches!(
            store.get_range("missing", 0..1).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(store.head("missing").await.expect("head"), None);
        store
            .delete("missing")
            .await
            .expect("delete of a missing object");

        store
            .put("a", Bytes::from_static(b"0123456789"))
            .await
            .expect("put");
        assert_eq!(store.head("a").await.expect("head"), Some(10));
        for (r, want) in [(2..5, &b"234"[..]), (8..100, b"89"), (20..30, b"")] {
            let got = store.get_range("a", r).await.expect("get_range");
            assert_eq!(got, Bytes::from_static(want));
        }
        store.delete("a").await.expect("delete");
        assert_eq!(store.head("a").await.expect("head"), None);

        for bad in ["", ".", "..", ".tmp", "x/y", "../x"] {
            assert!(
                matches!(
                    store.put(bad, Bytes::new()).await,
                    Err(StoreError::Backend(_))
                ),
                "{bad:?}"
            );
        }
        // `.tmp` exists now and is no object.
        assert!(store.list("").await.expect("list").is_empty());
        assert!(store.head(".tmp").await.is_err());

        // A vanished store directory is reported as such, not recreated.
        let gone = dir.path().join("gone");
        let store = LocalDir::new(&gone);
        assert!(matches!(
            store.put("a", Bytes::new()).await,
            Err(StoreError::LocationMissing(_))
        ));
        assert!(!gone.exists());
    }
}
