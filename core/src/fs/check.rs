//! Consistency checks of derived data (reference counts, running totals), shared by the
//! tests and fsck.

use rusqlite::Connection;

use super::Filesystem;
use crate::error::FsResult;
use crate::meta;

/// What a reference count counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// `inodes.nlink`.
    Links,
    /// `block_refcounts.refcount`.
    BlockRefs,
}

/// One kind of reference count that can be recomputed from the tables.
#[derive(Debug)]
struct RefcountCheck {
    what: &'static str,
    counted: Counted,
    /// Returns `(id, stored, recomputed)` rows where the two differ; `stored` is NULL for a
    /// block without a count, `recomputed` NULL for a count without a block.
    sql: &'static str,
}

const REFCOUNT_CHECKS: &[RefcountCheck] = &[
    RefcountCheck {
        what: "inode link count",
        counted: Counted::Links,
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
        counted: Counted::BlockRefs,
        // One pass over `inode_blocks` (there is no index by block).
        sql: "WITH used (id, n) AS (SELECT block_id, COUNT(*) FROM inode_blocks GROUP BY block_id)
         SELECT b.id, r.refcount, COALESCE(u.n, 0) AS expected
         FROM blocks b LEFT JOIN block_refcounts r ON r.id = b.id LEFT JOIN used u ON u.id = b.id
         WHERE r.refcount IS NOT expected
         UNION ALL
         SELECT r.id, r.refcount, NULL FROM block_refcounts r
         WHERE NOT EXISTS (SELECT 1 FROM blocks b WHERE b.id = r.id)",
    },
];

/// A stored reference count that differs from the recomputed one.
#[derive(Debug)]
pub(crate) struct Mismatch {
    check: &'static RefcountCheck,
    /// Row id (inode or block).
    pub id: i64,
    /// The stored count (`None`: a block without a count).
    pub stored: Option<i64>,
    /// The count recomputed from the tables (`None`: a count without a block).
    pub expected: Option<i64>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |n: Option<i64>| n.map_or_else(|| "none".to_owned(), |n| n.to_string());
        match self.expected {
            None => write!(
                f,
                "{} of {}: stored {}, but there is no such block",
                self.check.what,
                self.id,
                count(self.stored)
            ),
            Some(_) => write!(
                f,
                "{} of {}: stored {}, recomputed {}",
                self.check.what,
                self.id,
                count(self.stored),
                count(self.expected)
            ),
        }
    }
}

impl Mismatch {
    /// Whether this is the reference count of a block (else the link count of an inode).
    pub(crate) fn is_block(&self) -> bool {
        self.check.counted == Counted::BlockRefs
    }

    /// Stores the recomputed count (removes a count without a block).
    pub(crate) fn repair(&self, c: &Connection) -> FsResult<()> {
        match (self.check.counted, self.expected) {
            (Counted::Links, Some(n)) => {
                c.execute("UPDATE inodes SET nlink = ?2 WHERE id = ?1", [self.id, n])?
            }
            (Counted::BlockRefs, Some(n)) => c.execute(
                "INSERT OR REPLACE INTO block_refcounts (id, refcount) VALUES (?1, ?2)",
                [self.id, n],
            )?,
            (_, None) => c.execute("DELETE FROM block_refcounts WHERE id = ?1", [self.id])?,
        };
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

/// The running totals (see `meta::schema`) if they differ from the ones counted from the
/// tables (or were never stored), as one line saying both.
pub(crate) fn totals_mismatch(c: &Connection) -> FsResult<Option<String>> {
    let stored = meta::stored_totals(c)?;
    let (inodes, bytes) = meta::counted_totals(c)?;
    Ok(match stored {
        Some(totals) if totals == (inodes, bytes) => None,
        Some((s_inodes, s_bytes)) => Some(format!(
            "running totals: stored {s_inodes} inodes and {s_bytes} stored bytes, counted {inodes} and {bytes}"
        )),
        None => Some(format!(
            "running totals: none stored, counted {inodes} inodes and {bytes} stored bytes"
        )),
    })
}

impl Filesystem {
    /// Compares every stored reference count, and the running totals of `statfs`, with
    /// those recomputed from the tables; returns one line per difference (empty when
    /// consistent).
    pub async fn check_counts(&self) -> FsResult<Vec<String>> {
        self.db
            .call(|c| {
                let mut found: Vec<String> = refcount_mismatches(c)?
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                found.extend(totals_mismatch(c)?);
                Ok(found)
            })
            .await
    }
}
