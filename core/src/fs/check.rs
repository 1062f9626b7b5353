//! Consistency checks of derived data, shared by the tests and fsck.

use rusqlite::Connection;

use super::Filesystem;
use crate::error::FsResult;

/// One reference count that can be recomputed from the tables.
#[derive(Debug)]
struct RefcountCheck {
    what: &'static str,
    table: &'static str,
    column: &'static str,
    /// Returns `(id, stored, recomputed)` rows where the two differ.
    sql: &'static str,
}

const REFCOUNT_CHECKS: &[RefcountCheck] = &[
    RefcountCheck {
        what: "inode link count",
        table: "inodes",
        column: "nlink",
        sql: "SELECT i.id, i.nlink,
                CASE WHEN (i.mode & 61440) != 16384 THEN (SELECT COUNT(*) FROM contents c WHERE c.inode = i.id)
                     WHEN i.id = 1 OR EXISTS (SELECT 1 FROM contents c WHERE c.inode = i.id)
                     THEN 2 + (SELECT COUNT(*) FROM contents c JOIN inodes s ON s.id = c.inode
                               WHERE c.parent = i.id AND (s.mode & 61440) = 16384)
                     ELSE 0 END AS expected
         FROM inodes i WHERE i.id != 2 AND i.nlink != expected",
    },
    RefcountCheck {
        what: "block reference count",
        table: "blocks",
        column: "refcount",
        sql: "SELECT b.id, b.refcount, (SELECT COUNT(*) FROM inode_blocks ib WHERE ib.block_id = b.id) AS expected
         FROM blocks b WHERE b.refcount != expected",
    },
];

/// A stored reference count that differs from the recomputed one.
#[derive(Debug)]
pub(crate) struct Mismatch {
    check: &'static RefcountCheck,
    /// Row id (inode or block).
    pub id: i64,
    /// The stored count.
    pub stored: i64,
    /// The count recomputed from the tables.
    pub expected: i64,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {}: stored {}, recomputed {}",
            self.check.what, self.id, self.stored, self.expected
        )
    }
}

impl Mismatch {
    /// Whether this is the reference count of a block (else the link count of an inode).
    pub(crate) fn is_block(&self) -> bool {
        self.check.table == "blocks"
    }

    /// Stores the recomputed count.
    pub(crate) fn repair(&self, c: &Connection) -> FsResult<()> {
        c.execute(
            &format!(
                "UPDATE {} SET {} = ?2 WHERE id = ?1",
                self.check.table, self.check.column
            ),
            [self.id, self.expected],
        )?;
        Ok(())
    }
}

/// Every stored reference count that differs from the one recomputed from the tables.
pub(crate) fn refcount_mismatches(c: &Connection) -> FsResult<Vec<Mismatch>> {
    let mut found = Vec::new();
    for check in REFCOUNT_CHECKS {
        let mut stmt = c.prepare(check.sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        for row in rows {
            let (id, stored, expected) = row?;
            found.push(Mismatch {
                check,
                id,
                stored,
                expected,
            });
        }
    }
    Ok(found)
}

impl Filesystem {
    /// Compares every stored reference count with the one recomputed from the tables;
    /// returns one line per difference (empty when consistent).
    pub async fn check_refcounts(&self) -> FsResult<Vec<String>> {
        self.db
            .call(|c| {
                Ok(refcount_mismatches(c)?
                    .iter()
                    .map(ToString::to_string)
                    .collect())
            })
            .await
    }
}
