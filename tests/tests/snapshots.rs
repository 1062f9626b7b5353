//! The S3QL tree and control commands on a real mount: `s3qlcp` snapshots (point-in-time
//! while a writer appends, complete, independent of the source, stored once), `s3qllock`
//! (every change below a locked path is EPERM, before and after a remount), `s3qlrm` (also of
//! locked trees, with no stale kernel cache entry left), `s3qlstat` (every figure checked
//! against an independent count of the mount, the store and the cache directory) and
//! `s3qlctrl`.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use s3ql_tests::harness::{os, random_bytes, tool, Outcome};
use s3ql_tests::sys;
use s3ql_tests::tree::{self, CompareOptions};
use s3ql_tests::{note, TestFs};

/// Bytes of one record of the writer: a 9-digit sequence number and a newline.
const RECORD: usize = 10;

fn run_tool(name: &str, args: &[&Path]) -> Outcome {
    let args: Vec<&OsStr> = args.iter().map(|p| p.as_os_str()).collect();
    tool(name, &args, None)
}

fn s3qlcp(src: &Path, dst: &Path) -> Outcome {
    run_tool("s3qlcp", &[src, dst])
}

/// The `s3qlstat --json` figures.
fn stats(mnt: &Path) -> BTreeMap<String, u64> {
    let out = tool("s3qlstat", &[OsStr::new("--json"), mnt.as_os_str()], None);
    out.expect_success();
    parse_json_object(&out.stdout)
}

/// Parses a flat JSON object of unsigned integers (what `s3qlstat --json` prints).
fn parse_json_object(text: &str) -> BTreeMap<String, u64> {
    let body = text.trim().trim_start_matches('{').trim_end_matches('}');
    body.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once(':').expect("key: value");
            let k = k.trim().trim_matches('"').to_owned();
            (k, v.trim().parse().expect("integer value"))
        })
        .collect()
}

/// The cached blocks' files in `cache_dir` (the empty spares kept for reuse are in `spare/`).
fn block_files(cache_dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(cache_dir)
        .expect("readdir cache")
        .map(|e| e.expect("dirent").path())
        .filter(|p| p.file_name().is_some_and(|n| n != "spare"))
        .collect()
}

fn errno_of<T>(r: io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Record numbers in `data`; an error unless it is a sequence of whole records.
fn records(data: &[u8]) -> Result<Vec<u64>, String> {
    if !data.len().is_multiple_of(RECORD) {
        return Err(format!("torn record: {} bytes", data.len()));
    }
    data.chunks(RECORD)
        .map(|r| {
            std::str::from_utf8(&r[..RECORD - 1])
                .ok()
                .filter(|_| r[RECORD - 1] == b'\n')
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("bad record {r:?}"))
        })
        .collect()
}

/// Checks that the `files` files in `dir` hold records 0..n of the round-robin write
/// sequence for one n (a point-in-time image); returns n.
fn check_prefix(dir: &Path, files: u64) -> usize {
    let mut per_file = Vec::new();
    for f in 0..files {
        let data = fs::read(dir.join(format!("f{f}"))).expect("read file of the copy");
        per_file.push(records(&data).unwrap_or_else(|e| panic!("{}/f{f}: {e}", dir.display())));
    }
    let total: usize = per_file.iter().map(Vec::len).sum();
    for (f, recs) in per_file.iter().enumerate() {
        let expected: Vec<u64> = (f as u64..total as u64).step_by(files as usize).collect();
        assert!(
            recs == &expected,
            "{}/f{f}: holds {} records that are not the prefix of the write sequence \
             (total {total}): first {:?}, last {:?}",
            dir.display(),
            recs.len(),
            recs.first(),
            recs.last()
        );
    }
    total
}

#[test]
fn snapshot_while_writing_is_point_in_time() {
    let Some(mut fs) = TestFs::new("snapshot_while_writing_is_point_in_time") else {
        return;
    };
    // Small blocks so that records straddle block boundaries.
    fs.mkfs_cmd(&["--data-block-size", "16"]).expect_success();
    fs.mount();
    const FILES: u64 = 12;
    let src = fs.mnt.join("src");
    fs::create_dir(&src).expect("mkdir src");
    let handles: Vec<File> = (0..FILES)
        .map(|f| File::create(src.join(format!("f{f}"))).expect("create"))
        .collect();

    // One writer: record i goes to file i % FILES, each pwrite complete before the next,
    // so a point-in-time image holds records 0..n for some n and nothing else.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let record = format!("{i:09}\n");
                handles[(i % FILES) as usize]
                    .write_all_at(record.as_bytes(), (i / FILES) * RECORD as u64)
                    .expect("write record");
                i += 1;
            }
            i
        })
    };
    let mut copies = Vec::new();
    for c in 0..4 {
        thread::sleep(Duration::from_millis(300));
        let copy = fs.mnt.join(format!("snap{c}"));
        let start = Instant::now();
        s3qlcp(&src, &copy).expect_success();
        note(&format!(
            "MEASURED snapshot_while_writing: s3qlcp during writes took {:.3} s",
            start.elapsed().as_secs_f64()
        ));
        copies.push(copy);
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer thread");

    let totals: Vec<usize> = copies.iter().map(|c| check_prefix(c, FILES)).collect();
    note(&format!(
        "MEASURED snapshot_while_writing: {written} records written; the 4 snapshots hold \
         consistent prefixes of {totals:?} records"
    ));
    assert!(totals[0] > 0, "the first snapshot is empty");
    assert!(totals.windows(2).all(|w| w[0] <= w[1]), "{totals:?}");
    assert!((*totals.last().unwrap_or(&0) as u64) < written);
    assert_eq!(check_prefix(&src, FILES) as u64, written, "the source");

    // The snapshots come back from the backend alone.
    fs.umount();
    fs.new_cache();
    fs.mount();
    let again: Vec<usize> = copies.iter().map(|c| check_prefix(c, FILES)).collect();
    assert_eq!(again, totals, "snapshots after remount with an empty cache");
    fs.umount();
}

/// Builds a tree with every kind of entry and attribute below `root`.
fn build_tree(root: &Path) {
    fs::create_dir(root).expect("mkdir");
    let sub = root.join("sub");
    fs::create_dir(&sub).expect("mkdir sub");
    sys::chmod(&sub, 0o2750).expect("chmod");
    sys::lchown(&sub, 1234, 5678).expect("chown");
    fs::write(root.join("empty"), b"").expect("write");
    fs::write(root.join("small"), b"small file").expect("write");
    fs::write(sub.join("big"), random_bytes(3 << 20)).expect("write");
    fs::hard_link(sub.join("big"), root.join("big-link")).expect("link");
    let odd = root.join(os(b"odd \xff name\nwith newline"));
    fs::write(&odd, random_bytes(1000)).expect("write");
    sys::set_xattr(&odd, b"user.k", b"v\x00\x01").expect("xattr");
    sys::set_xattr(&sub, b"user.dir", b"attr").expect("xattr");
    std::os::unix::fs::symlink("sub/big", root.join("link")).expect("symlink");
    sys::mknod(&root.join("fifo"), libc::S_IFIFO | 0o640, 0).expect("mkfifo");
    sys::mknod(&root.join("dev"), libc::S_IFCHR | 0o600, sys::makedev(1, 3)).expect("mknod");
    let sparse = File::create(root.join("sparse")).expect("create");
    sparse.write_all_at(b"end", 5 << 20).expect("write");
    for (p, t) in [
        (root.join("small"), (1_000_000_000, 123_456_789)),
        (sub.clone(), (1_100_000_000, 1)),
        (root.join("link"), (1_200_000_000, 999_999_999)),
    ] {
        sys::set_times(&p, t, t).expect("utimensat");
    }
}

#[test]
fn snapshot_is_complete_and_independent() {
    let Some(mut fs) = TestFs::new("snapshot_is_complete_and_independent") else {
        return;
    };
    fs.mkfs();
    fs.mount();
    let src = fs.mnt.join("src");
    build_tree(&src);
    let outside = fs.mnt.join("outside-link");
    fs::hard_link(src.join("small"), &outside).expect("link from outside");
    assert_eq!(
        run_tool("s3qlctrl", &[Path::new("flushcache"), &fs.mnt]).code(),
        Some(0)
    );
    let objects = data_objects(&fs).len();

    let dst = fs.mnt.join("dst");
    let start = Instant::now();
    s3qlcp(&src, &dst).expect_success();
    note(&format!(
        "MEASURED snapshot_is_complete: s3qlcp took {:.3} s",
        start.elapsed().as_secs_f64()
    ));
    run_tool("s3qlctrl", &[Path::new("flushcache"), &fs.mnt]).expect_success();
    assert_eq!(
        data_objects(&fs).len(),
        objects,
        "the snapshot stored new data"
    );

    // Everything but the link count of the file also linked from outside is the same.
    let mut expected = tree::scan(&src).expect("scan source");
    let actual = tree::scan(&dst).expect("scan copy");
    if let Some(e) = expected.get_mut(Path::new("small")) {
        e.nlink = 1;
    }
    tree::assert_no_diffs(
        "copy vs source",
        &tree::compare(&expected, &actual, CompareOptions { atime: true }),
    );
    tree::assert_no_diffs(
        "copy contents",
        &tree::compare_contents(&src, &dst, &expected),
    );
    assert_ne!(
        fs::metadata(src.join("small")).expect("stat").ino(),
        fs::metadata(dst.join("small")).expect("stat").ino()
    );

    // Changes on either side stay on that side.
    let before = fs::read(dst.join("sub/big")).expect("read");
    OpenOptions::new()
        .write(true)
        .open(src.join("sub/big"))
        .expect("open")
        .write_all_at(b"changed in source", 1 << 20)
        .expect("write");
    fs::write(dst.join("small"), b"changed in copy").expect("write");
    sys::truncate(&src.join("sparse"), 1).expect("truncate");
    fs::remove_file(src.join("empty")).expect("unlink");
    sys::set_xattr(&dst.join("sub"), b"user.dir", b"copy").expect("xattr");
    let check = |fs: &TestFs| {
        let dst = fs.mnt.join("dst");
        let src = fs.mnt.join("src");
        assert!(fs::read(dst.join("sub/big")).expect("read") == before);
        assert!(fs::read(dst.join("big-link")).expect("read") == before);
        assert_eq!(fs::read(src.join("small")).expect("read"), b"small file");
        assert_eq!(
            fs::read(fs.mnt.join("outside-link")).expect("read"),
            b"small file"
        );
        assert_eq!(
            fs::read(dst.join("small")).expect("read"),
            b"changed in copy"
        );
        assert_eq!(
            fs::metadata(dst.join("sparse")).expect("stat").len(),
            (5 << 20) + 3
        );
        assert!(dst.join("empty").exists());
        assert_eq!(
            sys::get_xattr(&src.join("sub"), b"user.dir").expect("xattr"),
            b"attr"
        );
    };
    check(&fs);
    fs.umount();
    fs.new_cache();
    fs.mount();
    check(&fs);

    // Refusals change nothing.
    let listing = || names(&fs.mnt);
    let before = listing();
    for (src_arg, dst_arg, why) in [
        (src.clone(), dst.clone(), "target exists"),
        (src.clone(), src.join("sub/inner"), "target inside source"),
        (
            src.clone(),
            PathBuf::from("/tmp/s3qlcp-test-target"),
            "other filesystem",
        ),
        (src.join("small"), fs.mnt.join("x"), "source is a file"),
        (
            fs.mnt.clone(),
            fs.mnt.join("x"),
            "source is the mount point",
        ),
        (fs.mnt.join("missing"), fs.mnt.join("x"), "source missing"),
    ] {
        let out = s3qlcp(&src_arg, &dst_arg);
        assert_eq!(out.code(), Some(1), "{why}: {}", out.output());
        assert!(out.stderr.contains("ERROR: "), "{why}: {}", out.output());
    }
    assert_eq!(listing(), before);
    assert!(!src.join("sub/inner").exists());
    fs.umount();
}

fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("dirent").file_name().as_bytes().to_vec())
        .collect();
    v.sort();
    v
}

/// Every change below `locked` (a locked tree holding `f`, `d/g`, `e/`, and `f` with the
/// xattr `user.a`) must fail with EPERM: each operation of the list (write-open,
/// create, unlink, rename in or out, mkdir, rmdir, chmod, chown, truncate, utime, setxattr,
/// removexattr, symlink, link into), also one level down or on the top where that takes
/// another path. `outside/o` is an unlocked file. Returns the operations that did not fail
/// so. `old` is a handle on `f` opened for writing before the lock.
fn lock_violations(mnt: &Path, old: Option<&File>) -> Vec<String> {
    let l = mnt.join("locked");
    let out = mnt.join("outside");
    let f = l.join("f");
    let mut results: Vec<(&str, Option<i32>)> = vec![
        (
            "open for writing",
            errno_of(OpenOptions::new().write(true).open(&f)),
        ),
        (
            "open with O_TRUNC",
            errno_of(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .truncate(true)
                    .open(&f),
            ),
        ),
        (
            "open for appending",
            errno_of(OpenOptions::new().append(true).open(&f)),
        ),
        ("create", errno_of(File::create(l.join("new")))),
        ("create below", errno_of(File::create(l.join("d/new")))),
        ("mkdir", errno_of(fs::create_dir(l.join("newdir")))),
        ("mkdir below", errno_of(fs::create_dir(l.join("d/newdir")))),
        (
            "mknod",
            errno_of(sys::mknod(&l.join("fifo"), libc::S_IFIFO | 0o644, 0)),
        ),
        (
            "symlink",
            errno_of(std::os::unix::fs::symlink("f", l.join("sl"))),
        ),
        (
            "symlink below",
            errno_of(std::os::unix::fs::symlink("f", l.join("d/sl"))),
        ),
        (
            "link into",
            errno_of(fs::hard_link(out.join("o"), l.join("o"))),
        ),
        (
            "link into below",
            errno_of(fs::hard_link(out.join("o"), l.join("d/o"))),
        ),
        (
            "link of a locked file",
            errno_of(fs::hard_link(&f, out.join("f2"))),
        ),
        ("unlink", errno_of(fs::remove_file(&f))),
        ("unlink below", errno_of(fs::remove_file(l.join("d/g")))),
        ("rmdir", errno_of(fs::remove_dir(l.join("e")))),
        ("rename inside", errno_of(fs::rename(&f, l.join("f3")))),
        ("rename out", errno_of(fs::rename(&f, out.join("f4")))),
        (
            "rename in",
            errno_of(fs::rename(out.join("o"), l.join("o"))),
        ),
        (
            "rename in over a locked file",
            errno_of(fs::rename(out.join("o"), &f)),
        ),
        (
            "rename out over an unlocked file",
            errno_of(fs::rename(l.join("d/g"), out.join("o"))),
        ),
        (
            "rename of the top",
            errno_of(fs::rename(&l, out.join("moved"))),
        ),
        ("chmod", errno_of(sys::chmod(&f, 0o600))),
        ("chmod of the top", errno_of(sys::chmod(&l, 0o700))),
        ("chown", errno_of(sys::lchown(&f, 42, 42))),
        ("truncate", errno_of(sys::truncate(&f, 1))),
        ("utime", errno_of(sys::set_times(&f, (5, 0), (5, 0)))),
        (
            "utime of the top",
            errno_of(sys::set_times(&l, (5, 0), (5, 0))),
        ),
        ("setxattr", errno_of(sys::set_xattr(&f, b"user.b", b"x"))),
        (
            "setxattr replacing",
            errno_of(sys::set_xattr(&f, b"user.a", b"2")),
        ),
        (
            "setxattr of the top",
            errno_of(sys::set_xattr(&l, b"user.b", b"x")),
        ),
        ("removexattr", errno_of(sys::remove_xattr(&f, b"user.a"))),
    ];
    if let Some(h) = old {
        results.push((
            "write through an old handle",
            errno_of(h.write_all_at(b"x", 0)),
        ));
        results.push(("ftruncate through an old handle", errno_of(h.set_len(0))));
        results.push((
            "fallocate through an old handle",
            errno_of(sys::fallocate(h, 0, 1 << 20)),
        ));
    }
    results
        .into_iter()
        .filter(|(_, e)| *e != Some(libc::EPERM))
        .map(|(what, e)| format!("{what}: errno {e:?} instead of EPERM"))
        .collect()
}

#[test]
fn lock_matrix_before_and_after_remount() {
    let Some(mut fs) = TestFs::new("lock_matrix_before_and_after_remount") else {
        return;
    };
    fs.mkfs();
    fs.mount();
    let l = fs.mnt.join("locked");
    fs::create_dir_all(l.join("d")).expect("mkdir");
    fs::create_dir(l.join("e")).expect("mkdir");
    fs::write(l.join("f"), b"locked data").expect("write");
    sys::set_xattr(&l.join("f"), b"user.a", b"1").expect("xattr");
    fs::write(l.join("d/g"), b"g").expect("write");
    fs::create_dir(fs.mnt.join("outside")).expect("mkdir");
    fs::write(fs.mnt.join("outside/o"), b"o").expect("write");
    let old = OpenOptions::new()
        .read(true)
        .write(true)
        .open(l.join("f"))
        .expect("open");

    run_tool("s3qllock", &[&l]).expect_success();
    let before = tree::scan(&fs.mnt).expect("scan");
    let violations = lock_violations(&fs.mnt, Some(&old));
    assert!(violations.is_empty(), "while mounted: {violations:#?}");
    let mut buf = vec![0u8; 11];
    old.read_exact_at(&mut buf, 0)
        .expect("reading stays possible");
    assert_eq!(buf, b"locked data");
    drop(old);
    tree::assert_no_diffs(
        "tree after the refused changes",
        &tree::compare(
            &before,
            &tree::scan(&fs.mnt).expect("scan"),
            CompareOptions { atime: false },
        ),
    );

    // A snapshot of a locked tree is not locked.
    s3qlcp(&l, &fs.mnt.join("copy")).expect_success();
    fs::write(fs.mnt.join("copy/f"), b"writable").expect("write to the copy");

    fs.umount();
    fs.new_cache();
    fs.mount();
    let before = tree::scan(&fs.mnt).expect("scan");
    let violations = lock_violations(&fs.mnt, None);
    assert!(violations.is_empty(), "after a remount: {violations:#?}");
    assert_eq!(fs::read(l.join("f")).expect("read"), b"locked data");
    tree::assert_no_diffs(
        "tree after the refused changes, after a remount",
        &tree::compare(
            &before,
            &tree::scan(&fs.mnt).expect("scan"),
            CompareOptions { atime: false },
        ),
    );

    // Only the top of a locked tree can be removed; then nothing of it stays visible.
    let out = run_tool("s3qlrm", &[&l.join("d")]);
    assert_eq!(out.code(), Some(1), "{}", out.output());
    assert!(out.stderr.contains("locked"), "{}", out.output());
    run_tool("s3qlrm", &[&l]).expect_success();
    assert_eq!(errno_of(fs::symlink_metadata(&l)), Some(libc::ENOENT));
    assert_eq!(
        errno_of(fs::symlink_metadata(l.join("f"))),
        Some(libc::ENOENT)
    );
    assert_eq!(fs::read(fs.mnt.join("outside/o")).expect("read"), b"o");
    fs.umount();
}

/// Names and sizes of the data objects in the store.
fn data_objects(fs: &TestFs) -> Vec<(String, u64)> {
    fs.store_objects()
        .into_iter()
        .filter(|o| {
            Path::new(o)
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"s3ql_data_"))
        })
        .map(|o| {
            let size = fs::metadata(fs.store.join(&o)).map_or(0, |m| m.len());
            (o, size)
        })
        .collect()
}

/// Waits until `cond` holds (background work such as object deletion), at most 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn s3qlrm_removes_trees_without_stale_entries() {
    let Some(mut fs) = TestFs::new("s3qlrm_removes_trees_without_stale_entries") else {
        return;
    };
    fs.mkfs();
    fs.mount_with(&["--allow-other"]);
    let t = fs.mnt.join("tree");
    let mut paths = Vec::new();
    for d in 0..10 {
        let dir = t.join(format!("d{d}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..20 {
            let p = dir.join(format!("f{f}"));
            fs::write(&p, format!("file {d}/{f}").repeat(50)).expect("write");
            paths.push(p);
        }
    }
    fs::write(fs.mnt.join("keep"), b"keep").expect("write");
    let open = File::open(t.join("d0/f0")).expect("open");
    run_tool("s3qlctrl", &[Path::new("flushcache"), &fs.mnt]).expect_success();
    let objects = data_objects(&fs).len();
    assert_eq!(objects, 201);
    // Fill the kernel's entry and attribute caches.
    for p in &paths {
        fs::metadata(p).expect("stat");
    }

    // Refusals first.
    let out = run_tool("s3qlrm", &[&fs.mnt]);
    assert_eq!(out.code(), Some(1), "mount point: {}", out.output());
    let out = run_tool("s3qlrm", &[&fs.mnt.join("missing")]);
    assert_eq!(out.code(), Some(1), "missing: {}", out.output());
    let out = tool("s3qlrm", &[t.as_os_str()], Some("nobody"));
    assert_eq!(out.code(), Some(1), "as nobody: {}", out.output());
    assert!(
        out.stderr.contains("only root and the user who mounted"),
        "as nobody: {}",
        out.output()
    );

    let start = Instant::now();
    run_tool("s3qlrm", &[&t]).expect_success();
    note(&format!(
        "MEASURED s3qlrm_removes_trees: s3qlrm of 211 entries took {:.3} s",
        start.elapsed().as_secs_f64()
    ));
    // No stale entry: every path is gone at once.
    assert_eq!(errno_of(fs::symlink_metadata(&t)), Some(libc::ENOENT));
    let stale: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .collect();
    assert!(stale.is_empty(), "still visible: {stale:?}");
    assert_eq!(names(&fs.mnt), [b"keep".to_vec(), b"lost+found".to_vec()]);
    // The open file stays readable until closed; everything else is deleted at once.
    let mut buf = vec![0u8; 9];
    open.read_exact_at(&mut buf, 0)
        .expect("read the open, removed file");
    assert_eq!(buf, b"file 0/0f");
    eventually("objects of closed files deleted", || {
        data_objects(&fs).len() == 2
    });
    drop(open);
    eventually("object of the open file deleted", || {
        data_objects(&fs).len() == 1
    });
    fs.umount();
}

/// All entries below `root` (not following symlinks): (path, metadata).
fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("readdir") {
            let p = e.expect("dirent").path();
            let m = fs::symlink_metadata(&p).expect("lstat");
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, m));
        }
    }
    out
}

/// Files directly in the directory ending in `suffix` below `dir`, or the file itself.
fn file_with_suffix(dir: &Path, suffix: &str) -> PathBuf {
    fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("dirent").path())
        .find(|p| p.as_os_str().as_bytes().ends_with(suffix.as_bytes()))
        .unwrap_or_else(|| panic!("no *{suffix} in {}", dir.display()))
}

#[test]
fn s3qlstat_matches_independent_counts() {
    let Some(mut fs) = TestFs::new("s3qlstat_matches_independent_counts") else {
        return;
    };
    const BLOCK: usize = 64 << 10;
    fs.mkfs_cmd(&["--data-block-size", "64"]).expect_success();
    fs.mount_with(&["--dirty-block-upload-delay", "600"]);
    let m = &fs.mnt;
    fs::create_dir_all(m.join("a/b")).expect("mkdir");
    let unique = random_bytes(5 * BLOCK + 123);
    fs::write(m.join("a/unique"), &unique).expect("write");
    fs::write(m.join("a/b/duplicate"), &unique).expect("write");
    let block = random_bytes(BLOCK);
    fs::write(m.join("a/repeated"), block.repeat(4)).expect("write");
    File::create(m.join("a/sparse"))
        .expect("create")
        .write_all_at(b"x", 10 * BLOCK as u64)
        .expect("write");
    fs::write(m.join("a/b/small"), b"0123456789").expect("write");
    fs::hard_link(m.join("a/b/small"), m.join("small-link")).expect("link");
    std::os::unix::fs::symlink("a/unique", m.join("sym")).expect("symlink");
    s3qlcp(&m.join("a"), &m.join("a-copy")).expect_success();

    // Dirty data is what was written since the last upload.
    let fresh = random_bytes(100 * 1024);
    fs::write(m.join("fresh"), &fresh).expect("write");
    let s = stats(m);
    assert_eq!(
        (s["dirty_bytes"], s["dirty_entries"]),
        (fresh.len() as u64, 2)
    );

    run_tool("s3qlctrl", &[Path::new("flushcache"), m]).expect_success();
    let s = stats(m);
    // The cache and the database first: reading the files below fills the cache.
    let objects = data_objects(&fs);
    let cache_dir = file_with_suffix(&fs.cache, "-cache");
    let cached: Vec<u64> = block_files(&cache_dir)
        .iter()
        .map(|p| fs::metadata(p).expect("stat").len())
        .collect();
    let db = fs::metadata(file_with_suffix(&fs.cache, ".db"))
        .expect("stat db")
        .len();
    let entries = walk(m);
    let mut inodes = HashSet::new();
    let mut names = HashSet::new();
    let mut data_bytes = 0;
    let mut blocks = HashSet::new();
    for (p, meta) in &entries {
        names.insert(p.file_name().expect("name").to_owned());
        if inodes.insert(meta.ino()) {
            data_bytes += meta.len();
            if meta.is_file() {
                let data = fs::read(p).expect("read");
                for b in data.chunks(BLOCK).filter(|b| b.iter().any(|x| *x != 0)) {
                    blocks.insert(b.to_vec());
                }
            }
        }
    }
    let independent = BTreeMap::from([
        ("entries", entries.len() as u64),
        ("inodes", inodes.len() as u64 + 2),
        ("names", names.len() as u64),
        ("data_bytes", data_bytes),
        ("dedup_bytes", blocks.iter().map(|b| b.len() as u64).sum()),
        ("objects", objects.len() as u64),
        ("stored_bytes", objects.iter().map(|o| o.1).sum()),
        ("db_bytes", db),
        ("cache_entries", cached.len() as u64),
        ("cache_bytes", cached.iter().sum()),
        ("dirty_entries", 0),
        ("dirty_bytes", 0),
        ("failed_uploads", 0),
    ]);
    let mut report = String::from("MEASURED s3qlstat figures (s3qlstat = independent count):");
    for (k, v) in &independent {
        report.push_str(&format!("\n  {k:14} {:>12} = {v}", s[*k]));
    }
    note(&report);
    for (k, v) in &independent {
        assert_eq!(
            s[*k], *v,
            "{k} differs from the independent count\n{report}"
        );
    }
    assert_eq!(s.len(), independent.len(), "unchecked figures: {s:?}");
    // Reading every file above (the holes of a/sparse too) left one entry per cache file.
    let files = block_files(&cache_dir).len() as u64;
    let after_reads = stats(m)["cache_entries"];
    note(&format!(
        "MEASURED s3qlstat cache entries after reading every file: {after_reads} = {files} files in the cache directory"
    ));
    assert_eq!(after_reads, files, "cache entries after the reads");

    let text = tool("s3qlstat", &[OsStr::new("--raw"), m.as_os_str()], None);
    text.expect_success();
    for line in [
        format!("Directory entries:    {}\n", s["entries"]),
        format!("Inodes:               {}\n", s["inodes"]),
        format!("Data objects:         {}\n", s["objects"]),
        format!("Total data size:      {} bytes\n", s["data_bytes"]),
        format!("After de-duplication: {} bytes (", s["dedup_bytes"]),
        format!("After compression:    {} bytes (", s["stored_bytes"]),
        format!(
            "Database size:        {} bytes (uncompressed)\n",
            s["db_bytes"]
        ),
        "Cache size (dirty):   0 bytes, 0 entries\n".to_owned(),
    ] {
        assert!(
            text.stdout.contains(&line),
            "missing {line:?} in\n{}",
            text.stdout
        );
    }
    let human = tool("s3qlstat", &[m.as_os_str()], None);
    human.expect_success();
    assert!(human.stdout.contains(" MiB"), "{}", human.stdout);
    fs.umount();
}

/// The spare files (emptied cache files kept for reuse) of `cache_dir`: (inode, size, name).
fn spare_files(cache_dir: &Path) -> Vec<(u64, u64, String)> {
    fs::read_dir(cache_dir.join("spare"))
        .expect("readdir spares")
        .map(|e| e.expect("dirent"))
        .map(|e| {
            let m = e.metadata().expect("stat");
            (
                m.ino(),
                m.len(),
                e.file_name().to_string_lossy().into_owned(),
            )
        })
        .collect()
}

/// `--max-cache-entries` bounds the cache, and with it the daemon's memory: past it, dirty
/// blocks are uploaded and clean ones evicted. The files of dropped blocks become empty
/// spares that new blocks reuse (the same inodes), also after a remount; every file still
/// reads back.
#[test]
fn cache_entries_are_bounded_and_their_files_reused() {
    const LIMIT: u64 = 64;
    let Some(mut fs) = TestFs::new("cache_entries_are_bounded_and_their_files_reused") else {
        return;
    };
    fs.mkfs();
    let limit = LIMIT.to_string();
    fs.mount_with(&["--max-cache-entries", &limit]);
    let m = fs.mnt.clone();
    let files: Vec<Vec<u8>> = (0..5 * LIMIT).map(|_| random_bytes(5000)).collect();
    for (i, data) in files.iter().enumerate() {
        fs::write(m.join(format!("f{i}")), data).expect("write");
    }
    let cache_dir = file_with_suffix(&fs.cache, "-cache");
    eventually("cache back within its entry limit", || {
        stats(&m)["cache_entries"] <= LIMIT
    });
    assert!(block_files(&cache_dir).len() as u64 <= LIMIT);
    assert!(spare_files(&cache_dir).iter().all(|(_, len, _)| *len == 0));
    note(&format!(
        "MEASURED {} files of one block with --max-cache-entries {LIMIT}: {} cache entries, {} spares",
        files.len(),
        stats(&m)["cache_entries"],
        spare_files(&cache_dir).len()
    ));

    let mut spares_at_unmount = Vec::new();
    for round in ["mounted", "remounted"] {
        for (i, data) in files.iter().enumerate() {
            let read = fs::read(m.join(format!("f{i}"))).expect("read");
            assert!(read == *data, "f{i} differs ({round})");
        }
        eventually("cache back within its entry limit after the reads", || {
            stats(&m)["cache_entries"] <= LIMIT
        });
        if round == "remounted" {
            // The reads after the remount took spares the first unmount left: their
            // names are gone, their inodes live on (as block files, or as spares again).
            let now = spare_files(&cache_dir);
            let names: HashSet<&String> = now.iter().map(|s| &s.2).collect();
            let mut inodes: HashSet<u64> = now.iter().map(|s| s.0).collect();
            inodes.extend(
                block_files(&cache_dir)
                    .iter()
                    .map(|p| fs::metadata(p).expect("stat").ino()),
            );
            let reused = spares_at_unmount
                .iter()
                .filter(|(ino, _, name)| !names.contains(name) && inodes.contains(ino))
                .count();
            assert!(reused > 0, "no spare was reused");
        }
        fs.umount();
        // Unmounting empties the cache: what stays are at most LIMIT empty spares.
        assert!(block_files(&cache_dir).is_empty(), "{round}");
        let spares = spare_files(&cache_dir);
        assert!(!spares.is_empty() && spares.len() as u64 <= LIMIT);
        assert!(spares.iter().all(|(_, len, _)| *len == 0));
        spares_at_unmount = spares;
        if round == "mounted" {
            fs.mount_with(&["--max-cache-entries", &limit]);
            // Kept, and maybe joined by new ones made ahead of demand.
            let adopted = spare_files(&cache_dir);
            assert!(
                spares_at_unmount.iter().all(|s| adopted.contains(s)),
                "the mount kept the spares"
            );
        }
    }
}

#[test]
fn s3qlctrl_commands() {
    let Some(mut fs) = TestFs::new("s3qlctrl_commands") else {
        return;
    };
    fs.mkfs();
    fs.mount_with(&["--allow-other", "--dirty-block-upload-delay", "600"]);
    let m = fs.mnt.clone();
    let ctrl = |args: &[&str]| {
        let mut v: Vec<&OsStr> = vec![OsStr::new(args[0]), m.as_os_str()];
        v.extend(args[1..].iter().map(OsStr::new));
        tool("s3qlctrl", &v, None)
    };
    let data = random_bytes(4 << 20);
    fs::write(m.join("f"), &data).expect("write");
    assert_eq!(stats(&m)["dirty_entries"], 4);
    ctrl(&["flushcache"]).expect_success();
    assert_eq!(stats(&m)["dirty_entries"], 0);
    assert_eq!(data_objects(&fs).len(), 4);

    ctrl(&["dropcache"]).expect_success();
    assert_eq!(stats(&m)["cache_entries"], 0);

    // A 1 MiB cache holds about one block of the 4 MiB read.
    ctrl(&["cachesize", "1024"]).expect_success();
    assert!(fs::read(m.join("f")).expect("read") == data);
    eventually("cache evicted to its new size", || {
        stats(&m)["cache_bytes"] <= 2 << 20
    });

    let manifests = || {
        fs.store_objects()
            .into_iter()
            .filter(|o| o.contains("manifest"))
            .max()
    };
    let newest = manifests();
    ctrl(&["backup-metadata"]).expect_success();
    assert!(manifests() > newest, "no new metadata generation");

    // The log level changes at run time.
    let debug_lines = || {
        fs::read_to_string(&fs.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("DEBUG") && l.contains("control command"))
            .count()
    };
    ctrl(&["flushcache"]).expect_success();
    assert_eq!(debug_lines(), 0);
    ctrl(&["log", "debug"]).expect_success();
    ctrl(&["flushcache"]).expect_success();
    assert!(debug_lines() > 0, "no debug line after `log debug`");
    ctrl(&["log", "info"]).expect_success();
    let after_debug = debug_lines();
    ctrl(&["flushcache"]).expect_success();
    assert_eq!(debug_lines(), after_debug, "debug lines after `log info`");
    assert_eq!(ctrl(&["log", "info", "cache"]).code(), Some(2));

    // Other users may not use the control channel.
    let out = tool(
        "s3qlctrl",
        &[OsStr::new("flushcache"), m.as_os_str()],
        Some("nobody"),
    );
    assert_eq!(out.code(), Some(1), "{}", out.output());
    assert!(
        out.stderr.contains("only root and the user who mounted"),
        "{}",
        out.output()
    );
    let out = tool("s3qlstat", &[m.as_os_str()], Some("nobody"));
    assert_eq!(out.code(), Some(1), "{}", out.output());
    let out = run_tool(
        "s3qlctrl",
        &[Path::new("flushcache"), &m.join("lost+found")],
    );
    assert_eq!(out.code(), Some(1), "not a mount point: {}", out.output());
    fs.umount();
}
