//! Integrity and privacy of what is in the backend, through real mounts, encrypted and
//! `--plain`: a flipped byte or two swapped data objects make reads of the affected file
//! fail with EIO (every time, logged with the object name) while other files keep working;
//! a wrong passphrase changes nothing in the storage; no plaintext reaches an encrypted store.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use s3ql_tests::harness::{bin, random_bytes};
use s3ql_tests::{note, TestFs};

const PASSPHRASE: &str = "correct horse battery staple";
const MARKER: &str = "PLAINTEXT-MARKER-7f3a9c";
const SECRET_NAME: &str = "secret-file-name-5b2e.txt";

/// Runs the s3ql-rs command `name` with `args` and `input` on stdin; returns (exit code,
/// stdout, stderr).
fn run_with_input(
    name: &str,
    args: &[&std::ffi::OsStr],
    input: &str,
) -> (Option<i32>, String, String) {
    let mut child = Command::new(bin(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start command");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates the filesystem: `--plain`, or encrypted with [`PASSPHRASE`] given on stdin
/// (and written to the authfile for the mounts). Returns the master key mkfs printed.
fn make(fs: &TestFs, encrypted: bool) -> Option<String> {
    if !encrypted {
        fs.mkfs();
        return None;
    }
    let args = [
        "--cachedir".as_ref(),
        fs.cache.as_os_str(),
        "--authfile".as_ref(),
        fs.authfile.as_os_str(),
        fs.url.as_ref(),
    ];
    let (code, stdout, stderr) = run_with_input("mkfs.s3ql", &args, &format!("{PASSPHRASE}\n"));
    assert_eq!(code, Some(0), "mkfs.s3ql failed: {stderr}");
    let key = stdout
        .lines()
        .skip_while(|l| *l != "---BEGIN MASTER KEY---")
        .nth(1)
        .expect("mkfs.s3ql printed no master key")
        .to_owned();
    set_passphrase(fs, PASSPHRASE);
    Some(key)
}

fn set_passphrase(fs: &TestFs, passphrase: &str) {
    fs.write_authfile(
        &format!("[fs]\nstorage-url: local://\nfs-passphrase: {passphrase}\n"),
        0o600,
    );
}

/// Name, size, mtime and content hash of every object.
fn snapshot(store: &Path) -> BTreeMap<String, (u64, i64, Vec<u8>)> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(store).expect("read store") {
        let entry = entry.expect("entry");
        let meta = entry.metadata().expect("metadata");
        if meta.is_file() {
            let data = fs::read(entry.path()).expect("read object");
            out.insert(
                entry.file_name().to_string_lossy().into_owned(),
                (
                    meta.len(),
                    meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
                    Sha256::digest(&data).to_vec(),
                ),
            );
        }
    }
    out
}

/// The data objects, largest first.
fn data_objects(store: &Path) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = fs::read_dir(store)
        .expect("read store")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("s3ql_data_"))
        .map(|e| {
            (
                e.metadata().expect("metadata").len(),
                e.file_name().to_string_lossy().into_owned(),
            )
        })
        .collect();
    v.sort_by(|a, b| b.cmp(a));
    v
}

fn expect_eio_twice(fs: &TestFs, path: &Path, object: &str) {
    for attempt in 1..=2 {
        match fs::read(path) {
            Ok(_) => panic!(
                "{}: read of a damaged file succeeded (attempt {attempt})",
                fs.name
            ),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "attempt {attempt}: {e}"),
        }
    }
    let log = fs.log_tail(200);
    assert!(
        log.contains(object),
        "the mount log does not name {object}:\n{log}"
    );
}

fn damaged_object_is_eio(encrypted: bool) {
    let name = if encrypted {
        "integrity_encrypted"
    } else {
        "integrity_plain"
    };
    let Some(mut fs) = TestFs::new(name) else {
        return;
    };
    let _ = make(&fs, encrypted);
    fs.mount();
    let victim = random_bytes(3 << 20);
    let bystander = random_bytes(100 << 10);
    fs::write(fs.mnt.join("victim"), &victim).expect("write victim");
    fs::write(fs.mnt.join("bystander"), &bystander).expect("write bystander");
    fs::write(fs.mnt.join(SECRET_NAME), MARKER.repeat(1000)).expect("write marker file");
    fs.umount();

    if encrypted {
        for (object, _) in snapshot(&fs.store) {
            let data = fs::read(fs.store.join(&object)).expect("read object");
            for needle in [MARKER, SECRET_NAME] {
                assert!(
                    !data.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{needle} found in clear in {object}"
                );
            }
        }
        note(&format!(
            "{name}: neither {MARKER:?} nor {SECRET_NAME:?} appears in any object"
        ));
    }

    // 1. One flipped byte in the middle of the largest data object.
    let objects = data_objects(&fs.store);
    let (size, largest) = objects[0].clone();
    let path = fs.store.join(&largest);
    let original = fs::read(&path).expect("read object");
    let mut damaged = original.clone();
    damaged[(size / 2) as usize] ^= 0x01;
    fs::write(&path, &damaged).expect("damage object");
    fs.new_cache();
    fs.mount();
    expect_eio_twice(&fs, &fs.mnt.join("victim"), &largest);
    assert_eq!(
        fs::read(fs.mnt.join("bystander")).expect("bystander"),
        bystander
    );
    fs.umount();
    fs::write(&path, &original).expect("restore object");

    // 2. Two data objects swapped.
    let (a, b) = (fs.store.join(&objects[0].1), fs.store.join(&objects[1].1));
    let tmp = fs.store.join("swap.tmp");
    fs::rename(&a, &tmp).expect("swap");
    fs::rename(&b, &a).expect("swap");
    fs::rename(&tmp, &b).expect("swap");
    fs.new_cache();
    fs.mount();
    expect_eio_twice(&fs, &fs.mnt.join("victim"), &objects[0].1);
    assert_eq!(
        fs::read(fs.mnt.join("bystander")).expect("bystander"),
        bystander
    );
    fs.umount();
    fs::rename(&a, &tmp).expect("unswap");
    fs::rename(&b, &a).expect("unswap");
    fs::rename(&tmp, &b).expect("unswap");

    // 3. Intact again: everything reads back.
    fs.new_cache();
    fs.mount();
    assert_eq!(fs::read(fs.mnt.join("victim")).expect("victim"), victim);
    fs.umount();
    note(&format!(
        "{name}: flipped byte and swapped objects gave EIO twice; other files intact"
    ));
}

#[test]
fn damaged_object_is_eio_plain() {
    damaged_object_is_eio(false);
}

#[test]
fn damaged_object_is_eio_encrypted() {
    damaged_object_is_eio(true);
}

#[test]
fn wrong_passphrase_changes_nothing() {
    let Some(mut fs) = TestFs::new("wrong_passphrase_changes_nothing") else {
        return;
    };
    let _ = make(&fs, true);
    fs.mount();
    fs::write(fs.mnt.join("f"), b"data").expect("write");
    fs.umount();
    let before = snapshot(&fs.store);
    fs.write_authfile(
        "[fs]\nstorage-url: local://\nfs-passphrase: not the passphrase\n",
        0o600,
    );
    for fresh_cache in [false, true] {
        if fresh_cache {
            fs.new_cache();
        }
        let mnt = fs.mnt.clone();
        let out = fs.mount_cmd(&[], &mnt);
        out.expect_code(17);
        assert!(
            out.output().contains("wrong passphrase"),
            "{}",
            out.output()
        );
        assert!(
            !fs.is_mounted(),
            "a mount happened with the wrong passphrase"
        );
        assert_eq!(
            before,
            snapshot(&fs.store),
            "the storage changed (fresh cache: {fresh_cache})"
        );
    }
    note("wrong_passphrase_changes_nothing: exit 17, storage byte-identical (names, sizes, mtimes, SHA-256)");
}

#[test]
fn passphrase_change_and_key_recovery() {
    let Some(mut fs) = TestFs::new("passphrase_change_and_key_recovery") else {
        return;
    };
    let key = make(&fs, true).expect("encrypted");
    fs.mount();
    fs::write(fs.mnt.join("f"), b"kept across passphrase changes").expect("write");
    fs.umount();
    let common = |fs: &TestFs| -> Vec<std::ffi::OsString> {
        vec![
            "--cachedir".into(),
            fs.cache.clone().into(),
            "--authfile".into(),
            fs.authfile.clone().into(),
        ]
    };
    let adm = |fs: &TestFs, action: &str, input: &str| {
        let mut args = common(fs);
        args.push(action.into());
        args.push(fs.url.clone().into());
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run_with_input("s3qladm", &args, input)
    };

    // Change: old from the authfile, new from stdin.
    let (code, _, stderr) = adm(&fs, "passphrase", "second passphrase\n");
    assert_eq!(code, Some(0), "s3qladm passphrase: {stderr}");
    let mnt = fs.mnt.clone();
    fs.mount_cmd(&[], &mnt).expect_code(17);
    set_passphrase(&fs, "second passphrase");
    fs.new_cache();
    fs.mount();
    assert_eq!(
        fs::read(fs.mnt.join("f")).expect("read"),
        b"kept across passphrase changes"
    );
    fs.umount();

    // Recovery: a wrong key is refused, the right one sets a new passphrase.
    let (code, _, _) = adm(
        &fs,
        "recover-key",
        "AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAAA AAA=\nx\n",
    );
    assert_eq!(code, Some(1), "a wrong master key must be refused");
    let (code, _, stderr) = adm(&fs, "recover-key", &format!("{key}\nthird passphrase\n"));
    assert_eq!(code, Some(0), "s3qladm recover-key: {stderr}");
    set_passphrase(&fs, "third passphrase");
    fs.new_cache();
    fs.mount();
    assert_eq!(
        fs::read(fs.mnt.join("f")).expect("read"),
        b"kept across passphrase changes"
    );
    fs.umount();
    note("passphrase_change_and_key_recovery: old passphrase refused (17), data readable after change and after recover-key");
}
