//! Consistency checks of derived data, shared by the tests and fsck.

use super::Filesystem;
use crate::error::FsResult;

/// Each query returns `(what, id, stored, recomputed)` rows where the two differ.
const REFCOUNT_CHECKS: &[(&str, &str)] = &[
    (
        "inode link count",
        "SELECT i.id, i.nlink,
                CASE WHEN (i.mode & 61440) != 16384 THEN (SELECT COUNT(*) FROM contents c WHERE c.inode = i.id)
                     WHEN i.id = 1 OR EXISTS (SELECT 1 FROM contents c WHERE c.inode = i.id)
                     THEN 2 + (SELECT COUNT(*) FROM contents c JOIN inodes s ON s.id = c.inode
                               WHERE c.parent = i.id AND (s.mode & 61440) = 16384)
                     ELSE 0 END AS expected
         FROM inodes i WHERE i.id != 2 AND i.nlink != expected",
    ),
    (
        "block reference count",
        "SELECT b.id, b.refcount, (SELECT COUNT(*) FROM inode_blocks ib WHERE ib.block_id = b.id) AS expected
         FROM blocks b WHERE b.refcount != expected",
    ),
];

impl Filesystem {
    /// Compares every stored reference count with the one recomputed from the tables;
    /// returns one line per difference (empty when consistent).
    pub async fn check_refcounts(&self) -> FsResult<Vec<String>> {
        self.db
            .call(|c| {
                let mut problems = Vec::new();
                for (what, sql) in REFCOUNT_CHECKS {
                    let mut stmt = c.prepare(sql)?;
                    let rows = stmt.query_map([], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })?;
                    for row in rows {
                        let (id, stored, expected) = row?;
                        problems.push(format!(
                            "{what} of {id}: stored {stored}, recomputed {expected}"
                        ));
                    }
                }
                Ok(problems)
            })
            .await
    }
}
