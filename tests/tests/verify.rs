//! `s3ql_verify` through the real command (S3QL-CLI.md): exit 0 on an intact filesystem,
//! 46 with a missing and a corrupted object, and the object lists it writes.

use std::fs;
use std::path::Path;
use std::process::Command;

use s3ql_tests::harness::{bin, random_bytes, run, scaled};
use s3ql_tests::TestFs;

/// Runs `s3ql_verify <extra> URL` writing its lists to `<root>/<prefix>-missing.txt` and
/// `-corrupted.txt`.
fn verify(fs: &TestFs, prefix: &str, extra: &[&str]) -> s3ql_tests::harness::Outcome {
    let mut cmd = Command::new(bin("s3ql_verify"));
    cmd.arg("--cachedir")
        .arg(&fs.cache)
        .arg("--authfile")
        .arg(&fs.authfile)
        .arg("--missing-file")
        .arg(fs.root.join(format!("{prefix}-missing.txt")))
        .arg("--corrupted-file")
        .arg(fs.root.join(format!("{prefix}-corrupted.txt")))
        .args(extra)
        .arg(&fs.url);
    run(&mut cmd, scaled(120))
}

/// The lines of a list file (`None` if it was not written).
fn list(path: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(path).ok()?;
    Some(text.lines().map(str::to_owned).collect())
}

#[test]
fn verify_reports_missing_and_corrupted_objects() {
    let Some(mut fs) = TestFs::new("verify_reports_missing_and_corrupted_objects") else {
        return;
    };
    fs.mkfs();
    fs.mount();
    for i in 0..4 {
        fs::write(fs.mnt.join(format!("f{i}")), random_bytes(50_000 + i)).expect("write");
    }
    fs.umount();
    let data: Vec<String> = fs
        .store_objects()
        .into_iter()
        .filter(|n| n.starts_with("s3ql_data_"))
        .collect();
    assert_eq!(data.len(), 4, "one object per file: {data:?}");

    let clean = verify(&fs, "clean", &["--data"]);
    clean.expect_code(0);
    assert!(clean
        .stdout
        .contains("Checked 4 objects: 0 missing, 0 corrupted."));
    assert_eq!(list(&fs.root.join("clean-missing.txt")), None);
    assert_eq!(list(&fs.root.join("clean-corrupted.txt")), None);

    let (missing, corrupted) = (&data[0], &data[1]);
    fs::remove_file(fs.store.join(missing)).expect("delete an object");
    let path = fs.store.join(corrupted);
    let mut bytes = fs::read(&path).expect("read an object");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, bytes).expect("corrupt an object");

    let full = verify(&fs, "full", &["--data"]);
    full.expect_code(46);
    assert!(full
        .stdout
        .contains("Checked 4 objects: 1 missing, 1 corrupted."));
    assert_eq!(
        list(&fs.root.join("full-missing.txt")),
        Some(vec![missing.clone()])
    );
    assert_eq!(
        list(&fs.root.join("full-corrupted.txt")),
        Some(vec![corrupted.clone()])
    );

    // Without --data only existence is checked.
    let quick = verify(&fs, "quick", &[]);
    quick.expect_code(46);
    assert_eq!(
        list(&fs.root.join("quick-missing.txt")),
        Some(vec![missing.clone()])
    );
    assert_eq!(list(&fs.root.join("quick-corrupted.txt")), None);

    // A list file that exists and is not empty is never overwritten.
    verify(&fs, "full", &["--data"]).expect_code(2);
}
