//! Directory entries: lookup, creation, removal, rename, hard links and listings.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use rusqlite::{params, Connection, OptionalExtension};

use super::inode::{self, Inode, NewInode, INODE_COLUMNS};
use super::{check_new_name, Filesystem};
use crate::error::{errno, FsResult};
use crate::types::{
    mode_bits, Attr, Caller, DirEntry, FileKind, RenameFlags, Timestamp, CTRL_INODE, CTRL_NAME,
    ROOT_INODE,
};

/// The directory `id`, or `ENOTDIR`/`ENOENT`.
pub(super) fn dir(conn: &Connection, id: u64) -> FsResult<Inode> {
    let d = inode::get(conn, id)?;
    if !d.is_dir() {
        return Err(errno(libc::ENOTDIR));
    }
    Ok(d)
}

/// A directory that may be changed: exists, is a directory, not locked, not removed (a
/// removed directory that is still open or looked up takes no new entries, as on ext4).
pub(super) fn writable_dir(conn: &Connection, id: u64) -> FsResult<Inode> {
    let d = dir(conn, id)?;
    if d.locked {
        return Err(errno(libc::EPERM));
    }
    if d.nlink == 0 {
        return Err(errno(libc::ENOENT));
    }
    Ok(d)
}

/// `(entry id, inode)` of `name` in `parent`.
pub(super) fn entry(conn: &Connection, parent: u64, name: &[u8]) -> FsResult<Option<(u64, u64)>> {
    Ok(conn
        .prepare_cached("SELECT id, inode FROM contents WHERE parent = ?1 AND name = ?2")?
        .query_row(params![parent, name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Adds the entry `name` -> `ino` to `parent` (link counts are the caller's business).
pub(super) fn insert_entry(conn: &Connection, parent: u64, name: &[u8], ino: u64) -> FsResult<()> {
    conn.prepare_cached("INSERT INTO contents (parent, name, inode) VALUES (?1, ?2, ?3)")?
        .execute(params![parent, name, ino])?;
    Ok(())
}

fn has_children(conn: &Connection, dir: u64) -> FsResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM contents WHERE parent = ?1 LIMIT 1")?
        .query_row([dir], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The directory holding directory `id` (the root is its own parent).
fn parent_of(conn: &Connection, id: u64) -> FsResult<u64> {
    if id == ROOT_INODE {
        return Ok(ROOT_INODE);
    }
    Ok(conn
        .prepare_cached("SELECT parent FROM contents WHERE inode = ?1 LIMIT 1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .unwrap_or(ROOT_INODE))
}

/// Whether `ancestor` is `node` or one of its ancestors.
pub(super) fn is_ancestor(conn: &Connection, ancestor: u64, mut node: u64) -> FsResult<bool> {
    loop {
        if node == ancestor {
            return Ok(true);
        }
        if node == ROOT_INODE {
            return Ok(false);
        }
        node = parent_of(conn, node)?;
    }
}

/// What a new node is.
pub(super) enum NewNode<'a> {
    Dir,
    Symlink(&'a [u8]),
    Other(u32),
}

impl Filesystem {
    /// Finds `name` in `parent` and counts one kernel reference to it.
    pub async fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Attr> {
        if name.len() > crate::types::NAME_MAX {
            return Err(errno(libc::ENAMETOOLONG));
        }
        if name.as_bytes() == CTRL_NAME {
            return self.ctrl_attr().await;
        }
        let name = name.as_bytes().to_vec();
        let attr = self
            .db
            .query(move |c| {
                dir(c, parent)?;
                let (_, ino) = entry(c, parent, &name)?.ok_or_else(|| errno(libc::ENOENT))?;
                Ok(inode::get(c, ino)?.attr())
            })
            .await?;
        self.add_lookup(attr.ino);
        Ok(attr)
    }

    /// Attributes of `ino`.
    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if ino == CTRL_INODE {
            return self.ctrl_attr().await;
        }
        self.db.query(move |c| Ok(inode::get(c, ino)?.attr())).await
    }

    /// Creates a node of any kind in `parent`, owned by the caller (group inherited from a
    /// setgid parent), and counts one kernel reference to it.
    pub(super) async fn create_node(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        node: NewNode<'_>,
    ) -> FsResult<Attr> {
        check_new_name(name)?;
        let name = name.as_bytes().to_vec();
        let (kind_bits, rdev, target) = match node {
            NewNode::Dir => (mode_bits::S_IFDIR, 0, None),
            NewNode::Symlink(t) => (mode_bits::S_IFLNK, 0, Some(t.to_vec())),
            NewNode::Other(rdev) => (mode & mode_bits::S_IFMT, rdev, None),
        };
        if FileKind::from_mode(kind_bits).is_none() {
            return Err(errno(libc::EINVAL));
        }
        let attr = self
            .db
            .call(move |c| {
                let p = writable_dir(c, parent)?;
                if entry(c, parent, &name)?.is_some() {
                    return Err(errno(libc::EEXIST));
                }
                let is_dir = kind_bits == mode_bits::S_IFDIR;
                let mut perm = if target.is_some() {
                    0o777
                } else {
                    mode & 0o7777
                };
                let gid = if p.mode & mode_bits::S_ISGID != 0 {
                    if is_dir {
                        perm |= mode_bits::S_ISGID;
                    }
                    p.gid
                } else {
                    caller.gid
                };
                let now = Timestamp::now();
                let mut new = inode::insert(
                    c,
                    &NewInode {
                        mode: kind_bits | perm,
                        uid: caller.uid,
                        gid,
                        rdev,
                        nlink: if is_dir { 2 } else { 1 },
                        now,
                    },
                )?;
                if let Some(t) = &target {
                    c.prepare_cached(
                        "INSERT INTO symlink_targets (inode, target) VALUES (?1, ?2)",
                    )?
                    .execute(params![new.id, t])?;
                    new.size = t.len() as u64;
                    new.save(c)?;
                }
                insert_entry(c, parent, &name, new.id)?;
                inode::touch_dir(c, parent, now, i64::from(is_dir))?;
                Ok(new.attr())
            })
            .await?;
        self.add_lookup(attr.ino);
        Ok(attr)
    }

    /// Creates a file, device node, FIFO or socket (`mode` holds the type bits).
    pub async fn mknod(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> FsResult<Attr> {
        if mode & mode_bits::S_IFMT == mode_bits::S_IFDIR
            || mode & mode_bits::S_IFMT == mode_bits::S_IFLNK
        {
            return Err(errno(libc::EINVAL));
        }
        let mode = if mode & mode_bits::S_IFMT == 0 {
            mode | mode_bits::S_IFREG
        } else {
            mode
        };
        self.create_node(caller, parent, name, mode, NewNode::Other(rdev))
            .await
    }

    /// Creates a directory.
    pub async fn mkdir(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
    ) -> FsResult<Attr> {
        self.create_node(caller, parent, name, mode, NewNode::Dir)
            .await
    }

    /// Creates a symbolic link to `target` (bytes, stored exactly).
    pub async fn symlink(
        &self,
        caller: Caller,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
    ) -> FsResult<Attr> {
        if target.len() > 4095 {
            return Err(errno(libc::ENAMETOOLONG));
        }
        self.create_node(
            caller,
            parent,
            name,
            0o777,
            NewNode::Symlink(target.as_bytes()),
        )
        .await
    }

    /// The target of symlink `ino`.
    pub async fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.db
            .query(move |c| {
                c.prepare_cached("SELECT target FROM symlink_targets WHERE inode = ?1")?
                    .query_row([ino], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| errno(libc::EINVAL))
            })
            .await
    }

    /// Removes the entry `name` (not a directory) from `parent`. The inode lives on while
    /// the kernel references it or a handle is open.
    pub async fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.remove_entry(parent, name, false).await
    }

    /// Removes the empty directory `name` from `parent`.
    pub async fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        self.remove_entry(parent, name, true).await
    }

    async fn remove_entry(&self, parent: u64, name: &OsStr, want_dir: bool) -> FsResult<()> {
        if name.as_bytes() == CTRL_NAME {
            return Err(errno(libc::EACCES));
        }
        let name = name.as_bytes().to_vec();
        let (ino, nlink) = self
            .db
            .call(move |c| {
                writable_dir(c, parent)?;
                let (entry_id, ino) =
                    entry(c, parent, &name)?.ok_or_else(|| errno(libc::ENOENT))?;
                let child = inode::get(c, ino)?;
                if child.locked {
                    return Err(errno(libc::EPERM));
                }
                match (want_dir, child.is_dir()) {
                    (true, false) => return Err(errno(libc::ENOTDIR)),
                    (false, true) => return Err(errno(libc::EISDIR)),
                    (true, true) if has_children(c, ino)? => return Err(errno(libc::ENOTEMPTY)),
                    _ => {}
                }
                let now = Timestamp::now();
                c.prepare_cached("DELETE FROM contents WHERE id = ?1")?
                    .execute([entry_id])?;
                let nlink = if want_dir {
                    inode::add_links(c, ino, -i64::from(child.nlink), now)?
                } else {
                    inode::add_links(c, ino, -1, now)?
                };
                inode::touch_dir(c, parent, now, if want_dir { -1 } else { 0 })?;
                Ok((ino, nlink))
            })
            .await?;
        if nlink == 0 {
            self.free_if_unlinked(ino).await?;
        }
        Ok(())
    }

    /// Renames `name` in `parent` to `new_name` in `new_parent`, atomically, with
    /// `RENAME_NOREPLACE` and `RENAME_EXCHANGE` semantics.
    pub async fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> FsResult<()> {
        check_new_name(new_name)?;
        if name.as_bytes() == CTRL_NAME {
            return Err(errno(libc::EACCES));
        }
        if flags.exchange && flags.noreplace {
            return Err(errno(libc::EINVAL));
        }
        let name = name.as_bytes().to_vec();
        let new_name = new_name.as_bytes().to_vec();
        let replaced = self
            .db
            .call(move |c| rename_in_db(c, parent, &name, new_parent, &new_name, flags))
            .await?;
        if let Some(ino) = replaced {
            self.free_if_unlinked(ino).await?;
        }
        Ok(())
    }

    /// Adds the name `new_name` in `new_parent` for the existing non-directory `ino`.
    pub async fn link(&self, ino: u64, new_parent: u64, new_name: &OsStr) -> FsResult<Attr> {
        check_new_name(new_name)?;
        let new_name = new_name.as_bytes().to_vec();
        let attr = self
            .db
            .call(move |c| {
                let target = inode::get(c, ino)?;
                if target.is_dir() {
                    return Err(errno(libc::EPERM));
                }
                if target.locked {
                    return Err(errno(libc::EPERM));
                }
                writable_dir(c, new_parent)?;
                if entry(c, new_parent, &new_name)?.is_some() {
                    return Err(errno(libc::EEXIST));
                }
                let now = Timestamp::now();
                insert_entry(c, new_parent, &new_name, ino)?;
                inode::add_links(c, ino, 1, now)?;
                inode::touch_dir(c, new_parent, now, 0)?;
                Ok(inode::get(c, ino)?.attr())
            })
            .await?;
        self.add_lookup(ino);
        Ok(attr)
    }

    /// Opens directory `ino` for listing.
    pub async fn opendir(&self, ino: u64) -> FsResult<u64> {
        self.db.query(move |c| dir(c, ino).map(|_| ())).await?;
        Ok(0)
    }

    /// Ends a listing.
    pub async fn releasedir(&self, _ino: u64, _fh: u64) -> FsResult<()> {
        Ok(())
    }

    /// Makes the directory's changes durable (all metadata is committed together).
    pub async fn fsyncdir(&self, _ino: u64) -> FsResult<()> {
        self.db.sync().await
    }

    /// Up to `max` entries of directory `ino` after cookie `offset` (0 starts), `.` and
    /// `..` first. An entry present for a whole listing is returned exactly once.
    pub async fn readdir(&self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<DirEntry>> {
        Ok(self
            .list_dir(ino, offset, max)
            .await?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    }

    /// Like [`Filesystem::readdir`] with attributes; counts one kernel reference to each
    /// entry other than `.` and `..` (the adapter forgets those it could not send).
    pub async fn readdirplus(
        &self,
        ino: u64,
        offset: u64,
        max: usize,
    ) -> FsResult<Vec<(DirEntry, Attr)>> {
        let list = self.list_dir(ino, offset, max).await?;
        for (e, _) in &list {
            if e.name != "." && e.name != ".." {
                self.add_lookup(e.ino);
            }
        }
        Ok(list)
    }

    async fn list_dir(&self, ino: u64, offset: u64, max: usize) -> FsResult<Vec<(DirEntry, Attr)>> {
        self.db
            .query(move |c| {
                let d = dir(c, ino)?;
                let mut out = Vec::new();
                if offset == 0 && out.len() < max {
                    out.push((dot_entry(".", &d, 1), d.attr()));
                }
                if offset <= 1 && out.len() < max {
                    let p = inode::get(c, parent_of(c, ino)?)?;
                    out.push((dot_entry("..", &p, 2), p.attr()));
                }
                let after = offset.saturating_sub(2);
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT c.id, c.name, {} FROM contents c JOIN inodes i ON i.id = c.inode
                     WHERE c.parent = ?1 AND c.id > ?2 ORDER BY c.id LIMIT ?3",
                    INODE_COLUMNS
                        .split(", ")
                        .map(|col| format!("i.{col}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))?;
                let remaining = max.saturating_sub(out.len()) as i64;
                let rows = stmt.query_map(params![ino, after, remaining], |r| {
                    let id: u64 = r.get(0)?;
                    let name: Vec<u8> = r.get(1)?;
                    let child = Inode::from_row_at(r, 2)?;
                    Ok((id, name, child))
                })?;
                for row in rows {
                    let (id, name, child) = row?;
                    out.push((
                        DirEntry {
                            ino: child.id,
                            offset: id + 2,
                            kind: child.kind(),
                            name: OsString::from_vec(name),
                        },
                        child.attr(),
                    ));
                }
                Ok(out)
            })
            .await
    }
}

fn dot_entry(name: &str, node: &Inode, offset: u64) -> DirEntry {
    DirEntry {
        ino: node.id,
        offset,
        kind: FileKind::Directory,
        name: OsString::from(name),
    }
}

/// The database part of rename; returns an inode that lost a link to the rename.
fn rename_in_db(
    c: &Connection,
    parent: u64,
    name: &[u8],
    new_parent: u64,
    new_name: &[u8],
    flags: RenameFlags,
) -> FsResult<Option<u64>> {
    writable_dir(c, parent)?;
    writable_dir(c, new_parent)?;
    let (src_entry, src_ino) = entry(c, parent, name)?.ok_or_else(|| errno(libc::ENOENT))?;
    let src = inode::get(c, src_ino)?;
    let dst = entry(c, new_parent, new_name)?;
    let now = Timestamp::now();
    if src.locked {
        return Err(errno(libc::EPERM));
    }
    if flags.exchange {
        let (dst_entry, dst_ino) = dst.ok_or_else(|| errno(libc::ENOENT))?;
        let dst_node = inode::get(c, dst_ino)?;
        if dst_node.locked {
            return Err(errno(libc::EPERM));
        }
        if src.is_dir() && is_ancestor(c, src_ino, new_parent)?
            || dst_node.is_dir() && is_ancestor(c, dst_ino, parent)?
        {
            return Err(errno(libc::EINVAL));
        }
        c.prepare_cached("UPDATE contents SET inode = ?2 WHERE id = ?1")?
            .execute(params![src_entry, dst_ino])?;
        c.prepare_cached("UPDATE contents SET inode = ?2 WHERE id = ?1")?
            .execute(params![dst_entry, src_ino])?;
        let delta = i64::from(src.is_dir()) - i64::from(dst_node.is_dir());
        if parent != new_parent {
            inode::touch_dir(c, parent, now, -delta)?;
        }
        inode::touch_dir(
            c,
            new_parent,
            now,
            if parent != new_parent { delta } else { 0 },
        )?;
        inode::add_links(c, src_ino, 0, now)?;
        inode::add_links(c, dst_ino, 0, now)?;
        return Ok(None);
    }
    if src.is_dir() && is_ancestor(c, src_ino, new_parent)? {
        return Err(errno(libc::EINVAL));
    }
    let mut replaced = None;
    if let Some((dst_entry, dst_ino)) = dst {
        if flags.noreplace {
            return Err(errno(libc::EEXIST));
        }
        if dst_ino == src_ino {
            return Ok(None);
        }
        let dst_node = inode::get(c, dst_ino)?;
        if dst_node.locked {
            return Err(errno(libc::EPERM));
        }
        match (src.is_dir(), dst_node.is_dir()) {
            (true, false) => return Err(errno(libc::ENOTDIR)),
            (false, true) => return Err(errno(libc::EISDIR)),
            (true, true) if has_children(c, dst_ino)? => return Err(errno(libc::ENOTEMPTY)),
            _ => {}
        }
        c.prepare_cached("DELETE FROM contents WHERE id = ?1")?
            .execute([dst_entry])?;
        let lost = if dst_node.is_dir() {
            -i64::from(dst_node.nlink)
        } else {
            -1
        };
        if inode::add_links(c, dst_ino, lost, now)? == 0 {
            replaced = Some(dst_ino);
        }
        if dst_node.is_dir() {
            inode::touch_dir(c, new_parent, now, -1)?;
        }
    }
    c.prepare_cached("UPDATE contents SET parent = ?2, name = ?3 WHERE id = ?1")?
        .execute(params![src_entry, new_parent, new_name])?;
    let moved_dir = i64::from(src.is_dir() && parent != new_parent);
    inode::touch_dir(c, parent, now, -moved_dir)?;
    inode::touch_dir(c, new_parent, now, moved_dir)?;
    inode::add_links(c, src_ino, 0, now)?;
    Ok(replaced)
}
