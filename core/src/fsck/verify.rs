//! `s3ql_verify`: checks that every object the metadata references exists and, with
//! `data`, that its contents decode and match their SHA-256. Reads only (besides loading
//! the newest metadata into the local database, as a mount does).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::blocks::data_object_name;
use crate::format::Codec;
use crate::fs::OpenError;
use crate::meta::{upload, Db};
use crate::mount_lock::{self, LockError};
use crate::params::{FsParams, LocalPaths, FS_REVISION};
use crate::storage::{ObjectStore, StoreError};

/// Settings of a verification.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Read every object and check its contents (else: only that it exists).
    pub data: bool,
    /// Skip objects with a smaller number.
    pub start_with: u64,
    /// Most concurrent downloads.
    pub max_connections: usize,
}

/// What the verification found: object names, in object number order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Objects checked.
    pub checked: usize,
    /// Referenced objects that do not exist.
    pub missing: Vec<String>,
    /// Objects that cannot be decoded or do not match their SHA-256 and size.
    pub corrupted: Vec<String>,
}

/// Verifies the objects of the filesystem in `store` (see the module documentation).
/// Refused like a mount: [`OpenError::NeedsFsck`] after a crash, [`OpenError::Lock`] while
/// mounted.
pub async fn verify(
    store: &dyn ObjectStore,
    cache_path: &Path,
    codec: &Codec,
    opts: &VerifyOptions,
) -> Result<VerifyReport, OpenError> {
    let paths = LocalPaths::new(cache_path);
    if let Some(dir) = paths.db.parent() {
        std::fs::create_dir_all(dir).map_err(|e| OpenError::CacheDir(dir.to_owned(), e))?;
    }
    let remote = FsParams::load_remote(store, codec)
        .await?
        .ok_or(OpenError::NoFilesystem)?;
    if remote.revision != FS_REVISION {
        return Err(if remote.revision > FS_REVISION {
            OpenError::TooNew(remote.revision)
        } else {
            OpenError::TooOld(remote.revision)
        });
    }
    if let Some(holder) = mount_lock::lock_holder(store).await? {
        return Err(LockError::Held(holder).into());
    }
    let local = FsParams::load_local(&paths.params);
    if local
        .as_ref()
        .is_some_and(|l| l.mounted || l.needs_fsck || l.seq_no > remote.seq_no)
    {
        return Err(OpenError::NeedsFsck);
    }
    if !(local.is_some_and(|l| l.seq_no == remote.seq_no) && paths.db.exists()) {
        paths.remove_db().map_err(crate::FsError::from)?;
        upload::download(store, codec, remote.metadata_generation, &paths.db).await?;
        remote.save_local(&paths.params)?;
    }
    let db = Db::open(&paths.db)?;
    let start = opts.start_with;
    let blocks: Vec<(u64, Vec<u8>, u64)> = db
        .call(move |c| {
            let rows = c
                .prepare(
                    "SELECT obj_id, hash, size FROM blocks WHERE obj_id >= ?1 ORDER BY obj_id",
                )?
                .query_map([start], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await?;
    drop(db);
    let mut report = VerifyReport {
        checked: blocks.len(),
        ..VerifyReport::default()
    };
    tracing::info!("verifying {} objects", blocks.len());
    if !opts.data {
        let stored: HashSet<String> = store
            .list("s3ql_data_")
            .await?
            .into_iter()
            .map(|o| o.name)
            .collect();
        report.missing = blocks
            .iter()
            .map(|b| data_object_name(b.0))
            .filter(|n| !stored.contains(n))
            .collect();
        return Ok(report);
    }
    let done = AtomicUsize::new(0);
    let total = blocks.len();
    let results: Vec<(u64, Result<bool, StoreError>)> = futures::stream::iter(blocks)
        .map(|(obj, hash, size)| {
            let done = &done;
            async move {
                let name = data_object_name(obj);
                let result = match store.get(&name).await {
                    Ok(object) => {
                        let codec = codec.clone();
                        tokio::task::spawn_blocking(move || {
                            codec.decode(&name, object).is_ok_and(|plain| {
                                plain.len() as u64 == size && Sha256::digest(&plain)[..] == hash
                            })
                        })
                        .await
                        .map_err(|e| StoreError::Backend(e.to_string()))
                    }
                    Err(e) => Err(e),
                };
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(1000) || n == total {
                    tracing::info!("verified {n} of {total} objects");
                }
                (obj, result)
            }
        })
        .buffer_unordered(opts.max_connections.max(1))
        .collect()
        .await;
    let mut results = results;
    results.sort_by_key(|r| r.0);
    for (obj, result) in results {
        let name = data_object_name(obj);
        match result {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("object {name} is corrupted");
                report.corrupted.push(name);
            }
            Err(StoreError::NotFound(_)) => {
                tracing::warn!("object {name} is missing");
                report.missing.push(name);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}
