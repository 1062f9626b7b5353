//! The filesystem: POSIX operations over inodes, on top of the metadata database and the
//! block cache. Every method is safe to call concurrently from many tasks.

pub(crate) mod check;
mod ctrl;
mod data;
pub(crate) mod inode;
mod lifecycle;
mod namespace;
mod stats;
mod tree;
mod xattr;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::cache::BlockCache;
use crate::error::{errno, FsResult};
use crate::format::Codec;
use crate::meta::upload::Manifest;
use crate::meta::Db;
use crate::params::{FsParams, LocalPaths};
use crate::storage::ObjectStore;
use crate::types::{CTRL_NAME, NAME_MAX};

pub(crate) use lifecycle::{check_revision, load_metadata, prepare_cache_dir, unix_now};
pub use lifecycle::{open_codec, MkfsOptions, MountOptions, OpenError};
pub use stats::Stats;

/// Runs one kernel request to completion on the calling thread, which must be an adapter's
/// request thread (never a runtime worker): the request's metadata statements run on this
/// thread too, with the guarantees of [`Db::call`], saving two thread wake-ups each.
/// Tasks the request spawns run on `rt` as usual.
pub fn block_on_request<F: std::future::Future>(
    rt: &tokio::runtime::Handle,
    request: F,
) -> F::Output {
    crate::meta::run_statements_here(|| rt.block_on(request))
}

/// How many times the kernel references an inode, and how many handles are open on it.
/// There is one per inode the kernel holds (a million after a `find` of a million files),
/// so it is kept small: what only reads need is allocated by the first read.
#[derive(Debug, Default)]
struct NodeRefs {
    lookups: u64,
    handles: u32,
    /// Set by `lock_tree` for live inodes, so that handles opened for writing before the
    /// lock cannot write any more (`open` checks the database for later handles).
    locked: bool,
    /// Dropped when the last handle is released.
    reads: Option<Box<ReadState>>,
}

/// What the reads of an open inode remember.
#[derive(Debug, Default)]
struct ReadState {
    /// Where the last read of the inode ended: a read that starts there is sequential and
    /// fetches the following blocks ahead.
    read_end: u64,
    /// The file size a read got from the database, with the [`Filesystem::size_epoch`] it
    /// was read at; valid only while the epoch is unchanged.
    size: Option<(u64, u64)>,
}

/// The kernel's caches of entries and attributes, for operations that change the tree
/// behind the kernel's back (`copy_tree`, `lock_tree`, `remove_tree`). The adapter
/// implements it (FUSE notifications). Calls may block until the kernel has processed them;
/// the core makes them from a blocking thread after the change is committed, never from the
/// request that caused it, and waits at most one attribute timeout for them.
pub trait KernelCache: Send + Sync {
    /// Drops the cached entry `name` of directory `parent` and everything cached below it.
    fn invalidate_entry(&self, parent: u64, name: &OsStr);
    /// Like `invalidate_entry` for an entry that was removed and pointed at `child`: the
    /// kernel also drops its link count of `child`, so that it forgets `child` once unused.
    fn delete_entry(&self, parent: u64, child: u64, name: &OsStr);
    /// Drops the cached attributes of `ino`.
    fn invalidate_attr(&self, ino: u64);
}

/// A change to tell the kernel's caches about (see [`KernelCache`]).
enum Invalidation {
    Entry(u64, OsString),
    Deleted(u64, u64, OsString),
    Attr(u64),
}

/// Changes the log filter of the running daemon (`s3qlctrl log`), registered by the program
/// that set up logging. Arguments: the level (`debug`, `info` or `warn`) and, for `debug`,
/// the modules (empty: all). An error message makes the control command fail with `EINVAL`.
pub type LogControl = Box<dyn Fn(&str, &[String]) -> Result<(), String> + Send + Sync>;

/// State of the tree and control operations of one mount.
#[derive(Default)]
struct Control {
    /// Held shared by every change of file contents or size (cache plus metadata), and
    /// exclusively by `copy_tree` and `lock_tree` while they make their change.
    write_gate: tokio::sync::RwLock<()>,
    kernel_cache: Mutex<Option<Arc<dyn KernelCache>>>,
    log_control: Mutex<Option<Arc<LogControl>>>,
    /// Inodes the kernel forgot, to check in one batch (a removed tree is forgotten in a
    /// burst of thousands).
    forgotten: Mutex<Vec<u64>>,
}

/// A mounted filesystem. Metadata operations are local database transactions; data goes
/// through the block cache and is uploaded in the background (see [`Filesystem::unmount`]
/// for what is guaranteed to be in the backend when).
pub struct Filesystem {
    me: Weak<Filesystem>,
    runtime: tokio::runtime::Handle,
    db: Db,
    cache: Arc<BlockCache>,
    store: Arc<dyn ObjectStore>,
    codec: Codec,
    paths: LocalPaths,
    opts: MountOptions,
    block_size: u64,
    params: tokio::sync::Mutex<FsParams>,
    manifest: tokio::sync::Mutex<Option<Manifest>>,
    nodes: Mutex<HashMap<u64, NodeRefs>>,
    /// Bumped at the end of every operation that may change a file size (`write`,
    /// `setattr`, `fallocate`), after its change is committed: a size remembered in
    /// [`NodeRefs::size`] at an older epoch is not used.
    size_epoch: AtomicU64,
    next_fh: AtomicU64,
    stopping: AtomicBool,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    mount_lock: crate::mount_lock::MountLock,
    control: Control,
    probed_names: xattr::ProbedNames,
}

impl std::fmt::Debug for Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filesystem")
            .field("cache", &self.paths.cache_dir)
            .finish()
    }
}

/// Checks a name given for a new directory entry.
fn check_new_name(name: &OsStr) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(errno(libc::ENAMETOOLONG));
    }
    if name.as_bytes() == CTRL_NAME {
        return Err(errno(libc::EACCES));
    }
    if name.is_empty() || name.as_bytes().contains(&b'/') {
        return Err(errno(libc::EINVAL));
    }
    Ok(())
}

impl Filesystem {
    fn nodes(&self) -> MutexGuard<'_, HashMap<u64, NodeRefs>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_lookup(&self, ino: u64) {
        self.nodes().entry(ino).or_default().lookups += 1;
    }

    /// Drops `nlookup` kernel references to `ino`; an unlinked inode with no references
    /// and no open handle is deleted.
    pub fn forget(&self, ino: u64, nlookup: u64) {
        let unused = {
            let mut nodes = self.nodes();
            let Some(refs) = nodes.get_mut(&ino) else {
                return;
            };
            refs.lookups = refs.lookups.saturating_sub(nlookup);
            let unused = refs.lookups == 0 && refs.handles == 0;
            if unused {
                nodes.remove(&ino);
            }
            unused
        };
        if unused {
            self.free_later(ino);
        }
    }

    /// Frees `ino` soon if it is unlinked: queued, and the queue is checked in one batch
    /// by a task that the first queued inode starts.
    fn free_later(&self, ino: u64) {
        let first = {
            let mut queue = self
                .control
                .forgotten
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            queue.push(ino);
            queue.len() == 1
        };
        let Some(me) = self.me.upgrade().filter(|_| first) else {
            return;
        };
        // Taken now, so that an unmount that follows this forget waits for the batch.
        let pending = self.cache.pending_deletion();
        self.runtime.spawn(async move {
            // Let the rest of a burst of forgets arrive.
            tokio::task::yield_now().await;
            let batch = std::mem::take(
                &mut *me
                    .control
                    .forgotten
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            let n = batch.len();
            if let Err(e) = me.free_unlinked(batch).await {
                tracing::error!("could not free {n} forgotten inodes: {e}");
            }
            drop(pending);
        });
    }

    /// Deletes `ino` if no directory entry, kernel reference or handle is left.
    async fn free_if_unlinked(&self, ino: u64) -> FsResult<()> {
        self.free_unlinked(vec![ino]).await
    }

    /// Deletes those of `inos` that have no directory entry, kernel reference or open handle
    /// left, with their data: cached blocks first (discarding in-flight uploads), then the
    /// rows in one transaction, then the objects that lost their last reference.
    async fn free_unlinked(&self, inos: Vec<u64>) -> FsResult<()> {
        let unreferenced: Vec<u64> = {
            let nodes = self.nodes();
            inos.into_iter()
                .filter(|i| !nodes.contains_key(i))
                .collect()
        };
        if unreferenced.is_empty() {
            return Ok(());
        }
        let doomed = self
            .db
            .call(move |c| inode::unlinked(c, &unreferenced))
            .await?;
        if doomed.is_empty() {
            return Ok(());
        }
        for ino in &doomed {
            self.cache.remove(*ino, 0).await;
        }
        let dead = self
            .db
            .call(move |c| inode::delete_unlinked(c, &doomed))
            .await?;
        self.cache.delete_objects(dead);
        Ok(())
    }

    /// Registers (or with `None` removes) the kernel's caches to invalidate.
    pub fn set_kernel_cache(&self, cache: Option<Arc<dyn KernelCache>>) {
        *self
            .control
            .kernel_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = cache;
    }

    /// Registers the handler of `s3qlctrl log` (without one, that command is `ENOTSUP`).
    pub fn set_log_control(&self, control: LogControl) {
        *self
            .control
            .log_control
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(control));
    }

    /// Sends `changes` to the kernel's caches, in order (see [`KernelCache`]): on a blocking
    /// thread, waiting at most [`Filesystem::attr_ttl`] (after which the kernel's copies
    /// have expired anyway, so a notification stuck behind a kernel lock cannot hold up
    /// the caller).
    async fn invalidate_kernel(&self, changes: Vec<Invalidation>) {
        let Some(kc) = self
            .control
            .kernel_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let task = tokio::task::spawn_blocking(move || {
            for change in changes {
                match change {
                    Invalidation::Entry(parent, name) => kc.invalidate_entry(parent, &name),
                    Invalidation::Deleted(parent, child, name) => {
                        kc.delete_entry(parent, child, &name)
                    }
                    Invalidation::Attr(ino) => kc.invalidate_attr(ino),
                }
            }
        });
        if tokio::time::timeout(self.attr_ttl(), task).await.is_err() {
            tracing::warn!("kernel cache invalidation is slow; continuing without waiting");
        }
    }

    /// How long the kernel may cache attributes and entries.
    pub fn attr_ttl(&self) -> Duration {
        Duration::from_secs(1)
    }
}
