//! Filesystem statistics (s3qlstat), computed from the metadata and the cache.

use serde::{Deserialize, Serialize};

use super::Filesystem;
use crate::error::FsResult;

/// The figures of `s3qlstat`. Metadata figures are exact as of one metadata transaction;
/// data figures count blocks that are in the backend (dirty blocks are counted by the
/// cache figures until they are uploaded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Directory entries (names), hard links counted once per name.
    pub entries: u64,
    /// Inodes, including the root, the control file and removed files still open.
    pub inodes: u64,
    /// Distinct file names.
    pub names: u64,
    /// Data objects in the backend (one per distinct stored block).
    pub objects: u64,
    /// Total data size: the sum of the sizes of all inodes (files and symlink targets).
    pub data_bytes: u64,
    /// After de-duplication: the sum of the plaintext sizes of all stored blocks.
    pub dedup_bytes: u64,
    /// After compression (and encryption): the sum of the sizes of all data objects.
    pub stored_bytes: u64,
    /// Size of the metadata database (what a metadata upload copies), after a checkpoint
    /// that leaves the database file exactly this long.
    pub db_bytes: u64,
    /// Bytes in the local block cache.
    pub cache_bytes: u64,
    /// Blocks in the local block cache (files in the cache directory; a hole that is read
    /// is none).
    pub cache_entries: u64,
    /// Bytes of cached blocks not yet in the backend.
    pub dirty_bytes: u64,
    /// Cached blocks not yet in the backend (uploads pending).
    pub dirty_entries: u64,
    /// Of those, the blocks whose last upload failed (write-back retries them).
    #[serde(default)]
    pub failed_uploads: u64,
}

impl Filesystem {
    /// Computes [`Stats`]. Checkpoints the database's write-ahead log first.
    pub async fn stats(&self) -> FsResult<Stats> {
        let mut stats = self
            .db
            .call_alone(|c| {
                c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
                Ok(c.query_row(
                    "SELECT (SELECT COUNT(*) FROM contents),
                            (SELECT COUNT(*) FROM inodes),
                            (SELECT COUNT(DISTINCT name) FROM contents),
                            (SELECT COUNT(*) FROM blocks),
                            (SELECT COALESCE(SUM(size), 0) FROM inodes),
                            (SELECT COALESCE(SUM(size), 0) FROM blocks),
                            (SELECT COALESCE(SUM(stored_size), 0) FROM blocks),
                            (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size())",
                    [],
                    |r| {
                        Ok(Stats {
                            entries: r.get(0)?,
                            inodes: r.get(1)?,
                            names: r.get(2)?,
                            objects: r.get(3)?,
                            data_bytes: r.get(4)?,
                            dedup_bytes: r.get(5)?,
                            stored_bytes: r.get(6)?,
                            db_bytes: r.get(7)?,
                            ..Stats::default()
                        })
                    },
                )?)
            })
            .await?;
        let usage = self.cache.usage();
        stats.cache_bytes = usage.bytes;
        stats.cache_entries = usage.entries;
        stats.dirty_bytes = usage.dirty_bytes;
        stats.dirty_entries = usage.dirty_entries;
        stats.failed_uploads = usage.failed_entries;
        Ok(stats)
    }
}
