//! The control file `.__s3ql__ctrl__`: commands for the S3QL tools as extended attributes.
//! Only root and the user who mounted may use it.

use super::Filesystem;
use crate::error::{errno, FsResult};
use crate::types::{Attr, Caller, FileKind, CTRL_INODE};

impl Filesystem {
    /// Attributes of the control file: a regular 0600 file owned by the mounting user.
    pub(super) async fn ctrl_attr(&self) -> FsResult<Attr> {
        let root = self
            .db
            .call(|c| super::inode::get(c, crate::types::ROOT_INODE))
            .await?;
        Ok(Attr {
            ino: CTRL_INODE,
            size: 0,
            blocks: 0,
            atime: root.ctime,
            mtime: root.ctime,
            ctime: root.ctime,
            kind: FileKind::Regular,
            perm: 0o600,
            nlink: 1,
            uid: self.opts.owner_uid,
            gid: self.opts.owner_gid,
            rdev: 0,
            blksize: 4096,
        })
    }

    fn check_ctrl_caller(&self, caller: Caller) -> FsResult<()> {
        if caller.uid == 0 || caller.uid == self.opts.owner_uid {
            Ok(())
        } else {
            Err(errno(libc::EPERM))
        }
    }

    /// Runs control command `name` with argument `value`.
    pub(super) async fn ctrl_command(
        &self,
        caller: Caller,
        name: &[u8],
        value: &[u8],
    ) -> FsResult<()> {
        self.check_ctrl_caller(caller)?;
        match name {
            b"s3ql_flushcache!" => self.flush_cache().await,
            b"s3ql_dropcache!" => {
                self.flush_cache().await?;
                self.cache.drop_clean().await;
                Ok(())
            }
            b"upload-meta" => self.backup_metadata().await,
            b"cachesize" => {
                let text = std::str::from_utf8(value).map_err(|_| errno(libc::EINVAL))?;
                let bytes: u64 = text.trim().parse().map_err(|_| errno(libc::EINVAL))?;
                self.cache.set_max_size(bytes);
                Ok(())
            }
            _ => Err(errno(libc::EINVAL)),
        }
    }

    /// Answers control query `name`.
    pub(super) async fn ctrl_query(&self, caller: Caller, name: &[u8]) -> FsResult<Vec<u8>> {
        self.check_ctrl_caller(caller)?;
        match name {
            b"s3ql_pid?" => Ok(std::process::id().to_string().into_bytes()),
            _ => Err(errno(libc::EINVAL)),
        }
    }
}
