//! Administration of a filesystem that is not mounted (`s3qladm`): deleting everything,
//! restoring an older metadata generation, compacting the database and checking the layout
//! revision. The functions that change the filesystem hold the mount lock while they work,
//! so no mount, fsck or other administration runs at the same time.

use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;

use crate::error::FsError;
use crate::format::Codec;
use crate::fs::{check_revision, load_metadata, prepare_cache_dir, OpenError};
use crate::meta::{upload, Db};
use crate::mount_lock::{utc_time, LockError, MountLock};
use crate::params::{FsParams, LocalPaths, PARAMS_OBJECT};
use crate::storage::{ObjectStore, StoreError};

/// Listing passes `clear` makes before it gives up on objects that keep being listed.
const CLEAR_PASSES: usize = 3;

/// Why an administration command failed; [`AdminError::exit_code`] is S3QL's code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `s3ql_params` is missing although other s3ql objects exist.
    #[error("the storage holds s3ql objects but no {PARAMS_OBJECT}: an older layout or a damaged filesystem, which s3ql-rs cannot convert")]
    NoParams,
    /// The storage holds a filesystem of S3QL itself (Python), whose layout differs.
    #[error("the storage holds a filesystem of S3QL (Python), which s3ql-rs cannot read or convert; keep using S3QL for it, or copy its files into a new s3ql-rs filesystem")]
    S3qlLayout,
    /// `s3ql_params` decodes but names no layout revision.
    #[error("{PARAMS_OBJECT} names no layout revision ({0}): it was not written by s3ql-rs")]
    UnknownParams(String),
    /// Objects are still listed after every pass of `clear`.
    #[error("{0} objects are still listed after deleting; run the command again")]
    ObjectsRemain(usize),
    /// Opening the filesystem failed (storage, passphrase, revision, lock, unclean).
    #[error(transparent)]
    Open(#[from] OpenError),
}

impl AdminError {
    /// S3QL's exit code: 32 for a missing or unreadable parameters object (as for a
    /// revision too old), 1 for leftover objects, else the open error's (30 unclean,
    /// 31 locked, 32/33 revision, 17 passphrase, 18 no filesystem, 14-16/19 storage).
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::NoParams | AdminError::S3qlLayout | AdminError::UnknownParams(_) => 32,
            AdminError::ObjectsRemain(_) => 1,
            AdminError::Open(e) => e.exit_code(),
        }
    }
}

impl From<FsError> for AdminError {
    fn from(e: FsError) -> Self {
        AdminError::Open(e.into())
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Open(e.into())
    }
}

impl From<LockError> for AdminError {
    fn from(e: LockError) -> Self {
        AdminError::Open(e.into())
    }
}

impl From<std::io::Error> for AdminError {
    fn from(e: std::io::Error) -> Self {
        FsError::from(e).into()
    }
}

/// Releases `lock`, then returns `result` (or the release's failure after a success).
async fn unlock<T>(
    store: &dyn ObjectStore,
    lock: MountLock,
    result: Result<T, AdminError>,
) -> Result<T, AdminError> {
    let released = lock.release(store).await;
    let value = result?;
    released?;
    Ok(value)
}

/// Deletes the local files of the filesystem at `cache_path` (database, parameters, cached
/// blocks), then every object in `store`, up to `max_connections` at a time, whatever its
/// name (S3QL's `clear` also deletes objects that are not S3QL's). `progress` gets the
/// number of objects deleted so far after each one. Returns that number once a listing is
/// empty; [`AdminError::ObjectsRemain`] if objects are still listed after three passes.
pub async fn clear(
    store: &dyn ObjectStore,
    cache_path: &Path,
    max_connections: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64, AdminError> {
    LocalPaths::new(cache_path).remove_all()?;
    let mut deleted = 0;
    for _ in 0..CLEAR_PASSES {
        let objects = store.list("").await?;
        if objects.is_empty() {
            return Ok(deleted);
        }
        deleted = futures::stream::iter(objects)
            .map(|o| async move { store.delete(&o.name).await })
            .buffer_unordered(max_connections.max(1))
            .try_fold(deleted, |n, ()| {
                progress(n + 1);
                async move { Ok(n + 1) }
            })
            .await?;
    }
    match store.list("").await?.len() {
        0 => Ok(deleted),
        left => Err(AdminError::ObjectsRemain(left)),
    }
}

/// One metadata generation stored in the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Its number (the metadata sequence number in the backend: +1 per upload).
    pub number: u64,
    /// When it was uploaded, seconds since the epoch (`None` if unknown).
    pub created: Option<i64>,
    /// It is the generation `s3ql_params` names.
    pub current: bool,
    /// Why its manifest cannot be read, if it cannot (restoring it would fail).
    pub problem: Option<String>,
}

impl Generation {
    /// The upload time as `YYYY-MM-DD HH:MM:SS UTC`, or `unknown`.
    pub fn created_utc(&self) -> String {
        self.created.map_or_else(|| "unknown".into(), utc_time)
    }
}

/// The metadata generations in `store`, oldest first. Reads only; works when the current
/// parameters cannot be read (then no generation is marked current).
pub async fn generations(
    store: &dyn ObjectStore,
    codec: &Codec,
) -> Result<Vec<Generation>, AdminError> {
    let current = FsParams::load_remote(store, codec)
        .await
        .ok()
        .flatten()
        .map(|p| p.metadata_generation);
    let mut found = Vec::new();
    for number in upload::list_generations(store).await?.into_iter().rev() {
        let (created, problem) = match upload::load_manifest(store, codec, number).await {
            Ok(m) => ((m.created > 0).then_some(m.created), None),
            Err(e) => (None, Some(e.to_string())),
        };
        found.push(Generation {
            number,
            created,
            current: current == Some(number),
            problem,
        });
    }
    Ok(found)
}

/// What [`restore_metadata`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The sequence number given to the restored metadata (above every existing one).
    pub seq_no: u64,
    /// Where the cache directory was moved, if it held blocks (they belong to the
    /// replaced database, not to the restored one).
    pub cache_moved_to: Option<PathBuf>,
}

/// Replaces the local database of the filesystem at `cache_path` with metadata generation
/// `generation` and marks it as needing fsck with a sequence number above the backend's and
/// the local one: mount.s3ql and s3ql_verify refuse it (exit 30) until fsck.s3ql has
/// checked it and uploaded it as the newest generation. The backend is not changed (besides
/// taking and releasing the mount lock: refused with exit 31 while it is held). A failed
/// download leaves the local files as they were.
pub async fn restore_metadata(
    store: &dyn ObjectStore,
    cache_path: &Path,
    codec: &Codec,
    generation: u64,
) -> Result<Restored, AdminError> {
    let paths = LocalPaths::new(cache_path);
    prepare_cache_dir(&paths)?;
    let remote = FsParams::load_remote(store, codec)
        .await?
        .ok_or(OpenError::NoFilesystem)?;
    check_revision(remote.revision)?;
    let lock = MountLock::acquire(store).await?;
    let result = restore_locked(store, &paths, codec, remote, generation).await;
    unlock(store, lock, result).await
}

async fn restore_locked(
    store: &dyn ObjectStore,
    paths: &LocalPaths,
    codec: &Codec,
    remote: FsParams,
    generation: u64,
) -> Result<Restored, AdminError> {
    let mut staged = paths.db.as_os_str().to_owned();
    staged.push(".restore");
    let staged = PathBuf::from(staged);
    upload::download(store, codec, generation, &staged).await?;
    // From here on the local params say "needs fsck" before the database is replaced, so
    // an interruption at any point leaves a state that only fsck.s3ql accepts.
    let cache_moved_to = paths.set_aside_cache()?;
    let local_seq = FsParams::load_local(&paths.params).map_or(0, |l| l.seq_no);
    let params = FsParams {
        seq_no: remote.seq_no.max(local_seq) + 1,
        metadata_generation: generation,
        mounted: false,
        needs_fsck: true,
        ..remote
    };
    params.save_local(&paths.params)?;
    paths.remove_db()?;
    std::fs::rename(&staged, &paths.db)?;
    Ok(Restored {
        seq_no: params.seq_no,
        cache_moved_to,
    })
}

/// What [`shrink_db`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shrunk {
    /// Database size before VACUUM, bytes.
    pub before: u64,
    /// Database size after VACUUM, bytes.
    pub after: u64,
    /// The new metadata generation.
    pub generation: u64,
    /// Bytes uploaded for it (compressed, all of its chunks).
    pub uploaded: u64,
}

/// Size of the database's pages (what a metadata upload covers).
async fn db_size(db: &Db) -> Result<u64, FsError> {
    db.call_alone(|c| {
        let pages: u64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let page_size: u64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(pages * page_size)
    })
    .await
}

/// Compacts the metadata database of the filesystem at `cache_path` (SQLite VACUUM) and
/// uploads it whole as a new generation with the next sequence number, then expires old
/// generations. Opened like a mount: exit 31 while the mount lock is held, 30 after an
/// unclean unmount, the newest generation downloaded unless the local copy is current.
/// While it works the local parameters say "mounted", so an interruption needs fsck.s3ql.
pub async fn shrink_db(
    store: &dyn ObjectStore,
    cache_path: &Path,
    codec: &Codec,
) -> Result<Shrunk, AdminError> {
    let paths = LocalPaths::new(cache_path);
    prepare_cache_dir(&paths)?;
    let lock = MountLock::acquire(store).await?;
    let result = shrink_locked(store, &paths, codec).await;
    unlock(store, lock, result).await
}

async fn shrink_locked(
    store: &dyn ObjectStore,
    paths: &LocalPaths,
    codec: &Codec,
) -> Result<Shrunk, AdminError> {
    let mut params = load_metadata(store, codec, paths).await?;
    params.mounted = true;
    params.save_local(&paths.params)?;
    let db = Db::open(&paths.db)?;
    let work = async {
        let before = db_size(&db).await?;
        db.call_alone(|c| {
            c.execute_batch("VACUUM")?;
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await?;
        let after = db_size(&db).await?;
        let newest = upload::list_generations(store).await?.first().copied();
        let generation = newest.unwrap_or(0).max(params.metadata_generation) + 1;
        let (_, report) = upload::upload(store, codec, &db, None, generation).await?;
        Ok::<_, FsError>(Shrunk {
            before,
            after,
            generation,
            uploaded: report.uploaded_bytes,
        })
    };
    let shrunk = match work.await {
        Ok(s) => s,
        Err(e) => {
            // The database holds the same metadata as before (VACUUM changes no rows), so
            // the old parameters still describe it.
            params.mounted = false;
            params.save_local(&paths.params)?;
            return Err(e.into());
        }
    };
    params.seq_no += 1;
    params.metadata_generation = shrunk.generation;
    params.mounted = false;
    params.save_remote(store, codec).await?;
    params.save_local(&paths.params)?;
    upload::expire(store, codec, shrunk.generation).await;
    Ok(shrunk)
}

/// Fails with [`AdminError::S3qlLayout`] (exit 32) if `store` holds a filesystem of S3QL
/// itself (its `s3ql_params_<seq>` copies or its legacy `s3ql_metadata` object, names this
/// layout never uses). Needs no passphrase; reads only.
pub async fn check_layout(store: &dyn ObjectStore) -> Result<(), AdminError> {
    if !store.list("s3ql_params_").await?.is_empty() || store.head("s3ql_metadata").await?.is_some()
    {
        return Err(AdminError::S3qlLayout);
    }
    Ok(())
}

/// The layout revision of the filesystem in `store` if this build can use it as is.
/// Otherwise: [`OpenError::TooOld`] (exit 32) or [`OpenError::TooNew`] (33) for another
/// revision, [`AdminError::NoParams`] (32) when `s3ql_params` is missing but other s3ql
/// objects exist, [`OpenError::NoFilesystem`] (18) for an empty storage,
/// [`AdminError::UnknownParams`] (32) for parameters without a revision. Reads only; only
/// the revision field is parsed, so parameters of any revision are understood.
pub async fn check_format(store: &dyn ObjectStore, codec: &Codec) -> Result<u32, AdminError> {
    #[derive(Deserialize)]
    struct Revision {
        revision: u32,
    }
    let object = match store.get(PARAMS_OBJECT).await {
        Ok(o) => o,
        Err(StoreError::NotFound(_)) if store.list("s3ql_").await?.is_empty() => {
            return Err(OpenError::NoFilesystem.into())
        }
        Err(StoreError::NotFound(_)) => return Err(AdminError::NoParams),
        Err(e) => return Err(e.into()),
    };
    let json = codec.decode(PARAMS_OBJECT, object).map_err(FsError::from)?;
    let revision = serde_json::from_slice::<Revision>(&json)
        .map_err(|e| AdminError::UnknownParams(e.to_string()))?
        .revision;
    check_revision(revision)?;
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Compression;
    use crate::storage::MemoryStore;
    use bytes::Bytes;

    #[tokio::test]
    async fn clear_deletes_every_object_and_the_local_files() {
        let store = MemoryStore::new();
        for name in ["s3ql_params", "s3ql_data_1", "not-s3ql"] {
            store
                .put(name, Bytes::from_static(b"x"))
                .await
                .expect("put");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_path = dir.path().join("fs");
        let paths = LocalPaths::new(&cache_path);
        std::fs::write(&paths.db, b"db").expect("db");
        std::fs::write(&paths.params, b"{}").expect("params");
        std::fs::create_dir(&paths.cache_dir).expect("cache dir");
        std::fs::write(paths.cache_dir.join("2-0"), b"block").expect("block");
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |n| seen.lock().expect("lock").push(n);
        let deleted = clear(&store, &cache_path, 2, &progress)
            .await
            .expect("clear");
        assert_eq!(deleted, 3);
        assert_eq!(*seen.lock().expect("lock"), vec![1, 2, 3]);
        assert!(store.list("").await.expect("list").is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
        // Nothing left: clearing again is fine.
        assert_eq!(
            clear(&store, &cache_path, 2, &progress)
                .await
                .expect("again"),
            0
        );
    }

    #[tokio::test]
    async fn check_format_exit_codes() {
        let store = MemoryStore::new();
        let codec = Codec::plain();
        let code = |r: Result<u32, AdminError>| r.map_err(|e| e.exit_code());
        assert_eq!(code(check_format(&store, &codec).await), Err(18));
        check_layout(&store)
            .await
            .expect("an empty store is no S3QL filesystem");
        store
            .put("s3ql_metadata_manifest_1", Bytes::from_static(b"ours"))
            .await
            .expect("put");
        assert_eq!(code(check_format(&store, &codec).await), Err(32));
        check_layout(&store).await.expect("s3ql-rs names");
        for name in ["s3ql_params_0000000001", "s3ql_metadata"] {
            let python = MemoryStore::new();
            python
                .put(name, Bytes::from_static(b"x"))
                .await
                .expect("put");
            assert_eq!(
                check_layout(&python).await.map_err(|e| e.exit_code()),
                Err(32)
            );
        }
        for (json, want) in [
            (r#"{"revision":1,"whatever":true}"#, Ok(1)),
            (r#"{"revision":0}"#, Err(32)),
            (r#"{"revision":9,"future":"fields"}"#, Err(33)),
            (r#"{"label":"no revision"}"#, Err(32)),
        ] {
            let object = codec.encode(PARAMS_OBJECT, json.as_bytes(), Compression::None);
            store
                .put(PARAMS_OBJECT, Bytes::from(object))
                .await
                .expect("put");
            assert_eq!(code(check_format(&store, &codec).await), want, "{json}");
        }
    }
}
