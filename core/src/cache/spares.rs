//! Empty files kept in the `spare/` subdirectory of the cache directory, to become the
//! next new cache files.
//!
//! A cache file that is no longer needed is emptied and moved to `spare/` instead of
//! deleted, and a new cache file is a spare renamed to its block's name. Both are cheaper
//! than freeing and allocating an inode; on ext4 without a journal, allocating one costs a
//! scan over every inode freed in the last minutes, so deleting and then creating many
//! files (unmount then a cold read, delete then untar) becomes quadratic.
//!
//! Guarantees: a spare holds no bytes (a file is emptied before it becomes a spare); at
//! most `max` spares are kept; spares survive unmount, and the next mount adopts them in
//! the background (listing thousands of them would lengthen the mount).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const SUBDIR: &str = "spare";

/// Whether `name`, an entry of the cache directory, is the directory of the spares.
pub(crate) fn is_spare_dir(name: &str) -> bool {
    name == SUBDIR
}

/// The spares of one cache directory.
pub(super) struct Spares {
    dir: PathBuf,
    pool: Mutex<Pool>,
    /// Number of the first spare this process makes: random, so that the names it makes
    /// while the spares of earlier mounts are adopted neither collide with theirs nor are
    /// adopted twice.
    first: u64,
    /// Number of the next spare.
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
    /// Prepares the spares of `cache_dir` (created if needed). Before it returns, every
    /// other file there is emptied into a spare (deleted past `max`) and every other
    /// subdirectory deleted, so no stale block file is left; the spares of earlier mounts
    /// are adopted by a background thread.
    pub(super) fn open(cache_dir: &Path, max: usize) -> std::io::Result<Arc<Self>> {
        let dir = cache_dir.join(SUBDIR);
        std::fs::create_dir_all(&dir)?;
        let first = rand::random::<u64>() >> 1;
        let spares = Arc::new(Self {
            dir,
            pool: Mutex::new(Pool::default()),
            first,
            next: AtomicU64::new(first),
            max,
        });
        let mut others = Vec::new();
        for entry in std::fs::read_dir(cache_dir)? {
            let entry = entry?;
            if entry.file_name().to_str().is_some_and(is_spare_dir) {
                continue;
            }
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(entry.path())?;
            } else {
                others.push(entry.path());
            }
        }
        for path in others {
            spares.retire(&path);
        }
        let adopting = Arc::clone(&spares);
        std::thread::Builder::new()
            .name("s3ql-spares".into())
            .spawn(move || adopting.adopt_existing())?;
        Ok(spares)
    }

    /// Adds the spares left by earlier mounts to the pool (deletes those past `max`); one
    /// taken meanwhile is skipped by [`Self::take`].
    fn adopt_existing(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let number = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            let made_here = |n: &u64| (self.first..self.next.load(Ordering::Relaxed)).contains(n);
            if number.as_ref().is_some_and(made_here) {
                continue;
            }
            let mut pool = self.pool();
            match number {
                Some(n) if pool.free.len() + pool.pending < self.max => pool.free.push(n),
                _ => {
                    drop(pool);
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, n: u64) -> PathBuf {
        self.dir.join(n.to_string())
    }

    /// Number of spares ready to be taken.
    #[cfg(test)]
    fn len(&self) -> usize {
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

    /// Empties `path` and moves it to a new spare's name; returns that spare's number.
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
    use std::time::{Duration, Instant};

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        names
    }

    fn wait_for_len(spares: &Spares, len: usize) {
        let start = Instant::now();
        while spares.len() != len {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} spares",
                spares.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn retired_files_are_emptied_reused_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spares = Spares::open(dir.path(), 2).expect("open");
        wait_for_len(&spares, 0);
        for name in ["1-0", "1-1", "1-2"] {
            std::fs::write(dir.path().join(name), b"data").expect("write");
            spares.retire(&dir.path().join(name));
        }
        assert_eq!(files(dir.path()), ["spare"], "the third was deleted");
        assert_eq!(files(&dir.path().join("spare")).len(), 2);
        spares.retire(&dir.path().join("missing"));
        assert_eq!(spares.len(), 2);

        let new = dir.path().join("7-3");
        assert!(spares.take(&new));
        assert_eq!(std::fs::read(&new).expect("read"), b"");
        assert!(spares.take(&dir.path().join("7-4")));
        assert!(!spares.take(&dir.path().join("7-5")), "no spare left");
        assert_eq!(files(dir.path()), ["7-3", "7-4", "spare"]);
    }

    #[test]
    fn open_adopts_spares_and_empties_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("spare")).expect("mkdir");
        std::fs::write(dir.path().join("spare/5"), b"").expect("write");
        std::fs::write(dir.path().join("3-0"), b"old block").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        let spares = Spares::open(dir.path(), 10).expect("open");
        assert_eq!(
            files(dir.path()),
            ["spare"],
            "no stale file once open returns"
        );
        wait_for_len(&spares, 2);
        let kept = files(&dir.path().join("spare"));
        assert_eq!(kept.len(), 2);
        for name in kept {
            let len = std::fs::metadata(dir.path().join("spare").join(name)).expect("stat");
            assert_eq!(len.len(), 0);
        }
        assert!(is_spare_dir("spare") && !is_spare_dir("6-0"));
    }
}
