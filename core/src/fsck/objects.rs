//! Data objects in the storage against the block table.

use std::collections::{HashMap, HashSet};

use rusqlite::Connection;

use super::{path_of, FsckReport};
use crate::blocks::{self, data_object_name};
use crate::error::FsResult;
use crate::storage::{ObjectStore, StoreError};

const DATA_PREFIX: &str = "s3ql_data_";

/// The data objects in the storage (one listing): object number to stored size.
pub(super) async fn list_data_objects(
    store: &dyn ObjectStore,
    report: &mut FsckReport,
) -> Result<HashMap<u64, u64>, StoreError> {
    let mut found = HashMap::new();
    for o in store.list(DATA_PREFIX).await? {
        match o.name[DATA_PREFIX.len()..].parse::<u64>() {
            Ok(id) => {
                found.insert(id, o.size);
            }
            Err(_) => report.note(format!("ignoring object {} (not a data object)", o.name)),
        }
    }
    Ok(found)
}

/// Drops the blocks whose object is not in `stored`: the file ranges that used them
/// become holes (read as zeros). Every affected file is reported by path.
pub(super) fn missing(
    c: &Connection,
    stored: &HashMap<u64, u64>,
    block_size: u64,
    report: &mut FsckReport,
) -> FsResult<()> {
    let lost: Vec<(u64, u64)> = c
        .prepare("SELECT id, obj_id FROM blocks")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .filter(|row| {
            row.as_ref()
                .map_or(true, |(_, obj)| !stored.contains_key(obj))
        })
        .collect::<Result<_, _>>()?;
    if lost.is_empty() {
        return Ok(());
    }
    let lost_ids: HashSet<u64> = lost.iter().map(|(id, _)| *id).collect();
    // One pass over the block references (there is no index by block).
    let mut users: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for row in c
        .prepare("SELECT block_id, inode, blockno FROM inode_blocks")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
    {
        let (block, inode, blockno): (u64, u64, u64) = row?;
        if lost_ids.contains(&block) {
            users.entry(block).or_default().push((inode, blockno));
        }
    }
    for (block, obj) in lost {
        let users = users.remove(&block).unwrap_or_default();
        for (ino, blockno) in &users {
            c.prepare_cached("DELETE FROM inode_blocks WHERE inode = ?1 AND blockno = ?2")?
                .execute([ino, blockno])?;
        }
        blocks::delete_block(c, block)?;
        let name = data_object_name(obj);
        if users.is_empty() {
            report.problem(format!("object {name} is missing (no file used it)"));
        }
        for (ino, blockno) in users {
            let start = blockno * block_size;
            report.problem(format!(
                "object {name} is missing: {} bytes {start}..{} now read as zeros",
                path_of(c, ino),
                start + block_size
            ));
        }
    }
    Ok(())
}

/// The objects of `stored` that no block references.
pub(super) fn unreferenced(c: &Connection, stored: &HashMap<u64, u64>) -> FsResult<Vec<u64>> {
    let used: HashSet<u64> = c
        .prepare("SELECT obj_id FROM blocks")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut extra: Vec<u64> = stored
        .keys()
        .filter(|id| !used.contains(id))
        .copied()
        .collect();
    extra.sort_unstable();
    Ok(extra)
}

/// Deletes the unreferenced objects `ids` (sizes from `stored`) and reports them.
pub(super) async fn delete_unreferenced(
    store: &dyn ObjectStore,
    ids: &[u64],
    stored: &HashMap<u64, u64>,
    report: &mut FsckReport,
) -> Result<(), StoreError> {
    let mut bytes = 0;
    for id in ids {
        let name = data_object_name(*id);
        store.delete(&name).await?;
        let size = stored.get(id).copied().unwrap_or(0);
        bytes += size;
        report.problem(format!(
            "object {name} ({size} bytes) is not used by any file; deleted"
        ));
    }
    if !ids.is_empty() {
        report.note(format!(
            "deleted {} unreferenced object(s), {bytes} bytes",
            ids.len()
        ));
    }
    Ok(())
}
