//! The filesystem: POSIX operations over inodes, on top of the metadata database and the
//! block cache. Every method is safe to call concurrently from many tasks.

mod check;
mod ctrl;
mod data;
mod inode;
mod lifecycle;
mod namespace;
mod xattr;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::cache::BlockCache;
use crate::error::{errno, FsResult};
use crate::meta::upload::Manifest;
use crate::meta::Db;
use crate::params::{FsParams, LocalPaths};
use crate::storage::ObjectStore;
use crate::types::{CTRL_NAME, NAME_MAX};

pub use lifecycle::{MkfsOptions, MountOptions, OpenError};

/// How many times the kernel references an inode, and how many handles are open on it.
#[derive(Debug, Default, Clone, Copy)]
struct NodeRefs {
    lookups: u64,
    handles: u64,
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
    paths: LocalPaths,
    opts: MountOptions,
    block_size: u64,
    params: tokio::sync::Mutex<FsParams>,
    manifest: tokio::sync::Mutex<Option<Manifest>>,
    nodes: Mutex<HashMap<u64, NodeRefs>>,
    next_fh: AtomicU64,
    stopping: AtomicBool,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
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

    fn is_referenced(&self, ino: u64) -> bool {
        self.nodes().contains_key(&ino)
    }

    fn free_later(&self, ino: u64) {
        if let Some(me) = self.me.upgrade() {
            self.runtime.spawn(async move {
                if let Err(e) = me.free_if_unlinked(ino).await {
                    tracing::error!("could not free inode {ino}: {e}");
                }
            });
        }
    }

    /// Deletes `ino` if no directory entry, kernel reference or handle is left.
    async fn free_if_unlinked(&self, ino: u64) -> FsResult<()> {
        if self.is_referenced(ino) {
            return Ok(());
        }
        let nlink = self
            .db
            .call(move |c| Ok(inode::get(c, ino).map(|i| i.nlink).ok()))
            .await?;
        if nlink != Some(0) {
            return Ok(());
        }
        self.cache.remove(ino, 0).await;
        let dead = self.db.call(move |c| inode::delete(c, ino)).await?;
        self.cache.delete_objects(dead);
        Ok(())
    }

    /// How long the kernel may cache attributes and entries.
    pub fn attr_ttl(&self) -> Duration {
        Duration::from_secs(1)
    }
}
