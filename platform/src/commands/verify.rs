//! `s3ql_verify`: check that every object of a filesystem exists (and with `--data`, that
//! its contents are intact).

use std::path::{Path, PathBuf};

use clap::Parser;
use s3ql_core::fsck::{verify, VerifyOptions};
use s3ql_core::open_codec;

use crate::exit::{self, code, fail};
use crate::logging::{self, LogTarget};
use crate::options::{self, LogArgs, StorageArgs};
use crate::{backend, unlock};

/// Missing or corrupted objects were found.
const OBJECTS_DAMAGED: i32 = 46;

const EXIT_CODES: &str = "\
Exit codes:
  0   every object is present (and intact, with --data)
  1   failure
  2   usage error, or a result file exists and is not empty
  17  wrong passphrase
  18  no s3ql filesystem at the storage URL
  30  the filesystem was not unmounted cleanly (run fsck.s3ql)
  31  the filesystem is mounted
  46  missing or corrupted objects were found";

/// Command line of `s3ql_verify`.
#[derive(Debug, Parser)]
#[command(
    name = "s3ql_verify",
    version,
    about = "Verify the data objects of an S3QL filesystem",
    after_long_help = EXIT_CODES
)]
pub struct VerifyArgs {
    /// Storage URL of the filesystem
    #[arg(value_name = "STORAGE_URL")]
    pub storage_url: String,
    /// Write the names of missing objects to this file
    #[arg(long, value_name = "PATH", default_value = "missing_objects.txt")]
    pub missing_file: PathBuf,
    /// Write the names of corrupted objects to this file
    #[arg(long, value_name = "PATH", default_value = "corrupted_objects.txt")]
    pub corrupted_file: PathBuf,
    /// Read every object and verify its contents (default: only check that it exists)
    #[arg(long)]
    pub data: bool,
    /// Skip objects with a smaller number
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub start_with: u64,
    /// Log target: a file, `syslog`, or `none` (console)
    #[arg(long, value_name = "TARGET", default_value = "none")]
    pub log: String,
    /// Options shared by the commands that take a storage URL.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Logging options.
    #[command(flatten)]
    pub logging: LogArgs,
}

/// Entry point of `s3ql_verify`.
pub fn main() -> ! {
    exit::run(|| run(VerifyArgs::parse()))
}

fn refuse_non_empty(path: &Path) -> anyhow::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Err(fail(
            code::USAGE,
            format!("{} exists and is not empty", path.display()),
        ));
    }
    Ok(())
}

/// Writes `names` one per line to `path`, or removes `path` if there are none.
fn write_list(path: &Path, names: &[String]) -> anyhow::Result<()> {
    if names.is_empty() {
        let _ = std::fs::remove_file(path);
        return Ok(());
    }
    let mut text = names.join("\n");
    text.push('\n');
    std::fs::write(path, text).map_err(|e| {
        fail(
            code::GENERIC,
            format!("cannot write {}: {e}", path.display()),
        )
    })
}

/// Runs `s3ql_verify` with parsed arguments.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    logging::init(&LogTarget::parse(&args.log), &args.logging, "s3ql_verify")?;
    refuse_non_empty(&args.missing_file)?;
    refuse_non_empty(&args.corrupted_file)?;
    let resolved = options::resolve(&args.storage_url, &args.storage)?;
    let passphrase = unlock::passphrase_if_needed(&resolved)?;
    let store = backend::open_store(&resolved)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(resolved.max_threads)
        .thread_name("s3ql-worker")
        .enable_all()
        .build()?;
    let opts = VerifyOptions {
        data: args.data,
        start_with: args.start_with,
        max_connections: resolved.max_connections,
    };
    let report = runtime.block_on(async {
        let codec = open_codec(store.as_ref(), passphrase.as_ref()).await?;
        verify(store.as_ref(), &resolved.cache_path, &codec, &opts).await
    })?;
    write_list(&args.missing_file, &report.missing)?;
    write_list(&args.corrupted_file, &report.corrupted)?;
    println!(
        "Checked {} objects: {} missing, {} corrupted.",
        report.checked,
        report.missing.len(),
        report.corrupted.len()
    );
    if !report.missing.is_empty() || !report.corrupted.is_empty() {
        return Err(fail(
            OBJECTS_DAMAGED,
            format!(
                "{} missing and {} corrupted objects (see {} and {})",
                report.missing.len(),
                report.corrupted.len(),
                args.missing_file.display(),
                args.corrupted_file.display()
            ),
        ));
    }
    Ok(())
}
