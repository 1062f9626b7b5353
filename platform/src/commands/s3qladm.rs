//! `s3qladm`: administer a filesystem that is not mounted (passphrase, master key, deleting
//! it, restoring older metadata, compacting the database, checking the layout revision).
//! The work is done by `s3ql_core::admin`; this module parses, prompts and prints.

use std::io::{BufRead, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use s3ql_core::admin::{self, AdminError};
use s3ql_core::format::Codec;
use s3ql_core::storage::ObjectStore;
use s3ql_core::{crypto::MasterKey, mount_lock, open_codec, passphrase, OpenError, Passphrase};

use crate::commands::s3qlstat::pretty_size;
use crate::exit::{self, code, fail};
use crate::options::{self, Resolved, StorageArgs, ToolLogArgs};
use crate::{backend, mounts, prompt, unlock};

const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   failure: the filesystem is mounted on this machine, not encrypted (passphrase), the
      master key is invalid or does not belong to this filesystem, the new passphrases do
      not match, the confirmation or the index was not given
  2   usage error: bad option, storage URL, authinfo2 key or value
  3   unknown backend option
  10  the log file cannot be written
  12  the authinfo2 file is readable by group or others
  14  authentication failed;  15  permission denied;  16  the storage location does not exist
  17  wrong passphrase
  18  no s3ql filesystem at the storage URL
  19  the storage host name cannot be resolved
  30  the filesystem was not unmounted cleanly (or its metadata was restored): run fsck.s3ql
  31  the filesystem is mounted elsewhere (or a mount crashed: run fsck.s3ql)
  32  the filesystem revision is older than this program's, or s3ql_params is missing or
      unreadable while other s3ql objects exist
  33  the filesystem revision is newer than this program's
  45  the cache directory cannot be used";

/// Shown under each action's help: where the shared options go.
const GROUP_OPTIONS: &str = "The storage options (--cachedir, --authfile, --backend-options, \
--max-connections, --max-threads) and the logging options (--log, --debug, --debug-modules, \
--quiet) go before the action; `s3qladm --help` lists them and the exit codes.";

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
    /// `--log` (console by default) and the logging options.
    #[command(flatten)]
    pub log: ToolLogArgs,
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
    #[command(after_help = GROUP_OPTIONS)]
    Passphrase {
        /// Storage URL of the filesystem
        storage_url: String,
    },
    /// Set a new passphrase using the master key that mkfs.s3ql printed (read from standard
    /// input; whitespace is ignored), when the passphrase is lost.
    #[command(after_help = GROUP_OPTIONS)]
    RecoverKey {
        /// Storage URL of the filesystem
        storage_url: String,
    },
    /// Delete the filesystem and everything else stored under the storage URL.
    ///
    /// Asks for confirmation: the next line of standard input must be `yes` (any case),
    /// otherwise nothing is deleted and the exit code is 1. Then deletes the local
    /// database, parameters and cached blocks of this filesystem, and every object under
    /// the storage URL's prefix, whatever its name, printing progress. Afterwards
    /// mkfs.s3ql can create a new filesystem there.
    #[command(after_help = GROUP_OPTIONS)]
    Clear {
        /// Storage URL of the filesystem
        storage_url: String,
    },
    /// Replace the metadata with an older generation kept in the backend.
    ///
    /// Lists the stored metadata generations (index, generation number, upload time) and
    /// reads the index of the one to restore from standard input. That generation is
    /// downloaded into the local database and marked as needing a check, with a sequence
    /// number above every existing one: mount.s3ql refuses the filesystem (exit 30) until
    /// fsck.s3ql has checked it, which then uploads it as the newest generation. Data
    /// written after that generation is lost; files whose blocks were deleted since become
    /// holes. Refused while the filesystem is mounted (exit 1 on this machine, 31
    /// elsewhere). A non-empty cache directory is moved aside to `-cache.bak<N>`.
    #[command(after_help = GROUP_OPTIONS)]
    RestoreMetadata {
        /// Storage URL of the filesystem
        storage_url: String,
    },
    /// Compact the metadata database and upload it as a new generation.
    ///
    /// Loads the metadata as mount.s3ql does (exit 30 after an unclean unmount, 31 while
    /// mounted elsewhere), runs SQLite's VACUUM, which returns the space of deleted rows,
    /// uploads the whole database as a new metadata generation and prints the database size
    /// before and after. Worth it after deleting many files.
    #[command(after_help = GROUP_OPTIONS)]
    ShrinkDb {
        /// Storage URL of the filesystem
        storage_url: String,
    },
    /// Check the filesystem's layout revision.
    ///
    /// s3ql-rs has one layout revision, so there is nothing to convert yet: a filesystem of
    /// the current revision is reported as such (exit 0); an older one exits 32, a newer
    /// one 33. A filesystem of S3QL itself (Python), which s3ql-rs cannot convert, and a
    /// storage with s3ql objects but no s3ql_params, or one that names no revision, exit 32
    /// with an explanation. Reads only.
    #[command(after_help = GROUP_OPTIONS)]
    Upgrade {
        /// Storage URL of the filesystem
        storage_url: String,
    },
}

impl Action {
    fn storage_url(&self) -> &str {
        match self {
            Action::Passphrase { storage_url }
            | Action::RecoverKey { storage_url }
            | Action::Clear { storage_url }
            | Action::RestoreMetadata { storage_url }
            | Action::ShrinkDb { storage_url }
            | Action::Upgrade { storage_url } => storage_url,
        }
    }
}

/// Entry point of `s3qladm`.
pub fn main() -> ! {
    exit::run(|| run(AdmArgs::parse()))
}

/// Runs `s3qladm` with parsed arguments.
pub fn run(args: AdmArgs) -> anyhow::Result<()> {
    args.log.init("s3qladm")?;
    let resolved = options::resolve(args.action.storage_url(), &args.storage)?;
    refuse_if_mounted(&resolved)?;
    if let Action::Upgrade { .. } = args.action {
        // Before the passphrase: S3QL's own passphrase object would be reported as damaged.
        let store = backend::open_store(&resolved)?;
        block_on(admin::check_layout(store.as_ref()))??;
    }
    // The passphrase is asked for (and checked) before anything else happens.
    let unlocked = match args.action {
        Action::RestoreMetadata { .. } | Action::ShrinkDb { .. } | Action::Upgrade { .. } => {
            unlock::passphrase_if_needed(&resolved)?
        }
        _ => None,
    };
    let store = backend::open_store(&resolved)?;
    block_on(async {
        let store = store.as_ref();
        match args.action {
            Action::Passphrase { .. } => change_passphrase(store, &resolved).await,
            Action::RecoverKey { .. } => recover_key(store).await,
            Action::Clear { .. } => clear(store, &resolved).await,
            Action::RestoreMetadata { .. } => {
                let codec = open_codec(store, unlocked.as_ref()).await?;
                restore_metadata(store, &resolved, &codec).await
            }
            Action::ShrinkDb { .. } => {
                let codec = open_codec(store, unlocked.as_ref()).await?;
                shrink_db(store, &resolved, &codec).await
            }
            Action::Upgrade { .. } => {
                let codec = open_codec(store, unlocked.as_ref()).await?;
                upgrade(store, &codec).await
            }
        }
    })?
}

/// Runs `work` on a single-threaded runtime that is shut down afterwards.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            fail(
                code::GENERIC,
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    Ok(runtime.block_on(work))
}

async fn refuse_unencrypted(store: &dyn ObjectStore) -> anyhow::Result<()> {
    if !passphrase::is_encrypted(store).await? {
        return Err(fail(
            code::GENERIC,
            "the filesystem is not encrypted (created with --plain)",
        ));
    }
    Ok(())
}

async fn change_passphrase(store: &dyn ObjectStore, resolved: &Resolved) -> anyhow::Result<()> {
    refuse_unencrypted(store).await?;
    let old = prompt::existing_passphrase(resolved.auth.fs_passphrase.as_deref())?;
    open_codec(store, Some(&old)).await?;
    let new = prompt::new_passphrase()?;
    passphrase::change(store, &old, &new)
        .await
        .map_err(|e| fail(code::GENERIC, e.to_string()))?;
    println!("Passphrase changed.");
    Ok(())
}

async fn recover_key(store: &dyn ObjectStore) -> anyhow::Result<()> {
    refuse_unencrypted(store).await?;
    let text = prompt::secret("Enter master key: ", "master key")?;
    let key = MasterKey::from_text(&text).map_err(|e| fail(code::GENERIC, e.to_string()))?;
    s3ql_core::params::check_master_key(store, &key)
        .await
        .map_err(|e| {
            fail(
                code::GENERIC,
                format!("the master key does not open this filesystem: {e}"),
            )
        })?;
    let new: Passphrase = prompt::new_passphrase()?;
    passphrase::store_wrapped(store, &key, &new)
        .await
        .map_err(|e| fail(code::GENERIC, e.to_string()))?;
    println!("Passphrase set from the master key.");
    Ok(())
}

/// Prints `question` (no newline) and reads one line of standard input, without its line
/// end; `None` at end of input. Input that is not a terminal is not echoed, so the line is
/// ended for it.
fn ask(question: &str) -> anyhow::Result<Option<String>> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line)?;
    if read == 0 || !prompt::interactive() {
        println!();
    }
    Ok((read > 0).then(|| line.trim_end_matches(['\n', '\r']).to_owned()))
}

async fn clear(store: &dyn ObjectStore, resolved: &Resolved) -> anyhow::Result<()> {
    println!(
        "I am about to DELETE ALL DATA in {}.",
        resolved.canonical_url
    );
    println!("This includes not just S3QL file systems but *all* stored objects.");
    if let Ok(Some(holder)) = mount_lock::lock_holder(store).await {
        println!("The filesystem is marked as mounted ({holder}).");
    }
    let answer = ask("Please enter \"yes\" to continue.\n> ")?;
    if !answer.is_some_and(|a| a.trim().eq_ignore_ascii_case("yes")) {
        return Err(fail(code::GENERIC, "not confirmed; nothing was deleted"));
    }
    let last = Mutex::new(Instant::now());
    let progress = |n: u64| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= Duration::from_secs(1) {
            *last = Instant::now();
            tracing::info!("Deleting objects ({n} so far)...");
        }
    };
    let deleted = admin::clear(
        store,
        &resolved.cache_path,
        resolved.max_connections,
        &progress,
    )
    .await?;
    println!("Deleted {deleted} objects and the local metadata and cache.");
    Ok(())
}

async fn restore_metadata(
    store: &dyn ObjectStore,
    resolved: &Resolved,
    codec: &Codec,
) -> anyhow::Result<()> {
    // Checked again under the lock; here so that no choice is asked for in vain.
    if let Some(holder) = mount_lock::lock_holder(store)
        .await
        .map_err(OpenError::Lock)?
    {
        return Err(OpenError::Lock(mount_lock::LockError::Held(holder)).into());
    }
    let generations = admin::generations(store, codec).await?;
    if generations.is_empty() {
        return Err(fail(code::GENERIC, "no metadata generations found"));
    }
    println!("The following metadata generations are available:");
    println!("Idx  Generation  Uploaded");
    for (i, g) in generations.iter().enumerate() {
        let current = if g.current { "  (current)" } else { "" };
        let problem = g
            .problem
            .as_deref()
            .map(|p| format!("  (unreadable: {p})"))
            .unwrap_or_default();
        println!(
            "{i:3}  {:>10}  {}{current}{problem}",
            g.number,
            g.created_utc()
        );
    }
    println!(
        "Restoring a metadata backup will almost always result in partial data loss and\n\
         should only be done if the filesystem metadata has been corrupted beyond repair."
    );
    let chosen = loop {
        let Some(answer) = ask("Enter index to revert to: ")? else {
            return Err(fail(code::GENERIC, "no index given; nothing was changed"));
        };
        match answer
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|i| generations.get(i))
        {
            Some(g) => break g.number,
            None => println!("Invalid selection."),
        }
    };
    let restored = admin::restore_metadata(store, &resolved.cache_path, codec, chosen).await?;
    if let Some(bak) = &restored.cache_moved_to {
        println!("The cache directory was moved to {}.", bak.display());
    }
    println!(
        "Metadata generation {chosen} restored into the local database (sequence number {}).\n\
         Run fsck.s3ql to check the filesystem and commit the restored metadata to the \
         backend; mount.s3ql refuses it until then.",
        restored.seq_no
    );
    Ok(())
}

async fn shrink_db(
    store: &dyn ObjectStore,
    resolved: &Resolved,
    codec: &Codec,
) -> anyhow::Result<()> {
    let s = admin::shrink_db(store, &resolved.cache_path, codec).await?;
    let saved = 100.0 * s.before.saturating_sub(s.after) as f64 / s.before.max(1) as f64;
    println!(
        "Database size reduced from {} to {} ({saved:.1}%); uploaded as metadata generation {} ({}).",
        pretty_size(s.before, false),
        pretty_size(s.after, false),
        s.generation,
        pretty_size(s.uploaded, false)
    );
    Ok(())
}

async fn upgrade(store: &dyn ObjectStore, codec: &Codec) -> anyhow::Result<()> {
    match admin::check_format(store, codec).await {
        Ok(revision) => {
            println!("File system already at most-recent revision ({revision}).");
            Ok(())
        }
        Err(AdminError::Open(e @ OpenError::TooOld(revision))) => Err(fail(
            e.exit_code(),
            format!(
                "filesystem revision {revision} is older than revision {} of this program, \
                 and s3ql-rs has no conversion from it",
                s3ql_core::params::FS_REVISION
            ),
        )),
        Err(e) => Err(e.into()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        AdmArgs::command().debug_assert();
        let args = AdmArgs::try_parse_from([
            "s3qladm",
            "--cachedir",
            "/c",
            "--log",
            "none",
            "shrink-db",
            "local:///s",
        ])
        .expect("group options before the action");
        assert!(matches!(args.action, Action::ShrinkDb { .. }));
        for action in ["clear", "restore-metadata", "upgrade"] {
            assert!(AdmArgs::try_parse_from(["s3qladm", action, "local:///s"]).is_ok());
        }
        // Group options must precede the action, as in S3QL.
        assert!(
            AdmArgs::try_parse_from(["s3qladm", "clear", "--cachedir", "/c", "local:///s"])
                .is_err()
        );
    }
}
