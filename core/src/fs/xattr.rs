//! Extended attributes (stored as bytes, any namespace).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{params, Connection, OptionalExtension};

use super::{inode, Filesystem};
use crate::error::{errno, FsResult};
use crate::types::{Caller, Timestamp, XattrMode, CTRL_INODE};

/// Longest attribute name, as on Linux.
const XATTR_NAME_MAX: usize = 255;
/// Largest attribute value, as on Linux.
const XATTR_SIZE_MAX: usize = 65536;
/// "No such attribute": `ENODATA` on Linux, `ENOATTR` on macOS and FreeBSD.
#[cfg(target_os = "linux")]
const ENOATTR: i32 = libc::ENODATA;
#[cfg(not(target_os = "linux"))]
const ENOATTR: i32 = libc::ENOATTR;

/// Attributes that the kernel or common tools look up on every file: the SELinux label
/// (`ls -l`), POSIX ACLs (`ls -l`, `getfacl`) and file capabilities (the kernel, before
/// every write). Each lookup is a round trip to the daemon.
const PROBED_NAMES: [&[u8]; 4] = [
    b"security.selinux",
    b"system.posix_acl_access",
    b"system.posix_acl_default",
    b"security.capability",
];

/// Which of the [`PROBED_NAMES`] some inode carries. While no inode carries one, reading it
/// fails with `EOPNOTSUPP` instead of `ENOATTR`, without a database query: tools then treat
/// the whole filesystem as having none (`ls -l` stops asking, saving two round trips per
/// file). Setting one makes it present for the rest of the mount (it is never absent again
/// while mounted, so a reader never misses a stored value).
pub(super) struct ProbedNames {
    present: [AtomicBool; PROBED_NAMES.len()],
}

impl ProbedNames {
    /// Reads which probed names are stored (one scan of the attribute table).
    pub(super) fn load(conn: &Connection) -> FsResult<Self> {
        let names = ProbedNames {
            present: Default::default(),
        };
        let mut stmt = conn.prepare("SELECT DISTINCT name FROM ext_attributes")?;
        for name in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
            names.mark_present(&name?);
        }
        Ok(names)
    }

    fn slot(&self, name: &[u8]) -> Option<&AtomicBool> {
        let i = PROBED_NAMES.iter().position(|p| *p == name)?;
        Some(&self.present[i])
    }

    /// True if `name` is a probed name that no inode carries.
    fn absent(&self, name: &[u8]) -> bool {
        self.slot(name).is_some_and(|p| !p.load(Ordering::Acquire))
    }

    fn mark_present(&self, name: &[u8]) {
        if let Some(p) = self.slot(name) {
            p.store(true, Ordering::Release);
        }
    }
}

impl Filesystem {
    /// Sets attribute `name` of `ino` (on the control file: runs a command).
    pub async fn setxattr(
        &self,
        caller: Caller,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        mode: XattrMode,
    ) -> FsResult<()> {
        if ino == CTRL_INODE {
            return self.ctrl_command(caller, name.as_bytes(), value).await;
        }
        if name.len() > XATTR_NAME_MAX || name.is_empty() {
            return Err(errno(libc::ERANGE));
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(errno(libc::E2BIG));
        }
        let name = name.as_bytes().to_vec();
        let value = value.to_vec();
        // Before the row exists, so that no reader answers `EOPNOTSUPP` once it does.
        self.probed_names.mark_present(&name);
        self.db
            .call(move |c| {
                let mut node = inode::get(c, ino)?;
                if node.locked {
                    return Err(errno(libc::EPERM));
                }
                let exists = c
                    .prepare_cached("SELECT 1 FROM ext_attributes WHERE inode = ?1 AND name = ?2")?
                    .query_row(params![ino, name], |_| Ok(()))
                    .optional()?
                    .is_some();
                match mode {
                    XattrMode::Create if exists => return Err(errno(libc::EEXIST)),
                    XattrMode::Replace if !exists => return Err(errno(ENOATTR)),
                    _ => {}
                }
                c.prepare_cached("INSERT OR REPLACE INTO ext_attributes (inode, name, value) VALUES (?1, ?2, ?3)")?
                    .execute(params![ino, name, value])?;
                node.ctime = Timestamp::now();
                node.save(c)
            })
            .await
    }

    /// The value of attribute `name` of `ino`, or `ENOATTR` (`EOPNOTSUPP` for a name of
    /// [`PROBED_NAMES`] that no inode carries).
    pub async fn getxattr(&self, caller: Caller, ino: u64, name: &OsStr) -> FsResult<Vec<u8>> {
        if ino == CTRL_INODE {
            return self.ctrl_query(caller, name.as_bytes()).await;
        }
        if self.probed_names.absent(name.as_bytes()) {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let name = name.as_bytes().to_vec();
        self.db
            .query(move |c| {
                c.prepare_cached("SELECT value FROM ext_attributes WHERE inode = ?1 AND name = ?2")?
                    .query_row(params![ino, name], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| {
                        if inode::get(c, ino).is_err() {
                            errno(libc::ENOENT)
                        } else {
                            errno(ENOATTR)
                        }
                    })
            })
            .await
    }

    /// All attribute names of `ino`, each followed by a NUL byte.
    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        if ino == CTRL_INODE {
            return Ok(Vec::new());
        }
        self.db
            .query(move |c| {
                inode::get(c, ino)?;
                let mut stmt = c.prepare_cached(
                    "SELECT name FROM ext_attributes WHERE inode = ?1 ORDER BY name",
                )?;
                let mut out = Vec::new();
                for name in stmt.query_map([ino], |r| r.get::<_, Vec<u8>>(0))? {
                    out.extend(name?);
                    out.push(0);
                }
                Ok(out)
            })
            .await
    }

    /// Removes attribute `name` of `ino`, or `ENOATTR` if it has none.
    pub async fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        if ino == CTRL_INODE {
            return Err(errno(libc::EPERM));
        }
        let name = name.as_bytes().to_vec();
        self.db
            .call(move |c| {
                let mut node = inode::get(c, ino)?;
                if node.locked {
                    return Err(errno(libc::EPERM));
                }
                let removed = c
                    .prepare_cached("DELETE FROM ext_attributes WHERE inode = ?1 AND name = ?2")?
                    .execute(params![ino, name])?;
                if removed == 0 {
                    return Err(errno(ENOATTR));
                }
                node.ctime = Timestamp::now();
                node.save(c)
            })
            .await
    }
}
