//! The commands' exit codes and messages for bad input, run as real processes; and one
//! mount/unmount round trip through FUSE when this machine allows it (root, /dev/fuse).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MKFS: &str = env!("CARGO_BIN_EXE_mkfs-s3ql");
const MOUNT: &str = env!("CARGO_BIN_EXE_mount-s3ql");
const UMOUNT: &str = env!("CARGO_BIN_EXE_umount-s3ql");

/// A scratch area: a storage directory, a cache directory, a mount point, no authfile.
struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonicalize");
        for d in ["store", "cache", "mnt"] {
            std::fs::create_dir(root.join(d)).expect("mkdir");
        }
        Scratch { _dir: dir, root }
    }

    fn url(&self) -> String {
        format!("local://{}", self.root.join("store").display())
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }

    /// Runs `bin` with the cache directory and a (missing) authfile, then `args`.
    fn run(&self, bin: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin);
        cmd.arg("--cachedir").arg(self.path("cache"));
        if !args.contains(&"--authfile") {
            cmd.arg("--authfile").arg(self.path("authinfo2"));
        }
        cmd.args(args).env("HOME", &self.root);
        cmd.output().expect("run command")
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code and that stderr is one `ERROR: ` line containing `needle`.
fn assert_error(out: &Output, expected: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(code(out), expected, "stderr: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("ERROR: "), "stderr: {err}");
    assert!(last.contains(needle), "expected {needle:?} in {err:?}");
}

#[test]
fn help_documents_exit_codes() {
    for bin in [MKFS, MOUNT, UMOUNT] {
        let out = Command::new(bin).arg("--help").output().expect("run");
        assert_eq!(code(&out), 0);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Exit codes:"), "{bin}: {text}");
    }
}

#[test]
fn usage_errors_are_exit_2() {
    let s = Scratch::new();
    assert_eq!(code(&s.run(MKFS, &["--no-such-option", &s.url()])), 2);
    assert_eq!(code(&s.run(MKFS, &[])), 2);
    assert_error(&s.run(MKFS, &["/not/a/url"]), 2, "not a valid storage URL");
    assert_error(&s.run(MKFS, &["nosuch://x"]), 2, "unknown storage backend");
}

#[test]
fn backend_options_location_and_authfile() {
    let s = Scratch::new();
    assert_error(
        &s.run(MKFS, &["--backend-options", "no-ssl", &s.url()]),
        3,
        "unknown backend option",
    );
    let missing = format!("local://{}", s.path("nope").display());
    assert_error(&s.run(MKFS, &[&missing]), 16, "does not exist");

    let auth = s.path("auth");
    std::fs::write(&auth, "[x]\nstorage-url = local://\nbackend-login = a\n").expect("write");
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let auth_arg = auth.to_str().expect("utf-8");
    assert_error(
        &s.run(MKFS, &["--authfile", auth_arg, &s.url()]),
        12,
        "insecure permissions",
    );
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&auth, "[x]\nstorage-url = local://\nfoo = a\n").expect("write");
    assert_error(
        &s.run(MKFS, &["--authfile", auth_arg, &s.url()]),
        2,
        "Unknown key(s)",
    );
}

#[test]
fn cachedir_that_cannot_be_created_is_exit_45() {
    let s = Scratch::new();
    std::fs::write(s.path("file"), b"").expect("write");
    let out = Command::new(MKFS)
        .arg("--cachedir")
        .arg(s.path("file/sub"))
        .arg("--authfile")
        .arg(s.path("none"))
        .arg(s.url())
        .output()
        .expect("run");
    assert_error(&out, 45, "cache directory");
}

#[test]
fn mount_checks_before_mounting() {
    let s = Scratch::new();
    let url = s.url();
    let mnt = s.path("mnt");
    let mnt = mnt.to_str().expect("utf-8");
    let missing = s.path("missing-mnt");
    assert_error(
        &s.run(MOUNT, &[&url, missing.to_str().expect("utf-8")]),
        36,
        "does not exist",
    );
    assert_error(
        &s.run(MOUNT, &[&url, mnt, "-o", "defaults,ro"]),
        35,
        "read-only",
    );
    assert_error(&s.run(MOUNT, &["--log", "none", &url, mnt]), 2, "--fg");
    assert_eq!(
        code(&s.run(MOUNT, &["--allow-other", "--allow-root", &url, mnt])),
        2
    );
    assert_error(
        &s.run(
            MOUNT,
            &["--fg", "--log", "none", "--compress", "rar-3", &url, mnt],
        ),
        2,
        "invalid compression",
    );
    let log = s.path("logfile/sub.log");
    std::fs::write(s.path("logfile"), b"").expect("write");
    assert_error(
        &s.run(MOUNT, &["--log", log.to_str().expect("utf-8"), &url, mnt]),
        10,
        "log file",
    );
}

#[test]
fn umount_refuses_what_is_not_an_s3ql_mount() {
    let s = Scratch::new();
    let out = Command::new(UMOUNT)
        .arg(s.path("mnt"))
        .output()
        .expect("run");
    assert_error(&out, 2, "is not a mount point");
    let out = Command::new(UMOUNT).arg("/proc").output().expect("run");
    assert_error(&out, 2, "is not an s3ql filesystem");
}

/// Whether real FUSE mounts can be made here.
fn fuse_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Path::new("/dev/fuse").exists()
}

fn is_mounted(mnt: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let needle = format!(" {} ", mnt.display());
    table.lines().any(|l| l.contains(&needle))
}

#[test]
fn mkfs_mount_write_umount_remount() {
    let s = Scratch::new();
    let url = s.url();
    let out = s.run(MKFS, &["--plain", &url]);
    if code(&out) != 0 {
        panic!("mkfs failed: {}", stderr(&out));
    }
    assert_error(&s.run(MKFS, &["--plain", &url]), 1, "already exists");
    assert_eq!(
        code(&s.run(MKFS, &["--plain", "--force", "-L", "again", &url])),
        0,
        "mkfs --force"
    );

    if !fuse_available() {
        eprintln!("skipping the mount part: needs root and /dev/fuse");
        return;
    }
    let mnt = s.path("mnt");
    let mnt_s = mnt.to_str().expect("utf-8");
    let log = s.path("mount.log");
    let log_s = log.to_str().expect("utf-8");
    let out = s.run(MOUNT, &["--log", log_s, &url, mnt_s]);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        code(&out),
        0,
        "mount failed: {}\nlog:\n{}",
        stderr(&out),
        log_text()
    );
    assert!(is_mounted(&mnt), "not mounted after mount.s3ql returned");

    // A second mount of the same filesystem is refused.
    let other = s.path("mnt2");
    std::fs::create_dir(&other).expect("mkdir");
    assert_error(
        &s.run(
            MOUNT,
            &["--log", log_s, &url, other.to_str().expect("utf-8")],
        ),
        40,
        "already mounted",
    );

    let data = b"hello s3ql-rs\n".repeat(1000);
    std::fs::write(mnt.join("file"), &data).expect("write through the mount");
    let out = Command::new(UMOUNT).arg(&mnt).output().expect("run umount");
    assert_eq!(
        code(&out),
        0,
        "umount failed: {}\nlog:\n{}",
        stderr(&out),
        log_text()
    );
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "umount printed something"
    );
    assert!(!is_mounted(&mnt), "still mounted after umount.s3ql");

    // Foreground mount, then the data must still be there.
    let mut child = Command::new(MOUNT)
        .args(["--fg", "--log", log_s, "--cachedir"])
        .arg(s.path("cache"))
        .arg("--authfile")
        .arg(s.path("none"))
        .args([&url, mnt_s])
        .spawn()
        .expect("spawn mount --fg");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !is_mounted(&mnt) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("mount --fg exited with {status}\nlog:\n{}", log_text());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mount --fg did not mount in time"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(std::fs::read(mnt.join("file")).expect("read back"), data);
    // SIGINT unmounts cleanly and the daemon exits 0.
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "mount --fg after SIGINT: {status}\nlog:\n{}",
        log_text()
    );
    assert!(!is_mounted(&mnt));
}
