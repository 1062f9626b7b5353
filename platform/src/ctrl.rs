//! Talking to a mount daemon through the control file `.__s3ql__ctrl__` in the mount root
//! (extended attributes, as S3QL does).

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

/// The control file of the mount at `mountpoint`.
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

/// Sends a command: `setxattr(path, name, value)`. Returns when the daemon has done it
/// (for `s3ql_flushcache!`: when every dirty block is in the backend). Retries on EINTR.
pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (p, n) = (c_path(path)?, c_name(name)?);
    loop {
        // SAFETY: `p` and `n` are valid NUL-terminated strings; `value` is a valid buffer of
        // `value.len()` bytes.
        let rc = unsafe {
            libc::setxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Queries the daemon: `getxattr(path, name)`.
pub fn get(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (p, n) = (c_path(path)?, c_name(name)?);
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `p` and `n` are valid NUL-terminated strings; `buf` is writable for
        // `buf.len()` bytes.
        let rc =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 16, 0),
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
    }
}
