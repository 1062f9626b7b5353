//! s3ql-core: the whole s3ql-rs filesystem, independent of any kernel interface.
//!
//! Metadata lives in SQLite on the local disk and is uploaded to the backend in chunked
//! generations; file contents are fixed-size blocks, de-duplicated by SHA-256, compressed
//! and stored as objects through the narrow [`storage::ObjectStore`] trait. Adapters call
//! the async methods of [`Filesystem`]; every error carries an errno ([`FsError::errno`]).

pub mod blocks;
mod cache;
mod error;
pub mod format;
mod fs;
pub mod meta;
pub mod params;
pub mod storage;
pub mod types;

pub use cache::CacheUsage;
pub use error::{FsError, FsResult};
pub use format::Compression;
pub use fs::{Filesystem, MkfsOptions, MountOptions, OpenError};
pub use types::*;
