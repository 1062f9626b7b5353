//! Binds `s3ql_core::Filesystem` to the kernel through the `fuser` crate (Linux `/dev/fuse`,
//! FreeBSD fusefs). The adapter only converts requests into core calls and core results
//! into replies; all filesystem behaviour lives in `s3ql-core`.
//!
//! On Linux fuser reads requests on several threads; on FreeBSD it has a single session
//! loop (`threads` is forced to 1), which hands every request to the tokio runtime and so
//! only decodes and dispatches. On macOS (where fuser would need macFUSE's libfuse at build
//! time) `mount` fails with `Unsupported`: the fuse-backend-rs adapter serves macOS.

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

#[cfg(target_os = "macos")]
pub use unsupported::{mount, Mounted};

#[cfg(target_os = "macos")]
mod unsupported {
    use std::io;
    use std::path::Path;
    use std::sync::Arc;

    use tokio::runtime::Handle;

    use crate::MountConfig;

    /// A live mount (never made on this system).
    #[derive(Debug)]
    pub struct Mounted(());

    /// Fails: on macOS the fuse-backend-rs adapter serves FUSE (macFUSE or FUSE-T).
    pub fn mount(
        _fs: Arc<s3ql_core::Filesystem>,
        _runtime: Handle,
        _mountpoint: &Path,
        _config: &MountConfig,
    ) -> io::Result<Mounted> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the fuser adapter is not built on macOS; use --adapter fuse-backend-rs",
        ))
    }

    impl Mounted {
        /// Returns at once.
        pub fn wait(self) -> io::Result<()> {
            Ok(())
        }
    }
}
