//! The one error type that crosses the core's public boundary.
//!
//! Every module has its own `thiserror` enum; they all convert into [`FsError`], which
//! carries the errno an adapter sends to the kernel. Policy: errors that come from the
//! caller's request (`ENOENT`, `EEXIST`, ...) are returned as they are and not logged;
//! errors from the storage, the cache disk or the database are logged once where they
//! happen and reach the kernel as `EIO` (or `ENOSPC` for a full cache disk).

use crate::format::FormatError;
use crate::storage::StoreError;

/// An error from a filesystem operation; [`FsError::errno`] is what the kernel sees.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A POSIX error that is the expected answer to the request (no log line).
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Errno(i32),
    /// The object storage failed after retries.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// An object could not be decoded or failed its integrity check.
    #[error("object format: {0}")]
    Format(#[from] FormatError),
    /// The metadata database failed.
    #[error("metadata database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The local cache directory failed.
    #[error("cache disk: {0}")]
    Io(#[from] std::io::Error),
    /// The filesystem metadata contradicts itself (fsck needed).
    #[error("inconsistent metadata: {0}")]
    Inconsistent(String),
    /// A test's failpoint failed the operation (feature `failpoints` only).
    #[cfg(feature = "failpoints")]
    #[error(transparent)]
    Injected(#[from] crate::failpoint::Injected),
}

impl FsError {
    /// The errno to report to the kernel for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Errno(e) => *e,
            FsError::Io(e) if e.raw_os_error() == Some(libc::ENOSPC) => libc::ENOSPC,
            _ => libc::EIO,
        }
    }
}

/// Shorthand for an [`FsError::Errno`].
pub(crate) fn errno(code: i32) -> FsError {
    FsError::Errno(code)
}

/// Result of a filesystem operation.
pub type FsResult<T> = Result<T, FsError>;
