//! The narrow storage interface every backend implements.
//!
//! Objects are immutable blobs addressed by a flat name. Implementations guarantee that a
//! successful `put` is durable in the backend and that `get` returns exactly the bytes of
//! the last successful `put` of that name.

mod memory;
mod opendal_store;

use std::ops::Range;

use bytes::Bytes;

pub use memory::MemoryStore;
pub use opendal_store::OpendalStore;

/// A failure of the object storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(String),
    /// The storage location itself (directory, bucket) does not exist.
    #[error("storage location {0} does not exist")]
    LocationMissing(String),
    /// Any other backend failure, after the backend's own retries.
    #[error("{0}")]
    Backend(String),
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
