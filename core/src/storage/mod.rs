//! The narrow storage interface every backend implements.
//!
//! Objects are immutable blobs addressed by a flat name. Implementations guarantee that a
//! successful `put` is durable in the backend and that `get` returns exactly the bytes of
//! the last successful `put` of that name.

mod faulty;
mod local_dir;
mod memory;
mod opendal_store;
mod retry;

use std::ops::Range;

use bytes::Bytes;

pub use faulty::{FaultConfig, FaultyStore};
pub use memory::MemoryStore;
pub use opendal_store::*;
pub use retry::{RetryPolicy, RetryStore};

/// A failure of the object storage.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(String),
    /// The storage location itself (directory, bucket, container) does not exist.
    #[error("storage location {0} does not exist")]
    LocationMissing(String),
    /// The backend rejected the credentials (unknown key, bad signature or password).
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The credentials are valid but do not allow the operation.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The backend's host name does not resolve.
    #[error("host name cannot be resolved: {0}")]
    HostUnresolvable(String),
    /// The backend cannot be reached or keeps failing (connection refused or reset,
    /// timeouts, server errors, rate limiting) after the backend's own retries. Transient:
    /// the same operation may succeed later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Any other backend failure (not expected to go away by retrying).
    #[error("{0}")]
    Backend(String),
}

impl StoreError {
    /// Whether retrying the operation later may succeed (see [`StoreError::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// S3QL's exit code for a command that fails with this error when it opens the storage:
    /// 14 authentication, 15 permission, 16 missing location, 19 unresolvable host, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            StoreError::AuthFailed(_) => 14,
            StoreError::PermissionDenied(_) => 15,
            StoreError::LocationMissing(_) => 16,
            StoreError::HostUnresolvable(_) => 19,
            _ => 1,
        }
    }
}

/// Size and name of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Boxed future returned by the [`ObjectStore`] methods.
pub type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// An object store: the only way the core touches the backend.
pub trait ObjectStore: Send + Sync + 'static {
    /// The whole object.
    fn get(&self, name: &str) -> StoreFuture<'_, Bytes>;
    /// A byte range of the object (clamped to its end).
    fn get_range(&self, name: &str, range: Range<u64>) -> StoreFuture<'_, Bytes>;
    /// Stores the object durably, replacing any previous one of that name.
    fn put(&self, name: &str, data: Bytes) -> StoreFuture<'_, ()>;
    /// Stores the object only if no object of that name exists; `false` if one did.
    fn put_if_absent(&self, name: &str, data: Bytes) -> StoreFuture<'_, bool>;
    /// Deletes the object; deleting a missing object succeeds.
    fn delete(&self, name: &str) -> StoreFuture<'_, ()>;
    /// All objects whose name starts with `prefix`, in no particular order.
    fn list(&self, prefix: &str) -> StoreFuture<'_, Vec<ObjectInfo>>;
    /// The object's size, or `None` if it does not exist.
    fn head(&self, name: &str) -> StoreFuture<'_, Option<u64>>;
}
