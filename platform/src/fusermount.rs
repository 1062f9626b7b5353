//! Unmounting a FUSE mount from the kernel: `fusermount3 -u`, else `fusermount -u`, else
//! `umount` (on Linux as root only, and with `-i` so that it never runs the
//! `umount.fuse.s3ql` helper, which is `umount.s3ql` itself; macOS and FreeBSD have no
//! fusermount and let the mounting user run `umount`).

use std::path::Path;
use std::process::{Command, Stdio};

/// Asks the kernel to unmount `mountpoint` (`lazy`: detach now, finish when no longer
/// busy). Returns the last helper's error output on failure.
pub fn kernel_unmount(mountpoint: &Path, lazy: bool) -> Result<(), String> {
    let mut errors = Vec::new();
    for prog in ["fusermount3", "fusermount"] {
        let mut cmd = Command::new(prog);
        cmd.arg("-u");
        if lazy {
            cmd.arg("-z");
        }
        cmd.arg("--").arg(mountpoint);
        match run(cmd) {
            Ok(()) => return Ok(()),
            Err(None) => continue, // not installed
            Err(Some(msg)) => {
                errors.push(format!("{prog}: {msg}"));
                break;
            }
        }
    }
    let linux = cfg!(target_os = "linux");
    // SAFETY: geteuid has no preconditions.
    if !linux || unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("umount");
        if linux {
            cmd.arg("-i");
        }
        if lazy {
            // Linux detaches lazily; macOS and FreeBSD can only force.
            cmd.arg(if linux { "-l" } else { "-f" });
        }
        cmd.arg("--").arg(mountpoint);
        match run(cmd) {
            Ok(()) => return Ok(()),
            Err(None) => errors.push("umount: not found".to_owned()),
            Err(Some(msg)) => errors.push(format!("umount: {msg}")),
        }
    }
    if errors.is_empty() {
        errors.push("neither fusermount3 nor fusermount is installed".to_owned());
    }
    Err(errors.join("; "))
}

/// Runs a helper: `Err(None)` if it is not installed, `Err(Some(stderr))` if it failed.
fn run(mut cmd: Command) -> Result<(), Option<String>> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(None),
        Err(e) => Err(Some(e.to_string())),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr);
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            Err(Some(if text.is_empty() {
                format!("failed ({})", o.status)
            } else {
                text
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmounting_a_plain_directory_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = kernel_unmount(dir.path(), false).expect_err("not mounted");
        assert!(!e.is_empty());
    }
}
