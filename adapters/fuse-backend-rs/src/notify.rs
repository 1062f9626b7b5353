//! Kernel cache invalidation for the core (`s3ql_core::KernelCache`) through fuse-backend-rs's
//! notifications (FUSE_NOTIFY_INVAL_ENTRY, FUSE_NOTIFY_INVAL_INODE).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::FuseDevWriter;
use tracing::debug;

use crate::backend_fs::BackendFs;

/// Room for a notification: headers and a name of at most 255 bytes.
const NOTIFY_BUF: usize = 1024;

/// Sends the core's invalidations to the kernel over its own descriptor of the session's
/// `/dev/fuse` connection. The core calls it from a blocking thread, never from a request
/// handler (the kernel may wait for locks that a request holds).
pub(crate) struct KernelNotifier {
    pub(crate) server: Arc<Server<BackendFs>>,
    pub(crate) device: File,
}

impl KernelNotifier {
    /// Runs `send` with a writer to the kernel; a failure is logged, not returned: the
    /// kernel forgets uncached entries by itself (`ENOENT`), and a lost invalidation only
    /// keeps a cache entry until its TTL.
    fn send(
        &self,
        what: &str,
        send: impl FnOnce(FuseDevWriter<'_>) -> fuse_backend_rs::Result<usize>,
    ) {
        let mut buf = vec![0; NOTIFY_BUF];
        let res = FuseDevWriter::new(self.device.as_raw_fd(), &mut buf)
            .map_err(|e| e.to_string())
            .and_then(|w| send(w).map_err(|e| e.to_string()));
        if let Err(e) = res {
            debug!("kernel cache invalidation of {what} failed: {e}");
        }
    }

    fn inval_entry(&self, parent: u64, name: &OsStr) {
        let Ok(cname) = CString::new(name.as_bytes()) else {
            return; // No entry has a name with a NUL byte.
        };
        self.send(&format!("entry {name:?} of {parent}"), |w| {
            self.server.notify_inval_entry(w, parent, &cname)
        });
    }
}

impl s3ql_core::KernelCache for KernelNotifier {
    fn invalidate_entry(&self, parent: u64, name: &OsStr) {
        self.inval_entry(parent, name);
    }

    /// fuse-backend-rs 0.14 has no FUSE_NOTIFY_DELETE: the entry is invalidated, and the
    /// kernel learns the new link count of `child` at its next lookup or getattr.
    fn delete_entry(&self, parent: u64, child: u64, name: &OsStr) {
        self.inval_entry(parent, name);
        self.invalidate_attr(child);
    }

    fn invalidate_attr(&self, ino: u64) {
        // A negative offset (here -1 as the wire's u64) invalidates the attributes only.
        self.send(&format!("attributes of {ino}"), |w| {
            self.server.notify_inval_inode(w, ino, u64::MAX, 0)
        });
    }
}
