//! Mounting: the fusedev session, its server threads, and waiting for the end.

use std::io;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{FuseChannel, FuseSession};
use tokio::runtime::Handle;
use tracing::{debug, warn};

use crate::backend_fs::BackendFs;
use crate::notify::KernelNotifier;
use crate::MountConfig;

/// `-o` words the session applies anyway (its fixed flags) or that `read_only` covers.
const IMPLIED_OPTIONS: &[&str] = &[
    "default_permissions",
    "nosuid",
    "nodev",
    "noatime",
    "rw",
    "ro",
];

/// A live mount. Dropping it unmounts (lazily) and leaves the server threads to end.
pub struct Mounted {
    threads: Vec<JoinHandle<()>>,
    session: FuseSession,
    fs: Arc<s3ql_core::Filesystem>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted")
            .field("threads", &self.threads.len())
            .field("mountpoint", &self.session.mountpoint())
            .finish()
    }
}

fn session_error(e: fuse_backend_rs::transport::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// Mounts `fs` at `mountpoint`; returns once the kernel mount is in place and the FUSE
/// INIT handshake is done. Core calls run on `runtime`, each blocking one of
/// `config.threads` server threads. Always `default_permissions`, `fsname` and subtype
/// `s3ql`. Registers the kernel's caches with `fs` for invalidation (s3qlcp, s3qllock,
/// s3qlrm). Blocks the calling thread, so call it outside async code.
pub fn mount(
    fs: Arc<s3ql_core::Filesystem>,
    runtime: Handle,
    mountpoint: &Path,
    config: &MountConfig,
) -> io::Result<Mounted> {
    let read_only = config.read_only || config.extra_options.iter().any(|o| o == "ro");
    for option in &config.extra_options {
        if !IMPLIED_OPTIONS.contains(&option.as_str()) {
            warn!("fuse-backend-rs cannot pass mount option {option:?}; ignored");
        }
    }
    if config.allow_root && !config.allow_other {
        warn!("fuse-backend-rs cannot mount with allow_root; only the owner has access");
    }
    let mut session =
        FuseSession::new(mountpoint, &config.fs_name, "s3ql", read_only).map_err(session_error)?;
    #[cfg(target_os = "linux")]
    session.set_allow_other(config.allow_other);
    session.mount().map_err(session_error)?;

    let (initialized, init_done) = mpsc::channel();
    let server = Arc::new(Server::new(BackendFs::new(
        Arc::clone(&fs),
        runtime,
        initialized,
    )));
    let mut threads = Vec::new();
    for i in 0..config.threads.max(1) {
        let channel = session.new_channel().map_err(session_error)?;
        let server = Arc::clone(&server);
        threads.push(
            std::thread::Builder::new()
                .name(format!("s3ql-fuse-{i}"))
                .spawn(move || serve(channel, &server))?,
        );
    }
    #[cfg(all(target_os = "macos", feature = "fuse-t"))]
    session.wait_mount().map_err(session_error)?;
    // The kernel answers INIT before anything else; if every thread ended, none will.
    loop {
        match init_done.recv_timeout(Duration::from_millis(100)) {
            Ok(()) => break,
            Err(RecvTimeoutError::Timeout) if !threads.iter().all(|t| t.is_finished()) => {}
            Err(_) => return Err(io::Error::other("the FUSE session ended before INIT")),
        }
    }
    let device = session
        .get_fuse_file()
        .ok_or_else(|| io::Error::other("FUSE session has no device"))?
        .try_clone()?;
    fs.set_kernel_cache(Some(Arc::new(KernelNotifier { server, device })));
    Ok(Mounted {
        threads,
        session,
        fs,
    })
}

/// Serves requests from `channel` until the session ends (unmount, or the device fails).
fn serve(mut channel: FuseChannel, server: &Server<BackendFs>) {
    loop {
        match channel.get_request() {
            Ok(Some((reader, writer))) => {
                if let Err(e) = server.handle_message(reader, writer.into(), None, None) {
                    // A reply to an interrupted request fails with ENOENT; a closed device
                    // with EBADF ends the session.
                    if let fuse_backend_rs::Error::EncodeMessage(io) = &e {
                        if io.raw_os_error() == Some(libc::EBADF) {
                            return;
                        }
                    }
                    debug!("FUSE request failed: {e}");
                }
            }
            Ok(None) => return,
            Err(e) => {
                // After an unmount the device polls as an error: the normal end.
                debug!("FUSE session ended: {e}");
                return;
            }
        }
    }
}

impl Mounted {
    /// Blocks until the filesystem is unmounted (by fusermount -u / umount) and every
    /// server thread, and so every core call started for a request, has returned. Only then
    /// may the caller run `Filesystem::unmount`.
    pub fn wait(self) -> io::Result<()> {
        let panicked = self
            .threads
            .into_iter()
            .map(JoinHandle::join)
            .filter(Result::is_err)
            .count();
        self.fs.set_kernel_cache(None);
        drop(self.session);
        match panicked {
            0 => Ok(()),
            n => Err(io::Error::other(format!(
                "{n} FUSE server threads panicked"
            ))),
        }
    }
}
