//! `umount.s3ql`: unmount a filesystem after all its data is in the backend.
//!
//! Steps: check that MOUNTPOINT is an s3ql mount; `syncfs` it (the kernel's dirty pages
//! reach the daemon); `setxattr(ctrl, "s3ql_flushcache!")` (returns when every dirty block
//! is uploaded); get the daemon's pid (`getxattr(ctrl, "s3ql_pid?")`); unmount through
//! `fusermount3 -u` (or `fusermount -u`, or `umount` as root); then wait until the daemon,
//! which now uploads the metadata, has exited. Prints nothing on success.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::exit::{self, code, fail};
use crate::mounts::{self, MountEntry, S3QL_FSTYPE};
use crate::options::{self, ToolLogArgs};
use crate::{ctrl, fusermount};

const EXIT_CODES: &str = "\
Exit codes:
  0   success: the filesystem is unmounted and the daemon has uploaded everything and exited
  1   flushing the cache failed (nothing was unmounted; the data stays in the cache), or the
      daemon's pid could not be read
  2   usage error, MOUNTPOINT is not an s3ql mount point, or the unmount itself failed
      (e.g. the filesystem is busy: see fuser -m MOUNTPOINT)
  10  the log file cannot be created or written";

/// Command line of `umount.s3ql`.
#[derive(Debug, Parser)]
#[command(
    name = "umount.s3ql",
    version,
    about = "Unmount an S3QL filesystem",
    long_about = "Unmount the S3QL filesystem mounted at MOUNTPOINT.\n\n\
        Waits until all cached data has been uploaded, unmounts, and waits until the mount \
        daemon has uploaded the metadata and exited. With --lazy, only detaches the mount \
        point and returns at once; the daemon finishes when the filesystem is no longer busy.\n\n\
        Installed as /sbin/umount.fuse.s3ql, it is what umount(8) runs for an s3ql mount that \
        has an entry in /run/mount/utab (mounts through mount(8) or fstab with a userspace \
        option such as _netdev), so that plain `umount MOUNTPOINT` waits for the upload too; \
        umount's -l and -f then mean --lazy.",
    after_long_help = EXIT_CODES
)]
pub struct UmountArgs {
    /// Mount point of the filesystem
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Lazy unmount: detach now, even if busy, and do not wait for the upload
    #[arg(short = 'z', long, short_alias = 'l')]
    pub lazy: bool,
    /// umount(8) helper flags (`umount.fuse.s3ql MOUNTPOINT [-n] [-l] [-f] [-v] [-r] [-t
    /// TYPE]`): `-l` and `-f` mean --lazy, the others are ignored.
    #[command(flatten)]
    pub helper: HelperFlags,
    /// Logging options.
    #[command(flatten)]
    pub log: ToolLogArgs,
}

/// The flags umount(8) passes to its `umount.<type>` helper, accepted so that `umount` of an
/// s3ql mount runs umount.s3ql (installed as `/sbin/umount.fuse.s3ql`).
#[derive(Debug, clap::Args)]
pub struct HelperFlags {
    /// umount -f: force (taken as --lazy)
    #[arg(short = 'f', hide = true)]
    force: bool,
    /// umount -n: do not write /etc/mtab (ignored)
    #[arg(short = 'n', hide = true)]
    no_mtab: bool,
    /// umount -v: verbose (ignored)
    #[arg(short = 'v', hide = true)]
    verbose: bool,
    /// umount -r: remount read-only if unmounting fails (ignored)
    #[arg(short = 'r', hide = true)]
    read_only: bool,
    /// umount -t TYPE: the filesystem type (ignored)
    #[arg(short = 't', hide = true, value_name = "TYPE")]
    fstype: Option<String>,
}

/// Entry point of `umount.s3ql`.
pub fn main() -> ! {
    exit::run(|| run(UmountArgs::parse()))
}

/// Runs `umount.s3ql` with parsed arguments.
pub fn run(args: UmountArgs) -> anyhow::Result<()> {
    args.log.init("umount.s3ql")?;
    let table = mounts::read_mounts()
        .map_err(|e| fail(code::GENERIC, format!("cannot read /proc/mounts: {e}")))?;
    let (mountpoint, entry) = find_mount(&table, &args.mountpoint)?;
    if !is_s3ql(&entry, &mountpoint) {
        return Err(fail(
            code::USAGE,
            format!(
                "{} is not an s3ql filesystem (type {})",
                mountpoint.display(),
                entry.fstype
            ),
        ));
    }

    if args.lazy || args.helper.force {
        tracing::debug!("lazy unmount of {}", mountpoint.display());
        return fusermount::kernel_unmount(&mountpoint, true).map_err(|e| {
            fail(
                code::USAGE,
                format!("cannot unmount {}: {e}", mountpoint.display()),
            )
        });
    }

    ctrl::sync_filesystem(&mountpoint);
    tracing::debug!("flushing the cache of {}", mountpoint.display());
    ctrl::set(&ctrl::ctrl_path(&mountpoint), "s3ql_flushcache!", b"").map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::ENOTCONN) {
            "the mount daemon is gone; remove the dead mount with umount.s3ql --lazy, then run fsck.s3ql"
        } else {
            "see the mount log"
        };
        fail(
            code::GENERIC,
            format!("flushing the cache of {} failed: {e}; nothing was unmounted ({hint})", mountpoint.display()),
        )
    })?;
    let pid = ctrl::daemon_pid(&mountpoint).map_err(|e| {
        fail(
            code::GENERIC,
            format!(
                "cannot get the daemon's pid from {}: {e}",
                mountpoint.display()
            ),
        )
    })?;
    let comm = process_comm(pid);
    tracing::debug!("unmounting {} (daemon pid {pid})", mountpoint.display());
    fusermount::kernel_unmount(&mountpoint, false).map_err(|e| {
        fail(
            code::USAGE,
            format!("cannot unmount {}: {e}", mountpoint.display()),
        )
    })?;

    tracing::debug!("waiting for the daemon (pid {pid}) to exit");
    while process_alive(pid, comm.as_deref()) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Finds the mount at `arg` in `table`: first with the lexically absolute path, then with
/// the symlinks of its parent resolved (the mount point itself is never stat()ed, so a hung
/// daemon cannot block this).
fn find_mount(table: &[MountEntry], arg: &Path) -> anyhow::Result<(PathBuf, MountEntry)> {
    let abs = options::absolute(arg)?;
    let mut candidates = vec![normalize(&abs)];
    if let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) {
        if let Ok(p) = std::fs::canonicalize(parent) {
            candidates.push(p.join(name));
        }
    }
    for c in candidates {
        if let Some(e) = mounts::find_by_mountpoint(table, &c) {
            return Ok((c, e.clone()));
        }
    }
    Err(fail(
        code::USAGE,
        format!("{} is not a mount point", arg.display()),
    ))
}

/// Drops `.` components and trailing slashes (`..` is left to the canonicalized candidate).
fn normalize(p: &Path) -> PathBuf {
    p.components().collect()
}

/// An s3ql mount: type `fuse.s3ql` (FreeBSD: `fusefs.s3ql`); or a FUSE type without the
/// subtype (`fuse` from an old kernel's mount(2) as root, `fusefs`, macFUSE's `macfuse`,
/// FUSE-T's `nfs`) with the control file present, or whose daemon is gone (ENOTCONN:
/// nothing can be asked, but it can still be unmounted).
fn is_s3ql(entry: &MountEntry, mountpoint: &Path) -> bool {
    if entry.fstype == S3QL_FSTYPE || entry.fstype == "fusefs.s3ql" {
        return true;
    }
    matches!(
        entry.fstype.as_str(),
        "fuse" | "fusefs" | "macfuse" | "osxfuse" | "nfs"
    ) && match std::fs::symlink_metadata(ctrl::ctrl_path(mountpoint)) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() == Some(libc::ENOTCONN),
    }
}

/// The command name of process `pid` (from /proc), if it exists. Unlike the command line,
/// which reads as empty once an exiting process has released its memory, the name stays
/// until the process is reaped.
fn process_comm(pid: libc::pid_t) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.split_once('(')?;
    let (comm, _) = rest.rsplit_once(')')?;
    Some(comm.to_owned())
}

/// Whether `pid` still runs the same program: a zombie, or a pid reused by another
/// program, counts as gone; a process still exiting counts as alive.
fn process_alive(pid: libc::pid_t, comm: Option<&str>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        // No /proc entry: fall back to kill(pid, 0).
        // SAFETY: signal 0 only checks for existence.
        return unsafe { libc::kill(pid, 0) } == 0;
    };
    // The state follows the parenthesized command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z') | Some('X')) {
        return false;
    }
    match comm {
        Some(before) => process_comm(pid).as_deref() == Some(before),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        UmountArgs::command().debug_assert();
        let a = UmountArgs::try_parse_from(["umount.s3ql", "-z", "/mnt"]).expect("parses");
        assert!(a.lazy);
        assert_eq!(a.log.log, "none");
        // As umount(8)'s helper.
        let a =
            UmountArgs::try_parse_from(["umount.fuse.s3ql", "/mnt", "-n", "-v", "-t", "fuse.s3ql"])
                .expect("parses");
        assert!(!a.lazy && !a.helper.force);
        let a = UmountArgs::try_parse_from(["umount.fuse.s3ql", "/mnt", "-l"]).expect("parses");
        assert!(a.lazy);
    }

    #[test]
    fn finds_mounts_and_rejects_others() {
        let table =
            mounts::parse_mounts("local:///b/ /mnt/x fuse.s3ql rw 0 0\n/dev/vda / ext4 rw 0 0\n");
        let (mp, e) = find_mount(&table, Path::new("/mnt/x/")).expect("found");
        assert_eq!(mp, PathBuf::from("/mnt/x"));
        assert!(is_s3ql(&e, &mp));
        let (mp, e) = find_mount(&table, Path::new("/")).expect("found");
        assert!(!is_s3ql(&e, &mp));
        let err = find_mount(&table, Path::new("/nonexistent/dir")).expect_err("not mounted");
        assert_eq!(exit::describe(&err).0, 2);
    }

    #[test]
    fn own_process_is_alive() {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let comm = process_comm(me);
        assert!(comm.is_some());
        assert!(process_alive(me, comm.as_deref()));
        assert!(!process_alive(me, Some("something else")));
    }
}
