//! Empty files kept in the cache directory, to become the next new cache files.
//!
//! A cache file that is no longer needed is emptied and renamed to `spare-<n>` instead of
//! deleted, and a new cache file is a spare renamed to its block's name. Both are cheaper
//! than freeing and allocating an inode; on ext4 without a journal, allocating one costs a
//! scan over every inode freed in the last minutes, so deleting and then creating many
//! files (unmount then a cold read, delete then untar) becomes quadratic.
//!
//! Guarantees: a spare holds no bytes (a file is emptied before it gets a spare's name);
//! at most `max` spares exist; spares survive unmount and are adopted by the next mount.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

const PREFIX: &str = "spare-";

/// Whether `name` is a spare's file name.
pub(crate) fn is_spare_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|n| n.parse::<u64>().is_ok())
}

/// The spares of one cache directory.
pub(super) struct Spares {
    dir: PathBuf,
    pool: Mutex<Pool>,
    next: AtomicU64,
    max: usize,
}

#[derive(Default)]
struct Pool {
    /// Numbers of the spares ready to be taken.
    free: Vec<u64>,
    /// Files being made spares.
    pending: usize,
}

impl Spares {
    /// Adopts what `dir` holds: spares stay spares, other files are emptied into spares
    /// (deleted past `max`), subdirectories are deleted. Creates `dir` if needed.
    pub(super) fn adopt(dir: &Path, max: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let spares = Self {
            dir: dir.to_owned(),
            pool: Mutex::new(Pool::default()),
            next: AtomicU64::new(0),
            max,
        };
        let mut others = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let number = name.to_str().and_then(|n| n.strip_prefix(PREFIX));
            match number.and_then(|n| n.parse::<u64>().ok()) {
                // Empty: a file is emptied before it is renamed to a spare's name.
                Some(n) if entry.file_type()?.is_file() && spares.len() < max => {
                    spares.next.fetch_max(n + 1, Ordering::Relaxed);
                    spares.pool().free.push(n);
                }
                _ if entry.file_type()?.is_dir() => std::fs::remove_dir_all(entry.path())?,
                _ => others.push(entry.path()),
            }
        }
        for path in others {
            spares.retire(&path);
        }
        Ok(spares)
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{n}"))
    }

    /// Number of spares ready to be taken.
    pub(super) fn len(&self) -> usize {
        self.pool().free.len()
    }

    /// Gives up the cache file `path`, whose contents are no longer needed: it becomes a
    /// spare, or is deleted if there are `max` spares already. A missing file is no error.
    pub(super) fn retire(&self, path: &Path) {
        let room = {
            let mut pool = self.pool();
            let room = pool.free.len() + pool.pending < self.max;
            pool.pending += usize::from(room);
            room
        };
        let spare = room.then(|| self.make_spare(path)).flatten();
        let mut pool = self.pool();
        pool.pending -= usize::from(room);
        match spare {
            Some(n) => pool.free.push(n),
            None => {
                drop(pool);
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Empties `path` and renames it to a new spare's name; returns that spare's number.
    fn make_spare(&self, path: &Path) -> Option<u64> {
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .ok()?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        std::fs::rename(path, self.path(n)).ok().map(|()| n)
    }

    /// Makes an empty file named `path` out of a spare, if there is one; returns whether it
    /// did (if not, `path` is left as it was). `path` must not exist.
    pub(super) fn take(&self, path: &Path) -> bool {
        loop {
            let Some(n) = self.pool().free.pop() else {
                return false;
            };
            if std::fs::rename(self.path(n), path).is_ok() {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn retired_files_are_emptied_reused_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spares = Spares::adopt(dir.path(), 2).expect("adopt");
        for name in ["1-0", "1-1", "1-2"] {
            std::fs::write(dir.path().join(name), b"data").expect("write");
            spares.retire(&dir.path().join(name));
        }
        assert_eq!(
            files(dir.path()),
            ["spare-0", "spare-1"],
            "the third was deleted"
        );
        spares.retire(&dir.path().join("missing"));
        assert_eq!(spares.len(), 2);

        let new = dir.path().join("7-3");
        assert!(spares.take(&new));
        assert_eq!(std::fs::read(&new).expect("read"), b"");
        assert!(spares.take(&dir.path().join("7-4")));
        assert!(!spares.take(&dir.path().join("7-5")), "no spare left");
        assert_eq!(files(dir.path()), ["7-3", "7-4"]);
    }

    #[test]
    fn adopt_keeps_spares_and_empties_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("spare-5"), b"").expect("write");
        std::fs::write(dir.path().join("3-0"), b"old block").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let spares = Spares::adopt(dir.path(), 10).expect("adopt");
        assert_eq!(spares.len(), 2);
        assert_eq!(files(dir.path()), ["spare-5", "spare-6"]);
        assert_eq!(
            std::fs::read(dir.path().join("spare-6")).expect("read"),
            b""
        );
        assert!(is_spare_name("spare-6") && !is_spare_name("spare-x") && !is_spare_name("6-0"));
    }
}
