//! `s3qlctrl`: control a mounted filesystem (cache, metadata upload, log level) through its
//! control file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands::s3qlstat::pretty_size;
use crate::ctrl;
use crate::exit;
use crate::logging;
use crate::options::ToolLogArgs;

const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   failure: MOUNTPOINT is not the mount point of an S3QL filesystem, the caller may not use
      its control file, or the daemon could not do it (e.g. an upload failed; see its log)
  2   usage error (also: modules given with a log level other than debug)
  10  the log file cannot be created or written";

/// Command line of `s3qlctrl`. The logging options must precede the subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "s3qlctrl",
    version,
    about = "Control a mounted S3QL filesystem",
    long_about = "Control the S3QL filesystem mounted at MOUNTPOINT. Only root and the user \
        who mounted it may do so.",
    after_long_help = EXIT_CODES
)]
pub struct CtrlArgs {
    /// Logging options.
    #[command(flatten)]
    pub log: ToolLogArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The subcommands of `s3qlctrl`.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Upload all cached data that is not in the backend yet; returns when it is (with
    /// progress on a terminal, and every 10 s in the log otherwise)
    Flushcache {
        /// Mount point of the filesystem
        mountpoint: PathBuf,
    },
    /// Upload all dirty data, then empty the cache
    Dropcache {
        /// Mount point of the filesystem
        mountpoint: PathBuf,
    },
    /// Upload the metadata now; returns when it is in the backend
    BackupMetadata {
        /// Mount point of the filesystem
        mountpoint: PathBuf,
    },
    /// Change the size limit of the cache
    Cachesize {
        /// Mount point of the filesystem
        mountpoint: PathBuf,
        /// New cache size in KiB
        #[arg(value_name = "KiB")]
        size: u64,
    },
    /// Change the log level of the mount daemon
    Log {
        /// Mount point of the filesystem
        mountpoint: PathBuf,
        /// New level: debug, info or warn
        level: Level,
        /// With debug: the modules to debug, e.g. cache, fs, opendal [default: all]
        modules: Vec<String>,
    },
}

/// Log levels of `s3qlctrl log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Level {
    /// Debug messages of the given modules and everything else
    Debug,
    /// The default level
    Info,
    /// Warnings and errors only
    Warn,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
        }
    }
}

/// Entry point of `s3qlctrl`.
pub fn main() -> ! {
    exit::run(|| run(CtrlArgs::parse()))
}

/// Runs `s3qlctrl` with parsed arguments.
pub fn run(args: CtrlArgs) -> anyhow::Result<()> {
    args.log.init("s3qlctrl")?;
    let open = |mp: &Path| ctrl::open_mountpoint(mp, "s3qlctrl");
    match args.action {
        Action::Flushcache { mountpoint } => flush_with_progress(&open(&mountpoint)?),
        Action::Dropcache { mountpoint } => ctrl::command(
            &open(&mountpoint)?,
            "s3ql_dropcache!",
            b"",
            "dropping the cache",
            |_| None,
        ),
        Action::BackupMetadata { mountpoint } => ctrl::command(
            &open(&mountpoint)?,
            "upload-meta",
            b"",
            "uploading the metadata",
            |_| None,
        ),
        Action::Cachesize { mountpoint, size } => ctrl::command(
            &open(&mountpoint)?,
            "cachesize",
            size.saturating_mul(1024).to_string().as_bytes(),
            "setting the cache size",
            |_| None,
        ),
        Action::Log {
            mountpoint,
            level,
            modules,
        } => {
            // The daemon checks again; this gives the usage error (exit 2) here.
            logging::level_filter(level.name(), &modules)?;
            let mut value = level.name().to_owned();
            for m in &modules {
                value.push(' ');
                value.push_str(m);
            }
            ctrl::command(
                &open(&mountpoint)?,
                "logging",
                value.as_bytes(),
                "changing the log level",
                |_| None,
            )
        }
    }
}

/// `s3ql_flushcache!` while another thread reports the dirty data left: on a terminal as
/// one updated line, otherwise as a log line every 10 s.
fn flush_with_progress(ctrl_file: &Path) -> anyhow::Result<()> {
    let (done, finished) = mpsc::channel::<()>();
    let watched = ctrl_file.to_owned();
    let progress = std::thread::spawn(move || {
        let tty = std::io::stderr().is_terminal();
        let period = Duration::from_millis(if tty { 500 } else { 10_000 });
        let start = Instant::now();
        let mut shown = false;
        while finished.recv_timeout(period) == Err(mpsc::RecvTimeoutError::Timeout) {
            let Ok(s) = ctrl::stats(&watched) else {
                continue;
            };
            let line = format!(
                "flushing: {} in {} blocks left after {} s",
                pretty_size(s.dirty_bytes, false),
                s.dirty_entries,
                start.elapsed().as_secs()
            );
            if tty {
                eprint!("\r{line}    ");
                shown = true;
            } else {
                tracing::info!("{line}");
            }
        }
        if shown {
            eprintln!();
        }
    });
    let result = ctrl::command(
        ctrl_file,
        "s3ql_flushcache!",
        b"",
        "flushing the cache",
        |_| None,
    );
    drop(done);
    let _ = progress.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        CtrlArgs::command().debug_assert();
        let a = CtrlArgs::try_parse_from(["s3qlctrl", "--debug", "log", "/m", "debug", "cache"])
            .expect("parses");
        assert!(a.log.logging.debug);
        match a.action {
            Action::Log { level, modules, .. } => {
                assert_eq!(level, Level::Debug);
                assert_eq!(modules, ["cache"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        let a = CtrlArgs::try_parse_from(["s3qlctrl", "cachesize", "/m", "1024"]).expect("parses");
        assert!(matches!(a.action, Action::Cachesize { size: 1024, .. }));
        assert!(CtrlArgs::try_parse_from(["s3qlctrl", "backup-metadata", "/m"]).is_ok());
        assert!(CtrlArgs::try_parse_from(["s3qlctrl", "log", "/m", "loud"]).is_err());
        // Group options precede the subcommand.
        assert!(CtrlArgs::try_parse_from(["s3qlctrl", "flushcache", "/m", "--debug"]).is_err());
    }
}
