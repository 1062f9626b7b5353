//! `fsck.s3ql`: check and repair a filesystem that is not mounted.

use std::io::BufRead;

use clap::Parser;
use s3ql_core::fsck::{Fsck, FsckError, FsckOptions};
use s3ql_core::open_codec;

use crate::exit::{self, code, fail};
use crate::logging::{self, LogTarget};
use crate::options::{self, LogArgs, StorageArgs};
use crate::{backend, mounts, paths, unlock};

/// Input was needed but `--batch` was given.
const NEEDS_INPUT: i32 = 41;
/// The user did not confirm.
const DECLINED: i32 = 42;
/// Errors were found (and repaired).
const ERRORS_FOUND: i32 = 128;
/// What the user must type to check a filesystem that may be mounted elsewhere.
const CONFIRMATION: &str = "continue, I know what I am doing";

const EXIT_CODES: &str = "\
Exit codes:
  0   no errors found (or the filesystem is marked clean and --force was not given)
  1   failure
  2   usage error: bad option, storage URL, authinfo2 key or value
  3   unknown backend option
  10  the log file cannot be written
  12  the authinfo2 file is readable by group or others
  16  the storage location does not exist
  17  wrong passphrase
  18  no s3ql filesystem at the storage URL
  32  filesystem revision too old;  33  too new
  40  the filesystem is mounted on this machine
  41  input is needed but --batch was given
  42  the confirmation was not given
  43  the local metadata database is corrupted
  45  the cache directory cannot be used
  128 errors were found and repaired";

/// Command line of `fsck.s3ql`.
#[derive(Debug, Parser)]
#[command(
    name = "fsck.s3ql",
    version,
    about = "Check and repair an S3QL filesystem",
    after_long_help = EXIT_CODES
)]
pub struct FsckArgs {
    /// Storage URL of the filesystem
    #[arg(value_name = "STORAGE_URL")]
    pub storage_url: String,
    /// Keep cached blocks after the check
    #[arg(long)]
    pub keep_cache: bool,
    /// Never ask: exit 41 if input would be needed
    #[arg(long)]
    pub batch: bool,
    /// Check even if the filesystem is marked clean
    #[arg(long)]
    pub force: bool,
    /// Go on although the filesystem may be mounted elsewhere (no prompt)
    #[arg(long)]
    pub force_remote: bool,
    /// Skip the check of the 5 newest older metadata generations in the backend (each is
    /// downloaded and integrity-checked; damaged ones are deleted)
    #[arg(long)]
    pub fast: bool,
    /// Log target: a file, `syslog`, or `none` (console) [default: ~/.s3ql/fsck.log]
    #[arg(long, value_name = "TARGET")]
    pub log: Option<String>,
    /// Options shared by the commands that take a storage URL.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Logging options.
    #[command(flatten)]
    pub logging: LogArgs,
}

/// Entry point of `fsck.s3ql`.
pub fn main() -> ! {
    exit::run(|| run(FsckArgs::parse()))
}

/// Runs `fsck.s3ql` with parsed arguments.
pub fn run(args: FsckArgs) -> anyhow::Result<()> {
    let target = match &args.log {
        Some(t) => LogTarget::parse(t),
        None => LogTarget::File(paths::default_s3ql_dir().join("fsck.log")),
    };
    logging::init(&target, &args.logging, "fsck.s3ql")?;
    let resolved = options::resolve(&args.storage_url, &args.storage)?;
    if let Some(m) = mounts::find_by_source(
        &mounts::read_mounts().unwrap_or_default(),
        &resolved.canonical_url,
    ) {
        return Err(fail(
            code::ALREADY_MOUNTED,
            format!(
                "cannot check a mounted filesystem ({} is mounted at {})",
                resolved.canonical_url,
                m.mountpoint.display()
            ),
        ));
    }
    let passphrase = unlock::passphrase_if_needed(&resolved)?;
    let store = backend::open_store(&resolved)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(resolved.max_threads)
        .thread_name("s3ql-worker")
        .enable_all()
        .build()?;
    let mut opts = FsckOptions {
        force: args.force,
        force_remote: args.force_remote,
        keep_cache: args.keep_cache,
        compression: resolved.compression(None)?,
        max_connections: resolved.max_connections,
        fast: args.fast,
    };
    let report = runtime.block_on(async {
        let codec = open_codec(store.as_ref(), passphrase.as_ref()).await?;
        loop {
            match Fsck::run(
                store.clone(),
                &resolved.cache_path,
                codec.clone(),
                opts.clone(),
            )
            .await
            {
                Err(FsckError::NeedsConfirmation(holder)) if !opts.force_remote => {
                    confirm(args.batch, &holder.to_string())?;
                    opts.force_remote = true;
                }
                Err(e) => return Err(fail(e.exit_code(), e.to_string())),
                Ok(report) => return Ok(report),
            }
        }
    })?;
    if report.skipped_clean {
        println!("Filesystem is marked as clean. Use --force to force checking.");
        return Ok(());
    }
    for note in &report.notes {
        println!("{note}");
    }
    for problem in &report.problems {
        println!("{problem}");
    }
    if report.found_errors() {
        return Err(fail(
            ERRORS_FOUND,
            format!(
                "found and repaired {} error(s) (listed above)",
                report.problems.len()
            ),
        ));
    }
    println!("No errors found.");
    Ok(())
}

/// Asks the user to confirm checking a filesystem that may be mounted elsewhere.
fn confirm(batch: bool, holder: &str) -> anyhow::Result<()> {
    let why = format!(
        "the filesystem may still be mounted elsewhere ({holder}); checking it while it is \
         mounted destroys data"
    );
    if batch {
        return Err(fail(
            NEEDS_INPUT,
            format!("{why}; run without --batch to confirm, or use --force-remote"),
        ));
    }
    eprintln!("WARNING: {why}.");
    eprintln!("If you are sure that it is not mounted, type {CONFIRMATION:?}:");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim_end_matches(['\n', '\r']) != CONFIRMATION {
        return Err(fail(DECLINED, "not confirmed"));
    }
    Ok(())
}
