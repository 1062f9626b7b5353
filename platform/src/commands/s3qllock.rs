//! `s3qllock`: make directory trees immutable (`setxattr(ctrl, "lock", "INO")` per tree).

use std::path::PathBuf;

use clap::Parser;

use crate::ctrl;
use crate::exit;
use crate::options::ToolLogArgs;

const LONG_ABOUT: &str = "\
Make each PATH, and everything below it, immutable: every later change (writing, creating,
removing, renaming into or out of it, changing modes, owners, times or extended attributes,
linking into it) fails with \"Operation not permitted\", also after a remount. Files that are
open for writing cannot be written any more either. There is no unlock: only s3qlrm removes
a locked tree.

Only root and the user who mounted the filesystem may run s3qllock.";

const EXIT_CODES: &str = "\
Exit codes:
  0   success: every PATH is locked
  1   failure: a PATH does not exist, is a mount point or not on an S3QL filesystem, or the
      caller may not use the control file (the PATHs before it are locked)
  2   usage error
  10  the log file cannot be created or written";

/// Command line of `s3qllock`.
#[derive(Debug, Parser)]
#[command(
    name = "s3qllock",
    version,
    about = "Make directory trees in an S3QL filesystem immutable",
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES
)]
pub struct LockArgs {
    /// Trees to lock
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Logging options.
    #[command(flatten)]
    pub log: ToolLogArgs,
}

/// Entry point of `s3qllock`.
pub fn main() -> ! {
    exit::run(|| run(LockArgs::parse()))
}

/// Runs `s3qllock` with parsed arguments.
pub fn run(args: LockArgs) -> anyhow::Result<()> {
    args.log.init("s3qllock")?;
    for path in &args.paths {
        let tree = ctrl::tree_arg(path, "s3qllock")?;
        ctrl::command(
            &tree.ctrl,
            "lock",
            tree.ino.to_string().as_bytes(),
            &format!("locking {}", path.display()),
            |_| None,
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
        LockArgs::command().debug_assert();
        let a = LockArgs::try_parse_from(["s3qllock", "a", "b"]).expect("parses");
        assert_eq!(a.paths.len(), 2);
        assert!(LockArgs::try_parse_from(["s3qllock"]).is_err());
    }
}
