//! Failpoints: named places between the durable steps of write-back, metadata commit and
//! metadata upload, where a test makes the process fail (feature `failpoints`, off by
//! default; `lib.rs` refuses to build it without debug assertions, so release builds have
//! none: with the feature off, `failpoint!` expands to nothing).
//!
//! A test arms a failpoint with an [`Action`]:
//!
//! - [`Action::Kill`] sends SIGKILL to the process at that point. This is the crash model:
//!   like `kill -9` of the mount daemon, no further instruction of any thread runs, so no
//!   durable step after the failpoint can happen, while everything already handed to the
//!   kernel (cache files, WAL frames, local store objects) survives. Tests run the workload
//!   in a child process, then recover with fsck in the parent.
//! - [`Action::Error`] makes the failpoint return [`Injected`] once; the operation fails as
//!   on an I/O error and the filesystem must carry on without losing anything.
//!
//! Each failpoint fires on its `skip + 1`-th hit after arming, then disarms.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Before bytes are written into a block's cache file.
pub const CACHE_WRITE: &str = "cache.write";
/// A block downloaded for a read is written whole under its temporary name; its cache
/// file does not exist yet.
pub const CACHE_LOADED: &str = "cache.loaded";
/// Before the cache files of an inode are fsynced.
pub const CACHE_FSYNC: &str = "cache.fsync";
/// Write-back: a block snapshot is hashed; nothing is reserved or stored yet.
pub const WRITEBACK_HASHED: &str = "writeback.hashed";
/// Write-back: an object number is reserved (committed); the object is not uploaded yet.
pub const WRITEBACK_PUT: &str = "writeback.put";
/// Write-back: the object is in the storage; no block row references it yet.
pub const WRITEBACK_UPLOADED: &str = "writeback.uploaded";
/// Write-back: the block row is committed; the cache entry is still dirty.
pub const WRITEBACK_COMMITTED: &str = "writeback.committed";
/// Write-back: the cache entry is marked clean (its file may be evicted from now on).
pub const WRITEBACK_CLEAN: &str = "writeback.clean";
/// The last reference to an object is dropped and committed; the object is not deleted yet.
pub const OBJECT_DELETE: &str = "object.delete";
/// Metadata commit: the closures of a batch ran in their savepoints; nothing is committed.
pub const DB_COMMIT: &str = "db.commit";
/// Metadata commit: the batch is committed (in the WAL); its callers have no reply yet.
pub const DB_COMMITTED: &str = "db.committed";
/// `fsync`: everything is committed; the WAL is not fsynced yet.
pub const DB_WAL_SYNC: &str = "db.wal_sync";
/// Metadata upload: the database snapshot is taken; no chunk is uploaded yet.
pub const META_SNAPSHOT: &str = "meta.snapshot";
/// Metadata upload: before each changed chunk is uploaded.
pub const META_CHUNK_PUT: &str = "meta.chunk_put";
/// Metadata upload: every chunk is uploaded; the manifest is not.
pub const META_MANIFEST_PUT: &str = "meta.manifest_put";
/// Metadata upload: the manifest is uploaded; the local parameters do not name it yet.
pub const META_PARAMS_LOCAL: &str = "meta.params_local";
/// Metadata upload: the local parameters name the new generation; the backend's do not.
pub const META_PARAMS_PUT: &str = "meta.params_put";
/// Metadata upload: the new generation is recorded; before each old object is expired.
pub const META_EXPIRE: &str = "meta.expire";

/// Every failpoint, in the order of the durable steps.
pub const ALL: &[&str] = &[
    CACHE_WRITE,
    CACHE_LOADED,
    CACHE_FSYNC,
    WRITEBACK_HASHED,
    WRITEBACK_PUT,
    WRITEBACK_UPLOADED,
    WRITEBACK_COMMITTED,
    WRITEBACK_CLEAN,
    OBJECT_DELETE,
    DB_COMMIT,
    DB_COMMITTED,
    DB_WAL_SYNC,
    META_SNAPSHOT,
    META_CHUNK_PUT,
    META_MANIFEST_PUT,
    META_PARAMS_LOCAL,
    META_PARAMS_PUT,
    META_EXPIRE,
];

/// What an armed failpoint does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The failpoint returns [`Injected`] (once).
    Error,
    /// The process is killed with SIGKILL (a crash; see the module documentation).
    Kill,
}

/// The error a failpoint armed with [`Action::Error`] returns.
#[derive(Debug, Clone, thiserror::Error)]
#[error("failpoint {0} injected an error")]
pub struct Injected(pub &'static str);

#[derive(Debug, Default)]
struct Point {
    armed: Option<(Action, u64)>,
    hits: u64,
}

static POINTS: Mutex<BTreeMap<&'static str, Point>> = Mutex::new(BTreeMap::new());

fn points() -> std::sync::MutexGuard<'static, BTreeMap<&'static str, Point>> {
    POINTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Arms failpoint `name` (one of [`ALL`]): it fires on its `skip + 1`-th hit from now on.
/// Panics on an unknown name.
pub fn arm(name: &'static str, action: Action, skip: u64) {
    assert!(ALL.contains(&name), "unknown failpoint {name}");
    points().entry(name).or_default().armed = Some((action, skip));
}

/// Disarms every failpoint.
pub fn disarm_all() {
    for point in points().values_mut() {
        point.armed = None;
    }
}

/// How often failpoint `name` was passed (armed or not) since the process started.
pub fn hits(name: &str) -> u64 {
    points().get(name).map_or(0, |p| p.hits)
}

/// Passes failpoint `name`: fails or kills the process if it is armed and due.
pub(crate) fn hit(name: &'static str) -> Result<(), Injected> {
    debug_assert!(ALL.contains(&name), "failpoint {name} is missing from ALL");
    let fire = {
        let mut points = points();
        let point = points.entry(name).or_default();
        point.hits += 1;
        match &mut point.armed {
            Some((_, skip)) if *skip > 0 => {
                *skip -= 1;
                None
            }
            Some((action, _)) => {
                let action = *action;
                point.armed = None;
                Some(action)
            }
            None => None,
        }
    };
    match fire {
        None => Ok(()),
        Some(Action::Error) => {
            tracing::warn!("failpoint {name}: injecting an error");
            Err(Injected(name))
        }
        Some(Action::Kill) => {
            // SAFETY: kill(2) of this very process has no memory-safety preconditions.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            // SIGKILL is delivered before this thread returns to user space; should it
            // not be, nothing after the failpoint may run either.
            std::process::abort()
        }
    }
}
