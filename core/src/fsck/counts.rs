//! Derived numbers: reference counts, inode sizes, the next object number, the running
//! totals of `statfs`.

use rusqlite::{params, Connection};

use super::{path_of, FsckReport};
use crate::blocks;
use crate::error::FsResult;
use crate::fs::check::{refcount_mismatches, totals_mismatch};
use crate::meta::{self, META_NEXT_OBJECT_ID};

/// Stores every recomputed reference count that differs (see `fs::check`); blocks left
/// without reference are dropped. Returns their objects, to delete after commit.
pub(super) fn refcounts(c: &Connection, report: &mut FsckReport) -> FsResult<Vec<u64>> {
    let mut dead = Vec::new();
    for m in refcount_mismatches(c)? {
        report.problem(m.to_string());
        if m.is_block() && m.expected == Some(0) {
            dead.push(blocks::delete_block(c, m.id as u64)?);
        } else {
            m.repair(c)?;
        }
    }
    Ok(dead)
}

/// Grows inode sizes that end before the data of their last block.
pub(super) fn sizes(c: &Connection, block_size: u64, report: &mut FsckReport) -> FsResult<()> {
    let short: Vec<(u64, u64, u64)> = c
        .prepare(
            "SELECT i.id, i.size, MAX(ib.blockno * ?1 + b.size) AS data_end
             FROM inodes i JOIN inode_blocks ib ON ib.inode = i.id JOIN blocks b ON b.id = ib.block_id
             GROUP BY i.id HAVING i.size < data_end",
        )?
        .query_map([block_size], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (ino, size, end) in short {
        c.execute(
            "UPDATE inodes SET size = ?2 WHERE id = ?1",
            params![ino, end],
        )?;
        report.problem(format!(
            "size of {} is {size} bytes but its data ends at {end}; size set to {end}",
            path_of(c, ino)
        ));
    }
    Ok(())
}

/// Makes the next object number larger than every number in use (`max_seen`: the
/// largest one in the storage).
pub(super) fn next_object_id(
    c: &Connection,
    max_seen: u64,
    report: &mut FsckReport,
) -> FsResult<()> {
    let (next, max_block): (u64, u64) = c.query_row(
        "SELECT (SELECT value FROM fs_meta WHERE key = ?1),
                (SELECT COALESCE(MAX(obj_id), 0) FROM blocks)",
        [META_NEXT_OBJECT_ID],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let needed = max_seen.max(max_block) + 1;
    if next < needed {
        c.execute(
            "UPDATE fs_meta SET value = ?2 WHERE key = ?1",
            params![META_NEXT_OBJECT_ID, needed],
        )?;
        report.problem(format!(
            "next object number {next} is already in use; set to {needed}"
        ));
    }
    Ok(())
}

/// Recounts the running totals of `statfs` (and adds their triggers to a database that
/// lacks them); stored totals that differ are a problem, repaired.
pub(super) fn totals(c: &Connection, report: &mut FsckReport) -> FsResult<()> {
    if let Some(mismatch) = totals_mismatch(c)? {
        if meta::stored_totals(c)?.is_some() {
            report.problem(mismatch);
        }
        meta::recount_totals(c)?;
    }
    meta::create_later_schema(c)?;
    Ok(())
}
