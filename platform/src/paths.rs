//! Home-relative default paths (`~/.s3ql/...`) and `~` expansion.

use std::ffi::{CStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// The current user's home directory: `$HOME`, else the passwd entry, else `/`.
pub fn home_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    passwd_home().unwrap_or_else(|| PathBuf::from("/"))
}

/// The home directory from the passwd database.
fn passwd_home() -> Option<PathBuf> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `pwd` is plain old data that getpwuid_r fills in; `buf` outlives the use of
    // the pointers it stores into `pwd`; `result` is checked before use.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        let dir = CStr::from_ptr(pwd.pw_dir).to_bytes().to_vec();
        Some(PathBuf::from(OsString::from_vec(dir)))
    }
}

/// Expands a leading `~` or `~/` to the home directory (as Python's `expanduser` does for
/// the current user).
pub fn expand_tilde(path: &str) -> String {
    if path == "~" {
        return home_dir().to_string_lossy().into_owned();
    }
    match path.strip_prefix("~/") {
        Some(rest) => home_dir().join(rest).to_string_lossy().into_owned(),
        None => path.to_owned(),
    }
}

/// `~/.s3ql`: the default cache directory and home of the default authfile and logs.
pub fn default_s3ql_dir() -> PathBuf {
    home_dir().join(".s3ql")
}

/// `~/.s3ql/authinfo2`.
pub fn default_authfile() -> PathBuf {
    default_s3ql_dir().join("authinfo2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_expansion() {
        let home = home_dir();
        assert_eq!(expand_tilde("~/x/y"), home.join("x/y").to_string_lossy());
        assert_eq!(expand_tilde("~"), home.to_string_lossy());
        assert_eq!(expand_tilde("/abs/~"), "/abs/~");
        assert_eq!(expand_tilde("~other/x"), "~other/x");
        assert!(passwd_home().is_some());
    }
}
