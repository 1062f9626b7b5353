//! The passphrase of an encrypted filesystem, obtained before a command forks or starts
//! its real runtime.

use s3ql_core::passphrase;
use s3ql_core::{open_codec, Passphrase};

use crate::backend;
use crate::exit::{code, fail};
use crate::options::Resolved;
use crate::prompt;

/// If the filesystem at `resolved` is encrypted, gets its passphrase (authinfo2
/// `fs-passphrase`, else asked for) and checks it: a wrong one is exit 17 before anything
/// else happens. Uses a short-lived single-threaded runtime that is shut down (its threads
/// joined) before returning, so it is safe to call before daemonizing.
pub fn passphrase_if_needed(resolved: &Resolved) -> anyhow::Result<Option<Passphrase>> {
    let store = backend::open_store(resolved)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            fail(
                code::GENERIC,
                format!("cannot start the async runtime: {e}"),
            )
        })?;
    let result = runtime.block_on(async {
        if !passphrase::is_encrypted(store.as_ref()).await? {
            return Ok::<_, anyhow::Error>(None);
        }
        let given = prompt::existing_passphrase(resolved.auth.fs_passphrase.as_deref())?;
        open_codec(store.as_ref(), Some(&given)).await?;
        Ok(Some(given))
    });
    drop(store);
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    result
}
