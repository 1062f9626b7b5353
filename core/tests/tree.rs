//! The S3QL tree operations of the core under concurrency and with live handles: a copy
//! taken while a writer appends is a point-in-time image, a lock stops writes through
//! handles opened before it, a tree removal keeps what is linked elsewhere or still open and
//! deletes the rest with its data, and the statistics match what was written.

mod common;

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use s3ql_core::storage::{MemoryStore, ObjectStore};
use s3ql_core::{Caller, Filesystem, SetAttr, ROOT_INODE};

const BLOCK: u64 = 4096;
const CALLER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};
/// Bytes of one record of the writer: a 9-digit sequence number and a newline.
const RECORD: usize = 10;

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

async fn data_objects(store: &MemoryStore) -> usize {
    store.list("s3ql_data_").await.expect("list").len()
}

/// Asserts that the store holds `n` data objects once the deletions that run in the
/// background after a commit (unreferenced objects, duplicates of concurrent uploads) are
/// done.
async fn assert_data_objects(store: &MemoryStore, n: usize, what: &str) {
    for _ in 0..100 {
        if data_objects(store).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(data_objects(store).await, n, "{what}");
}

async fn read_all(fs: &Filesystem, ino: u64) -> Vec<u8> {
    fs.read(ino, 0, 0, u32::MAX).await.expect("read").to_vec()
}

/// Record numbers in `data`; panics unless it is a sequence of whole records.
fn records(data: &[u8]) -> Vec<u64> {
    assert_eq!(data.len() % RECORD, 0, "torn record: {} bytes", data.len());
    data.chunks(RECORD)
        .map(|r| {
            let text = std::str::from_utf8(&r[..RECORD - 1]).expect("record is ASCII");
            assert_eq!(r[RECORD - 1], b'\n', "bad record {r:?}");
            text.parse().expect("record number")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_while_writing_is_point_in_time() {
    const FILES: u64 = 7;
    let store = MemoryStore::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
    let src = fs
        .mkdir(CALLER, ROOT_INODE, name("src"), 0o755)
        .await
        .expect("mkdir");
    let mut files = Vec::new();
    for f in 0..FILES {
        let (attr, fh) = fs
            .create(CALLER, src.ino, name(&format!("f{f}")), 0o644, 0)
            .await
            .expect("create");
        files.push((attr.ino, fh));
    }

    // One writer appends record i to file i % FILES, each write complete before the next,
    // so every consistent image holds records 0..n for some n and no other.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (fs, stop, files) = (fs.clone(), stop.clone(), files.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (ino, fh) = files[(i % FILES) as usize];
                let offset = (i / FILES) * RECORD as u64;
                let record = format!("{i:09}\n");
                fs.write(ino, fh, offset, record.as_bytes())
                    .await
                    .expect("write");
                i += 1;
            }
            i
        })
    };
    let mut copies = Vec::new();
    for c in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let copy = fs
            .copy_tree(src.ino, ROOT_INODE, name(&format!("copy{c}")))
            .await
            .expect("copy_tree");
        copies.push(copy.ino);
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");

    let mut totals = Vec::new();
    for copy in copies {
        let mut per_file = Vec::new();
        for f in 0..FILES {
            let ino = fs
                .lookup(copy, name(&format!("f{f}")))
                .await
                .expect("lookup")
                .ino;
            per_file.push(records(&read_all(&fs, ino).await));
        }
        let total: usize = per_file.iter().map(Vec::len).sum();
        for (f, recs) in per_file.iter().enumerate() {
            let expected: Vec<u64> = (f as u64..total as u64).step_by(FILES as usize).collect();
            assert_eq!(
                recs, &expected,
                "copy {copy} file {f}: not a prefix of the write sequence (total {total})"
            );
        }
        totals.push(total);
    }
    assert!(
        totals.windows(2).all(|w| w[0] <= w[1]) && totals[0] > 0,
        "copies should grow: {totals:?}"
    );
    assert!(*totals.last().unwrap_or(&0) as u64 <= written);
    assert!(fs.check_counts().await.expect("check").is_empty());
    fs.unmount().await.expect("unmount");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_are_independent() {
    let store = MemoryStore::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
    let src = fs
        .mkdir(CALLER, ROOT_INODE, name("src"), 0o755)
        .await
        .expect("mkdir");
    let (file, fh) = fs
        .create(CALLER, src.ino, name("f"), 0o644, 0)
        .await
        .expect("create");
    let original = vec![7u8; 3 * BLOCK as usize];
    fs.write(file.ino, fh, 0, &original).await.expect("write");
    fs.flush_cache().await.expect("flush");
    let before = fs.stats().await.expect("stats");

    let copy = fs
        .copy_tree(src.ino, ROOT_INODE, name("copy"))
        .await
        .expect("copy");
    fs.flush_cache().await.expect("flush");
    let after = fs.stats().await.expect("stats");
    assert_eq!(
        (after.objects, after.stored_bytes),
        (before.objects, before.stored_bytes),
        "a copy stores no data"
    );
    assert_eq!(after.data_bytes, 2 * before.data_bytes);
    let copied = fs.lookup(copy.ino, name("f")).await.expect("lookup").ino;
    assert_ne!(copied, file.ino);

    // Change each side; the other must not see it, neither cached nor from the backend.
    fs.write(file.ino, fh, 5, b"source")
        .await
        .expect("write source");
    let cfh = fs.open(copied, libc::O_RDWR).await.expect("open copy");
    fs.write(copied, cfh, BLOCK + 1, b"copy")
        .await
        .expect("write copy");
    let mut src_expect = original.clone();
    src_expect[5..11].copy_from_slice(b"source");
    let mut copy_expect = original.clone();
    copy_expect[BLOCK as usize + 1..BLOCK as usize + 5].copy_from_slice(b"copy");
    assert!(read_all(&fs, file.ino).await == src_expect);
    assert!(read_all(&fs, copied).await == copy_expect);
    fs.flush_cache().await.expect("flush");
    fs.release(copied, cfh).await.expect("release");
    fs.release(file.ino, fh).await.expect("release");
    fs.unmount().await.expect("unmount");

    let dir2 = tempfile::tempdir().expect("tempdir");
    let fs = Filesystem::mount(Arc::new(store.clone()), common::mount_options(dir2.path()))
        .await
        .expect("remount");
    let src = fs.lookup(ROOT_INODE, name("src")).await.expect("src").ino;
    let copy = fs.lookup(ROOT_INODE, name("copy")).await.expect("copy").ino;
    let f = fs.lookup(src, name("f")).await.expect("f").ino;
    let c = fs.lookup(copy, name("f")).await.expect("f").ino;
    assert!(read_all(&fs, f).await == src_expect, "source after remount");
    assert!(read_all(&fs, c).await == copy_expect, "copy after remount");
    assert!(fs.check_counts().await.expect("check").is_empty());
    fs.unmount().await.expect("unmount");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_stops_writes_through_open_handles() {
    let store = MemoryStore::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
    let d = fs
        .mkdir(CALLER, ROOT_INODE, name("d"), 0o755)
        .await
        .expect("mkdir");
    let (file, fh) = fs
        .create(CALLER, d.ino, name("f"), 0o644, 0)
        .await
        .expect("create");
    fs.write(file.ino, fh, 0, b"before").await.expect("write");

    fs.lock_tree(d.ino).await.expect("lock");
    let eperm = |r: Result<(), s3ql_core::FsError>| r.map_err(|e| e.errno());
    assert_eq!(
        eperm(fs.write(file.ino, fh, 0, b"after").await.map(|_| ())),
        Err(libc::EPERM)
    );
    assert_eq!(
        eperm(fs.fallocate(file.ino, 0, 1 << 20, 0).await),
        Err(libc::EPERM)
    );
    let truncate = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    assert_eq!(
        eperm(fs.setattr(CALLER, file.ino, truncate).await.map(|_| ())),
        Err(libc::EPERM)
    );
    assert_eq!(
        eperm(fs.open(file.ino, libc::O_WRONLY).await.map(|_| ())),
        Err(libc::EPERM)
    );
    assert_eq!(eperm(fs.unlink(d.ino, name("f")).await), Err(libc::EPERM));
    let rfh = fs
        .open(file.ino, libc::O_RDONLY)
        .await
        .expect("read-only open");
    assert_eq!(read_all(&fs, file.ino).await, b"before");
    fs.release(file.ino, rfh).await.expect("release");

    fs.remove_tree(ROOT_INODE, name("d"))
        .await
        .expect("remove locked tree");
    assert_eq!(
        eperm(fs.lookup(ROOT_INODE, name("d")).await.map(|_| ())),
        Err(libc::ENOENT)
    );
    // Still open: readable until released, then gone with its data.
    assert_eq!(read_all(&fs, file.ino).await, b"before");
    fs.release(file.ino, fh).await.expect("release");
    fs.forget(file.ino, 1);
    fs.forget(d.ino, 1);
    // Forgotten inodes are freed in the background.
    let mut inodes = 0;
    for _ in 0..100 {
        inodes = fs.stats().await.expect("stats").inodes;
        if inodes == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(inodes, 3, "only root, ctrl and lost+found are left");
    assert!(fs.check_counts().await.expect("check").is_empty());
    fs.unmount().await.expect("unmount");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_tree_keeps_outside_links_and_frees_the_rest() {
    let store = MemoryStore::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
    let d = fs
        .mkdir(CALLER, ROOT_INODE, name("d"), 0o755)
        .await
        .expect("mkdir");
    let sub = fs
        .mkdir(CALLER, d.ino, name("sub"), 0o755)
        .await
        .expect("mkdir");
    let (a, fh) = fs
        .create(CALLER, sub.ino, name("a"), 0o644, 0)
        .await
        .expect("create");
    fs.write(a.ino, fh, 0, &vec![1u8; 2 * BLOCK as usize])
        .await
        .expect("write");
    fs.release(a.ino, fh).await.expect("release");
    let (b, fh) = fs
        .create(CALLER, d.ino, name("b"), 0o644, 0)
        .await
        .expect("create");
    fs.write(b.ino, fh, 0, &vec![2u8; BLOCK as usize])
        .await
        .expect("write");
    fs.release(b.ino, fh).await.expect("release");
    fs.link(b.ino, ROOT_INODE, name("keep"))
        .await
        .expect("link");
    fs.link(b.ino, sub.ino, name("b2")).await.expect("link");
    fs.flush_cache().await.expect("flush");
    assert_data_objects(&store, 2, "a's block and b's block").await;
    for ino in [d.ino, sub.ino, a.ino, b.ino] {
        fs.forget(ino, 10);
    }

    let before = fs.stats().await.expect("stats");
    fs.remove_tree(ROOT_INODE, name("d")).await.expect("remove");
    let keep = fs.lookup(ROOT_INODE, name("keep")).await.expect("keep");
    assert_eq!((keep.ino, keep.nlink), (b.ino, 1));
    assert!(read_all(&fs, b.ino).await == vec![2u8; BLOCK as usize]);
    let after = fs.stats().await.expect("stats");
    assert_eq!(after.inodes, before.inodes - 3, "d, sub and a are gone");
    assert_eq!(after.entries, before.entries - 5);
    assert_data_objects(&store, 1, "only b's block is left").await;
    assert!(fs.check_counts().await.expect("check").is_empty());
    fs.unmount().await.expect("unmount");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_what_was_written() {
    let store = MemoryStore::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
    let (f, fh) = fs
        .create(CALLER, ROOT_INODE, name("f"), 0o644, 0)
        .await
        .expect("create");
    // Two equal blocks and a short distinct one: 3 blocks of data, 2 stored.
    let mut data = vec![9u8; 2 * BLOCK as usize];
    data.extend_from_slice(b"tail");
    fs.write(f.ino, fh, 0, &data).await.expect("write");
    fs.release(f.ino, fh).await.expect("release");
    fs.symlink(CALLER, ROOT_INODE, name("l"), name("target"))
        .await
        .expect("symlink");
    let dirty = fs.stats().await.expect("stats");
    assert_eq!(
        (dirty.dirty_entries, dirty.dirty_bytes),
        (3, data.len() as u64)
    );
    assert_eq!(dirty.objects, 0);

    fs.flush_cache().await.expect("flush");
    let s = fs.stats().await.expect("stats");
    let stored: u64 = store
        .list("s3ql_data_")
        .await
        .expect("list")
        .iter()
        .map(|o| o.size)
        .sum();
    assert_eq!(s.entries, 3, "lost+found, f, l");
    assert_eq!(s.inodes, 5, "root, ctrl, lost+found, f, l");
    assert_eq!(s.names, 3);
    assert_eq!(s.objects, 2);
    assert_eq!(s.data_bytes, data.len() as u64 + 6);
    assert_eq!(s.dedup_bytes, BLOCK + 4);
    assert_eq!(s.stored_bytes, stored);
    assert_eq!((s.dirty_entries, s.dirty_bytes), (0, 0));
    assert_eq!((s.cache_entries, s.cache_bytes), (3, data.len() as u64));
    let db_file = std::fs::metadata(dir.path().join("fs.db")).expect("db file");
    assert_eq!(s.db_bytes, db_file.len());
    fs.unmount().await.expect("unmount");
}
