//! Inode rows: reading them as [`Attr`], creating and updating them.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{errno, FsResult};
use crate::types::{mode_bits, Attr, FileKind, Timestamp};

/// One row of the `inodes` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inode {
    pub id: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub size: u64,
    pub rdev: u32,
    pub nlink: u32,
    pub locked: bool,
}

pub(crate) const INODE_COLUMNS: &str =
    "id, mode, uid, gid, atime_ns, mtime_ns, ctime_ns, size, rdev, nlink, locked";

impl Inode {
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<Inode> {
        Self::from_row_at(r, 0)
    }

    /// Reads an inode from the columns of `r` starting at `start`, in `INODE_COLUMNS` order.
    pub(crate) fn from_row_at(r: &Row<'_>, start: usize) -> rusqlite::Result<Inode> {
        Ok(Inode {
            id: r.get(start)?,
            mode: r.get(start + 1)?,
            uid: r.get(start + 2)?,
            gid: r.get(start + 3)?,
            atime: Timestamp {
                nanos: r.get(start + 4)?,
            },
            mtime: Timestamp {
                nanos: r.get(start + 5)?,
            },
            ctime: Timestamp {
                nanos: r.get(start + 6)?,
            },
            size: r.get(start + 7)?,
            rdev: r.get(start + 8)?,
            nlink: r.get(start + 9)?,
            locked: r.get(start + 10)?,
        })
    }

    pub(crate) fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode).unwrap_or(FileKind::Regular)
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.mode & mode_bits::S_IFMT == mode_bits::S_IFDIR
    }

    pub(crate) fn attr(&self) -> Attr {
        Attr {
            ino: self.id,
            size: self.size,
            blocks: self.size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            kind: self.kind(),
            perm: (self.mode & 0o7777) as u16,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: 128 * 1024,
        }
    }

    /// Writes every column of this row back.
    pub(crate) fn save(&self, conn: &Connection) -> FsResult<()> {
        conn.prepare_cached(
            "UPDATE inodes SET mode = ?2, uid = ?3, gid = ?4, atime_ns = ?5, mtime_ns = ?6, ctime_ns = ?7,
             size = ?8, rdev = ?9, nlink = ?10, locked = ?11 WHERE id = ?1",
        )?
        .execute(params![
            self.id,
            self.mode,
            self.uid,
            self.gid,
            self.atime.nanos,
            self.mtime.nanos,
            self.ctime.nanos,
            self.size,
            self.rdev,
            self.nlink,
            self.locked
        ])?;
        Ok(())
    }
}

/// The inode `id`, or `ENOENT`.
pub(crate) fn get(conn: &Connection, id: u64) -> FsResult<Inode> {
    conn.prepare_cached(&format!("SELECT {INODE_COLUMNS} FROM inodes WHERE id = ?1"))?
        .query_row([id], Inode::from_row)
        .optional()?
        .ok_or_else(|| errno(libc::ENOENT))
}

/// Fields of a new inode.
pub(crate) struct NewInode {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub nlink: u32,
    pub now: Timestamp,
}

/// Inserts a new inode and returns it. Inode numbers are never reused.
pub(crate) fn insert(conn: &Connection, new: &NewInode) -> FsResult<Inode> {
    conn.prepare_cached(
        "INSERT INTO inodes (mode, uid, gid, atime_ns, mtime_ns, ctime_ns, size, rdev, nlink)
         VALUES (?1, ?2, ?3, ?4, ?4, ?4, 0, ?5, ?6)",
    )?
    .execute(params![
        new.mode,
        new.uid,
        new.gid,
        new.now.nanos,
        new.rdev,
        new.nlink
    ])?;
    Ok(Inode {
        id: conn.last_insert_rowid() as u64,
        mode: new.mode,
        uid: new.uid,
        gid: new.gid,
        atime: new.now,
        mtime: new.now,
        ctime: new.now,
        size: 0,
        rdev: new.rdev,
        nlink: new.nlink,
        locked: false,
    })
}

/// Sets mtime and ctime of directory `id` to `now` (an entry was added or removed) and
/// adds `nlink_delta` to its link count.
pub(crate) fn touch_dir(
    conn: &Connection,
    id: u64,
    now: Timestamp,
    nlink_delta: i64,
) -> FsResult<()> {
    conn.prepare_cached(
        "UPDATE inodes SET mtime_ns = ?2, ctime_ns = ?2, nlink = nlink + ?3 WHERE id = ?1",
    )?
    .execute(params![id, now.nanos, nlink_delta])?;
    Ok(())
}

/// Adds `delta` to the link count of `id`, sets its ctime, and returns the new count.
pub(crate) fn add_links(conn: &Connection, id: u64, delta: i64, now: Timestamp) -> FsResult<u32> {
    Ok(conn
        .prepare_cached(
            "UPDATE inodes SET nlink = nlink + ?2, ctime_ns = ?3 WHERE id = ?1 RETURNING nlink",
        )?
        .query_row(params![id, delta, now.nanos], |r| r.get(0))?)
}

/// Empties the temporary table `inode_set` and fills it with `ids`.
pub(crate) fn fill_set(conn: &Connection, ids: &[u64]) -> FsResult<()> {
    conn.prepare_cached("DELETE FROM temp.inode_set")?
        .execute([])?;
    let mut insert =
        conn.prepare_cached("INSERT OR IGNORE INTO temp.inode_set (id) VALUES (?1)")?;
    for id in ids {
        insert.execute([id])?;
    }
    Ok(())
}

/// Those of `ids` that exist and have no link left.
pub(crate) fn unlinked(conn: &Connection, ids: &[u64]) -> FsResult<Vec<u64>> {
    fill_set(conn, ids)?;
    let found = conn
        .prepare_cached(
            "SELECT i.id FROM temp.inode_set s CROSS JOIN inodes i ON i.id = s.id WHERE i.nlink = 0",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(found)
}

/// Deletes those of `ids` that have no link left, with their xattrs, symlink targets and
/// block references; returns the data objects that lost their last reference (to delete
/// after commit).
pub(crate) fn delete_unlinked(conn: &Connection, ids: &[u64]) -> FsResult<Vec<u64>> {
    fill_set(conn, ids)?;
    conn.prepare_cached(
        "DELETE FROM temp.inode_set WHERE NOT EXISTS
         (SELECT 1 FROM inodes i WHERE i.id = inode_set.id AND i.nlink = 0)",
    )?
    .execute([])?;
    let dead = crate::blocks::remove_blocks_of_set(conn)?;
    for table in ["ext_attributes", "symlink_targets"] {
        conn.prepare_cached(&format!(
            "DELETE FROM {table} WHERE inode IN (SELECT id FROM temp.inode_set)"
        ))?
        .execute([])?;
    }
    conn.prepare_cached("DELETE FROM inodes WHERE id IN (SELECT id FROM temp.inode_set)")?
        .execute([])?;
    Ok(dead)
}
