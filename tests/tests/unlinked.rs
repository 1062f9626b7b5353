//! An open file stays readable and writable after its last name is removed (DESIGN §11,
//! inode lifetime); once closed it is gone for good, including its data in the backend.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};

use s3ql_tests::harness::{human, random_bytes};
use s3ql_tests::{note, TestFs};

const MIB: usize = 1 << 20;

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("readdir")
        .map(|e| {
            e.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != "lost+found")
        .collect();
    v.sort();
    v
}

#[test]
fn open_unlinked_file() {
    let Some(mut fs) = TestFs::new("open_unlinked_file") else {
        return;
    };
    fs.mkfs();
    fs.mount();
    let keep_data = random_bytes(MIB + 7);
    fs::write(fs.mnt.join("keep"), &keep_data).expect("write keep");

    let victim = fs.mnt.join("victim");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&victim)
        .expect("create victim");
    let mut model = random_bytes(2 * MIB + MIB / 2);
    f.write_all_at(&model, 0).expect("write before unlink");
    fs::remove_file(&victim).expect("unlink victim");
    assert!(
        fs::symlink_metadata(&victim).is_err(),
        "victim still visible after unlink"
    );
    assert_eq!(names(&fs.mnt), ["keep"], "listing after unlink");
    assert_eq!(
        f.metadata().expect("fstat").nlink(),
        0,
        "nlink after unlink"
    );

    // Keep using the handle: append across a block boundary, overwrite inside.
    let more = random_bytes(MIB);
    f.write_all_at(&more, model.len() as u64)
        .expect("write after unlink");
    model.extend_from_slice(&more);
    let patch = b"patched after unlink";
    f.write_all_at(patch, 100).expect("overwrite after unlink");
    model[100..100 + patch.len()].copy_from_slice(patch);
    f.sync_all().expect("fsync unlinked file");
    assert_eq!(
        f.metadata().expect("fstat").len(),
        model.len() as u64,
        "size of unlinked file"
    );

    // A new file under the old name is a different inode.
    fs::write(&victim, b"new file").expect("create new victim");
    let mut back = vec![0u8; model.len()];
    f.read_exact_at(&mut back, 0)
        .expect("read unlinked file back");
    assert!(back == model, "unlinked file reads back different bytes");
    drop(f);
    assert_eq!(
        fs::read(&victim).expect("read new victim"),
        b"new file",
        "new file under the old name"
    );
    fs.umount();

    // The unlinked file's 3.5 MiB of random data must not stay in the backend.
    let stored = fs.store_size();
    note(&format!(
        "MEASURED open_unlinked_file: store holds {} after umount (live data: {} + 8 bytes)",
        human(stored),
        human(keep_data.len() as u64)
    ));
    assert!(
        stored < (keep_data.len() + 2 * MIB) as u64,
        "store holds {}: the closed unlinked file's data seems to have leaked",
        human(stored)
    );

    fs.new_cache();
    fs.mount();
    assert_eq!(names(&fs.mnt), ["keep", "victim"], "listing after remount");
    assert!(
        fs::read(fs.mnt.join("keep")).expect("read keep") == keep_data,
        "keep differs after remount"
    );
    assert_eq!(fs::read(&victim).expect("read victim"), b"new file");
    fs.umount();
}
