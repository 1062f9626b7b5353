//! The directory tree: `lost+found`, entries pointing nowhere, rows of missing inodes,
//! unreachable inodes.

use rusqlite::{params, Connection, OptionalExtension};

use super::{path_of, FsckReport};
use crate::error::FsResult;
use crate::fs::inode::{self, NewInode};
use crate::types::{mode_bits, Timestamp, CTRL_INODE, ROOT_INODE};

const LOST_FOUND: &[u8] = b"lost+found";
const S_IFMT: i64 = mode_bits::S_IFMT as i64;
const S_IFDIR: i64 = mode_bits::S_IFDIR as i64;

/// The inode of `/lost+found`, created (or the non-directory in its place renamed) if
/// needed.
pub(super) fn lost_found(c: &Connection, report: &mut FsckReport) -> FsResult<u64> {
    let existing: Option<(u64, i64)> = c
        .query_row(
            "SELECT c.inode, i.mode FROM contents c JOIN inodes i ON i.id = c.inode
             WHERE c.parent = ?1 AND c.name = ?2",
            params![ROOT_INODE, LOST_FOUND],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match existing {
        Some((ino, mode)) if mode & S_IFMT == S_IFDIR => return Ok(ino),
        Some((ino, _)) => {
            let name = free_name(c, ROOT_INODE, &format!("lost+found-{ino}"))?;
            c.execute(
                "UPDATE contents SET name = ?3 WHERE parent = ?1 AND name = ?2",
                params![ROOT_INODE, LOST_FOUND, name],
            )?;
            report.problem(format!(
                "/lost+found is not a directory; renamed to /{}",
                String::from_utf8_lossy(&name)
            ));
        }
        None => report.problem("/lost+found is missing; created".into()),
    }
    let root = inode::get(c, ROOT_INODE)?;
    let dir = inode::insert(
        c,
        &NewInode {
            mode: mode_bits::S_IFDIR | 0o700,
            uid: root.uid,
            gid: root.gid,
            rdev: 0,
            nlink: 2,
            now: Timestamp::now(),
        },
    )?;
    c.execute(
        "INSERT INTO contents (parent, name, inode) VALUES (?1, ?2, ?3)",
        params![ROOT_INODE, LOST_FOUND, dir.id],
    )?;
    Ok(dir.id)
}

/// `base`, or `base-N` for the first N that is free in directory `parent`.
fn free_name(c: &Connection, parent: u64, base: &str) -> FsResult<Vec<u8>> {
    let mut stmt = c.prepare_cached("SELECT 1 FROM contents WHERE parent = ?1 AND name = ?2")?;
    let mut name = base.as_bytes().to_vec();
    let mut n = 0;
    while stmt.exists(params![parent, name])? {
        n += 1;
        name = format!("{base}-{n}").into_bytes();
    }
    Ok(name)
}

/// Removes entries whose inode or parent is missing (or whose parent is not a directory),
/// and rows of other tables that belong to missing inodes.
pub(super) fn dangling(c: &Connection, report: &mut FsckReport) -> FsResult<()> {
    let mut stmt = c.prepare(
        "SELECT c.id, c.parent, c.name, c.inode,
                NOT EXISTS (SELECT 1 FROM inodes i WHERE i.id = c.inode),
                NOT EXISTS (SELECT 1 FROM inodes p WHERE p.id = c.parent AND (p.mode & ?1) = ?2)
         FROM contents c
         WHERE NOT EXISTS (SELECT 1 FROM inodes i WHERE i.id = c.inode)
            OR NOT EXISTS (SELECT 1 FROM inodes p WHERE p.id = c.parent AND (p.mode & ?1) = ?2)",
    )?;
    let rows: Vec<(i64, u64, Vec<u8>, u64, bool, bool)> = stmt
        .query_map([S_IFMT, S_IFDIR], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (id, parent, name, ino, no_inode, bad_parent) in rows {
        let name = String::from_utf8_lossy(&name);
        let msg = if no_inode {
            let dir = path_of(c, parent);
            format!("entry {name:?} in {dir} points to missing inode {ino}; removed")
        } else if bad_parent {
            format!("entry {name:?} of inode {ino} is in inode {parent}, which is missing or not a directory; removed")
        } else {
            continue;
        };
        c.execute("DELETE FROM contents WHERE id = ?1", [id])?;
        report.problem(msg);
    }
    for (table, what) in [
        ("ext_attributes", "extended attributes"),
        ("symlink_targets", "symlink target"),
        ("inode_blocks", "blocks"),
    ] {
        let inos: Vec<u64> = c
            .prepare(&format!(
                "DELETE FROM {table} WHERE inode NOT IN (SELECT id FROM inodes) RETURNING inode"
            ))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut inos = inos;
        inos.sort_unstable();
        inos.dedup();
        for ino in inos {
            report.problem(format!("{what} of missing inode {ino}; removed"));
        }
    }
    Ok(())
}

/// Moves inodes that cannot be reached from the root to `lost+found` (named
/// `inode-<N>`), and frees unlinked inodes nobody references any more (files deleted
/// while open when the mount crashed). Directory loops are cut by moving one of their
/// directories. Returns the data objects that lost their last reference.
pub(super) fn unreachable(
    c: &Connection,
    lost_found: u64,
    report: &mut FsckReport,
) -> FsResult<Vec<u64>> {
    let mut dead = Vec::new();
    loop {
        let lost: Vec<(u64, i64, u32, bool)> = c
            .prepare_cached(
                "WITH RECURSIVE tree(id) AS (
                     SELECT ?1 UNION SELECT c.inode FROM contents c JOIN tree t ON c.parent = t.id)
                 SELECT i.id, i.mode, i.nlink, EXISTS (SELECT 1 FROM contents c WHERE c.inode = i.id)
                 FROM inodes i WHERE i.id NOT IN tree AND i.id != ?2 ORDER BY i.id",
            )?
            .query_map(params![ROOT_INODE, CTRL_INODE], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        if lost.is_empty() {
            return Ok(dead);
        }
        let unlinked: Vec<u64> = lost
            .iter()
            .filter(|(_, _, nlink, named)| *nlink == 0 && !named)
            .map(|l| l.0)
            .collect();
        if !unlinked.is_empty() {
            report.note(format!(
                "freed {} unlinked inode(s) left by the last mount",
                unlinked.len()
            ));
            dead.extend(inode::delete_unlinked(c, &unlinked)?);
        }
        let mut orphans: Vec<u64> = lost
            .iter()
            .filter(|(_, _, nlink, named)| *nlink > 0 && !named)
            .map(|l| l.0)
            .collect();
        if orphans.is_empty() && unlinked.is_empty() {
            // Every unreachable inode has a name, in an unreachable directory: a loop.
            let Some(&(dir, ..)) = lost.iter().find(|l| l.1 & S_IFMT == S_IFDIR) else {
                return Err(crate::FsError::Inconsistent(
                    "unreachable inodes without an unreachable directory".into(),
                ));
            };
            c.execute("DELETE FROM contents WHERE inode = ?1", [dir])?;
            report.problem(format!("directory inode {dir} is part of a directory loop"));
            orphans.push(dir);
        }
        for ino in orphans {
            let name = free_name(c, lost_found, &format!("inode-{ino}"))?;
            c.execute(
                "INSERT INTO contents (parent, name, inode) VALUES (?1, ?2, ?3)",
                params![lost_found, name, ino],
            )?;
            report.problem(format!(
                "inode {ino} is not reachable from the root; moved to /lost+found/{}",
                String::from_utf8_lossy(&name)
            ));
        }
    }
}
