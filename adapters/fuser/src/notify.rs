//! Kernel cache invalidation for the core (`s3ql_core::KernelCache`) through fuser's
//! `Notifier` (FUSE_NOTIFY_INVAL_ENTRY, FUSE_NOTIFY_DELETE, FUSE_NOTIFY_INVAL_INODE).

use std::ffi::OsStr;
use std::io;

use fuser::{INodeNo, Notifier};
use tracing::debug;

/// Sends the core's invalidations to the kernel. The core calls it from a blocking thread,
/// never from a request handler (the kernel may wait for locks that a request holds).
pub(crate) struct KernelNotifier(pub(crate) Notifier);

/// An invalidation of something the kernel does not cache (`ENOENT`) is not an error.
fn log_failure(what: &str, res: io::Result<()>) {
    match res {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
            debug!("kernel cache invalidation of {what} failed: {e}");
        }
        _ => {}
    }
}

impl s3ql_core::KernelCache for KernelNotifier {
    fn invalidate_entry(&self, parent: u64, name: &OsStr) {
        let res = self.0.inval_entry(INodeNo(parent), name);
        log_failure(&format!("entry {name:?} of {parent}"), res);
    }

    fn delete_entry(&self, parent: u64, child: u64, name: &OsStr) {
        let res = self.0.delete(INodeNo(parent), INodeNo(child), name);
        log_failure(&format!("deleted entry {name:?} of {parent}"), res);
    }

    fn invalidate_attr(&self, ino: u64) {
        // A negative offset invalidates the attributes only, not cached pages.
        let res = self.0.inval_inode(INodeNo(ino), -1, 0);
        log_failure(&format!("attributes of {ino}"), res);
    }
}
