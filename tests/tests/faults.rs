//! A large copy into a mount whose storage fails 5 % of all operations and answers each
//! one with added latency (fault injection through `S3QL_FAULT_INJECTION`, on `s3c://`),
//! then a mount with an empty cache, without faults: every byte matches.
//!
//! This file holds one test only: the variable is set for the whole test process, and
//! every command it starts inherits it.

use std::fs;

use s3ql_tests::harness::{random_bytes, Backend};
use s3ql_tests::{note, TestFs};

#[test]
fn copy_in_with_injected_faults_then_cold_remount() {
    let Some(mut fs) = TestFs::with_backend("copy_in_with_faults", Backend::S3c) else {
        return;
    };
    std::env::set_var(
        "S3QL_FAULT_INJECTION",
        "seed=5,errors=0.05,latency_ms=20,truncate=0",
    );
    fs.mkfs();
    fs.mount();
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| (format!("big-{i}"), random_bytes((6 << 20) + i * 4099)))
        .collect();
    for (name, data) in &files {
        fs::write(fs.mnt.join(name), data).expect("write with faults");
    }
    fs.umount();
    let faults = fs::read_to_string(&fs.log).unwrap_or_default();
    let retried = faults.matches("retrying").count();
    std::env::remove_var("S3QL_FAULT_INJECTION");
    fs.new_cache();
    fs.mount();
    for (name, data) in &files {
        let back = fs::read(fs.mnt.join(name)).expect("read back");
        assert!(back == *data, "{name} differs after the cold remount");
    }
    fs.umount();
    note(&format!(
        "MEASURED copy_in_with_faults: {} MiB in {} files through 5 % injected errors \
         ({retried} retried operations in the mount log), all bytes match after a cold remount",
        files.iter().map(|(_, d)| d.len()).sum::<usize>() >> 20,
        files.len()
    ));
    assert!(retried > 0, "no fault was injected");
}
