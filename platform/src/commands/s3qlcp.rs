//! `s3qlcp`: a copy-on-write snapshot of a directory tree inside one mounted filesystem.
//!
//! Steps: check SOURCE (an existing directory, not the mount point) and TARGET (absent, its
//! directory on the same filesystem); `syncfs` (the kernel's cached writes reach the daemon);
//! `setxattr(ctrl, "copy", "SRC_INO PARENT_INO NAME")`, which returns when the copy exists.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use clap::Parser;

use crate::ctrl;
use crate::exit::{self, code, fail};
use crate::options::{self, ToolLogArgs};

const LONG_ABOUT: &str = "\
Copy the directory tree SOURCE to TARGET inside one mounted S3QL filesystem, without copying
any file data: both trees share their stored blocks until one side is changed, and a change to
either side never shows in the other. The copy is a consistent point-in-time image even while
other processes write into SOURCE (their writes wait a moment while it is taken). Everything is
preserved: modes, owners, times (to the nanosecond), extended attributes, symbolic links and
hard links inside the tree. The copy is not locked (see s3qllock).

Dirty data is uploaded to the backend first, so the copy takes as long as that upload.
Only root and the user who mounted the filesystem may run s3qlcp.";

const EXIT_CODES: &str = "\
Exit codes:
  0   success: TARGET exists and holds the copy
  1   failure, nothing was changed: SOURCE is not a directory or is the mount point, TARGET
      exists, lies inside SOURCE, is on another filesystem or in a locked directory, the
      caller may not use the control file, or the upload of dirty data failed
  2   usage error
  10  the log file cannot be created or written";

/// Command line of `s3qlcp`.
#[derive(Debug, Parser)]
#[command(
    name = "s3qlcp",
    version,
    about = "Copy a directory tree in an S3QL filesystem without copying its data",
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES
)]
pub struct CpArgs {
    /// Directory to copy
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,
    /// Name of the copy (must not exist)
    #[arg(value_name = "TARGET")]
    pub target: PathBuf,
    /// Logging options.
    #[command(flatten)]
    pub log: ToolLogArgs,
}

/// Entry point of `s3qlcp`.
pub fn main() -> ! {
    exit::run(|| run(CpArgs::parse()))
}

/// Runs `s3qlcp` with parsed arguments.
pub fn run(args: CpArgs) -> anyhow::Result<()> {
    args.log.init("s3qlcp")?;
    copy(&args)
}

fn copy(args: &CpArgs) -> anyhow::Result<()> {
    let source = options::absolute(&args.source)?;
    let src = std::fs::metadata(&source).map_err(|e| {
        fail(
            code::GENERIC,
            format!("source {}: {e}", args.source.display()),
        )
    })?;
    if !src.is_dir() {
        return Err(fail(
            code::GENERIC,
            format!("source {} is not a directory", args.source.display()),
        ));
    }
    if ctrl::is_mount_point(&source)? {
        return Err(fail(
            code::GENERIC,
            format!(
                "source {} is a mount point; copy a directory inside the filesystem",
                args.source.display()
            ),
        ));
    }
    let ctrl_file = ctrl::open_in(&source, "s3qlcp")?;

    let (parent, name) = ctrl::parent_and_name(&args.target)?;
    let target = args.target.display();
    if std::fs::symlink_metadata(parent.join(&name)).is_ok() {
        return Err(fail(
            code::GENERIC,
            format!("target {target} already exists"),
        ));
    }
    let dir = std::fs::metadata(&parent)
        .map_err(|e| fail(code::GENERIC, format!("{}: {e}", parent.display())))?;
    if !dir.is_dir() || dir.dev() != src.dev() {
        return Err(fail(
            code::GENERIC,
            format!("target {target} must be in a directory of the same filesystem as the source"),
        ));
    }

    ctrl::sync_filesystem(&source);
    let mut value = format!("{} {} ", src.ino(), dir.ino()).into_bytes();
    value.extend_from_slice(name.as_bytes());
    ctrl::command(
        &ctrl_file,
        "copy",
        &value,
        &format!("copying {} to {target}", args.source.display()),
        |errno| match errno {
            libc::EEXIST => Some(format!("target {target} already exists")),
            libc::EINVAL => Some(format!(
                "target {target} lies inside the source {}",
                args.source.display()
            )),
            libc::EPERM => Some(format!(
                "cannot create {target}: its directory is locked (s3qllock)"
            )),
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        CpArgs::command().debug_assert();
        let a = CpArgs::try_parse_from(["s3qlcp", "a", "b", "--debug"]).expect("parses");
        assert_eq!(a.target, PathBuf::from("b"));
        assert!(a.log.logging.debug);
        assert!(CpArgs::try_parse_from(["s3qlcp", "a"]).is_err());
    }

    #[test]
    fn refuses_sources_outside_s3ql() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = CpArgs::try_parse_from([
            "s3qlcp".as_ref(),
            dir.path().as_os_str(),
            dir.path().join("copy").as_os_str(),
        ])
        .expect("parses");
        let err = copy(&args).expect_err("not an s3ql filesystem");
        assert_eq!(exit::describe(&err).0, 1);
    }
}
