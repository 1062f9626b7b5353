//! File contents and attributes: open, read, write, truncate, fsync, fallocate, setattr.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

use super::inode;
use super::namespace::NewNode;
use super::Filesystem;
use crate::cache::READ_AHEAD_BYTES;
use crate::error::{errno, FsError, FsResult};
use crate::meta;
use crate::types::{mode_bits, Attr, Caller, SetAttr, StatFs, TimeSet, Timestamp, CTRL_INODE};

/// `fallocate` mode: do not change the file size. The FUSE protocol carries Linux's value
/// on every platform (libc defines it only on Linux).
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;

impl Filesystem {
    /// Opens `ino`; the inode stays alive until the handle is released. Opening a locked
    /// inode for writing (or with `O_TRUNC`) is `EPERM`.
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        // The handle is counted before the lock flag is read: `lock_tree` either commits
        // first (seen here) or finds this handle and flags it for `write`.
        let fh = self.add_handle(ino);
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        // Reading needs no check: the kernel opens only inodes it holds a lookup of.
        if ino != CTRL_INODE && writes {
            let node = self.db.query(move |c| inode::get(c, ino)).await;
            let refused = match node {
                Ok(node) if node.locked => Some(errno(libc::EPERM)),
                Ok(_) => None,
                Err(e) => Some(e),
            };
            if let Some(e) = refused {
                self.release(ino, fh).await?;
                return Err(e);
            }
        }
        Ok(fh)
    }

    fn add_handle(&self, ino: u64) -> u64 {
        self.nodes().entry(ino).or_default().handles += 1;
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates and opens a regular file.
    pub async fn create(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _flags: i32,
    ) -> FsResult<(Attr, u64)> {
        let mode = (mode & !mode_bits::S_IFMT) | mode_bits::S_IFREG;
        let attr = self
            .create_node(caller, parent, name, mode, NewNode::Other(0))
            .await?;
        self.cache.note_new_file(attr.ino);
        Ok((attr.clone(), self.add_handle(attr.ino)))
    }

    /// Releases a handle; an unlinked inode with no references left is deleted.
    pub async fn release(&self, ino: u64, _fh: u64) -> FsResult<()> {
        self.cache.forget_new_file(ino);
        let unused = {
            let mut nodes = self.nodes();
            match nodes.get_mut(&ino) {
                Some(refs) => {
                    refs.handles = refs.handles.saturating_sub(1);
                    if refs.handles == 0 {
                        refs.reads = None;
                    }
                    let unused = refs.lookups == 0 && refs.handles == 0;
                    if unused {
                        nodes.remove(&ino);
                    }
                    unused
                }
                None => false,
            }
        };
        if unused {
            self.free_if_unlinked(ino).await?;
        }
        Ok(())
    }

    /// Called at each close of a file descriptor; nothing to do (see `fsync`).
    pub async fn flush(&self, _ino: u64, _fh: u64) -> FsResult<()> {
        Ok(())
    }

    /// Returns when the file's data is in cache files on the local disk and all metadata
    /// is committed and synced: it then survives a crash of the process or the machine.
    pub async fn fsync(&self, ino: u64, _datasync: bool) -> FsResult<()> {
        self.cache.sync_inode(ino).await?;
        self.db.sync().await
    }

    /// Reads up to `size` bytes at `offset`; holes read as zeros. A read within one block
    /// that was just loaded from the storage shares that block's buffer (no copy).
    pub async fn read(&self, ino: u64, _fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        if ino == CTRL_INODE {
            return Ok(Bytes::new());
        }
        let file_size = self.file_size(ino).await?;
        if offset >= file_size {
            return Ok(Bytes::new());
        }
        let end = file_size.min(offset.saturating_add(u64::from(size)));
        let bs = self.block_size;
        if self.is_sequential_read(ino, offset, end) {
            let next = end.div_ceil(bs);
            let window = self.read_ahead_blocks();
            let last = (file_size - 1) / bs;
            self.cache
                .read_ahead(ino, next..(next + window).min(last + 1));
        }
        if offset / bs == (end - 1) / bs {
            let len = (end - offset) as usize;
            return self.cache.read(ino, offset / bs, offset % bs, len).await;
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let blockno = pos / bs;
            let in_block = pos % bs;
            let len = (bs - in_block).min(end - pos);
            let piece = self
                .cache
                .read(ino, blockno, in_block, len as usize)
                .await?;
            out.extend_from_slice(&piece);
            pos += len;
        }
        Ok(out.freeze())
    }

    /// The size of `ino`: from memory if a read of it got it from the database since the
    /// last size change (see [`Filesystem::size_epoch`]), else from the database.
    async fn file_size(&self, ino: u64) -> FsResult<u64> {
        let epoch = self.size_epoch.load(Ordering::SeqCst);
        let known = self
            .nodes()
            .get(&ino)
            .and_then(|refs| refs.reads.as_ref()?.size);
        if let Some((size, _)) = known.filter(|(_, at)| *at == epoch) {
            return Ok(size);
        }
        let size = self.db.query(move |c| Ok(inode::get(c, ino)?.size)).await?;
        // Stored with the epoch read before the query: a change committed after the query
        // bumps it when its operation ends, and this size is not used after that.
        if let Some(refs) = self.nodes().get_mut(&ino) {
            refs.reads.get_or_insert_default().size = Some((size, epoch));
        }
        Ok(size)
    }

    /// Held by an operation that may change a file size, from before its change until it
    /// ends (returns, fails or is cancelled).
    fn size_change(&self) -> SizeChange<'_> {
        SizeChange(&self.size_epoch)
    }

    /// Records a read of `offset..end` of `ino`; true if it continues the previous one (or
    /// starts the file).
    fn is_sequential_read(&self, ino: u64, offset: u64, end: u64) -> bool {
        let mut nodes = self.nodes();
        let Some(refs) = nodes.get_mut(&ino) else {
            return offset == 0;
        };
        let reads = refs.reads.get_or_insert_default();
        let sequential = offset == 0 || offset == reads.read_end;
        reads.read_end = end;
        sequential
    }

    /// Blocks fetched ahead of a sequential reader: enough to keep every connection busy,
    /// bounded to [`READ_AHEAD_BYTES`] of downloads in flight.
    fn read_ahead_blocks(&self) -> u64 {
        (READ_AHEAD_BYTES / self.block_size).clamp(1, self.opts.max_connections.max(1) as u64)
    }

    /// Writes `data` at `offset`; returns when the bytes are in the cache. The new size and
    /// times are seen by every later call, and reach the database with its next transaction
    /// (durable after `fsync`). `EPERM` once the inode is locked. A block that fails after
    /// others were written ends the write there: the count returned is what was written.
    pub async fn write(&self, ino: u64, _fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        if ino == CTRL_INODE {
            return Err(errno(libc::EACCES));
        }
        let _gate = self.control.write_gate.read().await;
        if self.nodes().get(&ino).is_some_and(|refs| refs.locked) {
            return Err(errno(libc::EPERM));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= i64::MAX as u64);
        let end = end.ok_or_else(|| errno(libc::EFBIG))?;
        let _size_change = self.size_change();
        let bs = self.block_size;
        let mut pos = offset;
        while pos < end {
            let blockno = pos / bs;
            let in_block = pos % bs;
            let len = (bs - in_block).min(end - pos);
            let start = (pos - offset) as usize;
            let written = self
                .cache
                .write(ino, blockno, in_block, &data[start..start + len as usize])
                .await;
            match written {
                Ok(()) => pos += len,
                Err(e) if pos == offset => return Err(e),
                // A short write: the blocks before are written and recorded.
                Err(_) => break,
            }
        }
        let end = pos;
        let now = Timestamp::now().nanos;
        self.db.defer(move |c| {
            c.prepare_cached(
                "UPDATE inodes SET size = MAX(size, ?2), mtime_ns = ?3, ctime_ns = ?3 WHERE id = ?1",
            )?
            .execute(rusqlite::params![ino, end, now])?;
            Ok(())
        });
        Ok((end - offset) as u32)
    }

    /// Changes attributes; a size change truncates or extends (holes read as zeros).
    pub async fn setattr(&self, _caller: Caller, ino: u64, changes: SetAttr) -> FsResult<Attr> {
        if ino == CTRL_INODE {
            return self.ctrl_attr().await;
        }
        // A size change is a change of contents (see `copy_tree`).
        let _gate = match changes.size {
            Some(_) => Some(self.control.write_gate.read().await),
            None => None,
        };
        let _size_change = changes.size.map(|_| self.size_change());
        if let Some(size) = changes.size {
            let old = self.db.call(move |c| inode::get(c, ino)).await?;
            if old.locked {
                return Err(errno(libc::EPERM));
            }
            if old.is_dir() {
                return Err(errno(libc::EISDIR));
            }
            if size > i64::MAX as u64 {
                return Err(errno(libc::EFBIG));
            }
            if size < old.size {
                self.shrink(ino, size).await?;
            }
        }
        self.db
            .call(move |c| {
                let mut node = inode::get(c, ino)?;
                if node.locked {
                    return Err(errno(libc::EPERM));
                }
                let now = Timestamp::now();
                if let Some(mode) = changes.mode {
                    node.mode = (node.mode & mode_bits::S_IFMT) | (mode & 0o7777);
                }
                let owner_change = changes.uid.is_some_and(|u| u != node.uid)
                    || changes.gid.is_some_and(|g| g != node.gid);
                if let Some(uid) = changes.uid {
                    node.uid = uid;
                }
                if let Some(gid) = changes.gid {
                    node.gid = gid;
                }
                if owner_change && changes.mode.is_none() && !node.is_dir() {
                    node.mode &= !mode_bits::S_ISUID;
                    if node.mode & mode_bits::S_IXGRP != 0 {
                        node.mode &= !mode_bits::S_ISGID;
                    }
                }
                if let Some(size) = changes.size {
                    node.size = size;
                    if changes.mtime.is_none() {
                        node.mtime = now;
                    }
                }
                let resolve = |t: TimeSet| match t {
                    TimeSet::Now => now,
                    TimeSet::At(t) => t,
                };
                if let Some(t) = changes.atime {
                    node.atime = resolve(t);
                }
                if let Some(t) = changes.mtime {
                    node.mtime = resolve(t);
                }
                node.ctime = changes.ctime.unwrap_or(now);
                node.save(c)?;
                Ok(node.attr())
            })
            .await
    }

    /// Drops the data of `ino` beyond `size`.
    async fn shrink(&self, ino: u64, size: u64) -> FsResult<()> {
        let bs = self.block_size;
        let first_gone = size.div_ceil(bs);
        self.cache.remove(ino, first_gone).await;
        let dead = self
            .db
            .call(move |c| crate::blocks::remove_blocks_from(c, ino, first_gone))
            .await?;
        self.cache.delete_objects(dead);
        if !size.is_multiple_of(bs) {
            self.cache.truncate(ino, size / bs, size % bs).await?;
        }
        Ok(())
    }

    /// `fallocate(2)`: mode 0 extends the size (space lives in the backend, so nothing is
    /// reserved); `FALLOC_FL_KEEP_SIZE` alone does nothing; other modes are `EOPNOTSUPP`.
    pub async fn fallocate(&self, ino: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        let end = offset.checked_add(length).filter(|e| *e <= i64::MAX as u64);
        let end = end.ok_or_else(|| errno(libc::EFBIG))?;
        match mode {
            0 => {
                let _size_change = self.size_change();
                self.db
                    .call(move |c| {
                        let mut node = inode::get(c, ino)?;
                        if node.locked {
                            return Err(errno(libc::EPERM));
                        }
                        if end > node.size {
                            node.size = end;
                            let now = Timestamp::now();
                            node.mtime = now;
                            node.ctime = now;
                            node.save(c)?;
                        }
                        Ok(())
                    })
                    .await
            }
            FALLOC_FL_KEEP_SIZE => Ok(()),
            _ => Err(errno(libc::EOPNOTSUPP)),
        }
    }

    /// Filesystem-wide figures: used space is the stored size of all objects; the
    /// backend is treated as practically unlimited.
    pub async fn statfs(&self) -> FsResult<StatFs> {
        const FRSIZE: u64 = 4096;
        const FREE_BLOCKS: u64 = 1 << 40;
        const FREE_INODES: u64 = 1 << 32;
        // The running totals, which the mount made sure exist and are not negative (see
        // `meta::schema`).
        let (inodes, stored) = self
            .db
            .query(|c| {
                meta::stored_totals(c)?
                    .ok_or_else(|| FsError::Inconsistent("the running totals are missing".into()))
            })
            .await?;
        let (inodes, stored) = (inodes.max(0) as u64, stored.max(0) as u64);
        let used = stored.div_ceil(FRSIZE);
        Ok(StatFs {
            blocks: used + FREE_BLOCKS,
            bfree: FREE_BLOCKS,
            bavail: FREE_BLOCKS,
            files: inodes + FREE_INODES,
            ffree: FREE_INODES,
            bsize: 128 * 1024,
            namelen: crate::types::NAME_MAX as u32,
            frsize: FRSIZE as u32,
        })
    }
}

/// Bumps [`Filesystem::size_epoch`] when dropped (see [`Filesystem::size_change`]).
struct SizeChange<'a>(&'a AtomicU64);

impl Drop for SizeChange<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
