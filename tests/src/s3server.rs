//! The test S3 server: s3s-fs 0.14.1 (DESIGN.md §7) embedded in this process, serving
//! plain HTTP on 127.0.0.1 and storing every object as a file below `root/<bucket>/`.
//!
//! The listener is bound before [`S3Server::start`] returns (port 0: the kernel picks a free
//! port, so there is no race with other tests). [`S3Server::stop`] drops the server with all
//! its connections, which looks like an outage to clients; [`S3Server::restart`] serves the
//! same data on the same port again. It never talks to any other address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Access key the server accepts.
pub const ACCESS_KEY: &str = "s3ql-test-key";
/// Secret key the server accepts.
pub const SECRET_KEY: &str = "s3ql-test-secret";

/// A running (or stopped) embedded s3s-fs server.
pub struct S3Server {
    root: PathBuf,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl S3Server {
    /// Starts a server on a free port of 127.0.0.1 over the existing directory `root`.
    pub fn start(root: &Path) -> std::io::Result<S3Server> {
        Self::start_at(root, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn start_at(root: &Path, addr: SocketAddr) -> std::io::Result<S3Server> {
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| std::io::Error::other(format!("s3s-fs: {e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name(format!("s3s-fs-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = ready_tx.send(());
                    let http = ConnBuilder::new(TokioExecutor::new());
                    loop {
                        let socket = tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok((socket, _)) => socket,
                                Err(_) => continue,
                            },
                            _ = &mut stop_rx => break,
                        };
                        let conn = http
                            .serve_connection(TokioIo::new(socket), service.clone())
                            .into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                });
                // Dropping the runtime cancels every connection task.
                drop(runtime);
            })?;
        let _ = ready_rx.recv();
        Ok(S3Server {
            root: root.to_owned(),
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The data directory (one subdirectory per bucket).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates bucket `name` (a directory below the root).
    pub fn create_bucket(&self, name: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.join(name))
    }

    /// Stops serving and drops every open connection.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Serves the same root on the same port again after [`S3Server::stop`].
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let root = self.root.clone();
        *self = Self::start_at(&root, self.addr)?;
        Ok(())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
