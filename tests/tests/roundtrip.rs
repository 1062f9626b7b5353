//! A tree with every kind of entry and attribute survives a copy into the filesystem, an
//! unmount, and a mount with an empty cache directory (everything then comes from the
//! backend), attribute for attribute and byte for byte.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use s3ql_tests::harness::Backend;
use s3ql_tests::harness::{os, random_bytes};
use s3ql_tests::sys::{self, Time};
use s3ql_tests::tree::{self, CompareOptions};
use s3ql_tests::{note, TestFs};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// Creates entries below a root, each with explicit mode and owner.
struct Builder {
    root: PathBuf,
}

impl Builder {
    fn p(&self, rel: &[u8]) -> PathBuf {
        self.root.join(os(rel))
    }

    fn own(&self, path: &Path, mode: Option<u32>, uid: u32, gid: u32) {
        sys::lchown(path, uid, gid).expect("lchown");
        if let Some(mode) = mode {
            sys::chmod(path, mode).expect("chmod");
        }
    }

    fn dir(&self, rel: &[u8], mode: u32, uid: u32, gid: u32) -> PathBuf {
        let p = self.p(rel);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {p:?}: {e}"));
        self.own(&p, Some(mode), uid, gid);
        p
    }

    fn file(&self, rel: &[u8], data: &[u8], mode: u32, uid: u32, gid: u32) -> PathBuf {
        let p = self.p(rel);
        fs::write(&p, data).unwrap_or_else(|e| panic!("write {p:?}: {e}"));
        self.own(&p, Some(mode), uid, gid);
        p
    }

    /// A file of `size` bytes with `data` written at each (offset, bytes) and holes elsewhere.
    fn sparse(&self, rel: &[u8], size: u64, data: &[(u64, Vec<u8>)]) -> PathBuf {
        let p = self.p(rel);
        let f = fs::File::create(&p).expect("create sparse file");
        for (off, bytes) in data {
            f.write_all_at(bytes, *off).expect("write sparse data");
        }
        f.set_len(size).expect("set_len");
        self.own(&p, Some(0o644), 0, 0);
        p
    }

    fn symlink(&self, rel: &[u8], target: &[u8], uid: u32, gid: u32) -> PathBuf {
        let p = self.p(rel);
        std::os::unix::fs::symlink(os(target), &p)
            .unwrap_or_else(|e| panic!("symlink {p:?} ({} byte target): {e}", target.len()));
        self.own(&p, None, uid, gid);
        p
    }

    fn node(&self, rel: &[u8], mode: u32, rdev: u64, uid: u32, gid: u32) -> PathBuf {
        let p = self.p(rel);
        sys::mknod(&p, mode, rdev).unwrap_or_else(|e| panic!("mknod {p:?}: {e}"));
        self.own(&p, Some(mode & 0o7777), uid, gid);
        p
    }

    fn link(&self, existing: &[u8], new: &[u8]) {
        fs::hard_link(self.p(existing), self.p(new)).expect("hard link");
    }
}

/// A deterministic, path-dependent timestamp with a non-zero nanosecond part.
fn time_for(path: &Path, salt: u64, base: i64) -> Time {
    let mut h: u64 = 0xcbf29ce484222325 ^ salt;
    for b in path.as_os_str().as_bytes() {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    (
        base + (h % 100_000_000) as i64,
        ((h >> 32) % 1_000_000_000) as i64,
    )
}

fn build_source(root: &Path) {
    let b = Builder {
        root: root.to_owned(),
    };
    sys::chmod(root, 0o755).expect("chmod root");

    // Plain and large files (1 MiB blocks: 3.5 MiB spans four of them).
    b.file(b"empty", b"", 0o644, 0, 0);
    b.file(b"small.txt", b"hello, world\n", 0o644, 0, 0);
    b.dir(b"big", 0o755, 0, 0);
    b.file(
        b"big/random-3.5MiB",
        &random_bytes((3 * MIB + MIB / 2) as usize),
        0o644,
        0,
        0,
    );
    b.file(
        b"big/exactly-1MiB",
        &random_bytes(MIB as usize),
        0o600,
        0,
        0,
    );
    b.file(
        b"big/1MiB-plus-1",
        &random_bytes(MIB as usize + 1),
        0o600,
        0,
        0,
    );
    b.file(
        b"big/written-zeros-2MiB",
        &vec![0u8; 2 * MIB as usize],
        0o644,
        0,
        0,
    );
    let text: Vec<u8> = b"All work and no play makes Jack a dull boy.\n"
        .iter()
        .copied()
        .cycle()
        .take((2 * MIB + 12345) as usize)
        .collect();
    b.file(b"big/compressible", &text, 0o644, 0, 0);

    // Sparse files: holes at the start, in the middle, at the end, and nothing but a hole.
    b.dir(b"sparse", 0o755, 0, 0);
    b.sparse(
        b"sparse/hole-at-start",
        2 * MIB + 100 * KIB,
        &[(2 * MIB, random_bytes(100 * KIB as usize))],
    );
    b.sparse(
        b"sparse/hole-in-middle",
        5 * MIB + 17,
        &[
            (0, random_bytes(MIB as usize)),
            (4 * MIB, random_bytes(MIB as usize + 17)),
        ],
    );
    b.sparse(
        b"sparse/hole-at-end",
        5 * MIB + 3,
        &[(0, random_bytes(100 * KIB as usize))],
    );
    b.sparse(b"sparse/only-hole", 10 * MIB, &[]);
    b.sparse(
        b"sparse/unaligned-island",
        3 * MIB,
        &[(MIB + MIB / 2 - 5, random_bytes(10))],
    );

    // Hard links: within a directory, across directories, of an empty file, of a FIFO and
    // of a symlink.
    b.dir(b"hl", 0o755, 0, 0);
    b.dir(b"hl/sub", 0o755, 0, 0);
    b.dir(b"other", 0o755, 0, 0);
    b.file(
        b"hl/a",
        &random_bytes(100 * KIB as usize),
        0o640,
        1000,
        1000,
    );
    b.link(b"hl/a", b"hl/sub/b");
    b.link(b"hl/a", b"other/c");
    b.file(b"hl/p1", b"", 0o644, 0, 0);
    b.link(b"hl/p1", b"hl/p2");

    // Symlinks.
    b.dir(b"symlinks", 0o755, 0, 0);
    b.symlink(b"symlinks/relative", b"../small.txt", 0, 0);
    b.symlink(b"symlinks/absolute", b"/etc/passwd", 0, 0);
    b.symlink(b"symlinks/dangling", b"does/not/exist", 0, 0);
    b.symlink(b"symlinks/to-dir", b"../hl", 0, 0);
    b.symlink(b"symlinks/one-byte", b"x", 0, 0);
    b.symlink(b"symlinks/non-utf8", b"\xff\xfe-target-\x80", 0, 0);
    b.symlink(b"symlinks/newline", b"line1\nline2", 0, 0);
    let long: Vec<u8> = b"abcdefgh/".iter().copied().cycle().take(4095).collect();
    b.symlink(b"symlinks/long-4095", &long, 0, 0);
    b.symlink(b"symlinks/owned", b"small.txt", 4321, 8765);
    b.link(b"symlinks/relative", b"symlinks/hardlinked-symlink");

    // Names are bytes.
    b.dir(b"names", 0o755, 0, 0);
    let n255 = vec![b'n'; 255];
    let mut name = b"names/".to_vec();
    name.extend_from_slice(&n255);
    b.file(&name, b"255 bytes of name\n", 0o644, 0, 0);
    let mut utf8_255 = "é".repeat(127).into_bytes();
    utf8_255.push(b'x');
    assert_eq!(utf8_255.len(), 255);
    let mut name = b"names/".to_vec();
    name.extend_from_slice(&utf8_255);
    b.dir(&name, 0o755, 0, 0);
    for odd in [
        &b"non-utf8-\xff\xfe\x80"[..],
        b"new\nline",
        b"tab\there",
        b" leading and trailing space ",
        b"-dash",
        b"\x01control\x7f",
        b"back\\slash",
        b"*?[glob]",
        b"...",
        b".hidden",
        "✓ unicode ü".as_bytes(),
    ] {
        let mut name = b"names/".to_vec();
        name.extend_from_slice(odd);
        b.file(&name, odd, 0o644, 0, 0);
    }

    // Modes.
    b.dir(b"modes", 0o755, 0, 0);
    b.file(b"modes/setuid", b"#!/bin/sh\n", 0o4755, 1000, 1000);
    b.file(b"modes/setgid", b"#!/bin/sh\n", 0o2755, 1000, 100);
    b.file(b"modes/all-bits", b"x", 0o7777, 0, 0);
    b.file(b"modes/no-bits", b"x", 0o000, 0, 0);
    b.file(b"modes/setuid-only", b"x", 0o4000, 0, 0);
    b.file(b"modes/exec-only", b"x", 0o111, 0, 0);
    b.dir(b"modes/sticky-dir", 0o1777, 0, 0);
    b.file(b"modes/sticky-dir/inside", b"x", 0o666, 1000, 1000);
    b.dir(b"modes/setgid-dir", 0o2775, 0, 50);
    b.dir(b"modes/closed-dir", 0o755, 0, 0);
    b.file(b"modes/closed-dir/inside", b"x", 0o644, 0, 0);
    sys::chmod(&b.p(b"modes/closed-dir"), 0o000).expect("chmod closed dir");

    // Owners.
    b.dir(b"owners", 0o755, 2000, 3000);
    b.file(b"owners/u1000", b"x", 0o644, 1000, 1000);
    b.file(b"owners/nobody", b"x", 0o644, 65534, 65534);
    b.file(
        b"owners/large-ids",
        b"x",
        0o644,
        3_000_000_000,
        4_000_000_000,
    );
    b.file(b"owners/root-user-other-group", b"x", 0o644, 0, 12345);

    // Special files.
    b.dir(b"special", 0o755, 0, 0);
    b.node(b"special/fifo", libc::S_IFIFO | 0o640, 0, 1000, 1000);
    b.link(b"special/fifo", b"special/fifo-link");
    b.node(
        b"special/char-null",
        libc::S_IFCHR | 0o666,
        sys::makedev(1, 3),
        0,
        0,
    );
    b.node(
        b"special/block",
        libc::S_IFBLK | 0o660,
        sys::makedev(8, 1),
        0,
        6,
    );
    b.node(
        b"special/char-max",
        libc::S_IFCHR | 0o600,
        sys::makedev(4095, 1_048_575),
        777,
        888,
    );
    b.node(b"special/socket", libc::S_IFSOCK | 0o755, 0, 0, 0);

    // Extended attributes.
    b.dir(b"xattrs", 0o755, 0, 0);
    let f = b.file(b"xattrs/file", b"has xattrs", 0o644, 0, 0);
    sys::set_xattr(&f, b"user.a", b"1").expect("setxattr");
    sys::set_xattr(&f, b"user.empty", b"").expect("setxattr");
    let all: Vec<u8> = (0..=255u8).collect();
    sys::set_xattr(&f, b"user.binary", &all).expect("setxattr");
    sys::set_xattr(&f, b"user.big", &random_bytes(1500)).expect("setxattr");
    for i in 0..20 {
        sys::set_xattr(
            &f,
            format!("user.n{i:02}").as_bytes(),
            i.to_string().as_bytes(),
        )
        .expect("setxattr");
    }
    let mut long_name = b"user.".to_vec();
    long_name.extend(std::iter::repeat_n(b'k', 250));
    let g = b.file(b"xattrs/long-name", b"x", 0o644, 0, 0);
    sys::set_xattr(&g, &long_name, b"v").expect("setxattr long name");
    let d = b.dir(b"xattrs/dir", 0o755, 0, 0);
    sys::set_xattr(&d, b"user.on-dir", b"directory attribute").expect("setxattr dir");

    // A deep path and a directory with many entries (readdir continues across replies).
    let mut deep = b"deep".to_vec();
    b.dir(&deep, 0o755, 0, 0);
    for i in 0..20 {
        deep.extend_from_slice(format!("/d{i}").as_bytes());
        b.dir(&deep, 0o755, 0, 0);
    }
    deep.extend_from_slice(b"/leaf");
    b.file(&deep, b"deep leaf\n", 0o644, 0, 0);
    b.dir(b"many", 0o755, 0, 0);
    for i in 0..300 {
        b.file(
            format!("many/entry-{i:04}-{}", "x".repeat(i % 40)).as_bytes(),
            format!("content {i}\n").as_bytes(),
            0o644,
            0,
            0,
        );
    }

    // Timestamps last, children before parents: every entry gets its own atime and mtime
    // with a nanosecond part; two files get dates before 1970 and after 2106 (within the i64-nanosecond range, up to 2262).
    b.dir(b"times", 0o755, 0, 0);
    b.file(b"times/pre-epoch", b"x", 0o644, 0, 0);
    b.file(b"times/far-future", b"x", 0o644, 0, 0);
    let manifest = tree::scan(root).expect("scan source");
    for rel in manifest.keys().rev() {
        let atime = time_for(rel, 1, 1_000_000_000);
        let mtime = time_for(rel, 2, 1_500_000_000);
        sys::set_times(&root.join(rel), atime, mtime).expect("utimensat");
    }
    sys::set_times(
        &b.p(b"times/pre-epoch"),
        (-315_619_200, 999_999_999),
        (-1, 1),
    )
    .expect("utimensat pre-epoch");
    sys::set_times(
        &b.p(b"times/far-future"),
        (7_258_118_400, 5),
        (7_000_000_000, 123_456_789),
    )
    .expect("utimensat far future");
}

#[test]
fn tree_round_trip() {
    tree_round_trip_on("tree_round_trip", Backend::Local);
}

#[test]
fn tree_round_trip_s3c() {
    tree_round_trip_on("tree_round_trip_s3c", Backend::S3c);
}

fn tree_round_trip_on(test: &str, backend: Backend) {
    let Some(mut fs) = TestFs::with_backend(test, backend) else {
        return;
    };
    // The source lives on the local disk, outside the test filesystem.
    let src_dir = tempfile::Builder::new()
        .prefix("s3ql-test-source-")
        .tempdir()
        .expect("source tempdir");
    let src = src_dir.path().join("tree");
    fs::create_dir(&src).expect("mkdir source");
    build_source(&src);
    let expected = tree::scan(&src).expect("scan source");
    note(&format!(
        "{test}: source tree has {} entries",
        expected.len()
    ));

    fs.mkfs();
    fs.mount();
    let dst = fs.mnt.join("tree");
    tree::copy_tree(&src, &dst).unwrap_or_else(|e| panic!("copy into the mount failed: {e}"));
    // Scanning the source moved its atimes (and the copy carried them over): set every
    // atime and mtime in the mount from the manifest, through utimensat like `cp -a` does.
    tree::restore_times(&dst, &expected).expect("set times in the mount");

    // Attributes first (reading contents may move atimes), then the bytes. Differences are
    // collected through both phases, so one run shows everything that breaks.
    let opts = CompareOptions { atime: true };
    let mut report = Vec::new();
    let mut check = |phase: &str, diffs: Vec<String>| {
        report.extend(diffs.into_iter().map(|d| format!("[{phase}] {d}")));
    };
    let actual = tree::scan(&dst).expect("scan mounted copy");
    check("after copy", tree::compare(&expected, &actual, opts));
    check("after copy", tree::compare_contents(&src, &dst, &expected));
    tree::restore_times(&dst, &expected).expect("restore times");

    fs.umount();
    fs.new_cache();
    fs.mount();
    let actual = tree::scan(&dst).expect("scan after remount");
    check(
        "after remount, empty cache",
        tree::compare(&expected, &actual, opts),
    );
    check(
        "after remount, empty cache",
        tree::compare_contents(&src, &dst, &expected),
    );
    tree::assert_no_diffs("mounted copy differs from the source", &report);
    fs.umount();
}
