//! Choosing the metadata to check, the mount lock, and the final upload.

use std::path::Path;
use std::sync::Arc;

use super::{generations, progress, FsckError, FsckOptions, FsckReport};
use crate::error::FsError;
use crate::format::Codec;
use crate::fs::{unix_now, OpenError};
use crate::meta::{upload, Db};
use crate::mount_lock::{self, LockError, MountLock};
use crate::params::{FsParams, LocalPaths, FS_REVISION};
use crate::storage::ObjectStore;

/// A filesystem marked clean is checked again (without `force`) after this long.
const FSCK_INTERVAL_SECS: i64 = 31 * 86_400;

/// An fsck in progress: the metadata is open and the mount lock is held.
pub(super) struct Session {
    pub store: Arc<dyn ObjectStore>,
    pub codec: Codec,
    pub paths: LocalPaths,
    pub db: Db,
    pub block_size: u64,
    /// The cache directory holds blocks of this database (the local copy was used).
    pub cache_matches_db: bool,
    params: FsParams,
    lock: MountLock,
}

impl Session {
    /// Opens the metadata for checking; `None` when the filesystem is clean and
    /// `opts.force` is off.
    pub async fn start(
        store: Arc<dyn ObjectStore>,
        cache_path: &Path,
        codec: Codec,
        opts: &FsckOptions,
        report: &mut FsckReport,
    ) -> Result<Option<Session>, FsckError> {
        let paths = LocalPaths::new(cache_path);
        if let Some(dir) = paths.db.parent() {
            std::fs::create_dir_all(dir).map_err(|e| OpenError::CacheDir(dir.to_owned(), e))?;
        }
        let remote = FsParams::load_remote(store.as_ref(), &codec)
            .await?
            .ok_or(OpenError::NoFilesystem)?;
        if remote.revision > FS_REVISION {
            return Err(OpenError::TooNew(remote.revision).into());
        }
        if remote.revision < FS_REVISION {
            return Err(OpenError::TooOld(remote.revision).into());
        }
        let local = FsParams::load_local(&paths.params)
            .filter(|l| l.seq_no >= remote.seq_no && paths.db.exists());
        let crashed_here = local.as_ref().is_some_and(|l| l.mounted);
        let holder = match mount_lock::lock_holder(store.as_ref()).await {
            Ok(h) => h,
            Err(LockError::Damaged(e)) => {
                report.problem(format!("the mount lock object is damaged ({e})"));
                None
            }
            Err(e) => return Err(OpenError::Lock(e).into()),
        };
        let params = local.clone().unwrap_or_else(|| remote.clone());
        let unclean = holder.is_some()
            || crashed_here
            || params.needs_fsck
            || local.as_ref().is_some_and(|l| l.seq_no > remote.seq_no);
        if !unclean && !opts.force && unix_now() - params.last_fsck < FSCK_INTERVAL_SECS {
            tracing::info!("filesystem is marked as clean; use --force to check it anyway");
            return Ok(None);
        }
        if let Some(h) = &holder {
            if !(opts.force_remote || crashed_here && mount_lock::holder_is_gone(h)) {
                return Err(FsckError::NeedsConfirmation(h.clone()));
            }
            report.problem(format!("stale mount lock of {h} removed"));
        }
        mount_lock::break_mount_lock(store.as_ref())
            .await
            .map_err(OpenError::Lock)?;
        let lock = MountLock::acquire(store.as_ref())
            .await
            .map_err(OpenError::Lock)?;

        let mut params = params;
        let mut loaded = None;
        if local.is_some() {
            tracing::info!("using cached metadata");
        } else {
            loaded = Some(download_newest(store.as_ref(), &codec, &paths, &remote).await?);
            set_aside_cache(&paths, report);
            params = remote;
        }
        if crashed_here {
            report.problem("the filesystem was not unmounted cleanly".into());
        }
        if params.needs_fsck {
            report
                .note("the metadata is marked as needing a check (restored from a backup)".into());
        }
        params.mounted = true;
        params.save_local(&paths.params)?;

        progress("Checking DB integrity");
        let db = Db::open(&paths.db)?;
        let verdict: String = db
            .call_alone(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))
            .await?;
        if verdict != "ok" {
            let _ = lock.release(store.as_ref()).await;
            return Err(FsckError::CorruptDatabase(paths.db.clone(), verdict));
        }
        if !opts.fast {
            let checked = generations::check(store.as_ref(), &codec, &paths, loaded, report).await;
            if let Err(e) = checked {
                let _ = lock.release(store.as_ref()).await;
                return Err(e);
            }
        }
        Ok(Some(Session {
            block_size: params.data_block_size,
            cache_matches_db: local.is_some(),
            store,
            codec,
            paths,
            db,
            params,
            lock,
        }))
    }

    /// Marks the filesystem clean, uploads its metadata as a new generation with the next
    /// sequence number and releases the lock.
    pub async fn finish(self, report: &mut FsckReport) -> Result<(), FsckError> {
        progress("Uploading metadata");
        self.db.sync().await?;
        let store = self.store.as_ref();
        let newest = upload::list_generations(store)
            .await?
            .first()
            .copied()
            .unwrap_or(0);
        let generation = newest.max(self.params.metadata_generation) + 1;
        let previous = upload::load_manifest(store, &self.codec, self.params.metadata_generation)
            .await
            .ok();
        let (_, up) =
            upload::upload(store, &self.codec, &self.db, previous.as_ref(), generation).await?;
        tracing::info!(
            "metadata generation {generation}: database {} bytes, uploaded {} bytes",
            up.db_bytes,
            up.uploaded_bytes
        );
        let mut params = self.params.clone();
        params.seq_no += 1;
        params.metadata_generation = generation;
        params.mounted = false;
        params.needs_fsck = false;
        params.last_fsck = unix_now();
        params.save_remote(store, &self.codec).await?;
        params.save_local(&self.paths.params)?;
        upload::expire(store, &self.codec, generation).await;
        self.lock.release(store).await.map_err(OpenError::Lock)?;
        if report.found_errors() {
            tracing::warn!("fsck found and repaired {} errors", report.problems.len());
        } else {
            tracing::info!("no errors found");
        }
        Ok(())
    }

    /// Ends a failed check: releases the lock, leaves everything else (the filesystem
    /// stays marked as needing fsck).
    pub async fn abandon(self) {
        if let Err(e) = self.lock.release(self.store.as_ref()).await {
            tracing::warn!("could not release the mount lock: {e}");
        }
    }
}

/// Downloads the newest generation that loads, falling back to older ones; returns it.
async fn download_newest(
    store: &dyn ObjectStore,
    codec: &Codec,
    paths: &LocalPaths,
    remote: &FsParams,
) -> Result<u64, FsckError> {
    progress("Downloading metadata");
    paths.remove_db().map_err(FsError::from)?;
    let mut candidates = vec![remote.metadata_generation];
    candidates.extend(
        upload::list_generations(store)
            .await?
            .into_iter()
            .filter(|g| *g < remote.metadata_generation),
    );
    let mut last_err = None;
    for generation in candidates {
        match upload::download(store, codec, generation, &paths.db).await {
            Ok(()) => return Ok(generation),
            Err(e) => {
                tracing::warn!("metadata generation {generation} cannot be loaded: {e}");
                last_err = Some(e);
            }
        }
    }
    Err(last_err
        .unwrap_or_else(|| FsError::Inconsistent("no metadata generation found".into()))
        .into())
}

/// Sets aside a cache directory that does not belong to the downloaded metadata (see
/// [`LocalPaths::set_aside_cache`]) and notes where it went.
fn set_aside_cache(paths: &LocalPaths, report: &mut FsckReport) {
    let dir = paths.cache_dir.display();
    match paths.set_aside_cache() {
        Ok(Some(bak)) => report.note(format!(
            "the cache {dir} does not belong to the newest metadata; moved to {}",
            bak.display()
        )),
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot move {dir} aside: {e}"),
    }
}
