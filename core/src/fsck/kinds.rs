//! Rows that contradict the type of their inode (S3QL's "unix conventions"): symlink
//! targets, symlink sizes and device numbers.

use rusqlite::{params, Connection};

use super::{path_of, FsckReport};
use crate::error::FsResult;
use crate::types::{mode_bits, FileKind};

const S_IFMT: i64 = mode_bits::S_IFMT as i64;
const S_IFLNK: i64 = mode_bits::S_IFLNK as i64;

/// What an inode of `mode` is, for messages.
fn kind_name(mode: u32) -> &'static str {
    match FileKind::from_mode(mode) {
        Some(FileKind::Regular) => "regular file",
        Some(FileKind::Directory) => "directory",
        Some(FileKind::Symlink) => "symlink",
        Some(FileKind::CharDevice) => "character device",
        Some(FileKind::BlockDevice) => "block device",
        Some(FileKind::Fifo) => "FIFO",
        Some(FileKind::Socket) => "socket",
        None => "inode of unknown type",
    }
}

fn rows<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> FsResult<Vec<T>> {
    Ok(c.prepare(sql)?
        .query_map(params, row)?
        .collect::<Result<_, _>>()?)
}

/// Repairs what does not fit the type of an inode: a symlink without target becomes an
/// empty regular file (there is nothing left to point to; its name and attributes stay); a
/// symlink target of any other inode is removed; a symlink's size is set to the length of
/// its target; the device number of an inode that is no device is cleared.
pub(super) fn check(c: &Connection, report: &mut FsckReport) -> FsResult<()> {
    let no_target: Vec<(u64, u32)> = rows(
        c,
        "SELECT id, mode FROM inodes i WHERE (mode & ?1) = ?2
         AND NOT EXISTS (SELECT 1 FROM symlink_targets s WHERE s.inode = i.id)",
        params![S_IFMT, S_IFLNK],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    for (ino, mode) in no_target {
        let mode = (mode & !mode_bits::S_IFMT) | mode_bits::S_IFREG;
        c.execute(
            "UPDATE inodes SET mode = ?2, size = 0 WHERE id = ?1",
            params![ino, mode],
        )?;
        report.problem(format!(
            "symlink {} (inode {ino}) has no target; made an empty regular file",
            path_of(c, ino)
        ));
    }
    let stray_target: Vec<(u64, u32)> = rows(
        c,
        "SELECT s.inode, i.mode FROM symlink_targets s JOIN inodes i ON i.id = s.inode
         WHERE (i.mode & ?1) != ?2",
        params![S_IFMT, S_IFLNK],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    for (ino, mode) in stray_target {
        c.execute("DELETE FROM symlink_targets WHERE inode = ?1", [ino])?;
        report.problem(format!(
            "{} {} (inode {ino}) has a symlink target; removed",
            kind_name(mode),
            path_of(c, ino)
        ));
    }
    let wrong_size: Vec<(u64, u64, u64)> = rows(
        c,
        "SELECT i.id, i.size, length(s.target) FROM symlink_targets s
         JOIN inodes i ON i.id = s.inode WHERE i.size != length(s.target)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (ino, size, len) in wrong_size {
        c.execute(
            "UPDATE inodes SET size = ?2 WHERE id = ?1",
            params![ino, len],
        )?;
        report.problem(format!(
            "size of symlink {} (inode {ino}) is {size} but its target has {len} bytes; \
             size set to {len}",
            path_of(c, ino)
        ));
    }
    let stray_rdev: Vec<(u64, u32, u32)> = rows(
        c,
        "SELECT id, mode, rdev FROM inodes WHERE rdev != 0 AND (mode & ?1) NOT IN (?2, ?3)",
        params![S_IFMT, mode_bits::S_IFCHR, mode_bits::S_IFBLK],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (ino, mode, rdev) in stray_rdev {
        c.execute("UPDATE inodes SET rdev = 0 WHERE id = ?1", [ino])?;
        report.problem(format!(
            "{} {} (inode {ino}) is no device but has device number {rdev:#x}; cleared",
            kind_name(mode),
            path_of(c, ino)
        ));
    }
    Ok(())
}
