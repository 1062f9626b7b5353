//! Blocks loaded from the storage are kept in memory for a sequential reader (and handed
//! out without copying); a write or a truncate after the load must win over that buffer,
//! and holes must read as zeros.

mod common;

use std::ffi::OsStr;
use std::sync::Arc;

use s3ql_core::storage::MemoryStore;
use s3ql_core::{Caller, Filesystem, SetAttr, ROOT_INODE};

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 4;
const CALLER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

fn pattern(pos: u64) -> u8 {
    (pos % 251) as u8
}

async fn read(fs: &Filesystem, ino: u64, offset: u64, len: u32) -> Vec<u8> {
    fs.read(ino, 0, offset, len).await.expect("read").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_truncates_after_a_load_win_over_the_loaded_buffer() {
    let store = MemoryStore::new();
    let dir1 = tempfile::tempdir().expect("tempdir");
    let fs = common::mkfs_and_mount(&store, dir1.path(), BLOCK).await;
    let (attr, fh) = fs
        .create(CALLER, ROOT_INODE, OsStr::new("f"), 0o644, 0)
        .await
        .expect("create");
    let data: Vec<u8> = (0..BLOCKS * BLOCK).map(pattern).collect();
    fs.write(attr.ino, fh, 0, &data).await.expect("write");
    fs.release(attr.ino, fh).await.expect("release");
    fs.unmount().await.expect("unmount");
    drop(fs);

    // Empty cache: every block comes from the store (block 0 by the read, the others by
    // the read-ahead it starts).
    let dir2 = tempfile::tempdir().expect("tempdir");
    let fs = Filesystem::mount(Arc::new(store.clone()), common::mount_options(dir2.path()))
        .await
        .expect("remount");
    let ino = fs
        .lookup(ROOT_INODE, OsStr::new("f"))
        .await
        .expect("lookup")
        .ino;
    assert_eq!(read(&fs, ino, 0, 100).await, data[..100]);

    // Reads within a block in memory are slices of its buffer; one across blocks is whole.
    let a = fs.read(ino, 0, 100, 100).await.expect("read");
    let b = fs.read(ino, 0, 200, 100).await.expect("read");
    assert_eq!((a.as_ref(), b.as_ref()), (&data[100..200], &data[200..300]));
    assert_eq!(a.as_ptr_range().end, b.as_ptr(), "a read copied the block");
    let across = (BLOCK - 50) as usize..(BLOCK + 50) as usize;
    assert_eq!(read(&fs, ino, BLOCK - 50, 100).await, data[across]);

    // A partial write into a loaded (or loading) block, then a read of the whole block.
    fs.write(ino, 0, BLOCK + 10, b"hello").await.expect("write");
    let mut expect = data[BLOCK as usize..2 * BLOCK as usize].to_vec();
    expect[10..15].copy_from_slice(b"hello");
    assert_eq!(read(&fs, ino, BLOCK, BLOCK as u32).await, expect);

    // Block 0 again: first from memory, then after a write.
    assert_eq!(read(&fs, ino, 200, 100).await, data[200..300]);
    fs.write(ino, 0, 250, b"abc").await.expect("write");
    let mut expect = data[200..300].to_vec();
    expect[50..53].copy_from_slice(b"abc");
    assert_eq!(read(&fs, ino, 200, 100).await, expect);

    // Cut inside block 2 and extend again: the cut bytes and block 3 are holes.
    for size in [2 * BLOCK + 100, BLOCKS * BLOCK] {
        let change = SetAttr {
            size: Some(size),
            ..Default::default()
        };
        fs.setattr(CALLER, ino, change).await.expect("setattr");
    }
    let tail = read(&fs, ino, 2 * BLOCK, 2 * BLOCK as u32).await;
    assert_eq!(tail[..100], data[2 * BLOCK as usize..][..100]);
    assert!(tail[100..].iter().all(|b| *b == 0));
    fs.unmount().await.expect("unmount");
}

/// Reads remember the file size; every way of changing it must show in the next read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_every_size_change() {
    let store = MemoryStore::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
    let (attr, fh) = fs
        .create(CALLER, ROOT_INODE, OsStr::new("f"), 0o644, 0)
        .await
        .expect("create");
    let ino = attr.ino;
    let reader = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let read_all = || async { fs.read(ino, reader, 0, u32::MAX).await.expect("read") };
    assert!(read_all().await.is_empty());

    fs.write(ino, fh, 0, b"hello").await.expect("write");
    assert_eq!(read_all().await, &b"hello"[..]);
    fs.write(ino, fh, 5, b" world").await.expect("write");
    assert_eq!(read_all().await, &b"hello world"[..]);

    let resize = |size| SetAttr {
        size: Some(size),
        ..Default::default()
    };
    fs.setattr(CALLER, ino, resize(4)).await.expect("truncate");
    assert_eq!(read_all().await, &b"hell"[..]);
    fs.setattr(CALLER, ino, resize(6)).await.expect("extend");
    assert_eq!(read_all().await, &b"hell\0\0"[..]);
    fs.fallocate(ino, 0, 8, 0).await.expect("fallocate");
    assert_eq!(read_all().await, &b"hell\0\0\0\0"[..]);

    fs.release(ino, reader).await.expect("release");
    fs.release(ino, fh).await.expect("release");
    fs.unmount().await.expect("unmount");
}
