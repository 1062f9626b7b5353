//! Reference-counted, de-duplicated data blocks in the metadata database.
//!
//! A block row is shared by every `(inode, blockno)` that holds the same plaintext
//! (identified by its SHA-256). Its refcount (a row of `block_refcounts`, which exists
//! exactly when the block row does) always equals the number of `inode_blocks` rows that
//! point at it; every function here keeps that invariant within the caller's transaction. An object whose block lost its last reference is returned to the caller,
//! who deletes it from the storage only after the transaction has committed.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::FsResult;
use crate::meta::META_NEXT_OBJECT_ID;

/// Name of the storage object holding data object `obj_id`.
pub fn data_object_name(obj_id: u64) -> String {
    format!("s3ql_data_{obj_id}")
}

/// Where the stored copy of one file block lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredBlock {
    pub hash: Vec<u8>,
    pub size: u64,
    pub obj_id: u64,
}

/// The stored block at `(inode, blockno)`, if any (none means a hole).
pub(crate) fn block_of(
    conn: &Connection,
    inode: u64,
    blockno: u64,
) -> FsResult<Option<StoredBlock>> {
    Ok(conn
        .prepare_cached(
            "SELECT b.hash, b.size, b.obj_id FROM inode_blocks ib JOIN blocks b ON b.id = ib.block_id
             WHERE ib.inode = ?1 AND ib.blockno = ?2",
        )?
        .query_row(params![inode, blockno], |r| {
            Ok(StoredBlock {
                hash: r.get(0)?,
                size: r.get(1)?,
                obj_id: r.get(2)?,
            })
        })
        .optional()?)
}

/// Reserves a fresh data object number; numbers are never reused.
pub(crate) fn next_object_id(conn: &Connection) -> FsResult<u64> {
    let id: u64 = conn
        .prepare_cached("UPDATE fs_meta SET value = value + 1 WHERE key = ?1 RETURNING value - 1")?
        .query_row([META_NEXT_OBJECT_ID], |r| r.get(0))?;
    Ok(id)
}

/// The id of the block with this hash, if one is stored.
pub(crate) fn block_by_hash(conn: &Connection, hash: &[u8]) -> FsResult<Option<u64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM blocks WHERE hash = ?1")?
        .query_row([hash], |r| r.get(0))
        .optional()?)
}

/// Inserts a new block row with refcount 0 and returns its id.
pub(crate) fn insert_block(
    conn: &Connection,
    hash: &[u8],
    size: u64,
    obj_id: u64,
    stored_size: u64,
) -> FsResult<u64> {
    conn.prepare_cached(
        "INSERT INTO blocks (hash, size, obj_id, stored_size) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![hash, size, obj_id, stored_size])?;
    let id = conn.last_insert_rowid() as u64;
    conn.prepare_cached("INSERT INTO block_refcounts (id, refcount) VALUES (?1, 0)")?
        .execute([id])?;
    Ok(id)
}

/// Adds one reference to `block_id` (the caller adds the `inode_blocks` row).
pub(crate) fn add_ref(conn: &Connection, block_id: u64) -> FsResult<()> {
    conn.prepare_cached("UPDATE block_refcounts SET refcount = refcount + 1 WHERE id = ?1")?
        .execute([block_id])?;
    Ok(())
}

/// Deletes block `block_id` (its row and its reference count) whatever its references;
/// returns its object, which the caller deletes from the storage after the commit.
pub(crate) fn delete_block(conn: &Connection, block_id: u64) -> FsResult<u64> {
    conn.prepare_cached("DELETE FROM block_refcounts WHERE id = ?1")?
        .execute([block_id])?;
    Ok(conn
        .prepare_cached("DELETE FROM blocks WHERE id = ?1 RETURNING obj_id")?
        .query_row([block_id], |r| r.get(0))?)
}

/// Points `(inode, blockno)` at `block_id` (or makes it a hole with `None`), adjusting
/// both refcounts. Returns the object to delete if the old block lost its last reference.
pub(crate) fn set_block(
    conn: &Connection,
    inode: u64,
    blockno: u64,
    block_id: Option<u64>,
) -> FsResult<Option<u64>> {
    let old: Option<u64> = conn
        .prepare_cached("SELECT block_id FROM inode_blocks WHERE inode = ?1 AND blockno = ?2")?
        .query_row(params![inode, blockno], |r| r.get(0))
        .optional()?;
    if old == block_id {
        return Ok(None);
    }
    match block_id {
        Some(id) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO inode_blocks (inode, blockno, block_id) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![inode, blockno, id])?;
            add_ref(conn, id)?;
        }
        None => {
            conn.prepare_cached("DELETE FROM inode_blocks WHERE inode = ?1 AND blockno = ?2")?
                .execute(params![inode, blockno])?;
        }
    }
    match old {
        Some(old) => release_block(conn, old),
        None => Ok(None),
    }
}

/// Drops one reference to `block_id`; deletes the row and returns its object when none is left.
pub(crate) fn release_block(conn: &Connection, block_id: u64) -> FsResult<Option<u64>> {
    let refcount: i64 = conn
        .prepare_cached(
            "UPDATE block_refcounts SET refcount = refcount - 1 WHERE id = ?1 RETURNING refcount",
        )?
        .query_row([block_id], |r| r.get(0))?;
    if refcount > 0 {
        return Ok(None);
    }
    delete_block(conn, block_id).map(Some)
}

/// Removes every block of `inode` from `first_blockno` on; returns the objects to delete.
pub(crate) fn remove_blocks_from(
    conn: &Connection,
    inode: u64,
    first_blockno: u64,
) -> FsResult<Vec<u64>> {
    let ids: Vec<u64> = conn
        .prepare_cached(
            "DELETE FROM inode_blocks WHERE inode = ?1 AND blockno >= ?2 RETURNING block_id",
        )?
        .query_map(params![inode, first_blockno], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut dead = Vec::new();
    for id in ids {
        dead.extend(release_block(conn, id)?);
    }
    Ok(dead)
}

/// Adds `sign` (1 or -1) times the number of references from the inodes of `inodes` (a
/// query of one column `ino`) to the refcount of each block they use; leaves the counts per
/// block in the temporary table `block_delta (id, n)`. The statements walk the given inodes
/// and the primary keys only (`CROSS JOIN` fixes the loop order), so a batch costs what it
/// touches, not the size of the tables.
fn change_refs(conn: &Connection, inodes: &str, sign: i64) -> FsResult<()> {
    conn.prepare_cached("DELETE FROM temp.block_delta")?
        .execute([])?;
    conn.prepare_cached(&format!(
        "INSERT INTO temp.block_delta (id, n)
         SELECT ib.block_id, COUNT(*) FROM ({inodes}) AS s CROSS JOIN inode_blocks ib
         ON ib.inode = s.ino GROUP BY ib.block_id"
    ))?
    .execute([])?;
    conn.prepare_cached(
        "UPDATE block_refcounts
         SET refcount = refcount + ?1 * (SELECT d.n FROM temp.block_delta d WHERE d.id = block_refcounts.id)
         WHERE id IN (SELECT id FROM temp.block_delta)",
    )?
    .execute([sign])?;
    Ok(())
}

/// Gives each inode `new` of the temporary table `inode_map (old, new)` the blocks of
/// inode `old`, adding one reference to a block per row that now points at it.
pub(crate) fn copy_blocks_of_map(conn: &Connection) -> FsResult<()> {
    change_refs(conn, "SELECT old AS ino FROM temp.inode_map", 1)?;
    conn.prepare_cached(
        "INSERT INTO inode_blocks (inode, blockno, block_id)
         SELECT m.new, ib.blockno, ib.block_id
         FROM temp.inode_map m CROSS JOIN inode_blocks ib ON ib.inode = m.old",
    )?
    .execute([])?;
    Ok(())
}

/// Removes every block of the inodes in the temporary table `inode_set`, dropping one
/// reference per row; returns the objects of the blocks that lost their last reference.
pub(crate) fn remove_blocks_of_set(conn: &Connection) -> FsResult<Vec<u64>> {
    change_refs(conn, "SELECT id AS ino FROM temp.inode_set", -1)?;
    conn.prepare_cached("DELETE FROM inode_blocks WHERE inode IN (SELECT id FROM temp.inode_set)")?
        .execute([])?;
    conn.prepare_cached(
        "DELETE FROM block_refcounts WHERE id IN (SELECT id FROM temp.block_delta) AND refcount = 0",
    )?
    .execute([])?;
    let dead = conn
        .prepare_cached(
            "DELETE FROM blocks WHERE id IN (SELECT d.id FROM temp.block_delta d
                 WHERE NOT EXISTS (SELECT 1 FROM block_refcounts r WHERE r.id = d.id))
             RETURNING obj_id",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(dead)
}
