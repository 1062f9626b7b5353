//! The `fuser::Filesystem` implementation: every request calls the matching core method and
//! replies, metadata requests on the request thread, data requests as tasks on the tokio
//! runtime. No filesystem logic here.

use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    BsdFileFlags, Errno, FileHandle, FopenFlags, INodeNo, InitFlags, IoctlFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use s3ql_core::Filesystem;
use tokio::runtime::Handle;
use tracing::debug;

use crate::convert::{caller, errno, file_attr, rename_flags, set_attr, xattr_mode};
use crate::inflight::InFlight;
use crate::{dir, respond};

/// Largest write the kernel may send in one request.
const MAX_WRITE: u32 = 1024 * 1024;

/// Flags of every open file: no FLUSH at each `close` (the core's `flush` has nothing to do,
/// and POSIX locks are the kernel's own, as this adapter implements no lock requests). Saves
/// one request per file written, a sixth of those of a small-file create.
const FILE_OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_NOFLUSH;

/// Binds one core filesystem to a fuser session.
pub(crate) struct FuseFs {
    fs: Arc<Filesystem>,
    rt: Handle,
    inflight: Arc<InFlight>,
}

impl FuseFs {
    /// An adapter that runs core calls on `rt` and counts them in `inflight`.
    pub(crate) fn new(fs: Arc<Filesystem>, rt: Handle, inflight: Arc<InFlight>) -> Self {
        FuseFs { fs, rt, inflight }
    }

    /// Runs the task made by `make` on the runtime. If the task panics or the runtime is
    /// gone, the reply it owns is dropped and fuser answers `EIO`.
    fn spawn<F, Fut>(&self, make: F)
    where
        F: FnOnce(Arc<Filesystem>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = make(Arc::clone(&self.fs));
        let guard = self.inflight.enter();
        self.rt.spawn(async move {
            task.await;
            drop(guard);
        });
    }
}

impl FuseFs {
    /// Runs the task made by `make` to completion on this request thread (the runtime
    /// drives its I/O and timers; see `s3ql_core::block_on_request`). Handing a request to
    /// a runtime worker costs thread wake-ups that, for metadata requests and writes into
    /// the cache, cost more than the work itself; a read or write that waits (for a
    /// download, or for cache space) holds one of the several request threads, as in
    /// mountpoint-s3. FreeBSD has a single request loop, which must not wait: there the
    /// task goes to the runtime like any other.
    fn run_here<F, Fut>(&self, make: F)
    where
        F: FnOnce(Arc<Filesystem>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if cfg!(target_os = "freebsd") {
            return self.spawn(make);
        }
        let _guard = self.inflight.enter();
        s3ql_core::block_on_request(&self.rt, make(Arc::clone(&self.fs)));
    }
}

/// Asks the kernel for `flags` if it offers them; a missing capability is not an error.
fn request_capability(config: &mut KernelConfig, flags: InitFlags) {
    if let Err(missing) = config.add_capabilities(flags) {
        debug!("kernel does not offer FUSE capability {missing:?}");
    }
}

impl fuser::Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        request_capability(config, InitFlags::FUSE_ASYNC_READ);
        request_capability(config, InitFlags::FUSE_BIG_WRITES);
        request_capability(config, InitFlags::FUSE_DO_READDIRPLUS);
        request_capability(config, InitFlags::FUSE_READDIRPLUS_AUTO);
        // Not requested: FUSE_ATOMIC_O_TRUNC (core `open` does not truncate; the kernel sends
        // setattr(size=0) instead) and FUSE_WRITEBACK_CACHE. With it, `write` returns once
        // the data is in the kernel's page cache, not in the block cache (DESIGN §6), so a
        // crash of the daemon loses data written but not yet closed or fsynced; the kernel
        // also owns mtime and size. Measured: an untar of /usr/include was no faster, a
        // 1 GiB dd + fsync 5-20 % faster (724-757 against 597-711 MB/s).
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            debug!("max_write {MAX_WRITE} refused, using {nearest}");
            // `nearest` is the value fuser accepts, so this cannot fail.
            config.set_max_write(nearest).ok();
        }
        Ok(())
    }

    /// Does nothing: the platform calls `Filesystem::unmount` after the session ended.
    fn destroy(&mut self) {}

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_os_string();
        self.run_here(|fs| async move {
            let res = fs.lookup(parent.0, &name).await;
            respond::lookup(reply, fs.attr_ttl(), res);
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.run_here(|fs| async move {
            let res = fs.getattr(ino.0).await;
            respond::attr(reply, fs.attr_ttl(), res);
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // crtime, chgtime, bkuptime and flags are only ever set on macOS.
        let caller = caller(req);
        let changes = set_attr(mode, uid, gid, size, atime, mtime, ctime);
        self.run_here(|fs| async move {
            let res = fs.setattr(caller, ino.0, changes).await;
            respond::attr(reply, fs.attr_ttl(), res);
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.run_here(|fs| async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        // The kernel has applied the umask already (FUSE_DONT_MASK is not requested).
        let caller = caller(req);
        let name = name.to_os_string();
        self.run_here(|fs| async move {
            let res = fs.mknod(caller, parent.0, &name, mode, rdev).await;
            respond::entry(reply, fs.attr_ttl(), res);
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let caller = caller(req);
        let name = name.to_os_string();
        self.run_here(|fs| async move {
            let res = fs.mkdir(caller, parent.0, &name, mode).await;
            respond::entry(reply, fs.attr_ttl(), res);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_os_string();
        self.run_here(|fs| async move {
            respond::empty(reply, fs.unlink(parent.0, &name).await);
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_os_string();
        self.run_here(|fs| async move {
            respond::empty(reply, fs.rmdir(parent.0, &name).await);
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let caller = caller(req);
        let name = link_name.to_os_string();
        let target = target.as_os_str().to_os_string();
        self.run_here(|fs| async move {
            let res = fs.symlink(caller, parent.0, &name, &target).await;
            respond::entry(reply, fs.attr_ttl(), res);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let flags = match rename_flags(flags) {
            Ok(flags) => flags,
            Err(e) => return reply.error(e),
        };
        let name = name.to_os_string();
        let newname = newname.to_os_string();
        self.run_here(|fs| async move {
            let res = fs
                .rename(parent.0, &name, newparent.0, &newname, flags)
                .await;
            respond::empty(reply, res);
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.to_os_string();
        self.run_here(|fs| async move {
            let res = fs.link(ino.0, newparent.0, &newname).await;
            respond::entry(reply, fs.attr_ttl(), res);
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.run_here(|fs| async move {
            match fs.open(ino.0, flags.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FILE_OPEN_FLAGS),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.run_here(|fs| async move {
            match fs.read(ino.0, fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if cfg!(target_os = "freebsd") {
            // fuser reuses its request buffer, so the data must be copied for the task.
            let data = data.to_vec();
            return self.spawn(|fs| async move {
                respond::written(reply, fs.write(ino.0, fh.0, offset, &data).await);
            });
        }
        // On this thread (see `run_here`), straight from fuser's request buffer.
        let _guard = self.inflight.enter();
        let res = s3ql_core::block_on_request(&self.rt, self.fs.write(ino.0, fh.0, offset, data));
        respond::written(reply, res);
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.run_here(|fs| async move {
            respond::empty(reply, fs.flush(ino.0, fh.0).await);
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        self.run_here(|fs| async move {
            // FUSE_RELEASE_FLUSH asks for a flush first; the handle is released either way.
            let flushed = if flush {
                fs.flush(ino.0, fh.0).await
            } else {
                Ok(())
            };
            let released = fs.release(ino.0, fh.0).await;
            respond::empty(reply, flushed.and(released));
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.run_here(|fs| async move {
            respond::empty(reply, fs.fsync(ino.0, datasync).await);
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.run_here(|fs| async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.run_here(|fs| async move { dir::readdir(&fs, ino.0, offset, reply).await });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.run_here(|fs| async move { dir::readdirplus(&fs, ino.0, offset, reply).await });
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.run_here(|fs| async move {
            respond::empty(reply, fs.releasedir(ino.0, fh.0).await);
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(|fs| async move {
            respond::empty(reply, fs.fsyncdir(ino.0).await);
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.run_here(|fs| async move {
            match fs.statfs().await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        // `position` is a macOS resource-fork offset; nothing else sends a non-zero one.
        let mode = match xattr_mode(flags) {
            Ok(mode) if position == 0 => mode,
            Ok(_) => return reply.error(Errno::EINVAL),
            Err(e) => return reply.error(e),
        };
        let caller = caller(req);
        let name = name.to_os_string();
        let value = value.to_vec();
        self.spawn(|fs| async move {
            let res = fs.setxattr(caller, ino.0, &name, &value, mode).await;
            respond::empty(reply, res);
        });
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let caller = caller(req);
        let name = name.to_os_string();
        self.run_here(|fs| async move {
            let res = fs.getxattr(caller, ino.0, &name).await;
            respond::xattr(reply, size, res);
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.run_here(|fs| async move {
            respond::xattr(reply, size, fs.listxattr(ino.0).await);
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_os_string();
        self.run_here(|fs| async move {
            respond::empty(reply, fs.removexattr(ino.0, &name).await);
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let caller = caller(req);
        let name = name.to_os_string();
        self.run_here(|fs| async move {
            match fs.create(caller, parent.0, &name, mode, flags).await {
                Ok((attr, fh)) => reply.created(
                    &fs.attr_ttl(),
                    &file_attr(&attr),
                    respond::GENERATION,
                    FileHandle(fh),
                    FILE_OPEN_FLAGS,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // No ioctls are supported; ENOTTY is what callers such as lsattr expect.
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.spawn(|fs| async move {
            respond::empty(reply, fs.fallocate(ino.0, offset, length, mode).await);
        });
    }
}
