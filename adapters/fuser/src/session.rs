//! Mounting through fuser and waiting for the session to end.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use fuser::Session;
use tokio::runtime::Handle;

use crate::fuse_fs::FuseFs;
use crate::inflight::InFlight;
use crate::notify::KernelNotifier;
use crate::{options, MountConfig};

/// A live mount. Dropping it leaves the mount and its request threads running.
#[derive(Debug)]
pub struct Mounted {
    session: JoinHandle<io::Result<()>>,
    inflight: Arc<InFlight>,
    fs: Arc<s3ql_core::Filesystem>,
}

/// Mounts `fs` at `mountpoint`; returns once the kernel mount is in place and the FUSE
/// handshake is done. Core calls run on `runtime`. Always sets `default_permissions`,
/// `fsname` and `subtype=s3ql`. Registers the kernel's caches with `fs` for invalidation
/// (s3qlcp, s3qllock, s3qlrm). Blocks the calling thread, so call it outside async code.
pub fn mount(
    fs: Arc<s3ql_core::Filesystem>,
    runtime: Handle,
    mountpoint: &Path,
    config: &MountConfig,
) -> io::Result<Mounted> {
    let inflight = Arc::new(InFlight::default());
    let adapter = FuseFs::new(Arc::clone(&fs), runtime, Arc::clone(&inflight));
    let session = Session::new(adapter, mountpoint, &options::fuser_config(config))?;
    fs.set_kernel_cache(Some(Arc::new(KernelNotifier(session.notifier()))));
    let session = std::thread::Builder::new()
        .name("s3ql-fuse".to_owned())
        .spawn(move || session.run())?;
    Ok(Mounted {
        session,
        inflight,
        fs,
    })
}

impl Mounted {
    /// Blocks until the filesystem is unmounted (by fusermount -u / umount) and all request
    /// threads ended, then until every core call started for a request has returned. Only
    /// then may the caller run `Filesystem::unmount`. Returns the session's error, if any.
    pub fn wait(self) -> io::Result<()> {
        let result = self
            .session
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("FUSE session thread panicked")));
        self.inflight.wait_idle();
        self.fs.set_kernel_cache(None);
        result
    }
}
