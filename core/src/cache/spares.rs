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
//! the background (listing thousands of them would lengthen the mount). When fewer than
//! [`MAKE_BELOW`] are left, a background thread makes new empty ones, so that a writer
//! filling a fresh cache does not allocate an inode per block on its request path.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

const SUBDIR: &str = "spare";
/// Fewer spares than this wake the background thread that makes new ones...
const MAKE_BELOW: usize = 16;
/// ...until there are this many, or half of `max`: the rest of the room is for retired
/// files, which must not be deleted for want of room while new spares are made.
const MAKE_UP_TO: usize = 64;

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
    /// Wakes the background thread to make spares (a full channel means it is awake).
    wake_maker: SyncSender<()>,
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
        let (wake_maker, woken) = sync_channel(1);
        let spares = Arc::new(Self {
            dir,
            pool: Mutex::new(Pool::default()),
            first,
            next: AtomicU64::new(first),
            max,
            wake_maker,
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
        let background = Arc::downgrade(&spares);
        std::thread::Builder::new()
            .name("s3ql-spares".into())
            .spawn(move || Self::run_background(&background, &woken))?;
        Ok(spares)
    }

    /// The background thread: adopts the spares of earlier mounts, then makes new ones
    /// whenever woken, until the spares are dropped.
    fn run_background(spares: &Weak<Self>, woken: &Receiver<()>) {
        if let Some(spares) = spares.upgrade() {
            spares.adopt_existing();
            spares.make_new();
        }
        while woken.recv().is_ok() {
            let Some(spares) = spares.upgrade() else {
                return;
            };
            spares.make_new();
        }
    }

    /// Makes new empty spares until there are [`MAKE_UP_TO`] (or half of `max`), or one
    /// cannot be made.
    fn make_new(&self) {
        let target = MAKE_UP_TO.min(self.max / 2);
        loop {
            {
                let mut pool = self.pool();
                if pool.free.len() + pool.pending >= target {
                    return;
                }
                pool.pending += 1;
            }
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let made = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.path(n))
                .is_ok();
            let mut pool = self.pool();
            pool.pending -= 1;
            if !made {
                return;
            }
            pool.free.push(n);
        }
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
            let taken = {
                let mut pool = self.pool();
                if pool.free.len() <= MAKE_BELOW {
                    // Full: the thread is already woken.
                    let _ = self.wake_maker.try_send(());
                }
                pool.free.pop()
            };
            let Some(n) = taken else {
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

    fn assert_all_empty(dir: &Path) {
        for name in files(dir) {
            let meta = std::fs::metadata(dir.join(&name)).expect("stat");
            assert_eq!(meta.len(), 0, "spare {name} holds bytes");
        }
    }

    #[test]
    fn spares_are_made_ahead_and_retired_files_emptied_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spare_dir = dir.path().join("spare");
        let spares = Spares::open(dir.path(), 1000).expect("open");
        wait_for_len(&spares, MAKE_UP_TO);
        for name in ["1-0", "1-1", "1-2"] {
            std::fs::write(dir.path().join(name), b"data").expect("write");
            spares.retire(&dir.path().join(name));
        }
        assert_eq!(files(dir.path()), ["spare"]);
        assert_eq!(spares.len(), MAKE_UP_TO + 3);
        assert_eq!(files(&spare_dir).len(), MAKE_UP_TO + 3);
        assert_all_empty(&spare_dir);
        spares.retire(&dir.path().join("missing"));
        assert_eq!(spares.len(), MAKE_UP_TO + 3);

        let new = dir.path().join("7-3");
        assert!(spares.take(&new));
        assert_eq!(std::fs::read(&new).expect("read"), b"");
        assert_eq!(files(&spare_dir).len(), MAKE_UP_TO + 2);
    }

    #[test]
    fn spares_are_bounded_and_replaced_when_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spare_dir = dir.path().join("spare");
        let spares = Spares::open(dir.path(), 2).expect("open");
        wait_for_len(&spares, 1);
        for name in ["1-0", "1-1"] {
            std::fs::write(dir.path().join(name), b"data").expect("write");
            spares.retire(&dir.path().join(name));
        }
        assert_eq!(files(dir.path()), ["spare"], "1-1 found no room: deleted");
        assert_eq!(files(&spare_dir).len(), 2);
        assert_all_empty(&spare_dir);
        assert!(spares.take(&dir.path().join("7-3")));
        assert!(spares.take(&dir.path().join("7-4")));
        wait_for_len(&spares, 1);
        assert_eq!(files(&spare_dir).len(), 1);
        assert_all_empty(&spare_dir);
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
        // The two adopted (5, and 3-0 emptied), then new ones up to half the bound.
        wait_for_len(&spares, 5);
        let kept = files(&dir.path().join("spare"));
        assert_eq!(kept.len(), 5);
        assert!(kept.iter().any(|n| n == "5"), "spare 5 adopted: {kept:?}");
        assert_all_empty(&dir.path().join("spare"));
        assert!(is_spare_dir("spare") && !is_spare_dir("6-0"));
    }
}
