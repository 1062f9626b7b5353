//! `fsck.s3ql`: checks a filesystem that is not mounted and repairs what it finds.
//!
//! Flow (S3QL-CLI.md §7, adapted): pick the metadata (the local database if its `.params`
//! sequence number is at least the backend's, else the newest generation in the backend),
//! take the mount lock (a stale one is broken; one that may belong to a live mount needs
//! [`FsckOptions::force_remote`]), check the database's integrity and, unless
//! [`FsckOptions::fast`], that of the newest older metadata generations (damaged ones are
//! deleted), then run the checks in order, each inside one database transaction:
//!
//! 1. `lost+found` exists and is a directory;
//! 2. dirty blocks left in the cache by a crash are uploaded (newest data wins);
//! 3. directory entries pointing nowhere, rows of missing inodes;
//! 4. unreachable inodes are moved to `lost+found` (unlinked ones are freed);
//! 5. symlink targets, symlink sizes and device numbers fit the inode's type;
//! 6. every reference count is recomputed;
//! 7. blocks whose object is missing are dropped: **the affected ranges of those files
//!    become holes and read as zeros** (each file is reported by path; S3QL's
//!    alternative, moving the files to `lost+found`, would hide them from where users
//!    look, and EIO forever would make them unrepairable);
//! 8. objects nothing references are deleted (bytes reported);
//! 9. inode sizes cover their blocks; the next object number is past every object.
//!
//! Finally the filesystem is marked clean and the metadata uploaded as a new generation
//! (sequence number + 1). A second run after a repair finds nothing.

mod cache;
mod counts;
mod generations;
mod kinds;
mod objects;
mod open;
mod tree;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

use crate::error::FsError;
use crate::format::{Codec, Compression};
use crate::fs::OpenError;
use crate::meta::Db;
use crate::mount_lock::LockHolder;
use crate::storage::ObjectStore;
use crate::types::ROOT_INODE;

pub use verify::{verify, VerifyOptions, VerifyReport};

/// Settings of one fsck run.
#[derive(Debug, Clone)]
pub struct FsckOptions {
    /// Check even if the filesystem is marked clean.
    pub force: bool,
    /// Go on although the mount lock may belong to a live mount elsewhere.
    pub force_remote: bool,
    /// Keep the cache files after the check (else they are deleted).
    pub keep_cache: bool,
    /// Compression of objects fsck uploads (dirty blocks from the cache).
    pub compression: Compression,
    /// Most concurrent storage transfers.
    pub max_connections: usize,
    /// Skip the check of the newest older metadata generations (`--fast`).
    pub fast: bool,
}

impl Default for FsckOptions {
    fn default() -> Self {
        FsckOptions {
            force: false,
            force_remote: false,
            keep_cache: false,
            fast: false,
            compression: Compression::default(),
            max_connections: 8,
        }
    }
}

/// What fsck found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// The filesystem was marked clean and `force` was not given: nothing was checked.
    pub skipped_clean: bool,
    /// One precise line per problem found (each has been repaired).
    pub problems: Vec<String>,
    /// Remarks that are not errors (e.g. unlinked inodes freed after a crash).
    pub notes: Vec<String>,
}

impl FsckReport {
    /// Whether errors were found (fsck.s3ql exits 128 then).
    pub fn found_errors(&self) -> bool {
        !self.problems.is_empty()
    }

    fn problem(&mut self, msg: String) {
        tracing::warn!("{msg}");
        self.problems.push(msg);
    }

    fn note(&mut self, msg: String) {
        tracing::info!("{msg}");
        self.notes.push(msg);
    }
}

/// Why fsck could not run or finish. Nothing is lost by any of them: the local database
/// and cache stay, and the filesystem stays marked as needing fsck.
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    /// The mount lock may belong to a running mount; the user must confirm.
    #[error("the filesystem may be mounted elsewhere ({0}); checking it while it is mounted destroys data")]
    NeedsConfirmation(LockHolder),
    /// `PRAGMA integrity_check` failed.
    #[error("the metadata database {0} is corrupted: {1}")]
    CorruptDatabase(PathBuf, String),
    /// The filesystem cannot be opened (passphrase, revision, storage...).
    #[error(transparent)]
    Open(#[from] OpenError),
}

impl FsckError {
    /// S3QL's exit code: 41 for a needed confirmation (the command prompts unless
    /// `--batch`), 43 for a corrupted database, else the open error's.
    pub fn exit_code(&self) -> i32 {
        match self {
            FsckError::NeedsConfirmation(_) => 41,
            FsckError::CorruptDatabase(..) => 43,
            FsckError::Open(e) => e.exit_code(),
        }
    }
}

impl From<FsError> for FsckError {
    fn from(e: FsError) -> Self {
        FsckError::Open(e.into())
    }
}

impl From<crate::storage::StoreError> for FsckError {
    fn from(e: crate::storage::StoreError) -> Self {
        FsckError::Open(e.into())
    }
}

/// The checker.
pub struct Fsck;

impl Fsck {
    /// Checks and repairs the filesystem in `store` whose local files are at `cache_path`
    /// (as for [`crate::MountOptions::cache_path`]). On success the filesystem is clean,
    /// unlocked and its metadata is in the backend as a new generation.
    pub async fn run(
        store: Arc<dyn ObjectStore>,
        cache_path: &Path,
        codec: Codec,
        options: FsckOptions,
    ) -> Result<FsckReport, FsckError> {
        let mut report = FsckReport::default();
        let Some(session) =
            open::Session::start(store, cache_path, codec, &options, &mut report).await?
        else {
            report.skipped_clean = true;
            return Ok(report);
        };
        let result = session.check(&options, &mut report).await;
        match result {
            Ok(()) => session.finish(&mut report).await?,
            Err(e) => {
                session.abandon().await;
                return Err(e);
            }
        }
        Ok(report)
    }
}

/// Prints one progress line.
fn progress(step: &str) {
    tracing::info!("{step}...");
}

/// A path of `inode` for messages (`/a/b`), or `inode N` if it has no name.
fn path_of(c: &Connection, inode: u64) -> String {
    let mut parts = Vec::new();
    let mut current = inode;
    while current != ROOT_INODE && parts.len() < 4096 {
        let up: Option<(u64, Vec<u8>)> = c
            .prepare_cached("SELECT parent, name FROM contents WHERE inode = ?1 LIMIT 1")
            .and_then(|mut s| {
                s.query_row([current], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .unwrap_or(None);
        let Some((parent, name)) = up else {
            return format!("inode {inode}");
        };
        parts.push(String::from_utf8_lossy(&name).into_owned());
        current = parent;
    }
    parts.reverse();
    format!("/{}", parts.join("/"))
}

/// Runs `f` in one transaction on the database's owner thread.
async fn in_db<R: Send + 'static>(
    db: &Db,
    f: impl FnOnce(&Connection) -> crate::FsResult<R> + Send + 'static,
) -> Result<R, FsckError> {
    Ok(db.call(f).await?)
}

/// Runs one check in one transaction, printing its progress line and adding what it
/// found to `report`.
async fn step<R: Send + 'static>(
    db: &Db,
    name: &str,
    report: &mut FsckReport,
    f: impl FnOnce(&Connection, &mut FsckReport) -> crate::FsResult<R> + Send + 'static,
) -> Result<R, FsckError> {
    progress(name);
    let (found, r) = in_db(db, move |c| {
        let mut found = FsckReport::default();
        let r = f(c, &mut found)?;
        Ok((found, r))
    })
    .await?;
    report.problems.extend(found.problems);
    report.notes.extend(found.notes);
    Ok(r)
}

impl open::Session {
    /// Runs every check in order (see the module documentation).
    async fn check(&self, opts: &FsckOptions, report: &mut FsckReport) -> Result<(), FsckError> {
        let db = &self.db;
        let lost_found = step(db, "Checking lost+found", report, tree::lost_found).await?;
        let mut dead = Vec::new();
        if self.cache_matches_db {
            progress("Checking cached blocks");
            dead.extend(cache::recover(self, opts, report).await?);
        }
        step(db, "Checking directory entries", report, tree::dangling).await?;
        dead.extend(
            step(db, "Checking reachability", report, move |c, r| {
                tree::unreachable(c, lost_found, r)
            })
            .await?,
        );
        step(db, "Checking file types", report, kinds::check).await?;
        progress("Listing objects");
        let stored = objects::list_data_objects(self.store.as_ref(), report).await?;
        let stored = Arc::new(stored);
        let bs = self.block_size;
        let listed = stored.clone();
        step(db, "Checking for missing objects", report, move |c, r| {
            objects::missing(c, &listed, bs, r)
        })
        .await?;
        dead.extend(step(db, "Checking reference counts", report, counts::refcounts).await?);
        step(db, "Checking inode sizes", report, move |c, r| {
            counts::sizes(c, bs, r)
        })
        .await?;
        let max_seen = stored.keys().max().copied().unwrap_or(0);
        step(db, "Checking object numbers", report, move |c, r| {
            counts::next_object_id(c, max_seen, r)
        })
        .await?;
        step(db, "Checking the totals", report, counts::totals).await?;
        progress("Checking for unreferenced objects");
        let listed = stored.clone();
        let mut extra = in_db(db, move |c| objects::unreferenced(c, &listed)).await?;
        db.sync().await?;
        for obj in &dead {
            self.store
                .delete(&crate::blocks::data_object_name(*obj))
                .await?;
        }
        extra.retain(|o| !dead.contains(o));
        objects::delete_unreferenced(self.store.as_ref(), &extra, &stored, report).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
