//! The filesystem over a failing or observed storage: injected faults (errors, latency,
//! truncated bodies), an outage in the middle of writes, what a metadata upload costs on a
//! filesystem with 100 000 inodes, what a mount with a warm cache downloads, and the
//! deletion of unreferenced objects before a clean unmount ends.

#[allow(dead_code)] // not every helper is used here
mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use s3ql_core::storage::{
    FaultConfig, FaultyStore, MemoryStore, ObjectInfo, ObjectStore, RetryPolicy, RetryStore,
    StoreFuture,
};
use s3ql_core::{Caller, Filesystem, MkfsOptions, MountOptions, ROOT_INODE};

const CALLER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};
const BLOCK: u64 = 64 * 1024;

/// Re-attempts quickly (the tests inject many faults and must not wait long).
fn fast_retries(patience: Duration) -> RetryPolicy {
    RetryPolicy {
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
        patience,
    }
}

fn options(dir: &Path) -> MountOptions {
    common::mount_options(dir)
}

async fn mkfs(store: Arc<dyn ObjectStore>, dir: &Path, block_size: u64) {
    let opts = MkfsOptions {
        label: String::new(),
        data_block_size: block_size,
        force: false,
        root_uid: 0,
        root_gid: 0,
        passphrase: None,
    };
    Filesystem::mkfs(store, &dir.join("fs"), opts)
        .await
        .expect("mkfs");
}

/// Deterministic pseudo-random bytes (xorshift), different for each `seed`.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn write_file(fs: &Filesystem, name: &str, content: &[u8]) {
    let (attr, fh) = fs
        .create(CALLER, ROOT_INODE, OsStr::new(name), 0o644, libc::O_WRONLY)
        .await
        .expect("create");
    for (i, piece) in content.chunks(128 * 1024).enumerate() {
        fs.write(attr.ino, fh, (i * 128 * 1024) as u64, piece)
            .await
            .expect("write");
    }
    fs.fsync(attr.ino, false).await.expect("fsync");
    fs.release(attr.ino, fh).await.expect("release");
}

async fn read_file(fs: &Filesystem, name: &str) -> Result<Vec<u8>, i32> {
    let attr = fs
        .lookup(ROOT_INODE, OsStr::new(name))
        .await
        .map_err(|e| e.errno())?;
    let fh = fs
        .open(attr.ino, libc::O_RDONLY)
        .await
        .map_err(|e| e.errno())?;
    let mut out = Vec::new();
    let result = loop {
        match fs.read(attr.ino, fh, out.len() as u64, 1 << 20).await {
            Ok(piece) if piece.is_empty() => break Ok(()),
            Ok(piece) => out.extend_from_slice(&piece),
            Err(e) => break Err(e.errno()),
        }
    };
    fs.release(attr.ino, fh).await.expect("release");
    result.map(|()| out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copy_in_with_faults_on_every_operation_then_remount_matches() {
    let faulty = FaultyStore::new(
        Arc::new(MemoryStore::new()),
        FaultConfig {
            seed: 42,
            error_rate: 0.05,
            max_latency: Duration::from_millis(3),
            truncate_rate: 0.0,
        },
    );
    let store: Arc<dyn ObjectStore> = Arc::new(RetryStore::new(
        Arc::new(faulty.clone()),
        fast_retries(Duration::from_secs(20)),
    ));
    let dir1 = tempfile::tempdir().expect("tempdir");
    mkfs(store.clone(), dir1.path(), BLOCK).await;
    let fs = Filesystem::mount(store.clone(), options(dir1.path()))
        .await
        .expect("mount despite faults");
    let files: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| (format!("file-{i}"), data(i, 1_000_000 + i as usize * 7_919)))
        .collect();
    for (name, content) in &files {
        write_file(&fs, name, content).await;
    }
    fs.unmount().await.expect("unmount despite faults");
    drop(fs);
    let after_copy = faulty.injected();
    assert!(after_copy > 5, "only {after_copy} faults were injected");

    // Everything comes from the store now (empty cache), still with faults.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let fs = Filesystem::mount(store.clone(), options(dir2.path()))
        .await
        .expect("remount");
    for (name, content) in &files {
        let back = read_file(&fs, name).await.expect("read back");
        assert!(back == *content, "{name} differs after remount");
    }

    // Truncated bodies: a read fails with EIO or returns the right bytes, never others.
    fs.unmount().await.expect("unmount");
    drop(fs);
    let dir3 = tempfile::tempdir().expect("tempdir");
    let fs = Filesystem::mount(store.clone(), options(dir3.path()))
        .await
        .expect("remount");
    faulty.set_config(FaultConfig {
        seed: 1,
        truncate_rate: 0.3,
        ..FaultConfig::default()
    });
    let mut eio = 0;
    for (name, content) in &files {
        match read_file(&fs, name).await {
            Ok(back) => assert!(
                back == *content,
                "{name}: wrong bytes from a truncated body"
            ),
            Err(e) => {
                assert_eq!(e, libc::EIO);
                eio += 1;
            }
        }
    }
    faulty.set_config(FaultConfig::default());
    for (name, content) in &files {
        let back = read_file(&fs, name)
            .await
            .expect("read after the faults stop");
        assert!(back == *content, "{name} differs");
    }
    fs.unmount().await.expect("unmount");
    eprintln!(
        "MEASURED faults: {after_copy} faults injected during copy-in and unmount of {} files; \
         {eio} of them read EIO with 30% truncated bodies, all correct afterwards",
        files.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_during_writes_loses_nothing_and_recovers() {
    let faulty = FaultyStore::new(Arc::new(MemoryStore::new()), FaultConfig::default());
    let store: Arc<dyn ObjectStore> = Arc::new(RetryStore::new(
        Arc::new(faulty.clone()),
        fast_retries(Duration::from_millis(300)),
    ));
    let dir1 = tempfile::tempdir().expect("tempdir");
    mkfs(store.clone(), dir1.path(), BLOCK).await;
    let fs = Filesystem::mount(store.clone(), options(dir1.path()))
        .await
        .expect("mount");
    let a = data(1, 3 * BLOCK as usize + 17);
    write_file(&fs, "a", &a).await;
    fs.unmount().await.expect("unmount");
    drop(fs);

    // A fresh cache: reading `a` needs the store.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let fs = Filesystem::mount(store.clone(), options(dir2.path()))
        .await
        .expect("mount");
    faulty.set_outage(true);
    assert_eq!(
        read_file(&fs, "a").await,
        Err(libc::EIO),
        "read during outage"
    );
    // Writes and fsync only need the local disk: acknowledged.
    let b = data(2, 5 * BLOCK as usize + 3);
    write_file(&fs, "b", &b).await;
    let err = fs.flush_cache().await.expect_err("flush during outage");
    assert_eq!(err.errno(), libc::EIO);
    assert!(
        fs.backup_metadata().await.is_err(),
        "metadata upload during outage"
    );
    // The mount stays usable for what the cache holds.
    assert!(read_file(&fs, "b").await.expect("cached read") == b);

    faulty.set_outage(false);
    assert!(read_file(&fs, "a").await.expect("read after the outage") == a);
    fs.flush_cache().await.expect("flush after the outage");
    fs.unmount().await.expect("unmount");
    drop(fs);

    let dir3 = tempfile::tempdir().expect("tempdir");
    let fs = Filesystem::mount(store.clone(), options(dir3.path()))
        .await
        .expect("remount");
    assert!(read_file(&fs, "a").await.expect("a") == a);
    assert!(
        read_file(&fs, "b").await.expect("b") == b,
        "acknowledged data lost"
    );
    fs.unmount().await.expect("unmount");
}

/// The upload and cache figures of the statistics against independent counts: while the
/// storage is down, a flush tries each dirty block once and the fault-injecting store counts
/// the uploads it refused; reading the holes of a sparse file adds no cache entry (the cache
/// directory holds one file per entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_uploads_and_cache_entries_match_independent_counts() {
    let faulty = FaultyStore::new(Arc::new(MemoryStore::new()), FaultConfig::default());
    let store: Arc<dyn ObjectStore> = Arc::new(faulty.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    mkfs(store.clone(), dir.path(), BLOCK).await;
    let fs = Filesystem::mount(store.clone(), options(dir.path()))
        .await
        .expect("mount");
    // Block files: every entry but `spare/`, the empty files kept for reuse.
    let cache_files = || {
        std::fs::read_dir(dir.path().join("fs-cache"))
            .expect("cache directory")
            .filter(|e| e.as_ref().expect("entry").file_name() != "spare")
            .count() as u64
    };

    // Eight blocks, of which only blocks 3 and 7 hold data.
    let (attr, fh) = fs
        .create(
            CALLER,
            ROOT_INODE,
            OsStr::new("sparse"),
            0o644,
            libc::O_RDWR,
        )
        .await
        .expect("create");
    let mut sparse = vec![0u8; 8 * BLOCK as usize];
    sparse[3 * BLOCK as usize..][..100].copy_from_slice(&data(7, 100));
    *sparse.last_mut().expect("last byte") = 1;
    fs.write(
        attr.ino,
        fh,
        3 * BLOCK,
        &sparse[3 * BLOCK as usize..][..100],
    )
    .await
    .expect("write");
    fs.write(attr.ino, fh, 8 * BLOCK - 1, &[1])
        .await
        .expect("write");
    fs.release(attr.ino, fh).await.expect("release");
    fs.flush_cache().await.expect("flush");
    assert!(read_file(&fs, "sparse").await.expect("read") == sparse);
    let s = fs.stats().await.expect("stats");
    assert_eq!((s.cache_entries, cache_files()), (2, 2), "{s:?}");

    faulty.set_outage(true);
    let b = data(2, 5 * BLOCK as usize + 3);
    write_file(&fs, "b", &b).await;
    let s = fs.stats().await.expect("stats");
    assert_eq!((s.dirty_entries, s.failed_uploads), (6, 0), "{s:?}");
    let injected = faulty.injected();
    fs.flush_cache().await.expect_err("flush during the outage");
    let refused = faulty.injected() - injected;
    let s = fs.stats().await.expect("stats");
    assert_eq!(refused, 6, "one refused upload per block");
    assert_eq!((s.failed_uploads, s.dirty_entries), (refused, 6), "{s:?}");
    assert_eq!((s.cache_entries, cache_files()), (8, 8), "{s:?}");

    faulty.set_outage(false);
    fs.flush_cache().await.expect("flush after the outage");
    let s = fs.stats().await.expect("stats");
    assert_eq!((s.failed_uploads, s.dirty_entries), (0, 0), "{s:?}");
    assert_eq!(s.cache_entries, cache_files());
    assert!(read_file(&fs, "b").await.expect("read") == b);
    fs.unmount().await.expect("unmount");
}

/// Counts what passes through to a store.
#[derive(Default)]
struct Counts {
    get_names: Mutex<Vec<String>>,
    get_bytes: AtomicU64,
    put_meta_bytes: AtomicU64,
}

struct Counting {
    inner: MemoryStore,
    counts: Arc<Counts>,
}

impl ObjectStore for Counting {
    fn get(&self, name: &str) -> StoreFuture<'_, Bytes> {
        self.counts
            .get_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.to_owned());
        let fut = self.inner.get(name);
        let counts = self.counts.clone();
        Box::pin(async move {
            let body = fut.await?;
            counts
                .get_bytes
                .fetch_add(body.len() as u64, Ordering::Relaxed);
            Ok(body)
        })
    }
    fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> StoreFuture<'_, Bytes> {
        self.inner.get_range(name, range)
    }
    fn put(&self, name: &str, data: Bytes) -> StoreFuture<'_, ()> {
        if name.starts_with("s3ql_metadata") {
            self.counts
                .put_meta_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        self.inner.put(name, data)
    }
    fn put_if_absent(&self, name: &str, data: Bytes) -> StoreFuture<'_, bool> {
        self.inner.put_if_absent(name, data)
    }
    fn delete(&self, name: &str) -> StoreFuture<'_, ()> {
        self.inner.delete(name)
    }
    fn list(&self, prefix: &str) -> StoreFuture<'_, Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn head(&self, name: &str) -> StoreFuture<'_, Option<u64>> {
        self.inner.head(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_upload_cost_grows_with_the_change_not_the_filesystem() {
    const INODES: usize = 100_000;
    let memory = MemoryStore::new();
    let counts = Arc::new(Counts::default());
    let store: Arc<dyn ObjectStore> = Arc::new(Counting {
        inner: memory.clone(),
        counts: counts.clone(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    mkfs(store.clone(), dir.path(), BLOCK).await;
    let mut opts = options(dir.path());
    opts.keep_cache = true;
    let fs = Filesystem::mount(store.clone(), opts.clone())
        .await
        .expect("mount");

    let start = Instant::now();
    let mut dirs = Vec::new();
    for d in 0..100 {
        let attr = fs
            .mkdir(CALLER, ROOT_INODE, OsStr::new(&format!("d{d}")), 0o755)
            .await
            .expect("mkdir");
        dirs.push(attr.ino);
    }
    let tasks: Vec<_> = dirs
        .iter()
        .map(|&parent| {
            let fs = fs.clone();
            tokio::spawn(async move {
                for f in 0..(INODES / 100 - 1) {
                    fs.mknod(
                        CALLER,
                        parent,
                        OsStr::new(&format!("file-{f:05}")),
                        s3ql_core::mode_bits::S_IFREG | 0o644,
                        0,
                    )
                    .await
                    .expect("mknod");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let created = start.elapsed();
    fs.backup_metadata().await.expect("full upload");
    let full_upload = counts.put_meta_bytes.swap(0, Ordering::Relaxed);
    let db_size = std::fs::metadata(dir.path().join("fs.db"))
        .expect("db")
        .len();

    // One small change: one byte written into one file.
    let attr = fs
        .lookup(dirs[57], OsStr::new("file-00421"))
        .await
        .expect("lookup");
    let fh = fs.open(attr.ino, libc::O_WRONLY).await.expect("open");
    fs.write(attr.ino, fh, 0, b"x").await.expect("write");
    fs.release(attr.ino, fh).await.expect("release");
    fs.flush_cache().await.expect("flush");
    fs.backup_metadata().await.expect("incremental upload");
    let incremental = counts.put_meta_bytes.swap(0, Ordering::Relaxed);
    eprintln!(
        "MEASURED metadata: {INODES} inodes created in {:.1} s; database {db_size} bytes; \
         full upload {full_upload} bytes; one-file change uploaded {incremental} bytes \
         ({:.3} % of the database)",
        created.as_secs_f64(),
        incremental as f64 * 100.0 / db_size as f64
    );
    assert!(
        incremental * 100 < db_size,
        "a one-file change uploaded {incremental} bytes of a {db_size}-byte database (>= 1 %)"
    );
    fs.unmount().await.expect("unmount");
    drop(fs);

    // Warm cache: the mount reuses the local database and fetches no metadata chunk.
    counts
        .get_names
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    counts.get_bytes.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let fs = Filesystem::mount(store.clone(), opts.clone())
        .await
        .expect("warm mount");
    let warm = start.elapsed();
    let names = std::mem::take(&mut *counts.get_names.lock().unwrap_or_else(|e| e.into_inner()));
    let warm_bytes = counts.get_bytes.swap(0, Ordering::Relaxed);
    assert!(
        names.iter().all(|n| !n.starts_with("s3ql_metadata_chunk")),
        "a warm mount downloaded metadata chunks: {names:?}"
    );
    fs.unmount().await.expect("unmount");
    drop(fs);

    // Empty cache: the newest generation is downloaded.
    let cold_dir = tempfile::tempdir().expect("tempdir");
    let start = Instant::now();
    let fs = Filesystem::mount(store.clone(), options(cold_dir.path()))
        .await
        .expect("cold mount");
    let cold = start.elapsed();
    let cold_bytes = counts.get_bytes.swap(0, Ordering::Relaxed);
    let back = fs
        .lookup(dirs[57], OsStr::new("file-00421"))
        .await
        .expect("changed file after a cold mount");
    assert_eq!(back.size, 1);
    fs.unmount().await.expect("unmount");
    eprintln!(
        "MEASURED mount of the {INODES}-inode filesystem: warm cache {:.3} s, {warm_bytes} bytes \
         downloaded ({} GETs: {names:?}); empty cache {:.3} s, {cold_bytes} bytes downloaded",
        warm.as_secs_f64(),
        names.len(),
        cold.as_secs_f64()
    );
}

/// A memory store whose deletions of data objects wait until the gate opens.
struct GatedDeletes {
    inner: MemoryStore,
    open: Arc<tokio::sync::Semaphore>,
}

impl ObjectStore for GatedDeletes {
    fn get(&self, name: &str) -> StoreFuture<'_, Bytes> {
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> StoreFuture<'_, Bytes> {
        self.inner.get_range(name, range)
    }
    fn put(&self, name: &str, data: Bytes) -> StoreFuture<'_, ()> {
        self.inner.put(name, data)
    }
    fn put_if_absent(&self, name: &str, data: Bytes) -> StoreFuture<'_, bool> {
        self.inner.put_if_absent(name, data)
    }
    fn delete(&self, name: &str) -> StoreFuture<'_, ()> {
        let gated = name.starts_with("s3ql_data_");
        let name = name.to_owned();
        Box::pin(async move {
            if gated {
                let _pass = self.open.acquire().await;
            }
            self.inner.delete(&name).await
        })
    }
    fn list(&self, prefix: &str) -> StoreFuture<'_, Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn head(&self, name: &str) -> StoreFuture<'_, Option<u64>> {
        self.inner.head(name)
    }
}

/// Objects a delete leaves unreferenced are deleted in the background; a clean unmount
/// waits for those deletions, so that none is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmount_waits_for_the_deletion_of_unreferenced_objects() {
    let memory = MemoryStore::new();
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    let store: Arc<dyn ObjectStore> = Arc::new(GatedDeletes {
        inner: memory.clone(),
        open: open.clone(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    mkfs(store.clone(), dir.path(), BLOCK).await;
    let fs = Filesystem::mount(store.clone(), options(dir.path()))
        .await
        .expect("mount");
    write_file(&fs, "big", &data(3, 40 * BLOCK as usize)).await;
    fs.flush_cache().await.expect("flush");
    let data_objects = || async { memory.list("s3ql_data_").await.expect("list").len() };
    assert_eq!(data_objects().await, 40);
    // The kernel's references: one from the create, one from this lookup.
    let ino = fs
        .lookup(ROOT_INODE, OsStr::new("big"))
        .await
        .expect("lookup")
        .ino;
    fs.unlink(ROOT_INODE, OsStr::new("big"))
        .await
        .expect("unlink");
    fs.forget(ino, 2);
    // Freed by a background task, which then starts the deletions.
    while fs.getattr(ino).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut unmount = tokio::spawn(async move { fs.unmount().await });
    if let Ok(ended) = tokio::time::timeout(Duration::from_millis(300), &mut unmount).await {
        panic!("unmount ended before the deletions: {ended:?}");
    }
    assert_eq!(data_objects().await, 40);
    open.add_permits(tokio::sync::Semaphore::MAX_PERMITS);
    unmount.await.expect("join").expect("unmount");
    assert_eq!(
        data_objects().await,
        0,
        "objects left after a clean unmount"
    );
}

/// An inode whose last name is removed while the kernel still references it outlives an
/// unmount that comes first; the next mount frees it, with its objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_mount_frees_what_an_unmount_left_unlinked() {
    let memory = MemoryStore::new();
    let store: Arc<dyn ObjectStore> = Arc::new(memory.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    mkfs(store.clone(), dir.path(), BLOCK).await;
    let data_objects = || async { memory.list("s3ql_data_").await.expect("list").len() };
    let fs = Filesystem::mount(store.clone(), options(dir.path()))
        .await
        .expect("mount");
    write_file(&fs, "kept", &data(1, 3 * BLOCK as usize)).await;
    write_file(&fs, "open", &data(2, 5 * BLOCK as usize)).await;
    let ino = fs
        .lookup(ROOT_INODE, OsStr::new("open"))
        .await
        .expect("lookup")
        .ino;
    fs.unlink(ROOT_INODE, OsStr::new("open"))
        .await
        .expect("unlink");
    fs.unmount().await.expect("unmount");
    drop(fs);
    assert_eq!(
        data_objects().await,
        8,
        "the unlinked file outlived the unmount"
    );

    let fs = Filesystem::mount(store.clone(), options(dir.path()))
        .await
        .expect("remount");
    assert!(fs.getattr(ino).await.is_err(), "inode {ino} still exists");
    fs.unmount().await.expect("unmount");
    assert_eq!(data_objects().await, 3, "objects of the freed inode left");
}
