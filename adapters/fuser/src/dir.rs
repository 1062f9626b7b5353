//! Filling readdir and readdirplus replies from core listings.

use std::os::unix::ffi::OsStrExt;

use fuser::{INodeNo, ReplyDirectory, ReplyDirectoryPlus};
use s3ql_core::{Attr, DirEntry, Filesystem};
use tracing::debug;

use crate::convert::{errno, file_attr, file_type};
use crate::respond::GENERATION;

/// Entries asked from the core per batch for readdir (a 4 KiB page holds at most 128).
const READDIR_BATCH: usize = 128;
/// Entries asked per batch for readdirplus (each takes at least 152 bytes: about 26 per page).
/// Small, because every entry that does not fit costs a lookup and a forget.
const READDIRPLUS_BATCH: usize = 32;

/// Replies with as many entries after `offset` as fit; an empty reply means end of listing.
pub(crate) async fn readdir(fs: &Filesystem, ino: u64, mut offset: u64, mut reply: ReplyDirectory) {
    let mut first = true;
    loop {
        let batch = match fs.readdir(ino, offset, READDIR_BATCH).await {
            Ok(batch) => batch,
            Err(e) if first => return reply.error(errno(&e)),
            Err(e) => {
                // Send what we have; the kernel resumes at `offset` and then gets the error.
                debug!(ino, offset, "readdir: later batch failed: {e}");
                break;
            }
        };
        first = false;
        for entry in &batch {
            if reply.add(
                INodeNo(entry.ino),
                entry.offset,
                file_type(entry.kind),
                &entry.name,
            ) {
                return reply.ok();
            }
            offset = entry.offset;
        }
        if batch.len() < READDIR_BATCH {
            break;
        }
    }
    reply.ok();
}

/// Like `readdir`, with attributes. Every entry the core counted a lookup for (all but
/// "." and "..") and that did not fit in the reply is forgotten again.
pub(crate) async fn readdirplus(
    fs: &Filesystem,
    ino: u64,
    mut offset: u64,
    mut reply: ReplyDirectoryPlus,
) {
    let ttl = fs.attr_ttl();
    let mut first = true;
    loop {
        let batch = match fs.readdirplus(ino, offset, READDIRPLUS_BATCH).await {
            Ok(batch) => batch,
            Err(e) if first => return reply.error(errno(&e)),
            Err(e) => {
                debug!(ino, offset, "readdirplus: later batch failed: {e}");
                break;
            }
        };
        first = false;
        for (i, (entry, attr)) in batch.iter().enumerate() {
            let full = reply.add(
                INodeNo(entry.ino),
                entry.offset,
                &entry.name,
                &ttl,
                &file_attr(attr),
                GENERATION,
            );
            if full {
                forget_unsent(fs, &batch[i..]);
                return reply.ok();
            }
            offset = entry.offset;
        }
        if batch.len() < READDIRPLUS_BATCH {
            break;
        }
    }
    reply.ok();
}

/// Returns the lookups the core counted for entries the kernel never received.
fn forget_unsent(fs: &Filesystem, unsent: &[(DirEntry, Attr)]) {
    for (entry, _) in unsent {
        let name = entry.name.as_bytes();
        if name != b"." && name != b".." {
            fs.forget(entry.ino, 1);
        }
    }
}
