//! Starting and stopping mounts the way the system does: `mount -t s3ql` and plain
//! `umount` (mount(8) runs `/sbin/mount.s3ql`), an fstab line (`mount -T FSTAB MOUNTPOINT`,
//! with `_netdev`, so that `umount` runs `/sbin/umount.fuse.s3ql`, i.e. umount.s3ql, and
//! waits for the upload), and systemd's `Type=notify` protocol (`mount.s3ql --systemd`:
//! `READY=1` once mounted, SIGTERM unmounts and uploads, `STOPPING=1`, exit 0).
//!
//! mount(8) and umount(8) look for helpers in /sbin only: the tests link
//! `/sbin/mount.s3ql` and `/sbin/umount.fuse.s3ql` to the built commands if they are absent
//! and remove the links after the last test that needed them.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use s3ql_tests::harness::{bin, is_mounted, mount_entry, process_alive, random_bytes, run, scaled};
use s3ql_tests::{note, sys, TestFs};

/// The helpers mount(8) and umount(8) run, and the commands they must lead to.
const HELPERS: [(&str, &str); 2] = [
    ("/sbin/mount.s3ql", "mount.s3ql"),
    ("/sbin/umount.fuse.s3ql", "umount.fuse.s3ql"),
];

/// Tests using the /sbin links, and the links the tests created.
static LINKS: Mutex<(usize, Vec<PathBuf>)> = Mutex::new((0, Vec::new()));

/// Holds the /sbin helper links for one test; the last holder removes the links the tests
/// created.
struct Helpers;

impl Helpers {
    /// Creates the missing links. Returns `None` (after saying why) if a helper exists but
    /// leads to another program, which the test would then exercise instead of this build.
    fn install(test: &str) -> Option<Helpers> {
        let mut links = LINKS.lock().unwrap_or_else(|e| e.into_inner());
        for (link, command) in HELPERS {
            let target = bin(command);
            let link = Path::new(link);
            if link.symlink_metadata().is_ok() {
                let same = fs::canonicalize(link).ok() == fs::canonicalize(&target).ok();
                if !same {
                    note(&format!(
                        "SKIPPED {test}: {} exists and does not lead to {}",
                        link.display(),
                        target.display()
                    ));
                    return None;
                }
                continue;
            }
            std::os::unix::fs::symlink(&target, link)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", link.display()));
            links.1.push(link.to_owned());
        }
        links.0 += 1;
        Some(Helpers)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        let mut links = LINKS.lock().unwrap_or_else(|e| e.into_inner());
        links.0 -= 1;
        if links.0 == 0 {
            for link in links.1.drain(..) {
                let _ = fs::remove_file(link);
            }
        }
    }
}

/// The daemon's pid, from the control file.
fn daemon_pid(mnt: &Path) -> i32 {
    let raw = sys::get_xattr(&mnt.join(".__s3ql__ctrl__"), b"s3ql_pid?").expect("s3ql_pid?");
    String::from_utf8_lossy(&raw)
        .trim()
        .parse()
        .expect("numeric pid")
}

/// Waits until process `pid` has ended; false if it still runs after `timeout`.
fn wait_for_exit(pid: i32, timeout: Duration) -> bool {
    let start = Instant::now();
    while process_alive(pid) {
        if start.elapsed() > timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The options field of the /proc/mounts line of `mnt`.
fn mount_options(mnt: &Path) -> String {
    let mounts = fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    let want = mnt.to_str().expect("UTF-8 mount point");
    mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .rfind(|f| f.len() > 3 && f[1] == want)
        .map(|f| f[3].to_owned())
        .unwrap_or_default()
}

/// Checks that `mnt` is an s3ql mount named after the filesystem's canonical URL.
fn assert_s3ql_mount(fs: &TestFs) {
    let (source, fstype) = mount_entry(&fs.mnt).unwrap_or_else(|| {
        panic!(
            "{}: nothing is mounted at {}\n--- mount log ---\n{}",
            fs.name,
            fs.mnt.display(),
            fs.log_tail(40)
        )
    });
    assert_eq!(fstype, "fuse.s3ql", "{}: type in /proc/mounts", fs.name);
    assert_eq!(source, format!("{}/", fs.url), "{}: source", fs.name);
}

/// Mounts with an empty cache (so every byte comes from the store) and checks `name`.
fn assert_stored(fs: &mut TestFs, name: &str, data: &[u8]) {
    fs.new_cache();
    fs.mount();
    let back = fs::read(fs.mnt.join(name)).expect("read back");
    assert!(back == data, "{}: {name} differs after remount", fs.name);
    fs.umount();
}

/// Slow storage for the mount(8) tests (each request answered after up to 300 ms), so
/// that the upload at unmount takes long enough to tell whether `umount` waited for it.
const SLOW_STORAGE: (&str, &str) = (
    "S3QL_FAULT_INJECTION",
    "seed=1,errors=0,latency_ms=300,truncate=0",
);

/// `-o` words shared by the mount(8) tests.
fn o_list(fs: &TestFs) -> String {
    format!(
        "cachedir={},authfile={},log={}",
        fs.cache.display(),
        fs.authfile.display(),
        fs.log.display()
    )
}

#[test]
fn mount_t_s3ql_then_plain_umount() {
    let test = "mount_t_s3ql_then_plain_umount";
    let Some(mut fs) = TestFs::new(test) else {
        return;
    };
    let Some(_helpers) = Helpers::install(test) else {
        return;
    };
    fs.mkfs();
    let mut mount = Command::new("mount");
    mount
        .args(["-t", "s3ql", &fs.url])
        .arg(&fs.mnt)
        .args(["-o", &o_list(&fs)])
        .env(SLOW_STORAGE.0, SLOW_STORAGE.1);
    run(&mut mount, scaled(60)).expect_success();
    assert_s3ql_mount(&fs);

    let data = random_bytes(3 << 20);
    fs::write(fs.mnt.join("file"), &data).expect("write");
    let pid = daemon_pid(&fs.mnt);
    let start = Instant::now();
    run(Command::new("umount").arg(&fs.mnt), scaled(300)).expect_success();
    assert!(!is_mounted(&fs.mnt), "{test}: still mounted after umount");
    let umount_secs = start.elapsed().as_secs_f64();
    let running = process_alive(pid);
    // Without a utab entry umount(8) does not run the helper: it returns at once and the
    // daemon, told by the kernel, uploads everything before it exits.
    assert!(
        wait_for_exit(pid, scaled(300)),
        "{test}: the daemon (pid {pid}) still runs 300 s after umount\n{}",
        fs.log_tail(40)
    );
    note(&format!(
        "{test}: umount returned after {umount_secs:.1} s (daemon {}), the daemon exited after {:.1} s",
        if running { "still uploading" } else { "already gone" },
        start.elapsed().as_secs_f64()
    ));
    assert_stored(&mut fs, "file", &data);
}

#[test]
fn fstab_line_and_umount_wait_for_upload() {
    let test = "fstab_line_and_umount_wait_for_upload";
    let Some(mut fs) = TestFs::new(test) else {
        return;
    };
    let Some(_helpers) = Helpers::install(test) else {
        return;
    };
    fs.mkfs();
    let fstab = fs.root.join("fstab");
    let line = format!(
        "{} {} s3ql rw,_netdev,noauto,allow_other,compress=zlib-1,{} 0 0\n",
        fs.url,
        fs.mnt.display(),
        o_list(&fs)
    );
    fs::write(&fstab, format!("# s3ql-rs test fstab\n{line}")).expect("write fstab");
    run(
        Command::new("mount")
            .arg("-T")
            .arg(&fstab)
            .arg(&fs.mnt)
            .env(SLOW_STORAGE.0, SLOW_STORAGE.1),
        scaled(60),
    )
    .expect_success();
    assert_s3ql_mount(&fs);
    let options = mount_options(&fs.mnt);
    assert!(
        options.split(',').any(|o| o == "allow_other"),
        "{test}: allow_other missing from the mount options {options}"
    );

    let data = random_bytes(3 << 20);
    fs::write(fs.mnt.join("file"), &data).expect("write");
    let pid = daemon_pid(&fs.mnt);
    // `_netdev` gives the mount a utab entry, so umount(8) runs umount.fuse.s3ql, which
    // returns only after the daemon has uploaded everything and exited.
    let start = Instant::now();
    run(Command::new("umount").arg(&fs.mnt), scaled(300)).expect_success();
    note(&format!(
        "{test}: umount (through umount.fuse.s3ql) took {:.1} s",
        start.elapsed().as_secs_f64()
    ));
    assert!(!is_mounted(&fs.mnt), "{test}: still mounted after umount");
    assert!(
        !process_alive(pid),
        "{test}: umount returned while the daemon (pid {pid}) still runs: the umount.fuse.s3ql helper was not used"
    );
    assert_stored(&mut fs, "file", &data);
}

/// A child process that is killed if the test ends early.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The next notification on `sock`, as text.
fn next_notification(sock: &UnixDatagram, fs: &TestFs) -> String {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "{}: no notification from mount.s3ql --systemd: {e}\n--- mount log ---\n{}",
            fs.name,
            fs.log_tail(40)
        ),
    }
}

#[test]
fn systemd_notify_and_sigterm() {
    let test = "systemd_notify_and_sigterm";
    let Some(mut fs) = TestFs::new(test) else {
        return;
    };
    fs.mkfs();
    let sock_path = fs.root.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(scaled(120)))
        .expect("socket timeout");
    let child = Command::new(bin("mount.s3ql"))
        .arg("--systemd")
        .arg("--cachedir")
        .arg(&fs.cache)
        .arg("--authfile")
        .arg(&fs.authfile)
        .arg("--log")
        .arg(&fs.log)
        .arg(&fs.url)
        .arg(&fs.mnt)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mount.s3ql --systemd");
    let mut daemon = Daemon(child);

    let ready = next_notification(&sock, &fs);
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "{test}: first notification {ready:?}"
    );
    // READY=1 comes only once the mount is in place.
    assert_s3ql_mount(&fs);
    assert_eq!(
        daemon_pid(&fs.mnt),
        daemon.0.id() as i32,
        "{test}: --systemd must not fork"
    );
    let data = random_bytes(3 << 20);
    fs::write(fs.mnt.join("file"), &data).expect("write");

    // systemctl stop: SIGTERM to the main process.
    // SAFETY: kill(2) of the child this test started.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    let stopping = next_notification(&sock, &fs);
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "{test}: notification after SIGTERM {stopping:?}"
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = daemon.0.try_wait().expect("waitpid") {
            break status;
        }
        assert!(
            start.elapsed() < scaled(300),
            "{test}: mount.s3ql --systemd still runs 300 s after SIGTERM\n{}",
            fs.log_tail(40)
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{test}: mount.s3ql --systemd exited with {status} after SIGTERM\n{}",
        fs.log_tail(40)
    );
    assert!(!is_mounted(&fs.mnt), "{test}: still mounted after SIGTERM");
    assert_stored(&mut fs, "file", &data);
}

#[test]
fn systemd_without_notify_socket_is_a_usage_error() {
    let test = "systemd_without_notify_socket_is_a_usage_error";
    let Some(fs) = TestFs::new(test) else {
        return;
    };
    let mut cmd = Command::new(bin("mount.s3ql"));
    cmd.args(["--systemd", "--log", "none", "--cachedir"])
        .arg(&fs.cache)
        .arg(&fs.url)
        .arg(&fs.mnt)
        .env_remove("NOTIFY_SOCKET");
    let out = run(&mut cmd, scaled(60));
    out.expect_code(2);
    assert!(out.stderr.contains("NOTIFY_SOCKET"), "{}", out.output());
    assert!(!is_mounted(&fs.mnt), "{test}: mounted anyway");
}
