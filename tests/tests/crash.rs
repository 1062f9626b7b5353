//! Crash safety on a real mount (DESIGN §1, §6): `kill -9` of the mount daemon, during
//! writes, in the middle of a data upload and in the middle of a metadata upload, then
//! `fsck.s3ql --batch`, then every fsynced file must be byte-identical and new writes must
//! work.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use s3ql_tests::harness::{bin, random_bytes, Backend};
use s3ql_tests::{note, TestFs};

const KIB: usize = 1 << 10;

fn write_synced(path: &std::path::Path, data: &[u8]) {
    let mut f = File::create(path).expect("create");
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

/// After the recovery: a new file can be written and read back, and after a clean unmount
/// `fsck.s3ql --force` finds nothing.
fn new_writes_work_and_fsck_is_clean(fs: &mut TestFs) {
    let fresh = random_bytes(300 * KIB);
    write_synced(&fs.mnt.join("after-crash"), &fresh);
    assert_eq!(fs::read(fs.mnt.join("after-crash")).expect("read"), fresh);
    fs.umount();
    fs.fsck_cmd(&["--force", "--batch"]).expect_code(0);
}

fn crash_and_recover(test: &str, backend: Backend) {
    let Some(mut fs) = TestFs::with_backend(test, backend) else {
        return;
    };
    fs.mkfs();
    fs.mount();
    // Older files, uploaded by a clean metadata cycle.
    let mut synced: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..10 {
        let data = random_bytes(i * 37 * KIB + 11);
        let name = format!("old-{i}");
        write_synced(&fs.mnt.join(&name), &data);
        synced.push((name, data));
    }
    fs.umount();
    fs.mount();
    for i in 0..60 {
        let data = random_bytes((i % 7) * 50 * KIB + i);
        let name = format!("synced-{i}");
        write_synced(&fs.mnt.join(&name), &data);
        if i % 10 == 0 {
            fs::write(fs.mnt.join(format!("unsynced-{i}")), &data).expect("write unsynced");
        }
        synced.push((name, data));
    }
    // A rewrite of an old file, then a large file whose upload is running when we kill.
    let rewritten = random_bytes(100 * KIB);
    write_synced(&fs.mnt.join("old-3"), &rewritten);
    synced[3].1 = rewritten;
    let big = random_bytes(24 << 20);
    write_synced(&fs.mnt.join("big"), &big);
    synced.push(("big".into(), big));
    let mut flush = Command::new(bin("s3qlctrl"))
        .arg("flushcache")
        .arg(&fs.mnt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s3qlctrl flushcache");
    std::thread::sleep(Duration::from_millis(300));
    fs.kill_mount();
    let _ = flush.wait();

    let out = fs.fsck_cmd(&["--batch"]);
    let code = out.code();
    assert!(
        matches!(code, Some(0) | Some(128)),
        "fsck --batch exited {code:?}\n{}",
        out.output()
    );
    note(&format!(
        "{test}: fsck --batch after kill -9 exited {code:?}; {} fsynced files to check",
        synced.len()
    ));
    fs.mount();
    for (name, data) in &synced {
        let got = fs::read(fs.mnt.join(name)).expect("read back");
        assert!(got == *data, "{name}: contents differ after the crash");
    }
    new_writes_work_and_fsck_is_clean(&mut fs);
}

#[test]
fn kill_during_writes_and_upload_local() {
    crash_and_recover("kill_during_writes_and_upload_local", Backend::Local);
}

#[test]
fn kill_during_writes_and_upload_s3c() {
    crash_and_recover("kill_during_writes_and_upload_s3c", Backend::S3c);
}

/// Writes `count` files of 100 to 3000 random bytes in 20 directories below `top`; fsyncs
/// every `sync_every`-th one. Returns (path below the mount point, data, fsynced) of each.
fn write_tree(
    fs: &TestFs,
    top: &str,
    count: usize,
    sync_every: usize,
) -> Vec<(String, Vec<u8>, bool)> {
    let mut files = Vec::new();
    for i in 0..count {
        let dir = format!("{top}/d{:02}", i % 20);
        if i < 20 {
            fs::create_dir_all(fs.mnt.join(&dir)).expect("mkdir");
        }
        let name = format!("{dir}/f{i:05}");
        let data = random_bytes(100 + (i * 131) % 2900);
        let sync = i % sync_every == 0;
        if sync {
            write_synced(&fs.mnt.join(&name), &data);
        } else {
            fs::write(fs.mnt.join(&name), &data).expect("write");
        }
        files.push((name, data, sync));
    }
    files
}

/// Metadata objects in the store (chunks and manifests).
fn metadata_objects(fs: &TestFs) -> BTreeSet<String> {
    fs.store_objects()
        .into_iter()
        .filter(|n| n.starts_with("s3ql_metadata_"))
        .collect()
}

fn is_manifest(name: &str) -> bool {
    name.starts_with("s3ql_metadata_manifest_")
}

/// `kill -9` of the daemon while `s3qlctrl backup-metadata` uploads a new generation: the
/// mount's storage answers each request after up to 400 ms (`S3QL_FAULT_INJECTION`), and
/// the daemon is killed as soon as the first new metadata object is in the store, before
/// the new manifest. fsck must recover from the local database and cache; then every file
/// uploaded by the last clean unmount and every fsynced file is byte-identical.
fn kill_during_metadata_upload(test: &str, backend: Backend) {
    let Some(mut fs) = TestFs::with_backend(test, backend) else {
        return;
    };
    fs.mkfs();
    fs.mount();
    // Every file here counts as fsynced: the unmount put it in the backend.
    let mut synced: Vec<(String, Vec<u8>)> = write_tree(&fs, "old", 1500, 10)
        .into_iter()
        .map(|(name, data, _)| (name, data))
        .collect();
    let mut unsynced = Vec::new();
    fs.umount();
    fs.mount_env.push((
        "S3QL_FAULT_INJECTION".into(),
        "seed=3,errors=0,latency_ms=400,truncate=0".into(),
    ));
    let mut interrupted = false;
    for attempt in 1..=3 {
        fs.mount();
        for (name, data, sync) in write_tree(&fs, &format!("new-{attempt}"), 1500, 10) {
            if sync {
                synced.push((name, data));
            } else {
                unsynced.push((name, data));
            }
        }
        let before = metadata_objects(&fs);
        let mut backup = Command::new(bin("s3qlctrl"))
            .arg("backup-metadata")
            .arg(&fs.mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3qlctrl backup-metadata");
        let start = Instant::now();
        let mut seen = None;
        while seen.is_none() && start.elapsed() < Duration::from_secs(120) {
            seen = metadata_objects(&fs)
                .difference(&before)
                .find(|n| !is_manifest(n))
                .cloned();
            std::thread::sleep(Duration::from_millis(2));
        }
        let seen = seen.expect("no metadata object was uploaded within 120 s");
        fs.kill_mount();
        let _ = backup.wait();
        let new_manifests: Vec<String> = metadata_objects(&fs)
            .difference(&before)
            .filter(|n| is_manifest(n))
            .cloned()
            .collect();
        interrupted = new_manifests.is_empty();
        let out = fs.fsck_cmd(&["--batch"]);
        assert!(
            matches!(out.code(), Some(0) | Some(128)),
            "fsck --batch exited {:?}\n{}",
            out.code(),
            out.output()
        );
        note(&format!(
            "{test}: attempt {attempt}: killed after {seen} was uploaded, {} the new \
             manifest; fsck --batch exited {:?}",
            if interrupted { "before" } else { "after" },
            out.code()
        ));
        if interrupted {
            break;
        }
    }
    assert!(interrupted, "the kill never fell inside a metadata upload");
    fs.mount_env.clear();
    fs.mount();
    for (name, data) in &synced {
        let got = fs::read(fs.mnt.join(name)).expect("read back");
        assert!(got == *data, "{name}: contents differ after the crash");
    }
    let kept = unsynced
        .iter()
        .filter(|(name, data)| fs::read(fs.mnt.join(name)).is_ok_and(|got| got == *data))
        .count();
    note(&format!(
        "{test}: {} uploaded or fsynced files byte-identical after the kill during the \
         metadata upload; {kept} of {} files written without fsync are intact too",
        synced.len(),
        unsynced.len()
    ));
    new_writes_work_and_fsck_is_clean(&mut fs);
}

#[test]
fn kill_during_metadata_upload_local() {
    kill_during_metadata_upload("kill_during_metadata_upload_local", Backend::Local);
}

#[test]
fn kill_during_metadata_upload_s3c() {
    kill_during_metadata_upload("kill_during_metadata_upload_s3c", Backend::S3c);
}
