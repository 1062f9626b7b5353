//! Crash safety on a real mount (DESIGN §1, §6): `kill -9` of the mount daemon, during
//! writes and in the middle of an upload, then `fsck.s3ql --batch`, then every fsynced
//! file must be byte-identical and new writes must work.

use std::fs::{self, File};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use s3ql_tests::harness::{bin, random_bytes, Backend};
use s3ql_tests::{note, TestFs};

const KIB: usize = 1 << 10;

fn write_synced(path: &std::path::Path, data: &[u8]) {
    let mut f = File::create(path).expect("create");
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
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
    let fresh = random_bytes(300 * KIB);
    write_synced(&fs.mnt.join("after-crash"), &fresh);
    assert_eq!(fs::read(fs.mnt.join("after-crash")).expect("read"), fresh);
    fs.umount();
    fs.fsck_cmd(&["--force", "--batch"]).expect_code(0);
}

#[test]
fn kill_during_writes_and_upload_local() {
    crash_and_recover("kill_during_writes_and_upload_local", Backend::Local);
}

#[test]
fn kill_during_writes_and_upload_s3c() {
    crash_and_recover("kill_during_writes_and_upload_s3c", Backend::S3c);
}
