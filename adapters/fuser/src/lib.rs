//! Binds `s3ql_core::Filesystem` to the kernel through the `fuser` crate (Linux `/dev/fuse`,
//! FreeBSD fusefs). The adapter only converts requests into core calls and core results
//! into replies; all filesystem behaviour lives in `s3ql-core`.
//!
//! On Linux fuser reads requests on several threads; on FreeBSD it has a single session
//! loop (`threads` is forced to 1). On Linux metadata requests run on the request threads
//! and data requests become tasks on the tokio runtime; on FreeBSD every request becomes a
//! task, so the loop only decodes and dispatches. On macOS, where fuser would need macFUSE's
//! libfuse at build time, this crate is empty: the fuse-backend-rs adapter serves macOS.

#[cfg(not(target_os = "macos"))]
mod convert;
#[cfg(not(target_os = "macos"))]
mod dir;
#[cfg(not(target_os = "macos"))]
mod fuse_fs;
#[cfg(not(target_os = "macos"))]
mod inflight;
#[cfg(not(target_os = "macos"))]
mod notify;
#[cfg(not(target_os = "macos"))]
mod options;
#[cfg(not(target_os = "macos"))]
mod respond;
#[cfg(not(target_os = "macos"))]
mod session;

/// The mount options. fuser honours all of them: words fuser knows among `extra_options`
/// become its typed options (and so mount(2) flags), others pass through verbatim; `threads`
/// is always 1 outside Linux.
pub use s3ql_core::MountConfig;

#[cfg(not(target_os = "macos"))]
pub use session::{mount, Mounted};
