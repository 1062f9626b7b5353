//! Talking to a mount daemon through the control file `.__s3ql__ctrl__` (extended
//! attributes, as S3QL does; the value encodings are documented in s3ql-core's `fs::ctrl`).
//! The control file resolves in every directory of the mount. Only root and the user who
//! mounted may use it.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::exit::{code, fail};

/// The control file as seen in directory `dir` of a mount (the mount point or any other).
pub fn ctrl_path(mountpoint: &Path) -> PathBuf {
    mountpoint.join(std::str::from_utf8(s3ql_core::CTRL_NAME).unwrap_or(".__s3ql__ctrl__"))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

/// The platform's extended attribute calls: `setxattr`/`getxattr` on Linux and macOS; on
/// FreeBSD `extattr_*_file` in the user namespace, which fusefs forwards to the daemon as
/// `user.NAME` (the core accepts control names with that prefix). Both return -1 and set
/// errno on failure.
mod sys {
    use std::ffi::CStr;

    /// Sets attribute `n` of `p` to `value`.
    pub(super) fn set(p: &CStr, n: &CStr, value: &[u8]) -> isize {
        let (p, n, v, len) = (p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len());
        // SAFETY: the pointers come from live references and `len` bytes are readable at `v`.
        unsafe {
            #[cfg(target_os = "linux")]
            return libc::setxattr(p, n, v, len, 0) as isize;
            #[cfg(target_os = "macos")]
            return libc::setxattr(p, n, v, len, 0, 0) as isize;
            #[cfg(target_os = "freebsd")]
            return libc::extattr_set_file(p, libc::EXTATTR_NAMESPACE_USER, n, v, len);
        }
    }

    /// Reads attribute `n` of `p` into `buf`; returns its length (Linux, macOS: ERANGE if
    /// `buf` is too small; FreeBSD: truncated to `buf.len()`).
    pub(super) fn get(p: &CStr, n: &CStr, buf: &mut [u8]) -> isize {
        let (p, n, b, len) = (p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        // SAFETY: the pointers come from live references and `len` bytes are writable at `b`.
        unsafe {
            #[cfg(target_os = "linux")]
            return libc::getxattr(p, n, b, len);
            #[cfg(target_os = "macos")]
            return libc::getxattr(p, n, b, len, 0, 0);
            #[cfg(target_os = "freebsd")]
            return libc::extattr_get_file(p, libc::EXTATTR_NAMESPACE_USER, n, b, len);
        }
    }
}

/// Sends a command: `setxattr(path, name, value)`. Returns when the daemon has done it
/// (for `s3ql_flushcache!`: when every dirty block is in the backend). Retries on EINTR.
pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (p, n) = (c_path(path)?, c_name(name)?);
    loop {
        let rc = sys::set(&p, &n, value);
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Largest reply read from the control file.
const MAX_VALUE: usize = 1 << 20;

/// Queries the daemon: `getxattr(path, name)`.
pub fn get(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (p, n) = (c_path(path)?, c_name(name)?);
    let mut buf = vec![0u8; 4096];
    loop {
        let rc = sys::get(&p, &n, &mut buf);
        if let Ok(len) = usize::try_from(rc) {
            // FreeBSD truncates to the buffer instead of failing with ERANGE: a full buffer
            // may hold part of the value, so read again with a larger one.
            if len < buf.len() || buf.len() >= MAX_VALUE {
                buf.truncate(len);
                return Ok(buf);
            }
            buf.resize(buf.len() * 16, 0);
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ERANGE) if buf.len() < MAX_VALUE => buf.resize(buf.len() * 16, 0),
            _ => return Err(err),
        }
    }
}

/// The pid of the mount daemon (`getxattr(ctrl, "s3ql_pid?")`).
pub fn daemon_pid(mountpoint: &Path) -> io::Result<libc::pid_t> {
    let raw = get(&ctrl_path(mountpoint), "s3ql_pid?")?;
    let text = String::from_utf8_lossy(&raw);
    text.trim()
        .parse::<libc::pid_t>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("daemon returned an invalid pid: {text:?}"),
            )
        })
}

/// Checks that `dir` is on an s3ql mount (its control file resolves) and that this process
/// may use the control file (root, or the user who mounted). Exit 1 otherwise; `program`
/// names the command in the message. Returns the control file's path.
pub fn open_in(dir: &Path, program: &str) -> anyhow::Result<PathBuf> {
    let ctrl = ctrl_path(dir);
    let meta = std::fs::symlink_metadata(&ctrl).map_err(|e| {
        fail(
            code::GENERIC,
            format!("{} is not on an s3ql filesystem ({e})", dir.display()),
        )
    })?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && meta.uid() != euid {
        return Err(fail(
            code::GENERIC,
            format!("only root and the user who mounted the filesystem may run {program}"),
        ));
    }
    Ok(ctrl)
}

/// Splits a command-line path into its directory (absolute, symlinks resolved) and its
/// last component (not resolved: a symlink names itself). Exit 1 for `/`, a path ending in
/// `..`, or a directory that does not exist.
pub fn parent_and_name(path: &Path) -> anyhow::Result<(PathBuf, std::ffi::OsString)> {
    let abs = crate::options::absolute(path)?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(fail(
            code::GENERIC,
            format!("{}: not a name inside a directory", path.display()),
        ));
    };
    let parent = std::fs::canonicalize(parent).map_err(|e| {
        fail(
            code::GENERIC,
            format!("cannot access {}: {e}", parent.display()),
        )
    })?;
    Ok((parent, name.to_owned()))
}

/// A tree named on the command line of s3qllock or s3qlrm.
#[derive(Debug)]
pub struct TreeArg {
    /// The tree's directory (absolute, symlinks resolved).
    pub dir: PathBuf,
    /// The control file, as seen in that directory.
    pub ctrl: PathBuf,
    /// Inode number of the tree's directory.
    pub parent_ino: u64,
    /// Inode number of the tree's top (not following a symlink).
    pub ino: u64,
    /// The tree's name in its directory.
    pub name: std::ffi::OsString,
}

/// Checks a path given to s3qllock or s3qlrm: it exists, is not a mount point, lies on an
/// s3ql filesystem whose control file this process may use (exit 1 otherwise).
pub fn tree_arg(path: &Path, program: &str) -> anyhow::Result<TreeArg> {
    let (parent, name) = parent_and_name(path)?;
    let full = parent.join(&name);
    let meta = std::fs::symlink_metadata(&full)
        .map_err(|e| fail(code::GENERIC, format!("{}: {e}", path.display())))?;
    if meta.is_dir() && is_mount_point(&full)? {
        return Err(fail(
            code::GENERIC,
            format!("{} is a mount point", path.display()),
        ));
    }
    let ctrl = open_in(&parent, program)?;
    let parent_ino = std::fs::metadata(&parent)
        .map_err(|e| fail(code::GENERIC, format!("{}: {e}", parent.display())))?
        .ino();
    Ok(TreeArg {
        dir: parent,
        ctrl,
        parent_ino,
        ino: meta.ino(),
        name,
    })
}

/// Whether `path` is the root of a mount (its device or inode equals its parent's).
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let me = std::fs::metadata(path)?;
    let parent = std::fs::metadata(path.join(".."))?;
    Ok(me.dev() != parent.dev() || me.ino() == parent.ino())
}

/// Checks that `mountpoint` is the mount point of an s3ql filesystem this process may
/// control (see [`open_in`]); exit 1 otherwise. Returns the control file's path.
pub fn open_mountpoint(mountpoint: &Path, program: &str) -> anyhow::Result<PathBuf> {
    match is_mount_point(mountpoint) {
        Ok(true) => open_in(mountpoint, program),
        Ok(false) => Err(fail(
            code::GENERIC,
            format!("{} is not a mount point", mountpoint.display()),
        )),
        Err(e) => Err(fail(
            code::GENERIC,
            format!("cannot access {}: {e}", mountpoint.display()),
        )),
    }
}

/// Runs control command `name` (see [`set`]); failures are exit 1 with a message:
/// `explain` may word an errno that means something for this command, permission errors
/// and a gone daemon get a standard message, anything else says `what` failed.
pub fn command(
    ctrl: &Path,
    name: &str,
    value: &[u8],
    what: &str,
    explain: impl Fn(i32) -> Option<String>,
) -> anyhow::Result<()> {
    set(ctrl, name, value).map_err(|e| fail(code::GENERIC, describe(&e, what, explain)))
}

/// The message for a failed control command or query.
fn describe(e: &io::Error, what: &str, explain: impl Fn(i32) -> Option<String>) -> String {
    let errno = e.raw_os_error().unwrap_or(0);
    if let Some(msg) = explain(errno) {
        return msg;
    }
    match errno {
        libc::EPERM | libc::EACCES => format!(
            "{what}: permission denied (only root and the user who mounted the filesystem may \
             use its control file)"
        ),
        libc::ENOTCONN => {
            format!("{what}: the mount daemon is gone (unmount with umount.s3ql --lazy, then run fsck.s3ql)")
        }
        _ => format!("{what} failed: {e} (see the mount log)"),
    }
}

/// The daemon's statistics (`getxattr(ctrl, "s3qlstat")`, a JSON object); exit 1 on failure.
pub fn stats(ctrl: &Path) -> anyhow::Result<s3ql_core::Stats> {
    let raw = get(ctrl, "s3qlstat").map_err(|e| {
        fail(
            code::GENERIC,
            describe(&e, "reading the statistics", |_| None),
        )
    })?;
    serde_json::from_slice(&raw).map_err(|e| {
        fail(
            code::GENERIC,
            format!("the daemon sent unreadable statistics: {e}"),
        )
    })
}

/// `syncfs` on the filesystem holding `path`, so that the kernel's cached writes reach the
/// daemon; a failure is logged, not returned (the command that follows reports problems).
pub fn sync_filesystem(path: &Path) {
    match std::fs::File::open(path) {
        Ok(f) => {
            if let Err(e) = syncfs(&f) {
                tracing::warn!("syncfs {} failed: {e}", path.display());
            }
        }
        // A dead daemon (ENOTCONN) is reported by the command that follows.
        Err(e) => tracing::debug!("cannot open {}: {e}", path.display()),
    }
}

/// `syncfs(2)` of the filesystem holding `f`; off Linux, which alone has it, `sync(2)`.
fn syncfs(f: &std::fs::File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: `f` is an open descriptor for the duration of the call.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = f;
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_file_name() {
        assert_eq!(
            ctrl_path(Path::new("/mnt")),
            PathBuf::from("/mnt/.__s3ql__ctrl__")
        );
    }

    #[test]
    fn errors_on_plain_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        assert_eq!(
            get(&missing, "user.x").expect_err("missing").kind(),
            io::ErrorKind::NotFound
        );
        assert!(set(&missing, "s3ql_flushcache!", b"").is_err());
        assert!(daemon_pid(dir.path()).is_err());
        assert!(open_in(dir.path(), "test").is_err());
        assert!(open_mountpoint(dir.path(), "test").is_err());
        assert!(is_mount_point(Path::new("/")).expect("stat /"));
        assert!(!is_mount_point(dir.path()).expect("stat tempdir"));
        std::fs::create_dir(dir.path().join("x")).expect("mkdir");
        let (parent, name) = parent_and_name(&dir.path().join("x/../y")).expect("valid");
        assert_eq!(parent, dir.path().canonicalize().expect("canonical"));
        assert_eq!(name, "y");
        assert!(parent_and_name(Path::new("/")).is_err());
        assert!(parent_and_name(&dir.path().join("no/such/dir/x")).is_err());
    }

    #[test]
    fn error_messages() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert!(describe(&eperm, "x", |_| None).contains("permission denied"));
        let eexist = io::Error::from_raw_os_error(libc::EEXIST);
        let special = |e: i32| (e == libc::EEXIST).then(|| "exists".to_owned());
        assert_eq!(describe(&eexist, "x", special), "exists");
        assert!(describe(&eexist, "x", |_| None).starts_with("x failed"));
    }
}
