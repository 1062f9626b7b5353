//! The `fuse_backend_rs::api::filesystem::FileSystem` implementation: every request arrives
//! on a server thread, which blocks on the matching core call on the tokio runtime. No
//! filesystem logic here.

use std::ffi::CStr;
use std::future::Future;
use std::io;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::SetattrValid;
use fuse_backend_rs::abi::fuse_abi::{stat64, statvfs64, CreateIn, FsOptions, OpenOptions};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, GetxattrReply, ListxattrReply, ZeroCopyReader,
    ZeroCopyWriter,
};
use s3ql_core::{Attr, Filesystem, FsResult};
use tokio::runtime::Handle;

use crate::convert::{
    caller, dirent_type, entry, errno, error, name, rename_flags, set_attr, stat, statvfs,
    xattr_mode,
};

/// Smallest readdir entry in bytes (24-byte header and a name padded to 8 bytes).
const MIN_DIRENT: u32 = 32;
/// Smallest readdirplus entry in bytes (a dirent and a 128-byte entry reply).
const MIN_DIRENTPLUS: u32 = MIN_DIRENT + 128;

/// Binds one core filesystem to a fuse-backend-rs server.
pub(crate) struct BackendFs {
    fs: Arc<Filesystem>,
    rt: Handle,
    /// Told once the kernel's INIT request has been answered.
    initialized: Mutex<Option<Sender<()>>>,
}

impl BackendFs {
    /// An adapter that runs core calls on `rt` and sends on `initialized` after INIT.
    pub(crate) fn new(fs: Arc<Filesystem>, rt: Handle, initialized: Sender<()>) -> Self {
        BackendFs {
            fs,
            rt,
            initialized: Mutex::new(Some(initialized)),
        }
    }

    /// Runs a core call to completion on the runtime (server threads are not tokio threads).
    fn run<T>(&self, call: impl Future<Output = FsResult<T>>) -> io::Result<T> {
        s3ql_core::block_on_request(&self.rt, call).map_err(|e| error(&e))
    }

    /// Runs a core call that yields an inode's attributes and makes the entry reply.
    fn run_entry(&self, call: impl Future<Output = FsResult<Attr>>) -> io::Result<Entry> {
        let attr = self.run(call)?;
        Ok(entry(&attr, self.fs.attr_ttl()))
    }
}

/// The getxattr/listxattr size protocol: `size == 0` asks for the length, a value longer
/// than `size` is `ERANGE`, otherwise the value itself (`Ok(Err(len))` is the length reply).
fn xattr_reply(size: u32, value: Vec<u8>) -> io::Result<Result<Vec<u8>, u32>> {
    let len = u32::try_from(value.len()).map_err(|_| errno(libc::E2BIG))?;
    match size {
        0 => Ok(Err(len)),
        _ if len > size => Err(errno(libc::ERANGE)),
        _ => Ok(Ok(value)),
    }
}

impl FileSystem for BackendFs {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // Not requested: ATOMIC_O_TRUNC (core `open` does not truncate; the kernel sends
        // setattr(size=0) instead) and WRITEBACK_CACHE (see the fuser adapter's `init`).
        let wanted = FsOptions::ASYNC_READ | FsOptions::BIG_WRITES;
        #[cfg(target_os = "linux")]
        let wanted =
            wanted | FsOptions::DO_READDIRPLUS | FsOptions::READDIRPLUS_AUTO | FsOptions::MAX_PAGES;
        let ready = self
            .initialized
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(ready) = ready {
            // The receiver is gone only if `mount` failed already.
            ready.send(()).ok();
        }
        Ok(capable & wanted)
    }

    /// Does nothing: the platform calls `Filesystem::unmount` after the session ended.
    fn destroy(&self) {}

    fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        self.run_entry(self.fs.lookup(parent, self::name(name)))
    }

    fn forget(&self, _ctx: &Context, inode: u64, count: u64) {
        self.fs.forget(inode, count);
    }

    fn getattr(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        let attr = self.run(self.fs.getattr(inode))?;
        Ok((stat(&attr), self.fs.attr_ttl()))
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        attr: stat64,
        _handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        let changes = set_attr(&attr, valid);
        let attr = self.run(self.fs.setattr(caller(ctx), inode, changes))?;
        Ok((stat(&attr), self.fs.attr_ttl()))
    }

    fn readlink(&self, _ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.run(self.fs.readlink(inode))
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        let call = self
            .fs
            .symlink(caller(ctx), parent, self::name(name), self::name(linkname));
        self.run_entry(call)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
        _umask: u32,
    ) -> io::Result<Entry> {
        // The kernel has applied the umask already (DONT_MASK is not requested).
        let call = self
            .fs
            .mknod(caller(ctx), parent, self::name(name), mode, rdev);
        self.run_entry(call)
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        _umask: u32,
    ) -> io::Result<Entry> {
        self.run_entry(self.fs.mkdir(caller(ctx), parent, self::name(name), mode))
    }

    fn unlink(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.run(self.fs.unlink(parent, self::name(name)))
    }

    fn rmdir(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.run(self.fs.rmdir(parent, self::name(name)))
    }

    fn rename(
        &self,
        _ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        let flags = rename_flags(flags)?;
        self.run(
            self.fs
                .rename(olddir, name(oldname), newdir, name(newname), flags),
        )
    }

    fn link(
        &self,
        _ctx: &Context,
        inode: u64,
        newparent: u64,
        newname: &CStr,
    ) -> io::Result<Entry> {
        self.run_entry(self.fs.link(inode, newparent, name(newname)))
    }

    fn open(
        &self,
        _ctx: &Context,
        inode: u64,
        flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        let fh = self.run(self.fs.open(inode, flags as i32))?;
        Ok((Some(fh), OpenOptions::empty(), None))
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        let call = self.fs.create(
            caller(ctx),
            parent,
            self::name(name),
            args.mode,
            args.flags as i32,
        );
        let (attr, fh) = self.run(call)?;
        let entry = entry(&attr, self.fs.attr_ttl());
        Ok((entry, Some(fh), OpenOptions::empty(), None))
    }

    fn read(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _flags: u32,
    ) -> io::Result<usize> {
        let data = self.run(self.fs.read(inode, handle, offset, size))?;
        w.write_all(&data)?;
        Ok(data.len())
    }

    fn write(
        &self,
        _ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _delayed_write: bool,
        _flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<usize> {
        let mut data = vec![0; size as usize];
        r.read_exact(&mut data)?;
        let written = self.run(self.fs.write(inode, handle, offset, &data))?;
        Ok(written as usize)
    }

    fn flush(&self, _ctx: &Context, inode: u64, handle: u64, _lock_owner: u64) -> io::Result<()> {
        self.run(self.fs.flush(inode, handle))
    }

    fn fsync(&self, _ctx: &Context, inode: u64, datasync: bool, _handle: u64) -> io::Result<()> {
        self.run(self.fs.fsync(inode, datasync))
    }

    fn fallocate(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.run(self.fs.fallocate(inode, offset, length, mode as i32))
    }

    fn release(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
        handle: u64,
        flush: bool,
        _flock_release: bool,
        _lock_owner: Option<u64>,
    ) -> io::Result<()> {
        // RELEASE_FLUSH asks for a flush first; the handle is released either way.
        let flushed = if flush {
            self.run(self.fs.flush(inode, handle))
        } else {
            Ok(())
        };
        let released = self.run(self.fs.release(inode, handle));
        flushed.and(released)
    }

    fn statfs(&self, _ctx: &Context, _inode: u64) -> io::Result<statvfs64> {
        Ok(statvfs(&self.run(self.fs.statfs())?))
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        let mode = xattr_mode(flags)?;
        self.run(
            self.fs
                .setxattr(caller(ctx), inode, self::name(name), value, mode),
        )
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        let value = self.run(self.fs.getxattr(caller(ctx), inode, self::name(name)))?;
        Ok(match xattr_reply(size, value)? {
            Ok(value) => GetxattrReply::Value(value),
            Err(len) => GetxattrReply::Count(len),
        })
    }

    fn listxattr(&self, _ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        let names = self.run(self.fs.listxattr(inode))?;
        Ok(match xattr_reply(size, names)? {
            Ok(names) => ListxattrReply::Names(names),
            Err(len) => ListxattrReply::Count(len),
        })
    }

    fn removexattr(&self, _ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
        self.run(self.fs.removexattr(inode, self::name(name)))
    }

    fn opendir(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        let fh = self.run(self.fs.opendir(inode))?;
        Ok((Some(fh), OpenOptions::empty()))
    }

    /// Asks the core for as many entries as could fit in `size` bytes and adds them until
    /// the reply is full; the kernel continues from the last offset it received.
    fn readdir(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let max = (size / MIN_DIRENT).max(1) as usize;
        for e in self.run(self.fs.readdir(inode, offset, max))? {
            let dirent = DirEntry {
                ino: e.ino,
                offset: e.offset,
                type_: dirent_type(e.kind),
                name: e.name.as_encoded_bytes(),
            };
            if add_entry(dirent)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Like `readdir`, with attributes. Every entry the core counted a lookup for (all but
    /// "." and "..") and that did not fit in the reply is forgotten again.
    fn readdirplus(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let max = (size / MIN_DIRENTPLUS).max(1) as usize;
        let ttl = self.fs.attr_ttl();
        let batch = self.run(self.fs.readdirplus(inode, offset, max))?;
        let (mut sent, mut result) = (0, Ok(()));
        for (e, attr) in &batch {
            let dirent = DirEntry {
                ino: e.ino,
                offset: e.offset,
                type_: dirent_type(e.kind),
                name: e.name.as_encoded_bytes(),
            };
            match add_entry(dirent, entry(attr, ttl)) {
                Ok(0) => break,
                Ok(_) => sent += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        for (e, _) in &batch[sent..] {
            let name = e.name.as_encoded_bytes();
            if name != b"." && name != b".." {
                self.fs.forget(e.ino, 1);
            }
        }
        result
    }

    fn releasedir(&self, _ctx: &Context, inode: u64, _flags: u32, handle: u64) -> io::Result<()> {
        self.run(self.fs.releasedir(inode, handle))
    }

    fn fsyncdir(
        &self,
        _ctx: &Context,
        inode: u64,
        _datasync: bool,
        _handle: u64,
    ) -> io::Result<()> {
        self.run(self.fs.fsyncdir(inode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_size_protocol() {
        assert_eq!(xattr_reply(0, b"abc".to_vec()).ok(), Some(Err(3)));
        assert_eq!(
            xattr_reply(3, b"abc".to_vec()).ok(),
            Some(Ok(b"abc".to_vec()))
        );
        let e = xattr_reply(2, b"abc".to_vec()).err();
        assert_eq!(e.and_then(|e| e.raw_os_error()), Some(libc::ERANGE));
    }
}
