//! Drives the real `mkfs.s3ql`, `mount.s3ql` and `umount.s3ql` (and the commands that act on
//! a mounted filesystem, [`tool`]) against `local://` storage in a temporary directory, or
//! against `s3c://` on an embedded S3 server ([`Backend::S3c`]).
//!
//! Where the commands come from: `$S3QL_BIN_DIR` if set; otherwise the cargo target directory
//! this test executable was built into (`target/<profile>/`, found from the executable's own
//! path, so `CARGO_TARGET_DIR` and `--release` work); otherwise
//! `$CARGO_MANIFEST_DIR/../target/debug`. Cargo does not build another package's binaries for
//! these tests: run `cargo build --workspace --bins` first (ci/test.sh does).
//!
//! Every command runs with a timeout, so a hang fails the test instead of blocking CI, and
//! every test has a watchdog (default 600 s): when it fires it aborts the FUSE connection
//! (blocked system calls then fail with ENOTCONN) and, if the test still does not finish,
//! ends the test process. A [`TestFs`] that is dropped while mounted (a failed test) is
//! unmounted lazily (`fusermount3 -u -z`) and its daemon is waited for, then killed.
//!
//! Environment: `S3QL_BIN_DIR` (see above), `S3QL_TEST_TIMEOUT_SCALE` (multiplies every
//! timeout, e.g. `3` on a slow machine), `S3QL_TEST_KEEP=1` (keep the temporary directory of a
//! failed test and print its path), `S3QL_TESTS_REQUIRE_FUSE=1` (a missing /dev/fuse or
//! missing root privileges fail the tests instead of skipping them; CI sets it).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::s3server::{S3Server, ACCESS_KEY, SECRET_KEY};
use crate::sys;

/// Writes a line straight to the process's stderr, bypassing the test harness's output
/// capture, so that skip reasons and measured figures appear in every `cargo test` run.
pub fn note(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{msg}");
}

/// A timeout multiplied by `$S3QL_TEST_TIMEOUT_SCALE`.
pub fn scaled(secs: u64) -> Duration {
    let scale = std::env::var("S3QL_TEST_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs as f64 * scale)
}

/// Timeouts of the individual commands, in seconds before scaling.
const MKFS_TIMEOUT: u64 = 60;
const MOUNT_TIMEOUT: u64 = 60;
const UMOUNT_TIMEOUT: u64 = 300;
const TEST_DEADLINE: u64 = 600;

/// The directory holding the s3ql-rs commands.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("S3QL_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test executable>
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            if profile_dir.join("mkfs.s3ql").exists() {
                return profile_dir.to_owned();
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug")
}

/// The path of one s3ql-rs command; panics with instructions when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first, or point \
         S3QL_BIN_DIR at the directory holding mkfs.s3ql, mount.s3ql and umount.s3ql",
        path.display()
    );
    path
}

/// Why real-mount tests cannot run here, or `None` if they can.
pub fn fuse_unavailable() -> Option<String> {
    if sys::euid() != 0 {
        return Some(format!(
            "not running as root (euid {}): the tests chown to other users and mknod devices",
            sys::euid()
        ));
    }
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/fuse cannot be opened: {e}")),
    }
}

/// Returns true if the test may run. Otherwise prints why it is skipped (visible without
/// `--nocapture`) and returns false; with `S3QL_TESTS_REQUIRE_FUSE=1` it panics instead.
pub fn fuse_tests_enabled(test: &str) -> bool {
    match fuse_unavailable() {
        None => true,
        Some(reason) => {
            if std::env::var_os("S3QL_TESTS_REQUIRE_FUSE").is_some_and(|v| v == "1") {
                panic!("{test}: {reason} (and S3QL_TESTS_REQUIRE_FUSE=1)");
            }
            note(&format!("SKIPPED {test}: {reason}"));
            false
        }
    }
}

/// The result of a finished command.
#[derive(Debug)]
pub struct Outcome {
    /// What was run, for messages.
    pub what: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Outcome {
    /// The exit code, or `None` if a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the command's output unless it exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "{} exited with {} instead of {code}\n{}",
            self.what,
            self.status,
            self.output()
        );
        self
    }

    /// Panics with the command's output unless it exited with 0.
    pub fn expect_success(&self) -> &Self {
        self.expect_code(0)
    }

    /// stdout and stderr, labelled, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion with stdin from /dev/null and stdout/stderr into anonymous
/// files (not pipes: a daemon that inherits them must not keep this call waiting). Kills it
/// and panics if it takes longer than `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Outcome {
    run_with_stdin(cmd, Stdio::null(), timeout)
}

/// Like [`run`], with `input` on standard input (from an anonymous file, so a command that
/// reads less than all of it never blocks, and one that reads more gets end of input).
pub fn run_with_input(cmd: &mut Command, input: &str, timeout: Duration) -> Outcome {
    let mut file = tempfile::tempfile().expect("create temporary file for stdin");
    file.write_all(input.as_bytes()).expect("write stdin file");
    file.seek(SeekFrom::Start(0)).expect("rewind stdin file");
    run_with_stdin(cmd, Stdio::from(file), timeout)
}

fn run_with_stdin(cmd: &mut Command, stdin: Stdio, timeout: Duration) -> Outcome {
    let what = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("create temporary file for stdout");
    let mut err = tempfile::tempfile().expect("create temporary file for stderr");
    cmd.stdin(stdin)
        .stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"));
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {:?}; it was killed\n{}",
                timeout,
                read_both(&mut out, &mut err)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (read_all(&mut out), read_all(&mut err));
    Outcome {
        what,
        status,
        stdout,
        stderr,
    }
}

fn read_all(f: &mut File) -> String {
    let mut buf = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

fn read_both(out: &mut File, err: &mut File) -> String {
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}--------------",
        read_all(out),
        read_all(err)
    )
}

/// Timeout of the commands that act on a mounted filesystem (s3qlcp, s3qlctrl, ...).
const TOOL_TIMEOUT: u64 = 300;

/// Runs the s3ql-rs command `name` (e.g. `s3qlcp`) with `args` and returns the outcome
/// (no checks); `as_user` runs it as that user through `runuser`.
pub fn tool(name: &str, args: &[&OsStr], as_user: Option<&str>) -> Outcome {
    let mut cmd = match as_user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(bin(name));
            c
        }
        None => Command::new(bin(name)),
    };
    cmd.args(args);
    run(&mut cmd, scaled(TOOL_TIMEOUT))
}

/// Decodes the octal escapes (`\040` etc.) of a /proc/mounts field.
fn unescape_mount_field(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The /proc/mounts line (fsname, fstype) of the mount at `path`, if any (the last one).
pub fn mount_entry(path: &Path) -> Option<(String, String)> {
    let mounts = fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    let want = path.as_os_str().as_bytes();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 3 && unescape_mount_field(f[1]) == want)
                .then(|| (f[0].to_owned(), f[2].to_owned()))
        })
        .next_back()
}

/// Whether something is mounted at `path`.
pub fn is_mounted(path: &Path) -> bool {
    mount_entry(path).is_some()
}

/// Whether process `pid` still runs (a zombie counts as ended).
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
    }
}

/// Lazily detaches whatever is mounted at `path` (`fusermount3 -u -z`, else `umount -l`).
pub fn lazy_unmount(path: &Path) {
    for (prog, args) in [
        ("fusermount3", &["-u", "-z"][..]),
        ("fusermount", &["-u", "-z"][..]),
        ("umount", &["-l"][..]),
    ] {
        let ok = Command::new(prog)
            .args(args)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok || !is_mounted(path) {
            return;
        }
    }
}

/// Aborts the FUSE connection with device number `dev` through fusectl (mounting fusectl at
/// /sys/fs/fuse/connections if needed). Every request blocked on it fails with ENOTCONN.
fn abort_fuse_connection(dev: u64) {
    let conn = Path::new("/sys/fs/fuse/connections");
    if !conn.join(dev.to_string()).exists() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(conn)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = fs::write(conn.join(dev.to_string()).join("abort"), b"1");
}

/// Fires if a test runs longer than its deadline: aborts the FUSE connection so that the
/// test's blocked system calls fail, then, if the test still does not end, exits the process.
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    state: std::sync::Arc<std::sync::Mutex<(Option<u64>, Option<i32>)>>,
}

impl Watchdog {
    fn start(test: String, deadline: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let state = std::sync::Arc::new(std::sync::Mutex::new((None::<u64>, None::<i32>)));
        let st = state.clone();
        thread::spawn(move || {
            if !matches!(
                rx.recv_timeout(deadline),
                Err(mpsc::RecvTimeoutError::Timeout)
            ) {
                return;
            }
            let (dev, pid) = *st.lock().unwrap_or_else(|p| p.into_inner());
            note(&format!(
                "WATCHDOG {test}: still running after {deadline:?}; aborting its FUSE connection \
                 (dev {dev:?}) and killing its daemon (pid {pid:?})"
            ));
            if let Some(dev) = dev {
                abort_fuse_connection(dev);
            }
            if let Some(pid) = pid {
                // SAFETY: plain kill(2) of the daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if matches!(
                rx.recv_timeout(scaled(60)),
                Err(mpsc::RecvTimeoutError::Timeout)
            ) {
                note(&format!(
                    "WATCHDOG {test}: did not end 60 s after its FUSE connection was aborted; exiting"
                ));
                std::process::exit(101);
            }
        });
        Watchdog {
            done: Some(tx),
            state,
        }
    }

    fn set(&self, dev: Option<u64>, pid: Option<i32>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (dev, pid);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

/// One filesystem under test: a temporary directory with `store/` (the `local://` backend),
/// `cache-<n>/` (the cache directory of the n-th cache generation), `mnt/`, the mount log
/// and a (non-existing, i.e. empty) authfile.
pub struct TestFs {
    /// Name of the test, for messages.
    pub name: String,
    tmp: Option<tempfile::TempDir>,
    /// The temporary directory holding everything.
    pub root: PathBuf,
    /// The backend directory (the bucket's directory for `s3c://`).
    pub store: PathBuf,
    /// The current cache directory.
    pub cache: PathBuf,
    /// The mount point.
    pub mnt: PathBuf,
    /// The storage URL (`local://<store>` or `s3c://...`).
    pub url: String,
    /// Passed as `--authfile`; for `local://` it does not exist unless a test creates it.
    pub authfile: PathBuf,
    /// The daemon's log (`--log`).
    pub log: PathBuf,
    /// Environment variables for `mount.s3ql` and so its daemon (e.g.
    /// `S3QL_FAULT_INJECTION`, which then affects this filesystem's mounts only).
    pub mount_env: Vec<(String, String)>,
    cache_gen: u32,
    mounted: bool,
    daemon_pid: Option<i32>,
    watchdog: Watchdog,
    /// The S3 server of an `s3c://` filesystem (dropped after the unmount in `Drop`).
    s3: Option<S3Server>,
}

/// The backend a [`TestFs`] is created on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `local://<root>/store`.
    Local,
    /// `s3c://127.0.0.1:<port>/bucket` on an embedded s3s-fs server (see
    /// [`crate::s3server`]) whose data lives in `<root>/s3`; `store` is the bucket's
    /// directory and the authfile holds the credentials and `backend-options: no-ssl`.
    S3c,
}

impl Backend {
    /// The backend named by `$S3QL_TEST_BACKEND` (`local`, the default, or `s3c`).
    pub fn from_env() -> Backend {
        match std::env::var("S3QL_TEST_BACKEND").as_deref() {
            Ok("s3c") => Backend::S3c,
            _ => Backend::Local,
        }
    }
}

impl TestFs {
    /// Creates the directories, or returns `None` (after printing why) when real mounts are
    /// not possible on this machine.
    pub fn new(test: &str) -> Option<TestFs> {
        Self::with_backend(test, Backend::Local)
    }

    /// Like [`TestFs::new`], on `backend`.
    pub fn with_backend(test: &str, backend: Backend) -> Option<TestFs> {
        if !fuse_tests_enabled(test) {
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("s3ql-test-{test}-"))
            .tempdir()
            .expect("create temporary directory");
        let root = tmp.path().canonicalize().expect("canonicalize tempdir");
        let cache = root.join("cache-0");
        let mnt = root.join("mnt");
        for d in [&cache, &mnt] {
            fs::create_dir(d).expect("create test directory");
        }
        let authfile = root.join("authinfo2");
        let (store, url, s3) = match backend {
            Backend::Local => {
                let store = root.join("store");
                fs::create_dir(&store).expect("create store directory");
                let url = format!("local://{}", store.display());
                (store, url, None)
            }
            Backend::S3c => {
                let data = root.join("s3");
                fs::create_dir(&data).expect("create S3 data directory");
                let server = S3Server::start(&data).expect("start the S3 server");
                server.create_bucket("bucket").expect("create bucket");
                let auth: String = ["s3c", "s3c4"]
                    .iter()
                    .map(|scheme| {
                        format!(
                            "[{scheme}]\nstorage-url: {scheme}://\nbackend-login: {ACCESS_KEY}\n\
                             backend-password: {SECRET_KEY}\nbackend-options: no-ssl\n"
                        )
                    })
                    .collect();
                fs::write(&authfile, auth).expect("write authfile");
                sys::chmod(&authfile, 0o600).expect("chmod authfile");
                let url = format!("s3c://127.0.0.1:{}/bucket", server.port());
                (data.join("bucket"), url, Some(server))
            }
        };
        Some(TestFs {
            name: test.to_owned(),
            url,
            authfile,
            log: root.join("mount.log"),
            tmp: Some(tmp),
            root,
            store,
            cache,
            mnt,
            mount_env: Vec::new(),
            cache_gen: 0,
            mounted: false,
            daemon_pid: None,
            watchdog: Watchdog::start(test.to_owned(), scaled(TEST_DEADLINE)),
            s3,
        })
    }

    /// The S3 server of an [`Backend::S3c`] filesystem (to stop and restart it).
    pub fn s3_server(&mut self) -> Option<&mut S3Server> {
        self.s3.as_mut()
    }

    /// Options every URL command gets: the cache directory and the authfile.
    fn common_args(&self) -> Vec<OsString> {
        vec![
            "--cachedir".into(),
            self.cache.clone().into(),
            "--authfile".into(),
            self.authfile.clone().into(),
        ]
    }

    /// Runs `mkfs.s3ql --plain <extra> URL` and returns the outcome.
    pub fn mkfs_cmd(&self, extra: &[&str]) -> Outcome {
        let mut cmd = Command::new(bin("mkfs.s3ql"));
        cmd.arg("--plain")
            .args(self.common_args())
            .args(extra)
            .arg(&self.url);
        run(&mut cmd, scaled(MKFS_TIMEOUT))
    }

    /// `mkfs.s3ql --plain URL`, which must succeed.
    pub fn mkfs(&self) {
        self.mkfs_cmd(&[]).expect_success();
    }

    /// Runs `mount.s3ql <extra> URL <mountpoint>` and returns the outcome. If it reports
    /// success, or something got mounted anyway, the mount is recorded (so that `Drop`
    /// cleans it up).
    pub fn mount_cmd(&mut self, extra: &[&str], mountpoint: &Path) -> Outcome {
        assert!(!self.mounted, "{}: already mounted", self.name);
        let mut cmd = Command::new(bin("mount.s3ql"));
        cmd.args(self.common_args())
            .arg("--log")
            .arg(&self.log)
            .args(extra)
            .arg(&self.url)
            .arg(mountpoint)
            .envs(self.mount_env.iter().map(|(k, v)| (k, v)));
        let out = run(&mut cmd, scaled(MOUNT_TIMEOUT));
        if mountpoint == self.mnt && is_mounted(&self.mnt) {
            self.mounted = true;
            self.find_daemon();
        }
        out
    }

    /// Mounts at `mnt` (which must succeed and leave a FUSE mount in place).
    pub fn mount(&mut self) {
        self.mount_with(&[]);
    }

    /// Mounts at `mnt` with extra options.
    pub fn mount_with(&mut self, extra: &[&str]) {
        let mnt = self.mnt.clone();
        let out = self.mount_cmd(extra, &mnt);
        if out.code() != Some(0) {
            panic!(
                "{}: {} exited with {}\n{}\n--- mount log ---\n{}",
                self.name,
                out.what,
                out.status,
                out.output(),
                self.log_tail(80)
            );
        }
        let entry = mount_entry(&self.mnt);
        assert!(
            entry.is_some(),
            "{}: mount.s3ql exited 0 but nothing is mounted at {}\n--- mount log ---\n{}",
            self.name,
            self.mnt.display(),
            self.log_tail(80)
        );
        let (_, fstype) = entry.unwrap_or_default();
        assert!(
            fstype.starts_with("fuse"),
            "{}: {} is mounted with type {fstype}, not fuse*",
            self.name,
            self.mnt.display()
        );
    }

    /// Finds the daemon: through the control file's `s3ql_pid?` attribute, else by looking
    /// for a `mount.s3ql` process naming our mount point.
    fn find_daemon(&mut self) {
        let dev = fs::metadata(&self.mnt).ok().map(|m| m.dev());
        let ctrl = self.mnt.join(".__s3ql__ctrl__");
        let from_xattr = sys::get_xattr(&ctrl, b"s3ql_pid?")
            .ok()
            .and_then(|v| String::from_utf8_lossy(&v).trim().parse::<i32>().ok());
        self.daemon_pid = from_xattr.or_else(|| self.find_daemon_in_proc());
        if from_xattr.is_none() {
            note(&format!(
                "{}: note: getxattr({}, s3ql_pid?) gave no pid; found the daemon in /proc: {:?}",
                self.name,
                ctrl.display(),
                self.daemon_pid
            ));
        }
        self.watchdog.set(dev, self.daemon_pid);
    }

    fn find_daemon_in_proc(&self) -> Option<i32> {
        let want = self.mnt.as_os_str().as_bytes();
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_mount = args
                .first()
                .is_some_and(|a| a.ends_with(b"mount.s3ql") && !a.ends_with(b"umount.s3ql"));
            if is_mount && args.contains(&want) && process_alive(pid) {
                return Some(pid);
            }
        }
        None
    }

    /// The daemon's pid, if known.
    pub fn daemon_pid(&self) -> Option<i32> {
        self.daemon_pid
    }

    /// Runs `umount.s3ql <path>` and returns the outcome (no checks).
    pub fn umount_cmd(&self, path: &Path) -> Outcome {
        let mut cmd = Command::new(bin("umount.s3ql"));
        cmd.arg(path);
        run(&mut cmd, scaled(UMOUNT_TIMEOUT))
    }

    /// `umount.s3ql mnt`: must exit 0, leave nothing mounted, and return only after the
    /// daemon has exited.
    pub fn umount(&mut self) {
        assert!(self.mounted, "{}: umount without mount", self.name);
        let start = Instant::now();
        let out = self.umount_cmd(&self.mnt.clone());
        if out.code() != Some(0) {
            panic!(
                "{}: {} exited with {}\n{}\n--- mount log ---\n{}",
                self.name,
                out.what,
                out.status,
                out.output(),
                self.log_tail(80)
            );
        }
        assert!(
            !is_mounted(&self.mnt),
            "{}: umount.s3ql exited 0 but {} is still mounted",
            self.name,
            self.mnt.display()
        );
        self.mounted = false;
        if let Some(pid) = self.daemon_pid.take() {
            assert!(
                !process_alive(pid),
                "{}: umount.s3ql returned while the mount daemon (pid {pid}) is still running",
                self.name
            );
        }
        self.watchdog.set(None, None);
        note(&format!(
            "{}: umount.s3ql took {:.1} s",
            self.name,
            start.elapsed().as_secs_f64()
        ));
    }

    /// Runs `fsck.s3ql <extra> URL` with this filesystem's cache directory and authfile.
    pub fn fsck_cmd(&self, extra: &[&str]) -> Outcome {
        let mut cmd = Command::new(bin("fsck.s3ql"));
        cmd.args(self.common_args())
            .arg("--log")
            .arg(self.root.join("fsck.log"))
            .args(extra)
            .arg(&self.url)
            .stdin(Stdio::null());
        run(&mut cmd, scaled(UMOUNT_TIMEOUT))
    }

    /// Runs `s3qladm <cachedir, authfile> ACTION URL` with `input` on standard input (`url`
    /// may be another spelling of [`TestFs::url`]).
    pub fn adm_cmd(&self, action: &str, url: &str, input: &str) -> Outcome {
        let mut cmd = Command::new(bin("s3qladm"));
        cmd.args(self.common_args()).arg(action).arg(url);
        run_with_input(&mut cmd, input, scaled(UMOUNT_TIMEOUT))
    }

    /// Simulates a crash: `kill -9` of the mount daemon, then a lazy unmount of the dead
    /// mount. The cache and the mount lock stay as the daemon left them.
    pub fn kill_mount(&mut self) {
        let pid = self.daemon_pid.take().expect("daemon pid of the mount");
        // SAFETY: sending a signal has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let start = Instant::now();
        while process_alive(pid) && start.elapsed() < scaled(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
        lazy_unmount(&self.mnt);
        self.mounted = false;
        self.watchdog.set(None, None);
    }

    /// Switches to a new, empty cache directory (the next mount must fetch everything from
    /// the backend).
    pub fn new_cache(&mut self) {
        assert!(!self.mounted, "{}: new_cache while mounted", self.name);
        self.cache_gen += 1;
        self.cache = self.root.join(format!("cache-{}", self.cache_gen));
        fs::create_dir(&self.cache).expect("create cache directory");
    }

    /// Whether this filesystem is mounted (as far as the harness knows).
    pub fn is_mounted(&self) -> bool {
        self.mounted
    }

    /// Sum of the sizes of all files under the store directory.
    pub fn store_size(&self) -> u64 {
        dir_size(&self.store)
    }

    /// Names of the objects in the store (relative paths), sorted.
    pub fn store_objects(&self) -> Vec<String> {
        let mut v = Vec::new();
        list_files(&self.store, &self.store, &mut v);
        v.sort();
        v
    }

    /// The last `lines` lines of the mount log.
    pub fn log_tail(&self, lines: usize) -> String {
        match fs::read(&self.log) {
            Err(e) => format!("(no mount log at {}: {e})", self.log.display()),
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                let all: Vec<&str> = s.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
        }
    }

    /// Writes `content` to the authfile with the given mode.
    pub fn write_authfile(&self, content: &str, mode: u32) {
        fs::write(&self.authfile, content).expect("write authfile");
        sys::chmod(&self.authfile, mode).expect("chmod authfile");
    }
}

impl Drop for TestFs {
    fn drop(&mut self) {
        let failed = thread::panicking();
        if self.mounted || is_mounted(&self.mnt) {
            note(&format!(
                "{}: cleaning up: lazily unmounting {}",
                self.name,
                self.mnt.display()
            ));
            lazy_unmount(&self.mnt);
            if let Some(pid) = self.daemon_pid {
                let start = Instant::now();
                while process_alive(pid) && start.elapsed() < scaled(20) {
                    thread::sleep(Duration::from_millis(100));
                }
                if process_alive(pid) {
                    note(&format!(
                        "{}: daemon pid {pid} still running 20 s after the lazy unmount; killing it",
                        self.name
                    ));
                    // SAFETY: plain kill(2) of the daemon this test started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if failed {
            note(&format!(
                "{}: FAILED; last lines of the mount log:\n{}",
                self.name,
                self.log_tail(60)
            ));
            if std::env::var_os("S3QL_TEST_KEEP").is_some_and(|v| v == "1") {
                if let Some(tmp) = self.tmp.take() {
                    let p = tmp.keep();
                    note(&format!("{}: kept {}", self.name, p.display()));
                }
            }
        }
    }
}

/// Sum of the sizes of the regular files below `dir` (not following symlinks).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                total += dir_size(&e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    total
}

fn list_files(base: &Path, dir: &Path, out: &mut Vec<String>) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                list_files(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap_or(&p);
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
}

/// Formats a byte count as "N bytes (X.XX MiB)".
pub fn human(bytes: u64) -> String {
    format!(
        "{bytes} bytes ({:.2} MiB)",
        bytes as f64 / (1024.0 * 1024.0)
    )
}

/// `n` random bytes from the kernel (fast enough for tens of MiB in debug builds).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf
}

/// `OsStr` from bytes.
pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}
