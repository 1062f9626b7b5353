//! Binds `s3ql_core::Filesystem` to the kernel through the `fuse-backend-rs` crate: its
//! `fusedev` transport on Linux (`/dev/fuse`) and on macOS (macFUSE, or FUSE-T with this
//! crate's `fuse-t` feature). The adapter only converts requests into core calls and core
//! results into replies; all filesystem behaviour lives in `s3ql-core`. On other systems
//! `mount` fails with `Unsupported`.
//!
//! Against the fuser adapter, fuse-backend-rs 0.14 mounts with fixed flags: always
//! `nosuid,nodev,noatime` and `default_permissions`, `allow_other` or not, `ro` or not.
//! Other `-o` words and `allow_root` cannot be passed and are logged as ignored.

#[cfg(any(target_os = "linux", target_os = "macos"))]
mod backend_fs;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod convert;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod notify;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod session;

pub use s3ql_core::MountConfig;

#[cfg(any(target_os = "linux", target_os = "macos"))]
pub use session::{mount, Mounted};

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod unsupported {
    use std::io;
    use std::path::Path;
    use std::sync::Arc;

    use tokio::runtime::Handle;

    use crate::MountConfig;

    /// A live mount (never made on this system).
    #[derive(Debug)]
    pub struct Mounted(());

    /// Fails: fuse-backend-rs serves FUSE on Linux and macOS only.
    pub fn mount(
        _fs: Arc<s3ql_core::Filesystem>,
        _runtime: Handle,
        _mountpoint: &Path,
        _config: &MountConfig,
    ) -> io::Result<Mounted> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "fuse-backend-rs serves FUSE on Linux and macOS only; use the fuser adapter",
        ))
    }

    impl Mounted {
        /// Returns at once.
        pub fn wait(self) -> io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub use unsupported::{mount, Mounted};
