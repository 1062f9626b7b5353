//! s3ql-core: the whole s3ql-rs filesystem, independent of any kernel interface.
//!
//! Metadata lives in SQLite on the local disk and is uploaded to the backend in chunked
//! generations; file contents are fixed-size blocks, de-duplicated by SHA-256, compressed
//! and stored as objects through the narrow [`storage::ObjectStore`] trait. Adapters call
//! the async methods of [`Filesystem`]; every error carries an errno ([`FsError::errno`]).

#[cfg(all(feature = "failpoints", not(debug_assertions)))]
compile_error!("the `failpoints` feature is for tests: it must not be built without debug assertions (release builds)");

/// `failpoint!(NAME)` passes the failpoint [`failpoint::NAME`](crate::failpoint) and
/// returns its injected error with `?`; without the `failpoints` feature it is nothing.
#[cfg(feature = "failpoints")]
macro_rules! failpoint {
    ($name:ident) => {
        $crate::failpoint::hit($crate::failpoint::$name)?
    };
}
#[cfg(not(feature = "failpoints"))]
macro_rules! failpoint {
    ($name:ident) => {
        ()
    };
}

pub mod admin;
pub mod blocks;
mod cache;
pub mod crypto;
mod error;
#[cfg(feature = "failpoints")]
pub mod failpoint;
pub mod format;
mod fs;
pub mod fsck;
pub mod meta;
mod mount_config;
pub mod mount_lock;
pub mod params;
pub mod passphrase;
pub mod storage;
pub mod types;

pub use cache::CacheUsage;
pub use error::{FsError, FsResult};
pub use format::Compression;
pub use fs::{
    block_on_request, open_codec, Filesystem, KernelCache, LogControl, MkfsOptions, MountOptions,
    OpenError, Stats,
};
pub use mount_config::MountConfig;
pub use passphrase::Passphrase;
pub use types::*;
