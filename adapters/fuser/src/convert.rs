//! Conversions between core types and fuser types. Pure functions, no filesystem logic.

use std::time::{SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, Request, TimeOrNow};
use s3ql_core::{
    Attr, Caller, FileKind, FsError, RenameFlags, SetAttr, TimeSet, Timestamp, XattrMode,
};

/// `XATTR_CREATE` as the FUSE protocol carries it (Linux `<sys/xattr.h>` value).
const XATTR_CREATE: i32 = 1;
/// `XATTR_REPLACE` as the FUSE protocol carries it (Linux `<sys/xattr.h>` value).
const XATTR_REPLACE: i32 = 2;

/// The errno the kernel receives for a core error.
pub(crate) fn errno(err: &FsError) -> Errno {
    Errno::from_i32(err.errno())
}

/// The credentials of a kernel request.
pub(crate) fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

/// The fuser file type of a core file kind.
pub(crate) fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

/// The fuser attributes of a core `Attr` (crtime mirrors ctime; BSD flags are 0).
pub(crate) fn file_attr(attr: &Attr) -> FileAttr {
    let ctime: SystemTime = attr.ctime.into();
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.blocks,
        atime: attr.atime.into(),
        mtime: attr.mtime.into(),
        ctime,
        crtime: ctime,
        kind: file_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: attr.blksize,
        flags: 0,
    }
}

/// The time a request carried. fuser 0.18 decodes a pre-epoch kernel time `(secs < 0,
/// nsecs > 0)` as `EPOCH - (|secs| + nsecs)` instead of `EPOCH - |secs| + nsecs`; this undoes
/// that (the decoded distance always has `|secs|` whole seconds and `nsecs` nanoseconds).
fn request_time(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(_) => t.into(),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 1_000_000_000);
            Timestamp {
                nanos: (-secs).saturating_mul(1_000_000_000) + i64::from(d.subsec_nanos()),
            }
        }
    }
}

/// A core `TimeSet` from fuser's `TimeOrNow`.
fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(request_time(t)),
    }
}

/// The core `SetAttr` of a setattr request's fields.
pub(crate) fn set_attr(
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    ctime: Option<SystemTime>,
) -> SetAttr {
    SetAttr {
        mode,
        uid,
        gid,
        size,
        atime: atime.map(time_set),
        mtime: mtime.map(time_set),
        ctime: ctime.map(request_time),
    }
}

/// Core rename flags from fuser's; `EINVAL` for flags the core does not support
/// (`RENAME_WHITEOUT` or unknown bits).
pub(crate) fn rename_flags(flags: fuser::RenameFlags) -> Result<RenameFlags, Errno> {
    #[cfg(target_os = "linux")]
    {
        let known = fuser::RenameFlags::RENAME_NOREPLACE | fuser::RenameFlags::RENAME_EXCHANGE;
        if !known.contains(flags) {
            return Err(Errno::EINVAL);
        }
        Ok(RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        if flags.bits() != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(RenameFlags::default())
    }
}

/// The core `XattrMode` of setxattr flags; `EINVAL` for anything but none, `XATTR_CREATE`
/// or `XATTR_REPLACE` alone.
pub(crate) fn xattr_mode(flags: i32) -> Result<XattrMode, Errno> {
    match flags {
        0 => Ok(XattrMode::Set),
        XATTR_CREATE => Ok(XattrMode::Create),
        XATTR_REPLACE => Ok(XattrMode::Replace),
        _ => Err(Errno::EINVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3ql_core::Timestamp;

    #[test]
    fn attr_round_trips_every_field() {
        let attr = Attr {
            ino: 42,
            size: 1 << 40,
            blocks: 7,
            atime: Timestamp {
                nanos: 1_500_000_000_123_456_789,
            },
            mtime: Timestamp { nanos: -5 },
            ctime: Timestamp { nanos: 3 },
            kind: FileKind::Symlink,
            perm: 0o4755,
            nlink: 3,
            uid: 1000,
            gid: 100,
            rdev: 0x0801,
            blksize: 4096,
        };
        let fa = file_attr(&attr);
        assert_eq!(fa.ino, INodeNo(42));
        assert_eq!(fa.size, 1 << 40);
        assert_eq!(Timestamp::from(fa.atime), attr.atime);
        assert_eq!(Timestamp::from(fa.mtime), attr.mtime);
        assert_eq!(Timestamp::from(fa.ctime), attr.ctime);
        assert_eq!(fa.kind, FileType::Symlink);
        assert_eq!((fa.perm, fa.nlink, fa.uid, fa.gid), (0o4755, 3, 1000, 100));
        assert_eq!((fa.rdev, fa.blksize, fa.blocks), (0x0801, 4096, 7));
    }

    #[test]
    fn xattr_flags() {
        assert_eq!(xattr_mode(0), Ok(XattrMode::Set));
        assert_eq!(xattr_mode(XATTR_CREATE), Ok(XattrMode::Create));
        assert_eq!(xattr_mode(XATTR_REPLACE), Ok(XattrMode::Replace));
        assert_eq!(xattr_mode(3), Err(Errno::EINVAL));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn rename_flag_bits() {
        let f = rename_flags(fuser::RenameFlags::RENAME_NOREPLACE);
        assert_eq!(
            f,
            Ok(RenameFlags {
                noreplace: true,
                exchange: false
            })
        );
        let f = rename_flags(fuser::RenameFlags::RENAME_EXCHANGE);
        assert_eq!(
            f,
            Ok(RenameFlags {
                noreplace: false,
                exchange: true
            })
        );
        let f = rename_flags(fuser::RenameFlags::RENAME_WHITEOUT);
        assert_eq!(f, Err(Errno::EINVAL));
    }

    #[test]
    fn errno_passes_through() {
        assert_eq!(errno(&FsError::Errno(libc::ENOENT)), Errno::ENOENT);
        assert_eq!(errno(&FsError::Errno(0)), Errno::EIO);
    }
}
