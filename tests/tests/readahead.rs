//! The kernel read-ahead of a mount (platform `readahead`): raised to 1 MiB through each
//! adapter, so that a sequential reader's 1 MiB `read(2)` is one FUSE request, not eight.

use std::process::Command;

use s3ql_tests::{sys, TestFs};

/// `/sys/class/bdi/<major:minor>/read_ahead_kb` of the mount at `fs.mnt`, found with
/// util-linux's `mountpoint -d` (not with the code under test).
fn kernel_readahead_kb(fs: &TestFs) -> String {
    let out = Command::new("mountpoint")
        .arg("-d")
        .arg(&fs.mnt)
        .output()
        .expect("run mountpoint -d");
    assert!(out.status.success(), "mountpoint -d {}", fs.mnt.display());
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_owned()
}

/// Whether sysfs is mounted read-only (as in unprivileged containers), where nobody can
/// change the read-ahead.
fn sysfs_read_only() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .any(|f| f.len() > 3 && f[1] == "/sys" && f[3].split(',').any(|o| o == "ro"))
}

#[test]
fn mounts_raise_the_kernel_readahead_to_one_mib() {
    if sysfs_read_only() {
        s3ql_tests::note("SKIPPED mounts_raise_the_kernel_readahead_to_one_mib: /sys is read-only");
        return;
    }
    // Only root may change it (sysfs); other users keep the kernel's value, by design.
    if sys::euid() == 0 {
        for adapter in ["fuser", "fuse-backend-rs"] {
            let Some(mut fs) = TestFs::new(&format!("readahead_{adapter}")) else {
                return;
            };
            fs.mkfs();
            fs.mount_with(&["--adapter", adapter]);
            assert_eq!(kernel_readahead_kb(&fs), "1024", "adapter {adapter}");
            fs.umount();
        }
    }
}
