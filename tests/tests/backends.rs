//! Object storage through the real commands: the single-mount rule through every spelling
//! of a storage URL, S3QL's exit codes for backend failures, and an S3 outage in the
//! middle of writes (the embedded S3 server is stopped and restarted).

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use s3ql_tests::harness::{random_bytes, tool, Backend};
use s3ql_tests::{note, TestFs};

/// Mounts `url` at a second mount point with another cache directory and returns the
/// outcome (expected to be a refusal).
fn second_mount(fs: &mut TestFs, url: &str, n: u32) -> s3ql_tests::harness::Outcome {
    let mnt = fs.root.join(format!("mnt-second-{n}"));
    let cache = fs.root.join(format!("cache-second-{n}"));
    fs::create_dir_all(&mnt).expect("mkdir");
    fs::create_dir_all(&cache).expect("mkdir");
    let mut cmd = std::process::Command::new(s3ql_tests::harness::bin("mount.s3ql"));
    cmd.arg("--cachedir")
        .arg(&cache)
        .arg("--authfile")
        .arg(&fs.authfile)
        .arg("--log")
        .arg(fs.root.join("second.log"))
        .arg(url)
        .arg(&mnt);
    let out = s3ql_tests::harness::run(&mut cmd, s3ql_tests::harness::scaled(120));
    assert!(
        !s3ql_tests::harness::is_mounted(&mnt),
        "the second mount of {url} is mounted"
    );
    out
}

fn assert_refused_naming_holder(out: &s3ql_tests::harness::Outcome, url: &str, pid: i32) {
    assert_eq!(
        out.code(),
        Some(31),
        "second mount of {url} not refused with 31\n{}",
        out.output()
    );
    assert!(
        out.stderr.contains(&format!("pid {pid}")) && out.stderr.contains("since"),
        "the refusal does not name the holder\n{}",
        out.output()
    );
}

fn check_still_works(fs: &TestFs, i: u32) {
    let data = random_bytes(300_000);
    let p = fs.mnt.join(format!("still-{i}"));
    fs::write(&p, &data).expect("write on the first mount");
    assert!(fs::read(&p).expect("read") == data);
}

#[test]
fn double_mount_local_is_refused_through_every_spelling() {
    let Some(mut fs) = TestFs::new("double_mount_local") else {
        return;
    };
    let link = fs.root.join("store-link");
    std::os::unix::fs::symlink(&fs.store, &link).expect("symlink");
    fs.mkfs();
    fs.mount();
    let pid = fs.daemon_pid().expect("daemon pid");
    // A symlinked directory is another canonical URL: only the lock in the store stops it.
    for (i, url) in [
        format!("local://{}", link.display()),
        format!("local://{}/", link.display()),
    ]
    .iter()
    .enumerate()
    {
        let out = second_mount(&mut fs, url, i as u32);
        assert_refused_naming_holder(&out, url, pid);
        check_still_works(&fs, i as u32);
    }
    // The same canonical URL (trailing slash) is caught earlier by /proc/mounts, as in
    // S3QL: exit 40, naming the mount point.
    let url = format!("{}/", fs.url);
    let out = second_mount(&mut fs, &url, 9);
    assert_eq!(out.code(), Some(40), "{}", out.output());
    check_still_works(&fs, 9);
    fs.umount();
    // Released at unmount: the other spelling mounts now.
    fs.url = format!("local://{}", link.display());
    fs.mount();
    assert!(fs.mnt.join("still-0").exists());
    fs.umount();
}

#[test]
fn double_mount_s3c_is_refused_through_every_spelling() {
    let Some(mut fs) = TestFs::with_backend("double_mount_s3c", Backend::S3c) else {
        return;
    };
    fs.mkfs();
    fs.mount();
    let pid = fs.daemon_pid().expect("daemon pid");
    let port = fs
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .expect("port")
        .to_owned();
    for (i, url) in [
        format!("s3c://localhost:{port}/bucket"),
        format!("s3c://localhost:{port}/bucket/"),
        format!("s3c4://127.0.0.1:{port}/bucket"),
    ]
    .iter()
    .enumerate()
    {
        let out = second_mount(&mut fs, url, i as u32);
        assert_refused_naming_holder(&out, url, pid);
        check_still_works(&fs, i as u32);
    }
    fs.umount();
    fs.url = format!("s3c://localhost:{port}/bucket/");
    fs.new_cache();
    fs.mount();
    assert!(fs.mnt.join("still-2").exists());
    fs.umount();
}

#[test]
fn s3c_failures_have_s3ql_exit_codes() {
    let Some(mut fs) = TestFs::with_backend("s3c_exit_codes", Backend::S3c) else {
        return;
    };
    let good = fs.url.clone();
    let auth = fs::read_to_string(&fs.authfile).expect("authfile");

    let out = fs.mkfs_cmd(&["--backend-options", "no-ssl,frobnicate"]);
    assert_eq!(out.code(), Some(3), "unknown option\n{}", out.output());

    fs.url = good.replace("/bucket", "/no-such-bucket");
    let out = fs.mkfs_cmd(&[]);
    assert_eq!(out.code(), Some(16), "missing bucket\n{}", out.output());
    fs.url = good.clone();

    fs.write_authfile(&auth.replace("s3ql-test-secret", "wrong-secret"), 0o600);
    let out = fs.mkfs_cmd(&[]);
    assert_eq!(out.code(), Some(14), "bad credentials\n{}", out.output());
    fs.write_authfile(&auth, 0o600);

    // Nothing listens on port 1: refused connections, retried, then one line and exit 1.
    fs.url = "s3c://127.0.0.1:1/bucket".into();
    let out = fs.mkfs_cmd(&[]);
    assert_eq!(out.code(), Some(1), "unreachable\n{}", out.output());
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.output());
    assert!(errors[0].contains("unavailable"), "{}", out.output());
    fs.url = good;

    fs.mkfs();
    let out = fs.mkfs_cmd(&[]);
    assert_eq!(out.code(), Some(1), "existing filesystem\n{}", out.output());
}

fn ctrl(cmd: &str, mnt: &Path) -> s3ql_tests::harness::Outcome {
    tool("s3qlctrl", &[OsStr::new(cmd), mnt.as_os_str()], None)
}

#[test]
fn s3_outage_during_writes() {
    let Some(mut fs) = TestFs::with_backend("s3_outage", Backend::S3c) else {
        return;
    };
    fs.mkfs();
    fs.mount();
    let a = random_bytes(3 << 20);
    fs::write(fs.mnt.join("a"), &a).expect("write a");
    // Unmounting empties the block cache and the kernel's page cache of the mount.
    fs.umount();
    fs.mount();

    fs.s3_server().expect("server").stop();
    // Acknowledged writes only need the cache.
    let b = random_bytes(2 << 20);
    let f = fs.mnt.join("b");
    fs::write(&f, &b).expect("write during the outage");
    fs::File::open(&f)
        .and_then(|f| f.sync_all())
        .expect("fsync during the outage");
    // What needs the backend fails after the retries, and the mount stays up.
    let err = fs::read(fs.mnt.join("a")).expect_err("read of an uncached file");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let out = ctrl("flushcache", &fs.mnt);
    assert_ne!(
        out.code(),
        Some(0),
        "flushcache during the outage succeeded"
    );
    assert!(fs.mnt.join("b").exists());

    fs.s3_server().expect("server").restart().expect("restart");
    assert!(fs::read(fs.mnt.join("a")).expect("read after the outage") == a);
    ctrl("flushcache", &fs.mnt).expect_success();
    fs.umount();
    fs.new_cache();
    fs.mount();
    assert!(fs::read(fs.mnt.join("a")).expect("a") == a);
    assert!(
        fs::read(fs.mnt.join("b")).expect("b") == b,
        "acknowledged data lost"
    );
    fs.umount();
    note("s3_outage: reads EIO and flushcache fails during the outage; all data back after it");
}
