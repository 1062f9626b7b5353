//! The S3QL tree operations: snapshots (`copy_tree`, s3qlcp), immutable trees (`lock_tree`,
//! s3qllock) and removal of whole trees (`remove_tree`, s3qlrm). Each collects the tree's
//! inodes with one recursive query and changes them with a few set-based statements in one
//! metadata transaction, so its cost is a local database transaction whatever the size of
//! the files (only `copy_tree` may first wait for dirty blocks to be uploaded).

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use rusqlite::{params, Connection};

use super::inode;
use super::namespace::{dir, entry, insert_entry, is_ancestor, writable_dir};
use super::{check_new_name, Filesystem, Invalidation};
use crate::error::{errno, FsResult};
use crate::types::{Attr, Timestamp, CTRL_INODE, CTRL_NAME};

/// `mode & S_IFMT` of a directory, for SQL.
const IS_DIR: &str = "((mode & 61440) = 16384)";

/// Empties the temporary table `inode_set` and fills it with `top` and every inode below it
/// (directories cannot be hard-linked, so the recursion ends; files linked twice are listed
/// once).
fn collect_tree(conn: &Connection, top: u64) -> FsResult<()> {
    conn.prepare_cached("DELETE FROM temp.inode_set")?
        .execute([])?;
    conn.prepare_cached(
        "WITH RECURSIVE tree(id) AS
             (SELECT ?1 UNION SELECT c.inode FROM tree t CROSS JOIN contents c ON c.parent = t.id)
         INSERT INTO temp.inode_set (id) SELECT id FROM tree",
    )?
    .execute([top])?;
    Ok(())
}

/// Why `copy_tree(src, dst_parent, name)` cannot run, if it cannot: `ENOENT`/`ENOTDIR` for
/// a bad source, `EPERM` for a locked target directory, `EEXIST` for an existing target,
/// `EINVAL` for a target inside the source.
fn check_copy(conn: &Connection, src: u64, dst_parent: u64, name: &[u8]) -> FsResult<()> {
    let source = dir(conn, src)?;
    if source.nlink == 0 {
        return Err(errno(libc::ENOENT));
    }
    writable_dir(conn, dst_parent)?;
    if entry(conn, dst_parent, name)?.is_some() {
        return Err(errno(libc::EEXIST));
    }
    if is_ancestor(conn, src, dst_parent)? {
        return Err(errno(libc::EINVAL));
    }
    Ok(())
}

/// The database part of `copy_tree`: new inodes (fresh numbers, attributes as they are,
/// unlocked), entries, symlink targets, xattrs and block references for the tree below
/// `src`, whose copy becomes entry `name` of `dst_parent`. Returns the copy's attributes.
fn copy_in_db(conn: &Connection, src: u64, dst_parent: u64, name: &[u8]) -> FsResult<Attr> {
    check_copy(conn, src, dst_parent, name)?;
    collect_tree(conn, src)?;
    // New inode numbers follow every number ever used (inode numbers are never reused).
    let base: u64 = conn.query_row(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'inodes'), 0),
                    COALESCE((SELECT MAX(id) FROM inodes), 0))",
        [],
        |r| r.get(0),
    )?;
    for sql in [
        "DELETE FROM temp.inode_map",
        "INSERT INTO temp.inode_map (old, new)
         SELECT id, ?1 + ROW_NUMBER() OVER (ORDER BY id) FROM temp.inode_set",
        "INSERT INTO inodes (id, mode, uid, gid, atime_ns, mtime_ns, ctime_ns, size, rdev, nlink, locked)
         SELECT m.new, i.mode, i.uid, i.gid, i.atime_ns, i.mtime_ns, i.ctime_ns, i.size, i.rdev, i.nlink, 0
         FROM temp.inode_map m CROSS JOIN inodes i ON i.id = m.old",
        "INSERT INTO contents (parent, name, inode)
         SELECT p.new, c.name, m.new
         FROM temp.inode_map p CROSS JOIN contents c ON c.parent = p.old
         CROSS JOIN temp.inode_map m ON m.old = c.inode",
        "INSERT INTO symlink_targets (inode, target)
         SELECT m.new, s.target FROM temp.inode_map m CROSS JOIN symlink_targets s ON s.inode = m.old",
        "INSERT INTO ext_attributes (inode, name, value)
         SELECT m.new, x.name, x.value FROM temp.inode_map m CROSS JOIN ext_attributes x ON x.inode = m.old",
    ] {
        let mut stmt = conn.prepare_cached(sql)?;
        if stmt.parameter_count() == 1 {
            stmt.execute([base])?;
        } else {
            stmt.execute([])?;
        }
    }
    crate::blocks::copy_blocks_of_map(conn)?;
    let top: u64 = conn
        .prepare_cached("SELECT new FROM temp.inode_map WHERE old = ?1")?
        .query_row([src], |r| r.get(0))?;
    insert_entry(conn, dst_parent, name, top)?;
    // A copied file keeps only the links inside the copy (hard links to places outside the
    // tree are not copied); directories keep 2 + subdirectories, all of which were copied.
    conn.prepare_cached(&format!(
        "UPDATE inodes SET nlink = (SELECT COUNT(*) FROM contents c WHERE c.inode = inodes.id)
         WHERE id > ?1 AND NOT {IS_DIR}"
    ))?
    .execute([base])?;
    inode::touch_dir(conn, dst_parent, Timestamp::now(), 1)?;
    Ok(inode::get(conn, top)?.attr())
}

/// What `detach_tree` removed.
struct Detached {
    /// The tree's top inode.
    top: u64,
    /// Every removed entry below the top: (directory, name, inode).
    entries: Vec<(u64, Vec<u8>, u64)>,
    /// The inodes left without any link.
    unlinked: Vec<u64>,
}

/// The database part of `remove_tree`: removes entry `name` of `parent` and every entry
/// below it; each inode of the tree loses the links from inside the tree (directories all
/// of theirs).
fn detach_tree(conn: &Connection, parent: u64, name: &[u8]) -> FsResult<Detached> {
    writable_dir(conn, parent)?;
    let (entry_id, top) = entry(conn, parent, name)?.ok_or_else(|| errno(libc::ENOENT))?;
    let top_is_dir = inode::get(conn, top)?.is_dir();
    collect_tree(conn, top)?;
    let now = Timestamp::now();
    conn.prepare_cached("DELETE FROM contents WHERE id = ?1")?
        .execute([entry_id])?;
    conn.prepare_cached(&format!(
        "UPDATE inodes SET ctime_ns = ?2, nlink = nlink - (id = ?1)
             - (SELECT COUNT(*) FROM contents c
                WHERE c.inode = inodes.id AND c.parent IN (SELECT id FROM temp.inode_set))
         WHERE id IN (SELECT id FROM temp.inode_set) AND NOT {IS_DIR}"
    ))?
    .execute(params![top, now.nanos])?;
    conn.prepare_cached(&format!(
        "UPDATE inodes SET nlink = 0 WHERE id IN (SELECT id FROM temp.inode_set) AND {IS_DIR}"
    ))?
    .execute([])?;
    let entries = conn
        .prepare_cached(
            "DELETE FROM contents WHERE parent IN (SELECT id FROM temp.inode_set)
             RETURNING parent, name, inode",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    inode::touch_dir(conn, parent, now, -i64::from(top_is_dir))?;
    let unlinked = conn
        .prepare_cached(
            "SELECT i.id FROM temp.inode_set s CROSS JOIN inodes i ON i.id = s.id WHERE i.nlink = 0",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(Detached {
        top,
        entries,
        unlinked,
    })
}

impl Filesystem {
    /// Copies the directory tree `src` to the new entry `name` of `dst_parent` (s3qlcp),
    /// copying no file data: the copy's files share the source's stored blocks, and a later
    /// write to either side goes to that side's own blocks only (a block is changed by
    /// storing a new one and re-pointing one inode). Modes, owners, nanosecond times,
    /// xattrs, symlink targets and hard-link groups inside the tree are preserved; links
    /// to places outside the tree are not; the copy is not locked.
    ///
    /// The copy is a point-in-time image: it holds exactly the writes and size changes
    /// that completed before it was taken (writers wait for it), and the namespace as of
    /// its metadata transaction. To get there, dirty blocks are uploaded first (so this
    /// needs the backend, unlike every other metadata operation): those dirty at the start
    /// while writers go on, then what they wrote meanwhile while they wait.
    ///
    /// Errors: `ENOENT`/`ENOTDIR` (source), `EPERM` (target directory locked), `EEXIST`
    /// (target exists), `EINVAL` (target inside the source), `EIO` (upload failed).
    pub async fn copy_tree(&self, src: u64, dst_parent: u64, name: &OsStr) -> FsResult<Attr> {
        check_new_name(name)?;
        let name = name.as_bytes().to_vec();
        let early = name.clone();
        self.db
            .call(move |c| check_copy(c, src, dst_parent, &early))
            .await?;
        self.cache.flush_dirty_now().await?;
        let gate = self.control.write_gate.write().await;
        self.cache.flush_all().await?;
        let n = name.clone();
        let attr = self
            .db
            .call(move |c| copy_in_db(c, src, dst_parent, &n))
            .await?;
        drop(gate);
        tracing::debug!("copied tree {src} to inode {}", attr.ino);
        self.invalidate_kernel(vec![
            Invalidation::Entry(dst_parent, OsString::from_vec(name)),
            Invalidation::Attr(dst_parent),
        ])
        .await;
        Ok(attr)
    }

    /// Makes `ino` and everything below it immutable (s3qllock), also after a remount:
    /// every change of a locked inode or of the entries of a locked directory fails with
    /// `EPERM`, including writes through handles opened before the lock. There is no unlock;
    /// [`Filesystem::remove_tree`] removes a locked tree.
    pub async fn lock_tree(&self, ino: u64) -> FsResult<()> {
        if ino == CTRL_INODE {
            return Err(errno(libc::EINVAL));
        }
        // Writers check the in-memory flag under the gate, so none is half done.
        let gate = self.control.write_gate.write().await;
        let locked: Vec<u64> = self
            .db
            .call(move |c| {
                inode::get(c, ino)?;
                collect_tree(c, ino)?;
                c.prepare_cached(
                    "UPDATE inodes SET locked = 1 WHERE id IN (SELECT id FROM temp.inode_set)",
                )?
                .execute([])?;
                let ids = c
                    .prepare_cached("SELECT id FROM temp.inode_set")?
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(ids)
            })
            .await?;
        {
            let mut nodes = self.nodes();
            for id in &locked {
                if let Some(refs) = nodes.get_mut(id) {
                    refs.locked = true;
                }
            }
        }
        drop(gate);
        tracing::debug!("locked {} inodes below {ino}", locked.len());
        self.invalidate_kernel(vec![Invalidation::Attr(ino)]).await;
        Ok(())
    }

    /// Removes entry `name` of `parent` with everything below it (s3qlrm), locked or not,
    /// in one metadata transaction; the parent itself must not be locked (`EPERM`). Inodes
    /// still linked from outside the tree stay; inodes the kernel still references or that
    /// are open stay readable until the kernel forgets them; all others and their data are
    /// deleted at once. The kernel is told about every removed entry it caches before this
    /// returns (so none stays visible, and it forgets the inodes once unused).
    pub async fn remove_tree(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        if name.as_bytes() == CTRL_NAME {
            return Err(errno(libc::EACCES));
        }
        let start = std::time::Instant::now();
        let n = name.as_bytes().to_vec();
        let detached = self.db.call(move |c| detach_tree(c, parent, &n)).await?;
        let (entries, unlinked) = (detached.entries.len() + 1, detached.unlinked.len());
        let detach_time = start.elapsed();
        let mut changes = self.kernel_entries(detached.top, detached.entries);
        changes.push(Invalidation::Deleted(parent, detached.top, name.to_owned()));
        changes.push(Invalidation::Attr(parent));
        let notified = changes.len();
        self.invalidate_kernel(changes).await;
        let notify_time = start.elapsed();
        self.free_unlinked(detached.unlinked).await?;
        tracing::debug!(
            "removed {name:?} from {parent}: {entries} entries, {unlinked} inodes unlinked; \
             detached after {detach_time:?}, {notified} kernel notifications done after \
             {notify_time:?}, freed after {:?}",
            start.elapsed()
        );
        Ok(())
    }

    /// The removed `entries` below `top` that the kernel may cache (only an inode it
    /// references can have a cached entry), children before their directories (the kernel
    /// finds an entry through its directory's cached entry).
    fn kernel_entries(&self, top: u64, entries: Vec<(u64, Vec<u8>, u64)>) -> Vec<Invalidation> {
        let mut by_dir: HashMap<u64, Vec<(Vec<u8>, u64)>> = HashMap::new();
        for (dir, name, ino) in entries {
            by_dir.entry(dir).or_default().push((name, ino));
        }
        let nodes = self.nodes();
        let mut order = Vec::new();
        let mut queue = VecDeque::from([top]);
        while let Some(dir) = queue.pop_front() {
            for (name, ino) in by_dir.remove(&dir).unwrap_or_default() {
                if nodes.contains_key(&ino) {
                    order.push(Invalidation::Deleted(dir, ino, OsString::from_vec(name)));
                    queue.push_back(ino);
                }
            }
        }
        order.reverse();
        order
    }
}
