//! `s3qladm`: administer a filesystem that is not mounted (passphrase, master key).

use clap::{Parser, Subcommand};
use s3ql_core::passphrase;
use s3ql_core::{crypto::MasterKey, open_codec, Passphrase};

use crate::exit::{self, code, fail};
use crate::logging::{self, LogTarget};
use crate::options::{self, LogArgs, Resolved, StorageArgs};
use crate::{backend, mounts, prompt};

const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   failure: the filesystem is mounted, not encrypted, the master key is invalid or does
      not belong to this filesystem, the new passphrases do not match
  2   usage error: bad option, storage URL, authinfo2 key or value
  3   unknown backend option
  12  the authinfo2 file is readable by group or others
  16  the storage location does not exist
  17  wrong passphrase
  18  no s3ql filesystem at the storage URL";

/// Command line of `s3qladm`. Options shared by all actions come before the action.
#[derive(Debug, Parser)]
#[command(
    name = "s3qladm",
    version,
    about = "Manage an S3QL filesystem that is not mounted",
    after_long_help = EXIT_CODES
)]
pub struct AdmArgs {
    /// Options shared by the commands that take a storage URL.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The actions of `s3qladm`.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Change the passphrase of an encrypted filesystem (the old one from authinfo2
    /// `fs-passphrase` or asked for; the new one asked for twice on a terminal, or one line
    /// of standard input). Only the small wrapped-key objects are rewritten.
    Passphrase {
        /// Storage URL of the filesystem
        storage_url: String,
    },
    /// Set a new passphrase using the master key that mkfs.s3ql printed (read from standard
    /// input; whitespace is ignored), when the passphrase is lost.
    RecoverKey {
        /// Storage URL of the filesystem
        storage_url: String,
    },
}

/// Entry point of `s3qladm`.
pub fn main() -> ! {
    exit::run(|| run(AdmArgs::parse()))
}

/// Runs `s3qladm` with parsed arguments.
pub fn run(args: AdmArgs) -> anyhow::Result<()> {
    logging::init(&LogTarget::Console, &args.log, "s3qladm")?;
    let url = match &args.action {
        Action::Passphrase { storage_url } | Action::RecoverKey { storage_url } => storage_url,
    };
    let resolved = options::resolve(url, &args.storage)?;
    refuse_if_mounted(&resolved)?;
    let store = backend::open_store(&resolved)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            fail(
                code::GENERIC,
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    runtime.block_on(async {
        if !passphrase::is_encrypted(store.as_ref()).await? {
            return Err(fail(
                code::GENERIC,
                "the filesystem is not encrypted (created with --plain)",
            ));
        }
        match args.action {
            Action::Passphrase { .. } => {
                let old = prompt::existing_passphrase(resolved.auth.fs_passphrase.as_deref())?;
                open_codec(store.as_ref(), Some(&old)).await?;
                let new = prompt::new_passphrase()?;
                passphrase::change(store.as_ref(), &old, &new)
                    .await
                    .map_err(|e| fail(code::GENERIC, e.to_string()))?;
                println!("Passphrase changed.");
            }
            Action::RecoverKey { .. } => {
                let text = prompt::secret("Enter master key: ", "master key")?;
                let key =
                    MasterKey::from_text(&text).map_err(|e| fail(code::GENERIC, e.to_string()))?;
                s3ql_core::params::check_master_key(store.as_ref(), &key)
                    .await
                    .map_err(|e| {
                        fail(
                            code::GENERIC,
                            format!("the master key does not open this filesystem: {e}"),
                        )
                    })?;
                let new: Passphrase = prompt::new_passphrase()?;
                passphrase::store_wrapped(store.as_ref(), &key, &new)
                    .await
                    .map_err(|e| fail(code::GENERIC, e.to_string()))?;
                println!("Passphrase set from the master key.");
            }
        }
        Ok(())
    })
}

fn refuse_if_mounted(resolved: &Resolved) -> anyhow::Result<()> {
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
    Ok(())
}
