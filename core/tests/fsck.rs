//! fsck: recovery after a crashed mount, and damaged-filesystem fixtures.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use s3ql_core::format::Codec;
use s3ql_core::fsck::{verify, Fsck, FsckOptions, FsckReport, VerifyOptions};
use s3ql_core::mount_lock::{LockHolder, LOCK_OBJECT};
use s3ql_core::storage::{MemoryStore, ObjectStore};
use s3ql_core::{Caller, Filesystem, ROOT_INODE};

const BLOCK: u64 = 4096;
const CALLER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i / 7) as u8) | 1)
        .collect()
}

async fn write_file(fs: &Filesystem, name: &str, data: &[u8], sync: bool) -> u64 {
    let (attr, fh) = fs
        .create(CALLER, ROOT_INODE, OsStr::new(name), 0o644, 0)
        .await
        .expect("create");
    fs.write(attr.ino, fh, 0, data).await.expect("write");
    if sync {
        fs.fsync(attr.ino, false).await.expect("fsync");
    }
    fs.release(attr.ino, fh).await.expect("release");
    attr.ino
}

async fn read_file(fs: &Filesystem, name: &str) -> Vec<u8> {
    let attr = fs
        .lookup(ROOT_INODE, OsStr::new(name))
        .await
        .expect("lookup");
    let fh = fs.open(attr.ino, libc::O_RDONLY).await.expect("open");
    let data = fs
        .read(attr.ino, fh, 0, attr.size as u32)
        .await
        .expect("read")
        .to_vec();
    fs.release(attr.ino, fh).await.expect("release");
    data
}

async fn fsck(store: &MemoryStore, dir: &Path, force: bool) -> FsckReport {
    let opts = FsckOptions {
        force,
        force_remote: true,
        ..FsckOptions::default()
    };
    Fsck::run(
        Arc::new(store.clone()),
        &dir.join("fs"),
        Codec::plain(),
        opts,
    )
    .await
    .expect("fsck")
}

async fn mount(store: &MemoryStore, dir: &Path) -> Arc<Filesystem> {
    Filesystem::mount(Arc::new(store.clone()), common::mount_options(dir))
        .await
        .expect("mount")
}

fn has(report: &FsckReport, needle: &str) -> bool {
    report.problems.iter().any(|p| p.contains(needle))
}

#[test]
fn crash_then_fsck_keeps_everything_fsynced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemoryStore::new();
    let big = pattern(3, 5 * BLOCK as usize + 100);
    let small = pattern(9, 10);
    let rewritten = pattern(20, 2 * BLOCK as usize);
    // A mount that crashes: its runtime (write-back, all tasks) is dropped without unmount.
    let small_ino = {
        let rt = runtime();
        rt.block_on(async {
            let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
            write_file(&fs, "uploaded", &big, true).await;
            fs.flush_cache().await.expect("flush");
            fs.backup_metadata().await.expect("backup");
            write_file(&fs, "synced", &big, true).await;
            let small_ino = write_file(&fs, "small", &small, true).await;
            // Overwrite an uploaded file in place: newest data must win over the object.
            let attr = fs
                .lookup(ROOT_INODE, OsStr::new("uploaded"))
                .await
                .expect("lookup");
            let fh = fs.open(attr.ino, libc::O_WRONLY).await.expect("open");
            fs.write(attr.ino, fh, 0, &rewritten).await.expect("write");
            fs.fsync(attr.ino, false).await.expect("fsync");
            fs.release(attr.ino, fh).await.expect("release");
            write_file(&fs, "unsynced", &small, false).await;
            // A file unlinked while open.
            let (gone, fh) = fs
                .create(CALLER, ROOT_INODE, OsStr::new("gone"), 0o644, 0)
                .await
                .expect("create");
            fs.write(gone.ino, fh, 0, &big).await.expect("write");
            fs.unlink(ROOT_INODE, OsStr::new("gone"))
                .await
                .expect("unlink");
            fs.fsync(gone.ino, false).await.expect("fsync");
            small_ino
        })
    };
    // A write into "small" whose size change did not reach the metadata before the crash.
    let small_block = dir.path().join(format!("fs-cache/{small_ino}-0"));
    let mut lost = small.clone();
    lost.extend_from_slice(b"lost size change");
    std::fs::write(&small_block, &lost).expect("extend the cache file");
    let rt = runtime();
    rt.block_on(async {
        let refused = Filesystem::mount(Arc::new(store.clone()), common::mount_options(dir.path()))
            .await
            .expect_err("mount after a crash");
        assert_eq!(refused.exit_code(), 31, "{refused}");

        let report = fsck(&store, dir.path(), false).await;
        assert!(report.found_errors(), "{report:?}");
        assert!(has(&report, "not unmounted cleanly"), "{report:?}");
        assert!(has(&report, "stale mount lock"), "{report:?}");
        assert!(has(&report, "/synced was not uploaded"), "{report:?}");
        assert!(
            has(
                &report,
                "size of /small is 10 bytes but its data ends at 26"
            ),
            "{report:?}"
        );
        assert!(
            report.notes.iter().any(|n| n.contains("unlinked inode")),
            "{report:?}"
        );

        let fs = mount(&store, dir.path()).await;
        let mut expected_uploaded = big.clone();
        expected_uploaded[..rewritten.len()].copy_from_slice(&rewritten);
        assert_eq!(read_file(&fs, "uploaded").await, expected_uploaded);
        assert_eq!(read_file(&fs, "synced").await, big);
        assert_eq!(
            read_file(&fs, "small").await,
            lost,
            "a write whose size change was lost in the crash is recovered"
        );
        write_file(&fs, "after", &small, true).await;
        assert_eq!(read_file(&fs, "after").await, small);
        assert_eq!(
            fs.check_counts().await.expect("check"),
            Vec::<String>::new()
        );
        fs.unmount().await.expect("unmount");

        let again = fsck(&store, dir.path(), true).await;
        assert_eq!(again.problems, Vec::<String>::new());
        assert!(!fsck(&store, dir.path(), false).await.found_errors());
    });
}

fn damage_db(dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("fs.db")).expect("open db");
    conn.execute_batch(sql).expect("damage");
}

#[test]
fn damaged_filesystems_are_reported_and_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemoryStore::new();
    let rt = runtime();
    rt.block_on(async {
        let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
        // Flushed one by one, so that object numbers follow the order of the files.
        write_file(&fs, "lost-data", &pattern(1, BLOCK as usize), true).await;
        fs.flush_cache().await.expect("flush");
        let shared = write_file(&fs, "shared-a", &pattern(2, BLOCK as usize), true).await;
        write_file(&fs, "shared-b", &pattern(2, BLOCK as usize), true).await;
        fs.flush_cache().await.expect("flush");
        let orphan = write_file(&fs, "orphan", &pattern(4, 100), true).await;
        fs.unmount().await.expect("unmount");
        drop(fs);

        // Missing object: the one of "lost-data" (object 1, written first).
        store.delete("s3ql_data_1").await.expect("delete");
        // Unreferenced object.
        store
            .put("s3ql_data_999", Bytes::from_static(b"junk"))
            .await
            .expect("put");
        // Wrong reference count, dangling entry, orphan inode (local database only).
        damage_db(
            dir.path(),
            &format!(
                "UPDATE block_refcounts SET refcount = 7
                 WHERE id = (SELECT block_id FROM inode_blocks WHERE inode = {shared});
                 INSERT INTO contents (parent, name, inode) VALUES (1, CAST('ghost' AS BLOB), 9999);
                 DELETE FROM contents WHERE inode = {orphan};
                 UPDATE fs_meta SET value = value + 5 WHERE key = 'total_inodes';"
            ),
        );
        // Stale lock of a mount that is gone.
        let holder = LockHolder {
            host: "elsewhere".into(),
            pid: 4_000_000,
            since: 0,
            mount_id: "x".into(),
        };
        store
            .put(
                LOCK_OBJECT,
                Bytes::from(serde_json::to_vec(&holder).expect("json")),
            )
            .await
            .expect("lock");
        let refused = Fsck::run(
            Arc::new(store.clone()),
            &dir.path().join("fs"),
            Codec::plain(),
            FsckOptions::default(),
        )
        .await
        .expect_err("a lock held elsewhere needs confirmation");
        assert_eq!(refused.exit_code(), 41);

        let report = fsck(&store, dir.path(), true).await;
        for needle in [
            "object s3ql_data_1 is missing: /lost-data bytes 0..4096 now read as zeros",
            "object s3ql_data_999 (4 bytes) is not used by any file; deleted",
            "block reference count of",
            "stored 7, recomputed 2",
            "is already in use; set to 1000",
            "entry \"ghost\" in / points to missing inode 9999; removed",
            &format!("inode {orphan} is not reachable from the root; moved to /lost+found/inode-{orphan}"),
            "stale mount lock of host elsewhere, pid 4000000",
            "running totals: stored",
        ] {
            assert!(has(&report, needle), "{needle:?} not in {:#?}", report.problems);
        }
        let again = fsck(&store, dir.path(), true).await;
        assert_eq!(again.problems, Vec::<String>::new());

        let fs = mount(&store, dir.path()).await;
        assert_eq!(read_file(&fs, "lost-data").await, vec![0; BLOCK as usize]);
        assert_eq!(read_file(&fs, "shared-b").await, pattern(2, BLOCK as usize));
        let lost = fs
            .lookup(ROOT_INODE, OsStr::new("lost+found"))
            .await
            .expect("lost+found");
        let moved = fs
            .lookup(lost.ino, OsStr::new(&format!("inode-{orphan}")))
            .await
            .expect("moved orphan");
        assert_eq!(moved.ino, orphan);
        fs.unmount().await.expect("unmount");
    });
}

#[test]
fn a_mount_counts_the_totals_of_a_database_without_them_and_statfs_follows_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemoryStore::new();
    let rt = runtime();
    rt.block_on(async {
        let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
        let a = write_file(&fs, "a", &pattern(1, 3 * BLOCK as usize), true).await;
        fs.unmount().await.expect("unmount");
        drop(fs);
        // A database made before the totals existed.
        damage_db(
            dir.path(),
            "DROP TRIGGER totals_inode_added; DROP TRIGGER totals_block_removed;
             DELETE FROM fs_meta WHERE key IN ('total_inodes', 'total_stored_bytes');",
        );
        let fs = mount(&store, dir.path()).await;
        assert_eq!(
            fs.check_counts().await.expect("check"),
            Vec::<String>::new()
        );
        let before = fs.statfs().await.expect("statfs");
        write_file(&fs, "b", &pattern(2, 2 * BLOCK as usize), true).await;
        fs.flush_cache().await.expect("flush");
        let grown = fs.statfs().await.expect("statfs");
        assert_eq!(grown.files, before.files + 1);
        // The stored bytes (compressed, so not comparable here) match a recount.
        assert_eq!(
            fs.check_counts().await.expect("check"),
            Vec::<String>::new()
        );
        fs.unlink(ROOT_INODE, OsStr::new("a"))
            .await
            .expect("unlink");
        fs.forget(a, 1);
        // The unmount waits for the freeing of the forgotten inode.
        fs.unmount().await.expect("unmount");
        drop(fs);
        let fs = mount(&store, dir.path()).await;
        let shrunk = fs.statfs().await.expect("statfs");
        assert_eq!(shrunk.files, before.files);
        assert_eq!(
            fs.check_counts().await.expect("check"),
            Vec::<String>::new()
        );
        fs.unmount().await.expect("unmount");
        drop(fs);
        // A negative total (only damage makes one) is counted again, not an error.
        damage_db(
            dir.path(),
            "UPDATE fs_meta SET value = -7 WHERE key = 'total_inodes';",
        );
        let fs = mount(&store, dir.path()).await;
        assert_eq!(fs.statfs().await.expect("statfs").files, before.files);
        assert_eq!(
            fs.check_counts().await.expect("check"),
            Vec::<String>::new()
        );
        fs.unmount().await.expect("unmount");
    });
}

#[test]
fn verify_finds_missing_and_corrupted_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemoryStore::new();
    let rt = runtime();
    rt.block_on(async {
        let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
        for i in 0..4u8 {
            write_file(
                &fs,
                &format!("f{i}"),
                &pattern(i * 40, BLOCK as usize),
                true,
            )
            .await;
        }
        fs.unmount().await.expect("unmount");
        drop(fs);
        let opts = VerifyOptions {
            data: true,
            start_with: 0,
            max_connections: 4,
        };
        let cache = dir.path().join("fs");
        let clean = verify(&store, &cache, &Codec::plain(), &opts)
            .await
            .expect("verify");
        assert_eq!(
            (clean.checked, clean.missing.len(), clean.corrupted.len()),
            (4, 0, 0)
        );

        store.delete("s3ql_data_2").await.expect("delete");
        let mut object = store.get("s3ql_data_3").await.expect("get").to_vec();
        let last = object.len() - 1;
        object[last] ^= 1;
        store
            .put("s3ql_data_3", Bytes::from(object))
            .await
            .expect("put");
        let found = verify(&store, &cache, &Codec::plain(), &opts)
            .await
            .expect("verify");
        assert_eq!(found.missing, vec!["s3ql_data_2".to_owned()]);
        assert_eq!(found.corrupted, vec!["s3ql_data_3".to_owned()]);
        let quick = VerifyOptions {
            data: false,
            ..opts
        };
        let found = verify(&store, &cache, &Codec::plain(), &quick)
            .await
            .expect("verify");
        assert_eq!(found.missing, vec!["s3ql_data_2".to_owned()]);
        assert!(found.corrupted.is_empty());
    });
}

#[test]
fn type_mismatches_and_rows_of_missing_inodes_are_repaired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemoryStore::new();
    let rt = runtime();
    rt.block_on(async {
        let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
        let symlink = |name: &'static str, target: &'static str| {
            let fs = fs.clone();
            async move {
                fs.symlink(CALLER, ROOT_INODE, OsStr::new(name), OsStr::new(target))
                    .await
                    .expect("symlink")
                    .ino
            }
        };
        let no_target = symlink("no-target", "abc").await;
        let wrong_size = symlink("wrong-size", "xyz").await;
        let file = write_file(&fs, "file", &pattern(5, 100), true).await;
        let subdir = fs
            .mkdir(CALLER, ROOT_INODE, OsStr::new("dir"), 0o755)
            .await
            .expect("mkdir")
            .ino;
        let dev = fs
            .mknod(
                CALLER,
                ROOT_INODE,
                OsStr::new("dev"),
                s3ql_core::mode_bits::S_IFCHR | 0o600,
                0x0501,
            )
            .await
            .expect("mknod")
            .ino;
        fs.unmount().await.expect("unmount");
        drop(fs);

        damage_db(
            dir.path(),
            &format!(
                "DELETE FROM symlink_targets WHERE inode = {no_target};
                 UPDATE inodes SET size = 99 WHERE id = {wrong_size};
                 INSERT INTO symlink_targets (inode, target) VALUES ({file}, CAST('/etc' AS BLOB));
                 UPDATE inodes SET rdev = 1234 WHERE id = {subdir};
                 INSERT INTO ext_attributes (inode, name, value)
                     VALUES (8888, CAST('user.a' AS BLOB), CAST('v' AS BLOB)),
                            (8888, CAST('user.b' AS BLOB), CAST('w' AS BLOB));
                 INSERT INTO symlink_targets (inode, target) VALUES (8889, CAST('/nowhere' AS BLOB));"
            ),
        );
        let report = fsck(&store, dir.path(), true).await;
        let expected = [
            format!("symlink /no-target (inode {no_target}) has no target; made an empty regular file"),
            format!("size of symlink /wrong-size (inode {wrong_size}) is 99 but its target has 3 bytes; size set to 3"),
            format!("regular file /file (inode {file}) has a symlink target; removed"),
            format!("directory /dir (inode {subdir}) is no device but has device number 0x4d2; cleared"),
            "extended attributes of missing inode 8888; removed".to_owned(),
            "symlink target of missing inode 8889; removed".to_owned(),
        ];
        let mut found = report.problems.clone();
        found.sort();
        let mut want = expected.to_vec();
        want.sort();
        assert_eq!(found, want);
        let again = fsck(&store, dir.path(), true).await;
        assert_eq!(again.problems, Vec::<String>::new());

        let fs = mount(&store, dir.path()).await;
        let attr = fs.getattr(no_target).await.expect("getattr");
        assert_eq!((attr.kind, attr.size), (s3ql_core::FileKind::Regular, 0));
        assert_eq!(fs.readlink(wrong_size).await.expect("readlink"), b"xyz");
        assert_eq!(fs.getattr(wrong_size).await.expect("getattr").size, 3);
        assert_eq!(read_file(&fs, "file").await, pattern(5, 100));
        assert_eq!(fs.getattr(subdir).await.expect("getattr").rdev, 0);
        assert_eq!(fs.getattr(dev).await.expect("getattr").rdev, 0x0501);
        fs.unmount().await.expect("unmount");
    });
}

#[test]
fn damaged_old_generations_are_found_unless_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = MemoryStore::new();
    let rt = runtime();
    rt.block_on(async {
        let fs = common::mkfs_and_mount(&store, dir.path(), BLOCK).await;
        for i in 0..3u8 {
            write_file(&fs, &format!("f{i}"), &pattern(i, 1000), true).await;
            fs.backup_metadata().await.expect("backup");
        }
        fs.unmount().await.expect("unmount");
        drop(fs);
        // Generation 3 (the second backup): its manifest is altered.
        let manifest = format!("s3ql_metadata_manifest_{:020}", 3);
        let mut object = store.get(&manifest).await.expect("manifest").to_vec();
        let last = object.len() - 1;
        object[last] ^= 0x40;
        store
            .put(&manifest, Bytes::from(object))
            .await
            .expect("put");

        let cache = dir.path().join("fs");
        let run = |fast| {
            let opts = FsckOptions {
                force: true,
                fast,
                ..FsckOptions::default()
            };
            Fsck::run(Arc::new(store.clone()), &cache, Codec::plain(), opts)
        };
        let fast = run(true).await.expect("fsck --fast");
        assert_eq!(fast.problems, Vec::<String>::new());
        let full = run(false).await.expect("fsck");
        assert_eq!(full.problems.len(), 1, "{:?}", full.problems);
        assert!(
            full.problems[0].starts_with("metadata generation 3 cannot be used (")
                && full.problems[0].ends_with("); deleted"),
            "{:?}",
            full.problems
        );
        assert_eq!(store.head(&manifest).await.expect("head"), None);
        assert_eq!(
            run(false).await.expect("fsck").problems,
            Vec::<String>::new()
        );
        let fs = mount(&store, dir.path()).await;
        assert_eq!(read_file(&fs, "f2").await, pattern(2, 1000));
        fs.unmount().await.expect("unmount");
    });
}
