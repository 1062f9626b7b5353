//! What reaches the backend: identical blocks are stored once, holes are not stored at all.
//! Both tests print the measured store size.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};

use s3ql_tests::harness::{human, random_bytes};
use s3ql_tests::{note, TestFs};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[test]
fn dedup_four_copies() {
    let Some(mut fs) = TestFs::new("dedup_four_copies") else {
        return;
    };
    fs.mkfs();
    fs.mount();
    let data = random_bytes(64 * MIB as usize);
    for i in 0..4 {
        let path = fs.mnt.join(format!("copy-{i}"));
        let mut f = File::create(&path).expect("create copy");
        // Written in 1 MiB pieces, as `cp` would.
        for chunk in data.chunks(MIB as usize) {
            f.write_all(chunk).expect("write copy");
        }
        f.sync_all().expect("fsync copy");
    }
    fs.umount();
    let size = fs.store_size();
    note(&format!(
        "MEASURED dedup_four_copies: 4 x 64 MiB of identical random data -> store holds {} in {} objects",
        human(size),
        fs.store_objects().len()
    ));
    assert!(
        size < 70 * MIB,
        "store holds {} for four identical 64 MiB files; expected < 70 MiB",
        human(size)
    );

    // The shared blocks read back correctly, from the backend.
    fs.new_cache();
    fs.mount();
    let back = fs::read(fs.mnt.join("copy-2")).expect("read copy back");
    assert!(
        back == data,
        "copy-2 read back differs from what was written"
    );
    fs.umount();
}

#[test]
fn sparse_100_gib() {
    let Some(mut fs) = TestFs::new("sparse_100_gib") else {
        return;
    };
    let size = 100 * GIB;
    fs.mkfs();
    fs.mount();
    let head = random_bytes(MIB as usize);
    let tail = random_bytes(MIB as usize);
    let path = fs.mnt.join("sparse");
    {
        let f = File::create(&path).expect("create sparse file");
        f.write_all_at(&head, 0).expect("write head");
        f.set_len(size).expect("extend to 100 GiB");
        f.write_all_at(&tail, size - MIB).expect("write tail");
        f.sync_all().expect("fsync");
    }
    fs.umount();
    let stored = fs.store_size();
    note(&format!(
        "MEASURED sparse_100_gib: 100 GiB file with 1 MiB written at each end -> store holds {} in {} objects",
        human(stored),
        fs.store_objects().len()
    ));
    assert!(
        stored < 10 * MIB,
        "store holds {} for a sparse file with 2 MiB of data; expected < 10 MiB",
        human(stored)
    );

    fs.new_cache();
    fs.mount();
    let f = File::open(&path).expect("open after remount");
    assert_eq!(f.metadata().expect("fstat").size(), size, "st_size");
    let mut buf = vec![0u8; MIB as usize];
    f.read_exact_at(&mut buf, 0).expect("read head");
    assert!(buf == head, "first MiB differs after remount");
    f.read_exact_at(&mut buf, size - MIB).expect("read tail");
    assert!(buf == tail, "last MiB differs after remount");
    for off in [MIB, 50 * GIB, 50 * GIB + 12345, size - 2 * MIB] {
        f.read_exact_at(&mut buf, off).expect("read hole");
        if let Some(i) = buf.iter().position(|b| *b != 0) {
            panic!(
                "hole at offset {off} reads non-zero byte {:#04x} at +{i}",
                buf[i]
            );
        }
    }
    // Reading at and past the end.
    let mut small = [0u8; 16];
    let n = f.read_at(&mut small, size).expect("read at EOF");
    assert_eq!(n, 0, "read at EOF returned data");
    drop(f);
    fs.umount();
}
