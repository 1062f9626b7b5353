//! Conversions between core types and fuse-backend-rs types. Pure functions, no filesystem
//! logic.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{self, stat64, statvfs64, SetattrValid};
use fuse_backend_rs::api::filesystem::{Context, Entry};
use s3ql_core::{
    Attr, Caller, FileKind, FsError, RenameFlags, SetAttr, StatFs, TimeSet, Timestamp, XattrMode,
};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The error the kernel receives for a core error (its errno).
pub(crate) fn error(err: &FsError) -> io::Error {
    io::Error::from_raw_os_error(err.errno())
}

/// An error carrying `errno`.
pub(crate) fn errno(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// The credentials of a kernel request.
pub(crate) fn caller(ctx: &Context) -> Caller {
    Caller {
        uid: ctx.uid,
        gid: ctx.gid,
        pid: u32::try_from(ctx.pid).unwrap_or(0),
    }
}

/// A request's name as bytes (names are not necessarily UTF-8).
pub(crate) fn name(name: &CStr) -> &OsStr {
    OsStr::from_bytes(name.to_bytes())
}

/// The `DT_*` directory entry type of a core file kind.
pub(crate) fn dirent_type(kind: FileKind) -> u32 {
    u32::from(match kind {
        FileKind::Regular => libc::DT_REG,
        FileKind::Directory => libc::DT_DIR,
        FileKind::Symlink => libc::DT_LNK,
        FileKind::CharDevice => libc::DT_CHR,
        FileKind::BlockDevice => libc::DT_BLK,
        FileKind::Fifo => libc::DT_FIFO,
        FileKind::Socket => libc::DT_SOCK,
    })
}

/// Seconds (as the wire carries them, two's complement) and nanoseconds of a timestamp.
fn wire_time(t: Timestamp) -> (u64, u32) {
    let secs = t.nanos.div_euclid(NANOS_PER_SEC);
    // rem_euclid is in 0..1e9, so it fits a u32.
    let nanos = u32::try_from(t.nanos.rem_euclid(NANOS_PER_SEC)).unwrap_or(0);
    (secs as u64, nanos)
}

/// The timestamp of a request's seconds and nanoseconds.
fn request_time(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        nanos: secs.saturating_mul(NANOS_PER_SEC).saturating_add(nanos),
    }
}

/// The kernel attributes of a core `Attr` (on macOS crtime mirrors ctime).
pub(crate) fn stat(attr: &Attr) -> stat64 {
    let (atime, atimensec) = wire_time(attr.atime);
    let (mtime, mtimensec) = wire_time(attr.mtime);
    let (ctime, ctimensec) = wire_time(attr.ctime);
    fuse_abi::Attr {
        ino: attr.ino,
        size: attr.size,
        blocks: attr.blocks,
        atime,
        mtime,
        ctime,
        atimensec,
        mtimensec,
        ctimensec,
        #[cfg(target_os = "macos")]
        crtime: ctime,
        #[cfg(target_os = "macos")]
        crtimensec: ctimensec,
        mode: attr.kind.mode_type() | u32::from(attr.perm),
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: attr.blksize,
        ..Default::default()
    }
    .into()
}

/// The reply to a lookup-like request: `attr`, valid (as is the entry) for `ttl`.
pub(crate) fn entry(attr: &Attr, ttl: Duration) -> Entry {
    Entry {
        inode: attr.ino,
        generation: 0,
        attr: stat(attr),
        attr_flags: 0,
        attr_timeout: ttl,
        entry_timeout: ttl,
    }
}

/// The kernel's statfs of the core's.
pub(crate) fn statvfs(s: &StatFs) -> statvfs64 {
    // SAFETY: statvfs64 is a C struct of integers (some private padding), for which all zero
    // bytes are a valid value.
    let mut st: statvfs64 = unsafe { std::mem::zeroed() };
    st.f_blocks = s.blocks as _;
    st.f_bfree = s.bfree as _;
    st.f_bavail = s.bavail as _;
    st.f_files = s.files as _;
    st.f_ffree = s.ffree as _;
    st.f_bsize = s.bsize as _;
    st.f_frsize = s.frsize as _;
    st.f_namemax = s.namelen as _;
    st
}

/// The mode bits of `st` (`mode_t` is u16 on macOS, u32 on Linux).
#[allow(clippy::useless_conversion)]
fn mode(st: &stat64) -> u32 {
    u32::from(st.st_mode)
}

/// The core `SetAttr` of a setattr request: the fields of `st` that `valid` marks.
pub(crate) fn set_attr(st: &stat64, valid: SetattrValid) -> SetAttr {
    let time = |now: SetattrValid, set: SetattrValid, secs: i64, nanos: i64| {
        if valid.contains(now) {
            Some(TimeSet::Now)
        } else if valid.contains(set) {
            Some(TimeSet::At(request_time(secs, nanos)))
        } else {
            None
        }
    };
    #[cfg(target_os = "linux")]
    let ctime = valid
        .contains(SetattrValid::CTIME)
        .then(|| request_time(st.st_ctime, st.st_ctime_nsec));
    #[cfg(not(target_os = "linux"))]
    let ctime = None;
    SetAttr {
        mode: valid.contains(SetattrValid::MODE).then_some(mode(st)),
        uid: valid.contains(SetattrValid::UID).then_some(st.st_uid),
        gid: valid.contains(SetattrValid::GID).then_some(st.st_gid),
        size: valid
            .contains(SetattrValid::SIZE)
            .then_some(st.st_size as u64),
        atime: time(
            SetattrValid::ATIME_NOW,
            SetattrValid::ATIME,
            st.st_atime,
            st.st_atime_nsec,
        ),
        mtime: time(
            SetattrValid::MTIME_NOW,
            SetattrValid::MTIME,
            st.st_mtime,
            st.st_mtime_nsec,
        ),
        ctime,
    }
}

/// Core rename flags from the kernel's; `EINVAL` for flags the core does not support
/// (`RENAME_WHITEOUT` or unknown bits). macOS sends no flags.
pub(crate) fn rename_flags(flags: u32) -> io::Result<RenameFlags> {
    #[cfg(target_os = "linux")]
    let (noreplace, exchange) = (libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE);
    #[cfg(not(target_os = "linux"))]
    let (noreplace, exchange) = (0, 0);
    if flags & !(noreplace | exchange) != 0 {
        return Err(errno(libc::EINVAL));
    }
    Ok(RenameFlags {
        noreplace: flags & noreplace != 0,
        exchange: flags & exchange != 0,
    })
}

/// The core `XattrMode` of setxattr flags (this OS's `XATTR_CREATE`/`XATTR_REPLACE`
/// values, which the FUSE protocol passes through); `EINVAL` for anything else.
pub(crate) fn xattr_mode(flags: u32) -> io::Result<XattrMode> {
    match i32::try_from(flags) {
        Ok(0) => Ok(XattrMode::Set),
        Ok(libc::XATTR_CREATE) => Ok(XattrMode::Create),
        Ok(libc::XATTR_REPLACE) => Ok(XattrMode::Replace),
        _ => Err(errno(libc::EINVAL)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr() -> Attr {
        let t = |nanos| Timestamp { nanos };
        let (nlink, uid, gid, rdev) = (3, 1000, 100, 0x0801);
        Attr {
            ino: 42,
            size: 1 << 40,
            blocks: 7,
            atime: t(1_500_000_000_123_456_789),
            mtime: t(-5),
            ctime: t(3),
            kind: FileKind::Symlink,
            perm: 0o4755,
            nlink,
            uid,
            gid,
            rdev,
            blksize: 4096,
        }
    }

    #[test]
    fn stat_carries_every_field() {
        let st = stat(&attr());
        assert_eq!((st.st_ino, st.st_size), (42, 1 << 40));
        assert_eq!(
            (st.st_atime, st.st_atime_nsec),
            (1_500_000_000, 123_456_789)
        );
        assert_eq!((st.st_mtime, st.st_mtime_nsec), (-1, 999_999_995));
        assert_eq!((st.st_ctime, st.st_ctime_nsec), (0, 3));
        assert_eq!(mode(&st), 0o120_000 | 0o4755);
        assert_eq!((st.st_nlink, st.st_uid, st.st_gid), (3, 1000, 100));
        assert_eq!((st.st_rdev, st.st_blksize, st.st_blocks), (0x0801, 4096, 7));
    }

    #[test]
    fn setattr_times_round_trip_before_the_epoch() {
        let mut st = stat(&attr());
        st.st_mode = 0o644;
        let valid = SetattrValid::MODE | SetattrValid::MTIME | SetattrValid::ATIME_NOW;
        let changes = set_attr(&st, valid);
        assert_eq!(changes.mode, Some(0o644));
        assert_eq!(changes.mtime, Some(TimeSet::At(Timestamp { nanos: -5 })));
        assert_eq!(changes.atime, Some(TimeSet::Now));
        assert_eq!(
            (changes.uid, changes.size, changes.ctime),
            (None, None, None)
        );
    }

    #[test]
    fn xattr_flags() {
        assert!(matches!(xattr_mode(0), Ok(XattrMode::Set)));
        assert!(matches!(
            xattr_mode(libc::XATTR_CREATE as u32),
            Ok(XattrMode::Create)
        ));
        assert!(matches!(
            xattr_mode(libc::XATTR_REPLACE as u32),
            Ok(XattrMode::Replace)
        ));
        assert!(xattr_mode(3).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn rename_flag_bits() {
        let f = rename_flags(libc::RENAME_NOREPLACE).ok();
        assert_eq!(f.map(|f| (f.noreplace, f.exchange)), Some((true, false)));
        let f = rename_flags(libc::RENAME_EXCHANGE).ok();
        assert_eq!(f.map(|f| (f.noreplace, f.exchange)), Some((false, true)));
        assert!(rename_flags(libc::RENAME_WHITEOUT).is_err());
    }
}
