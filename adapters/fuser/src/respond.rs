//! Sending core results as fuser replies.

use std::time::{Duration, UNIX_EPOCH};

use fuser::{Errno, Generation, ReplyAttr, ReplyEmpty, ReplyEntry, ReplyWrite, ReplyXattr};
use s3ql_core::{Attr, FsResult};

use crate::convert::{errno, file_attr};

/// Generation number of every inode. The kernel only uses generations for NFS export,
/// which this adapter does not offer.
pub(crate) const GENERATION: Generation = Generation(0);

/// Replies with an entry (valid for `ttl`) or the error's errno.
pub(crate) fn entry(reply: ReplyEntry, ttl: Duration, res: FsResult<Attr>) {
    match res {
        Ok(attr) => reply.entry(&ttl, &file_attr(&attr), GENERATION),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Replies to a lookup: the entry, or for a name that does not exist a negative entry
/// (inode 0) that the kernel may cache for `ttl`, so that repeated lookups of a missing name
/// (every create, `stat` of a missing path) are answered by the kernel. Whoever adds a name
/// behind the kernel's back invalidates the entry (see `KernelCache`).
pub(crate) fn lookup(reply: ReplyEntry, ttl: Duration, res: FsResult<Attr>) {
    match res {
        Err(e) if errno(&e) == Errno::ENOENT => {
            let none = fuser::FileAttr {
                ino: fuser::INodeNo(0),
                size: 0,
                blocks: 0,
                atime: UNIX_EPOCH,
                mtime: UNIX_EPOCH,
                ctime: UNIX_EPOCH,
                crtime: UNIX_EPOCH,
                kind: fuser::FileType::RegularFile,
                perm: 0,
                nlink: 0,
                uid: 0,
                gid: 0,
                rdev: 0,
                blksize: 0,
                flags: 0,
            };
            reply.entry(&ttl, &none, GENERATION)
        }
        res => entry(reply, ttl, res),
    }
}

/// Replies with attributes (valid for `ttl`) or the error's errno.
pub(crate) fn attr(reply: ReplyAttr, ttl: Duration, res: FsResult<Attr>) {
    match res {
        Ok(attr) => reply.attr(&ttl, &file_attr(&attr)),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Replies ok or with the error's errno.
pub(crate) fn empty(reply: ReplyEmpty, res: FsResult<()>) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Replies with the number of bytes written or with the error's errno.
pub(crate) fn written(reply: ReplyWrite, res: FsResult<u32>) {
    match res {
        Ok(n) => reply.written(n),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Replies to getxattr/listxattr following the size protocol: `size == 0` asks for the
/// length, a value longer than `size` is `ERANGE`, otherwise the value itself.
pub(crate) fn xattr(reply: ReplyXattr, size: u32, res: FsResult<Vec<u8>>) {
    let value = match res {
        Ok(value) => value,
        Err(e) => return reply.error(errno(&e)),
    };
    if size == 0 {
        match u32::try_from(value.len()) {
            Ok(len) => reply.size(len),
            Err(_) => reply.error(Errno::E2BIG),
        }
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(&value);
    }
}
