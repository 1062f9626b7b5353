//! `mkfs.s3ql`: create a filesystem at a storage URL.

use clap::Parser;
use s3ql_core::{Filesystem, MkfsOptions};

use crate::exit::{self, code, fail};
use crate::logging::{self, LogTarget};
use crate::options::{self, LogArgs, StorageArgs};
use crate::{backend, mounts, prompt};

const LONG_ABOUT: &str = "\
Create a new S3QL filesystem at STORAGE_URL.

Unless --plain is given, the filesystem is encrypted (AES-256-GCM under a random master
key, itself wrapped with a key derived from your passphrase by argon2id). The passphrase is
asked for twice on a terminal, or read as one line from standard input otherwise; it is
never taken from the authinfo2 file. mkfs.s3ql prints the master key: keep it somewhere
safe, 's3qladm recover-key' sets a new passphrase with it if the passphrase is lost.
Unencrypted filesystems are still compressed, and every block is verified against its
SHA-256 when read.";

/// Command line of `mkfs.s3ql`.
#[derive(Debug, Parser)]
#[command(
    name = "mkfs.s3ql",
    version,
    about = "Create an S3QL filesystem",
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES
)]
pub struct MkfsArgs {
    /// Storage URL of the new filesystem, e.g. local:///srv/s3ql
    #[arg(value_name = "STORAGE_URL")]
    pub storage_url: String,
    /// Filesystem label
    #[arg(short = 'L', long, value_name = "NAME", default_value = "")]
    pub label: String,
    /// Maximum size of a data block in KiB; fixed for the life of the filesystem
    #[arg(long, value_name = "KiB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1024 * 1024))]
    pub data_block_size: u64,
    /// Accepted for compatibility with S3QL; s3ql-rs uploads metadata in its own chunks
    #[arg(long, value_name = "KiB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub metadata_block_size: u64,
    /// Create an unencrypted filesystem (no passphrase; data still compressed and checksummed)
    #[arg(long)]
    pub plain: bool,
    /// Overwrite an existing filesystem at this storage URL, deleting all its data
    #[arg(long)]
    pub force: bool,
    /// Options shared by the commands that take a storage URL.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
}

const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   failure, e.g. a filesystem already exists (use --force) or it is mounted
  2   usage error: bad option, storage URL, authinfo2 key or value
  3   unknown backend option
  12  the authinfo2 file is readable by group or others
  16  the storage location does not exist
  45  the cache directory cannot be created or used";

/// Entry point of `mkfs.s3ql`.
pub fn main() -> ! {
    exit::run(|| {
        let args = MkfsArgs::parse();
        run(args)
    })
}

/// Runs `mkfs.s3ql` with parsed arguments.
pub fn run(args: MkfsArgs) -> anyhow::Result<()> {
    logging::init(&LogTarget::Console, &args.log, "mkfs.s3ql")?;
    let resolved = options::resolve(&args.storage_url, &args.storage)?;

    if let Some(m) = mounts::find_by_source(
        &mounts::read_mounts().unwrap_or_default(),
        &resolved.canonical_url,
    ) {
        return Err(fail(
            code::GENERIC,
            format!(
                "{} is mounted at {}; unmount it first",
                resolved.canonical_url,
                m.mountpoint.display()
            ),
        ));
    }
    let data_block_size = args
        .data_block_size
        .checked_mul(1024)
        .ok_or_else(|| fail(code::USAGE, "--data-block-size is too large"))?;
    tracing::debug!(
        "metadata block size {} KiB requested (metadata is uploaded in s3ql-rs chunks)",
        args.metadata_block_size
    );

    // The storage is checked (location, credentials) before the passphrase is asked for.
    let store = backend::open_store(&resolved)?;
    let passphrase = if args.plain {
        None
    } else {
        Some(prompt::new_passphrase()?)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(resolved.max_threads)
        .thread_name("s3ql-worker")
        .enable_all()
        .build()?;
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let opts = MkfsOptions {
        label: args.label,
        data_block_size,
        force: args.force,
        root_uid: uid,
        root_gid: gid,
        passphrase,
    };
    tracing::info!("Creating filesystem at {}", resolved.canonical_url);
    let key = runtime.block_on(Filesystem::mkfs(store, &resolved.cache_path, opts))?;
    tracing::info!("Filesystem created.");
    if let Some(key) = key {
        println!("Please store the following master key in a safe location. It allows");
        println!("decryption of the filesystem if you lose your passphrase (s3qladm recover-key).");
        println!("---BEGIN MASTER KEY---");
        println!("{}", key.to_text());
        println!("---END MASTER KEY---");
    }
    Ok(())
}
