//! Plain data types of the core API, free of any kernel-interface type.

use std::ffi::OsString;
use std::time::{SystemTime, UNIX_EPOCH};

/// Inode number of the root directory.
pub const ROOT_INODE: u64 = 1;
/// Inode number of the control file `.__s3ql__ctrl__`.
pub const CTRL_INODE: u64 = 2;
/// Name of the control file, visible in every directory but never listed.
pub const CTRL_NAME: &[u8] = b".__s3ql__ctrl__";
/// Longest file name, in bytes.
pub const NAME_MAX: usize = 255;

/// The file type and permission bits of `mode` as the metadata stores them and the FUSE
/// protocol carries them: the traditional Unix values, identical on Linux, macOS and
/// FreeBSD, typed `u32` like `Attr` modes. Use these instead of `libc::S_I*`, which are
/// `u16` on macOS and FreeBSD.
pub mod mode_bits {
    /// Mask of the file type bits.
    pub const S_IFMT: u32 = 0o170_000;
    /// Regular file.
    pub const S_IFREG: u32 = 0o100_000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040_000;
    /// Symbolic link.
    pub const S_IFLNK: u32 = 0o120_000;
    /// Character device.
    pub const S_IFCHR: u32 = 0o020_000;
    /// Block device.
    pub const S_IFBLK: u32 = 0o060_000;
    /// Named pipe.
    pub const S_IFIFO: u32 = 0o010_000;
    /// Unix domain socket.
    pub const S_IFSOCK: u32 = 0o140_000;
    /// Set-user-ID bit.
    pub const S_ISUID: u32 = 0o4000;
    /// Set-group-ID bit.
    pub const S_ISGID: u32 = 0o2000;
    /// Group execute permission.
    pub const S_IXGRP: u32 = 0o010;
}

/// A point in time with nanosecond resolution, as stored in the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Nanoseconds since the Unix epoch (negative before it).
    pub nanos: i64,
}

impl Timestamp {
    /// The current time of the filesystem's clock.
    pub fn now() -> Self {
        SystemTime::now().into()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let nanos = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        };
        Timestamp { nanos }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        let d = std::time::Duration::from_nanos(t.nanos.unsigned_abs());
        if t.nanos >= 0 {
            UNIX_EPOCH + d
        } else {
            UNIX_EPOCH - d
        }
    }
}

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Unix domain socket.
    Socket,
}

impl FileKind {
    /// The kind encoded in the `S_IFMT` bits of `mode`, if valid.
    pub fn from_mode(mode: u32) -> Option<Self> {
        use mode_bits::*;
        Some(match mode & S_IFMT {
            S_IFREG => FileKind::Regular,
            S_IFDIR => FileKind::Directory,
            S_IFLNK => FileKind::Symlink,
            S_IFCHR => FileKind::CharDevice,
            S_IFBLK => FileKind::BlockDevice,
            S_IFIFO => FileKind::Fifo,
            S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of this kind (the inverse of [`FileKind::from_mode`]).
    pub fn mode_type(self) -> u32 {
        use mode_bits::*;
        match self {
            FileKind::Regular => S_IFREG,
            FileKind::Directory => S_IFDIR,
            FileKind::Symlink => S_IFLNK,
            FileKind::CharDevice => S_IFCHR,
            FileKind::BlockDevice => S_IFBLK,
            FileKind::Fifo => S_IFIFO,
            FileKind::Socket => S_IFSOCK,
        }
    }
}

/// Attributes of an inode, as `stat(2)` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Allocated 512-byte units (from the size; holes are not subtracted).
    pub blocks: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last data modification.
    pub mtime: Timestamp,
    /// Last status change.
    pub ctime: Timestamp,
    /// File type.
    pub kind: FileKind,
    /// Permission bits, including setuid, setgid and sticky (`mode & 0o7777`).
    pub perm: u16,
    /// Number of hard links (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of device nodes.
    pub rdev: u32,
    /// Preferred I/O size.
    pub blksize: u32,
}

/// One entry of a directory listing. `offset` is the cookie that resumes the listing
/// right after this entry; cookies stay valid while the directory changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number of the entry.
    pub ino: u64,
    /// Resume cookie.
    pub offset: u64,
    /// File type.
    pub kind: FileKind,
    /// Name (bytes, not necessarily UTF-8).
    pub name: OsString,
}

/// Filesystem-wide figures for `statfs(2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFs {
    /// Total blocks of `bsize`.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}

/// Who asks: the credentials the kernel attached to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
    /// Process id.
    pub pid: u32,
}

/// A time to set with `setattr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    /// The filesystem's clock at the time of the call.
    Now,
    /// This exact time.
    At(Timestamp),
}

/// The attributes a `setattr` call changes; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (file type bits are ignored).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeSet>,
    /// New modification time.
    pub mtime: Option<TimeSet>,
    /// New change time (otherwise ctime becomes now).
    pub ctime: Option<Timestamp>,
}

/// How `rename` treats an existing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenameFlags {
    /// Fail with `EEXIST` if the target exists (`RENAME_NOREPLACE`).
    pub noreplace: bool,
    /// Swap source and target atomically; both must exist (`RENAME_EXCHANGE`).
    pub exchange: bool,
}

/// How `setxattr` treats an existing attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrMode {
    /// Create or replace.
    #[default]
    Set,
    /// Fail with `EEXIST` if it exists (`XATTR_CREATE`).
    Create,
    /// Fail with `ENODATA` (`ENOATTR` on macOS and FreeBSD) if it does not exist
    /// (`XATTR_REPLACE`).
    Replace,
}

#[cfg(test)]
mod tests {
    use super::mode_bits::*;
    use super::FileKind;

    /// The fixed values agree with the host's C library (whatever its integer type).
    #[test]
    fn mode_bits_match_libc() {
        #[allow(clippy::useless_conversion)]
        let host = |v: libc::mode_t| u32::from(v);
        assert_eq!(S_IFMT, host(libc::S_IFMT));
        assert_eq!(S_IFREG, host(libc::S_IFREG));
        assert_eq!(S_IFDIR, host(libc::S_IFDIR));
        assert_eq!(S_IFLNK, host(libc::S_IFLNK));
        assert_eq!(S_IFCHR, host(libc::S_IFCHR));
        assert_eq!(S_IFBLK, host(libc::S_IFBLK));
        assert_eq!(S_IFIFO, host(libc::S_IFIFO));
        assert_eq!(S_IFSOCK, host(libc::S_IFSOCK));
        assert_eq!(S_ISUID, host(libc::S_ISUID));
        assert_eq!(S_ISGID, host(libc::S_ISGID));
        assert_eq!(S_IXGRP, host(libc::S_IXGRP));
    }

    #[test]
    fn kinds_from_mode() {
        assert_eq!(
            FileKind::from_mode(S_IFDIR | 0o755),
            Some(FileKind::Directory)
        );
        assert_eq!(FileKind::from_mode(S_IFSOCK), Some(FileKind::Socket));
        assert_eq!(FileKind::from_mode(0o644), None);
        for kind in [FileKind::Regular, FileKind::Symlink, FileKind::Fifo] {
            assert_eq!(FileKind::from_mode(kind.mode_type() | 0o600), Some(kind));
        }
    }
}
