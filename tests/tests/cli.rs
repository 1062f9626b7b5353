//! Exit codes of the commands (S3QL-CLI.md §4): what users' scripts depend on.

use std::fs;

use s3ql_tests::harness::is_mounted;
use s3ql_tests::TestFs;

/// Fails the test if `fs.mnt` got mounted by a command that should have failed.
fn assert_not_mounted(fs: &TestFs, after: &str) {
    assert!(
        !is_mounted(&fs.mnt) && !fs.is_mounted(),
        "{after} mounted the filesystem although it should have failed"
    );
}

#[test]
fn mkfs_refuses_existing_fs_without_force() {
    let Some(mut fs) = TestFs::new("mkfs_refuses_existing_fs_without_force") else {
        return;
    };
    fs.mkfs();
    let objects = fs.store_objects();
    assert!(!objects.is_empty(), "mkfs wrote nothing to the store");

    let again = fs.mkfs_cmd(&[]);
    again.expect_code(1);
    assert!(
        !again.stderr.trim().is_empty() || !again.stdout.trim().is_empty(),
        "mkfs on an existing filesystem failed without saying why"
    );
    assert_eq!(
        fs.store_objects(),
        objects,
        "refused mkfs changed the store"
    );

    fs.mkfs_cmd(&["--force"]).expect_success();
    // The re-created filesystem (same cache directory as before) mounts and works.
    fs.mount();
    fs::write(fs.mnt.join("after-force"), b"ok").expect("write after mkfs --force");
    let names: Vec<_> = fs::read_dir(&fs.mnt)
        .expect("readdir")
        .map(|e| e.expect("dirent").file_name())
        .collect();
    assert!(
        names.iter().any(|n| n == "after-force"),
        "readdir after write: {names:?}"
    );
    fs.umount();
}

#[test]
fn umount_of_non_s3ql_dir_fails() {
    let Some(fs) = TestFs::new("umount_of_non_s3ql_dir_fails") else {
        return;
    };
    // A plain directory, nothing mounted.
    let out = fs.umount_cmd(&fs.mnt);
    assert!(
        out.code().is_some_and(|c| c != 0),
        "umount.s3ql of a plain directory exited with {}\n{}",
        out.status,
        out.output()
    );
    // A mount point of another filesystem type (a tmpfs mounted for this test).
    let other = fs.root.join("tmpfs");
    fs::create_dir(&other).expect("mkdir tmpfs mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "s3ql-test-tmpfs"])
        .arg(&other)
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let out = fs.umount_cmd(&other);
        let still = is_mounted(&other);
        let _ = std::process::Command::new("umount").arg(&other).status();
        assert!(
            out.code().is_some_and(|c| c != 0),
            "umount.s3ql of a tmpfs mount point exited with {}\n{}",
            out.status,
            out.output()
        );
        assert!(still, "umount.s3ql unmounted a tmpfs");
    }
    // A path that does not exist.
    let out = fs.umount_cmd(&fs.root.join("does-not-exist"));
    assert!(
        out.code().is_some_and(|c| c != 0),
        "umount.s3ql of a missing path exited with {}\n{}",
        out.status,
        out.output()
    );
}

#[test]
fn mount_of_missing_mountpoint_exits_36() {
    let Some(mut fs) = TestFs::new("mount_of_missing_mountpoint_exits_36") else {
        return;
    };
    fs.mkfs();
    let missing = fs.root.join("no-such-mountpoint");
    let out = fs.mount_cmd(&[], &missing);
    assert!(
        !is_mounted(&missing),
        "something got mounted at a path that did not exist"
    );
    out.expect_code(36);
    // The failed attempt left the filesystem mountable (no stale lock, no "mounted" flag).
    fs.mount();
    fs.umount();
}

#[test]
fn bad_compress_exits_2() {
    let Some(mut fs) = TestFs::new("bad_compress_exits_2") else {
        return;
    };
    fs.mkfs();
    let mnt = fs.mnt.clone();
    for spec in ["bogus", "zstd-99", "lzma-x", "gzip-6"] {
        let out = fs.mount_cmd(&["--compress", spec], &mnt);
        assert_not_mounted(&fs, &format!("mount.s3ql --compress {spec}"));
        out.expect_code(2);
    }
    // Valid specs are accepted.
    fs.mount_with(&["--compress", "zlib-1"]);
    fs::write(fs.mnt.join("f"), vec![b'z'; 100_000]).expect("write with zlib-1");
    fs.umount();
}

#[test]
fn insecure_authfile_exits_12() {
    let Some(mut fs) = TestFs::new("insecure_authfile_exits_12") else {
        return;
    };
    let content = format!("[test]\nstorage-url: {}\nfs-passphrase: unused\n", fs.url);
    fs.write_authfile(&content, 0o644);
    let out = fs.mkfs_cmd(&[]);
    out.expect_code(12);
    assert!(
        fs.store_objects().is_empty(),
        "mkfs wrote to the store despite the insecure authfile"
    );

    // Create the filesystem with a private authfile, then try to mount with a readable one.
    fs.write_authfile(&content, 0o600);
    fs.mkfs();
    fs.write_authfile(&content, 0o644);
    let mnt = fs.mnt.clone();
    let out = fs.mount_cmd(&[], &mnt);
    assert_not_mounted(&fs, "mount.s3ql with a 0644 authfile");
    out.expect_code(12);
    // Group-readable is just as bad; owner-only (0600, 0400) is fine.
    fs.write_authfile(&content, 0o640);
    let out = fs.mount_cmd(&[], &mnt);
    assert_not_mounted(&fs, "mount.s3ql with a 0640 authfile");
    out.expect_code(12);
    fs.write_authfile(&content, 0o400);
    fs.mount();
    fs.umount();
}
