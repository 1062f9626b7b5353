//! Older metadata generations (S3QL checks its newest metadata backups unless `--fast`).
//!
//! Each of the newest [`CHECKED_GENERATIONS`] generations in the backend, except the one
//! this run downloaded (already checked), is downloaded into a temporary file and must
//! pass SQLite's integrity check: a mount or fsck falls back to them when the newest one
//! is damaged. A generation that cannot be loaded (missing or altered chunk) or fails the
//! check is reported and its manifest deleted, so that nothing ever falls back to it (its
//! chunks are expired with the next upload). Any other failure (storage outage, local disk)
//! aborts fsck instead.

use std::path::PathBuf;

use rusqlite::{Connection, OpenFlags};

use super::{progress, FsckError, FsckReport};
use crate::error::FsError;
use crate::format::Codec;
use crate::meta::upload;
use crate::params::LocalPaths;
use crate::storage::{ObjectStore, StoreError};

/// How many of the newest generations are checked.
pub(super) const CHECKED_GENERATIONS: usize = 5;

/// Checks the newest generations besides `loaded` (see the module documentation).
pub(super) async fn check(
    store: &dyn ObjectStore,
    codec: &Codec,
    paths: &LocalPaths,
    loaded: Option<u64>,
    report: &mut FsckReport,
) -> Result<(), FsckError> {
    progress("Checking older metadata generations");
    let mut tmp = paths.db.as_os_str().to_owned();
    tmp.push(".generation");
    let tmp = LocalPaths::new(&PathBuf::from(tmp));
    let generations = upload::list_generations(store).await?;
    for generation in generations
        .into_iter()
        .filter(|g| Some(*g) != loaded)
        .take(CHECKED_GENERATIONS)
    {
        tmp.remove_db().map_err(FsError::from)?;
        let damage = match upload::download(store, codec, generation, &tmp.db).await {
            Ok(()) => {
                let db = tmp.db.clone();
                tokio::task::spawn_blocking(move || integrity(&db))
                    .await
                    .map_err(|e| FsError::Inconsistent(e.to_string()))?
            }
            Err(
                e @ (FsError::Storage(StoreError::NotFound(_))
                | FsError::Format(_)
                | FsError::Inconsistent(_)),
            ) => Some(e.to_string()),
            Err(e) => return Err(e.into()),
        };
        tmp.remove_db().map_err(FsError::from)?;
        if let Some(damage) = damage {
            store.delete(&upload::manifest_name(generation)).await?;
            report.problem(format!(
                "metadata generation {generation} cannot be used ({damage}); deleted"
            ));
        }
    }
    Ok(())
}

/// `None` if the database at `path` passes `PRAGMA integrity_check`, else what it says.
fn integrity(path: &std::path::Path) -> Option<String> {
    let checked = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)));
    match checked {
        Ok(verdict) if verdict == "ok" => None,
        Ok(verdict) => Some(format!("integrity check: {verdict}")),
        Err(e) => Some(format!("not a database: {e}")),
    }
}
