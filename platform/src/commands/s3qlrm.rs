//! `s3qlrm`: remove directory trees, locked or not, in one metadata transaction each
//! (`syncfs`, then `setxattr(ctrl, "rmtree", "PARENT_INO NAME")`).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use clap::Parser;

use crate::ctrl;
use crate::exit;
use crate::options::ToolLogArgs;

const LONG_ABOUT: &str = "\
Remove each PATH with everything below it, without asking, including trees locked with
s3qllock (a PATH inside a locked tree cannot be removed: remove the locked tree itself). Much
faster than rm -r: each tree goes in one metadata transaction, and no entry stays visible
afterwards. Data no other file shares is deleted from the backend. Open files stay readable
until they are closed.

Only root and the user who mounted the filesystem may run s3qlrm.";

const EXIT_CODES: &str = "\
Exit codes:
  0   success: every PATH is gone
  1   failure: a PATH does not exist, is a mount point, lies inside a locked tree or not on an
      S3QL filesystem, or the caller may not use the control file (the PATHs before it are
      removed)
  2   usage error
  10  the log file cannot be created or written";

/// Command line of `s3qlrm`.
#[derive(Debug, Parser)]
#[command(
    name = "s3qlrm",
    version,
    about = "Quickly remove directory trees from an S3QL filesystem",
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES
)]
pub struct RmArgs {
    /// Trees to remove
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Logging options.
    #[command(flatten)]
    pub log: ToolLogArgs,
}

/// Entry point of `s3qlrm`.
pub fn main() -> ! {
    exit::run(|| run(RmArgs::parse()))
}

/// Runs `s3qlrm` with parsed arguments.
pub fn run(args: RmArgs) -> anyhow::Result<()> {
    args.log.init("s3qlrm")?;
    for path in &args.paths {
        let tree = ctrl::tree_arg(path, "s3qlrm")?;
        ctrl::sync_filesystem(&tree.dir);
        let mut value = format!("{} ", tree.parent_ino).into_bytes();
        value.extend_from_slice(tree.name.as_bytes());
        ctrl::command(
            &tree.ctrl,
            "rmtree",
            &value,
            &format!("removing {}", path.display()),
            |errno| {
                (errno == libc::EPERM).then(|| {
                    format!(
                        "cannot remove {}: it lies inside a locked tree (only the top of a \
                         locked tree can be removed)",
                        path.display()
                    )
                })
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        RmArgs::command().debug_assert();
        let a = RmArgs::try_parse_from(["s3qlrm", "--quiet", "a"]).expect("parses");
        assert_eq!(a.paths, [PathBuf::from("a")]);
        assert!(RmArgs::try_parse_from(["s3qlrm"]).is_err());
    }
}
