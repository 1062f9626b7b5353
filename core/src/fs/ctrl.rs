//! The control file `.__s3ql__ctrl__`: commands for the S3QL tools as extended attributes.
//! Only root and the user who mounted may use it (others get `EPERM`).
//!
//! Commands are `setxattr(ctrl, NAME, VALUE)`; numbers are ASCII decimal, a NAME argument
//! is the raw bytes of a file name and always comes last (so it may hold any byte):
//!
//! | NAME | VALUE | action |
//! |---|---|---|
//! | `s3ql_flushcache!` | anything | upload every dirty block; returns when done |
//! | `s3ql_dropcache!` | anything | flush, then drop every cached block |
//! | `upload-meta` | anything | upload the metadata now |
//! | `cachesize` | `BYTES` | set the cache size limit |
//! | `logging` | `LEVEL[ MODULE...]` | set the daemon's log level (`debug`, `info`, `warn`) |
//! | `copy` | `SRC_INO PARENT_INO NAME` | [`Filesystem::copy_tree`] |
//! | `lock` | `INO` | [`Filesystem::lock_tree`] |
//! | `rmtree` | `PARENT_INO NAME` | [`Filesystem::remove_tree`] |
//!
//! Queries are `getxattr(ctrl, NAME)`: `s3ql_pid?` gives the daemon's pid (decimal),
//! `s3qlstat` gives [`Stats`](super::Stats) as a JSON object. Anything else is `EINVAL`.
//!
//! A NAME may also carry the prefix `user.`: FreeBSD's fusefs forwards `extattr_*_file` in
//! the user namespace as `user.NAME`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::Filesystem;
use crate::error::{errno, FsResult};
use crate::types::{Attr, Caller, FileKind, CTRL_INODE};

/// `name` without the `user.` prefix that FreeBSD's fusefs adds to user-namespace attributes.
fn ctrl_name(name: &[u8]) -> &[u8] {
    name.strip_prefix(b"user.").unwrap_or(name)
}

/// Splits `N` decimal numbers, each followed by one space or the end, off the front of
/// `value`; returns them and the rest (a file name, or empty).
fn numbers_then_name<const N: usize>(value: &[u8]) -> FsResult<([u64; N], &[u8])> {
    let mut out = [0u64; N];
    let mut rest = value;
    for slot in &mut out {
        let end = rest.iter().position(|b| *b == b' ').unwrap_or(rest.len());
        let text = std::str::from_utf8(&rest[..end]).map_err(|_| errno(libc::EINVAL))?;
        *slot = text.parse().map_err(|_| errno(libc::EINVAL))?;
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    Ok((out, rest))
}

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
        tracing::debug!(
            "control command {} from uid {}",
            String::from_utf8_lossy(name),
            caller.uid
        );
        match ctrl_name(name) {
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
            b"logging" => {
                let text = std::str::from_utf8(value).map_err(|_| errno(libc::EINVAL))?;
                let mut words = text.split_whitespace();
                let level = words.next().ok_or_else(|| errno(libc::EINVAL))?;
                let modules: Vec<String> = words.map(str::to_owned).collect();
                let control = self
                    .control
                    .log_control
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .ok_or_else(|| errno(libc::ENOTSUP))?;
                control(level, &modules).map_err(|e| {
                    tracing::warn!("cannot change the log level: {e}");
                    errno(libc::EINVAL)
                })
            }
            b"copy" => {
                let ([src, parent], name) = numbers_then_name(value)?;
                self.copy_tree(src, parent, OsStr::from_bytes(name))
                    .await
                    .map(|_| ())
            }
            b"lock" => match numbers_then_name(value)? {
                ([ino], b"") => self.lock_tree(ino).await,
                _ => Err(errno(libc::EINVAL)),
            },
            b"rmtree" => {
                let ([parent], name) = numbers_then_name(value)?;
                self.remove_tree(parent, OsStr::from_bytes(name)).await
            }
            _ => Err(errno(libc::EINVAL)),
        }
    }

    /// Answers control query `name`.
    pub(super) async fn ctrl_query(&self, caller: Caller, name: &[u8]) -> FsResult<Vec<u8>> {
        self.check_ctrl_caller(caller)?;
        match ctrl_name(name) {
            b"s3ql_pid?" => Ok(std::process::id().to_string().into_bytes()),
            b"s3qlstat" => serde_json::to_vec(&self.stats().await?)
                .map_err(|e| crate::error::FsError::Inconsistent(e.to_string())),
            _ => Err(errno(libc::EINVAL)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ctrl_name, numbers_then_name};

    #[test]
    fn names_may_carry_the_user_prefix() {
        assert_eq!(ctrl_name(b"user.s3ql_pid?"), b"s3ql_pid?");
        assert_eq!(ctrl_name(b"s3ql_pid?"), b"s3ql_pid?");
        assert_eq!(ctrl_name(b"trusted.x"), b"trusted.x");
    }

    #[test]
    fn parses_numbers_and_names() {
        let ([a, b], name) = numbers_then_name::<2>(b"12 3 a b\nc").expect("valid");
        assert_eq!((a, b, name), (12, 3, b"a b\nc".as_slice()));
        let ([a], name) = numbers_then_name::<1>(b"7").expect("valid");
        assert_eq!((a, name), (7, b"".as_slice()));
        assert!(numbers_then_name::<2>(b"7").is_err());
        assert!(numbers_then_name::<1>(b"x 7").is_err());
        assert!(numbers_then_name::<1>(b"").is_err());
    }
}
