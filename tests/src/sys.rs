//! Thin safe wrappers over the libc calls the tests need and std does not offer
//! (lchown with any id, utimensat on symlinks, mknod, xattrs, truncate, fallocate,
//! SEEK_DATA/SEEK_HOLE).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path contains a NUL byte")
}

fn cname(name: &[u8]) -> CString {
    CString::new(name).expect("xattr name contains a NUL byte")
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `lchown(2)`: changes the owner of `path` without following a final symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let p = cpath(path);
    // SAFETY: p is a valid NUL-terminated string for the duration of the call.
    check(unsafe { libc::lchown(p.as_ptr(), uid, gid) })
}

/// A timestamp as (seconds, nanoseconds), nanoseconds in 0..1e9.
pub type Time = (i64, i64);

/// `utimensat(2)` with `AT_SYMLINK_NOFOLLOW`: sets atime and mtime of `path` exactly.
pub fn set_times(path: &Path, atime: Time, mtime: Time) -> io::Result<()> {
    let p = cpath(path);
    let ts = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as libc::c_long,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as libc::c_long,
        },
    ];
    // SAFETY: p is NUL-terminated and ts points to two valid timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// `mknod(2)`: `mode` includes the file type bits (S_IFIFO, S_IFCHR, ...).
pub fn mknod(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let p = cpath(path);
    // SAFETY: p is a valid NUL-terminated string.
    check(unsafe { libc::mknod(p.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) })
}

/// `makedev(3)`.
pub fn makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor)
}

/// `chmod(2)` with the full 12 permission bits (std's set_permissions does the same, this
/// spares the Permissions round trip).
pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    let p = cpath(path);
    // SAFETY: p is a valid NUL-terminated string.
    check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })
}

/// `llistxattr(2)`: the attribute names of `path` (not following symlinks).
pub fn list_xattrs(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let p = cpath(path);
    loop {
        // SAFETY: a null buffer with size 0 asks for the needed size.
        let need = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
        if need < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; need as usize];
        // SAFETY: buf is writable for buf.len() bytes.
        let got = unsafe {
            libc::llistxattr(p.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len())
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew in between
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| n.to_vec())
            .collect());
    }
}

/// `lgetxattr(2)`.
pub fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let p = cpath(path);
    let n = cname(name);
    loop {
        // SAFETY: a null buffer with size 0 asks for the needed size.
        let need = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if need < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; need as usize];
        // SAFETY: buf is writable for buf.len() bytes.
        let got = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

/// `lsetxattr(2)` with flags 0 (create or replace).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let p = cpath(path);
    let n = cname(name);
    // SAFETY: all pointers are valid for the given lengths.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    })
}

/// `lremovexattr(2)`.
pub fn remove_xattr(path: &Path, name: &[u8]) -> io::Result<()> {
    let p = cpath(path);
    let n = cname(name);
    // SAFETY: both are valid NUL-terminated strings.
    check(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) })
}

/// `truncate(2)`.
pub fn truncate(path: &Path, size: u64) -> io::Result<()> {
    let p = cpath(path);
    // SAFETY: p is a valid NUL-terminated string.
    check(unsafe { libc::truncate(p.as_ptr(), size as libc::off_t) })
}

/// `fallocate(2)` with mode 0 (allocate, extending the size).
pub fn fallocate(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: the fd is owned by `file` and open for the duration of the call.
    check(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            0,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
}

/// `lseek(fd, offset, SEEK_DATA)`: the next offset >= `offset` holding data, `None` at the
/// end of the data (ENXIO).
pub fn seek_data(file: &std::fs::File, offset: u64) -> io::Result<Option<u64>> {
    seek(file, offset, libc::SEEK_DATA)
}

/// `lseek(fd, offset, SEEK_HOLE)`: the next hole at or after `offset` (EOF counts as one).
pub fn seek_hole(file: &std::fs::File, offset: u64) -> io::Result<Option<u64>> {
    seek(file, offset, libc::SEEK_HOLE)
}

fn seek(file: &std::fs::File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: the fd is owned by `file` and open for the duration of the call.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// Whether `name` is an xattr name the tree comparison covers (the `user.` namespace;
/// `security.*` and friends depend on the host).
pub fn is_user_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.")
}

/// Converts raw bytes to an `OsStr` (names are bytes, not UTF-8).
pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}
