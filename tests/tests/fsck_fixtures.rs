//! Damaged-filesystem fixtures through the real commands: each test builds a small
//! filesystem with `mkfs.s3ql` (4 KiB data blocks), `mount.s3ql` and `umount.s3ql`, damages
//! it one way while it is not mounted (in the `local://` store directory, in the local
//! metadata database of the cache directory, or by `kill -9` of the mount daemon), and then
//! proves that
//!
//! - `fsck.s3ql --batch --force` exits 128, prints the precise line of every problem it
//!   repaired, and counts exactly those problems in its `ERROR: found and repaired N
//!   error(s)` line;
//! - a second `fsck.s3ql --batch --force` exits 0 and prints `No errors found.`;
//! - the filesystem then mounts, every undamaged file reads back byte-identical (from the
//!   store: fsck empties the cache), the damaged file reads as fsck documents (a missing
//!   block as zeros, an orphan under `/lost+found`), and a new file can be written.
//!
//! Damage kinds: a missing data object, an unreferenced object, a corrupted object (which
//! `fsck.s3ql` does not see, as it does not download data: `s3ql_verify --data` finds it,
//! and once its object is removed as S3QL documents, fsck repairs it as a missing object),
//! wrong reference counts, a dangling directory entry, an orphan inode, the stale mount
//! lock of a killed mount and a lock object of a mount on another host.
//!
//! Every fsck report is printed with its exit code (`cargo test --test fsck_fixtures --
//! --nocapture` shows them all).

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use rusqlite::{params, Connection};
use s3ql_tests::harness::{bin, random_bytes, run, scaled, tool, Outcome};
use s3ql_tests::{note, TestFs};

/// Data block size of every fixture (`mkfs.s3ql --data-block-size 4`).
const BLOCK: usize = 4096;
/// Inode number of the root directory.
const ROOT_INODE: i64 = 1;

/// Files of a fixture: name in the root directory and contents.
type Files = Vec<(String, Vec<u8>)>;

/// Creates the filesystem, writes three undamaged files `keep-0..2` of a few KiB and the
/// fixture's `extra` files, and unmounts (which uploads everything). Returns `None` when
/// real mounts are not possible here (the test is skipped).
fn build(test: &str, extra: &[(&str, Vec<u8>)]) -> Option<(TestFs, Files, Files)> {
    let mut fs = TestFs::new(test)?;
    fs.mkfs_cmd(&["--data-block-size", "4"]).expect_success();
    fs.mount();
    let keep: Files = (0..3)
        .map(|i| (format!("keep-{i}"), random_bytes(2 * BLOCK + i * 1500 + 7)))
        .collect();
    let extra: Files = extra
        .iter()
        .map(|(name, data)| ((*name).to_owned(), data.clone()))
        .collect();
    for (name, data) in keep.iter().chain(&extra) {
        fs::write(fs.mnt.join(name), data).expect("write a fixture file");
    }
    fs.umount();
    Some((fs, keep, extra))
}

/// Indents every line of `text` for the notes.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// Runs `fsck.s3ql --batch --force <extra>` and prints its report (stdout, and the
/// `ERROR:` line of stderr without the progress lines) with the exit code.
fn fsck(fs: &TestFs, extra: &[&str], what: &str) -> Outcome {
    let mut args = vec!["--batch", "--force"];
    args.extend_from_slice(extra);
    let out = fs.fsck_cmd(&args);
    let errors: String = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("ERROR:"))
        .map(|l| format!("{l}\n"))
        .collect();
    note(&format!(
        "{}: fsck.s3ql {} ({what}) exited {}\n{}{}",
        fs.name,
        args.join(" "),
        out.code()
            .map_or_else(|| format!("by {}", out.status), |c| c.to_string()),
        indent(&out.stdout),
        indent(&errors)
    ));
    out
}

/// A report line fsck must print.
enum Line {
    /// Exactly this line.
    Exact(String),
    /// A line made of these parts, in this order, with anything between them (for host
    /// names, times and numbers the test cannot know).
    Parts(Vec<String>),
}

impl Line {
    fn matches(&self, line: &str) -> bool {
        match self {
            Line::Exact(want) => line == want,
            Line::Parts(parts) => {
                let Some((first, rest)) = parts.split_first() else {
                    return true;
                };
                let Some(mut tail) = line.strip_prefix(first.as_str()) else {
                    return false;
                };
                let Some((last, middle)) = rest.split_last() else {
                    return tail.is_empty();
                };
                for part in middle {
                    match tail.find(part.as_str()) {
                        Some(at) => tail = &tail[at + part.len()..],
                        None => return false,
                    }
                }
                tail.ends_with(last.as_str())
            }
        }
    }
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::Exact(l) => write!(f, "{l:?}"),
            Line::Parts(p) => write!(f, "{}", p.join("…")),
        }
    }
}

fn exact(line: impl Into<String>) -> Line {
    Line::Exact(line.into())
}

fn parts(parts: &[&str]) -> Line {
    Line::Parts(parts.iter().map(|p| (*p).to_owned()).collect())
}

/// The number of repaired errors in `ERROR: found and repaired N error(s) (listed above)`.
fn repaired_count(stderr: &str) -> Option<usize> {
    let after = stderr.split("found and repaired ").nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// The first `fsck.s3ql --batch --force <extra>` after the damage: exit 128, every line of
/// `want` printed, and `errors` problems counted. Then the second run: exit 0, no errors.
fn repaired(fs: &TestFs, extra: &[&str], want: &[Line], errors: usize) {
    let out = fsck(fs, extra, "after the damage");
    out.expect_code(128);
    for w in want {
        assert!(
            out.stdout.lines().any(|l| w.matches(l)),
            "{}: fsck did not print {w:?}\n{}",
            fs.name,
            out.output()
        );
    }
    assert_eq!(
        repaired_count(&out.stderr),
        Some(errors),
        "{}: wrong number of repaired errors\n{}",
        fs.name,
        out.output()
    );
    second_run_is_clean(fs);
}

/// `fsck.s3ql --batch --force` exits 0 and finds nothing.
fn second_run_is_clean(fs: &TestFs) {
    let again = fsck(fs, &[], "second run");
    again.expect_code(0);
    assert!(
        again.stdout.lines().any(|l| l == "No errors found."),
        "{}: second fsck run\n{}",
        fs.name,
        again.output()
    );
}

/// Every file of `files` reads back byte-identical through the mount.
fn check_files(fs: &TestFs, files: &[(String, Vec<u8>)]) {
    for (name, data) in files {
        let got = fs::read(fs.mnt.join(name)).expect("read back a file");
        assert!(
            got == *data,
            "{}: {name} differs after the repair ({} bytes read, {} expected)",
            fs.name,
            got.len(),
            data.len()
        );
    }
}

/// A new file can be written and read back.
fn new_file_works(fs: &TestFs) {
    let data = random_bytes(3 * BLOCK + 5);
    let path = fs.mnt.join("written-after-fsck");
    fs::write(&path, &data).expect("write a new file after the repair");
    assert!(fs::read(&path).expect("read the new file") == data);
}

/// The local metadata database (`<cachedir>/<escaped storage URL>.db`).
fn db_path(fs: &TestFs) -> PathBuf {
    let dbs: Vec<PathBuf> = fs::read_dir(&fs.cache)
        .expect("read the cache directory")
        .map(|e| e.expect("dirent").path())
        .filter(|p| p.extension().is_some_and(|e| e == "db"))
        .collect();
    assert_eq!(dbs.len(), 1, "one database in the cache directory: {dbs:?}");
    dbs.into_iter().next().expect("the database")
}

fn open_db(fs: &TestFs) -> Connection {
    Connection::open(db_path(fs)).expect("open the local metadata database")
}

/// The inode of `name` in the root directory.
fn inode_of(c: &Connection, name: &str) -> i64 {
    c.query_row(
        "SELECT inode FROM contents WHERE parent = ?1 AND name = ?2",
        params![ROOT_INODE, name.as_bytes()],
        |r| r.get(0),
    )
    .expect("inode of a file")
}

/// (block number, object number) of every block of `name` in the root directory.
fn objects_of(c: &Connection, name: &str) -> Vec<(u64, u64)> {
    let ino = inode_of(c, name);
    let mut stmt = c
        .prepare(
            "SELECT ib.blockno, b.obj_id FROM inode_blocks ib JOIN blocks b ON b.id = ib.block_id
             WHERE ib.inode = ?1 ORDER BY ib.blockno",
        )
        .expect("prepare");
    stmt.query_map([ino], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("blocks of a file")
}

fn object_path(fs: &TestFs, obj: u64) -> PathBuf {
    fs.store.join(format!("s3ql_data_{obj}"))
}

/// A data object deleted from the store: the file's block becomes a hole.
#[test]
fn missing_object() {
    let original = random_bytes(3 * BLOCK);
    let Some((mut fs, keep, _)) = build("fsck_missing_object", &[("lost-data", original.clone())])
    else {
        return;
    };
    let blocks = objects_of(&open_db(&fs), "lost-data");
    assert_eq!(blocks.len(), 3, "three blocks: {blocks:?}");
    let (blockno, obj) = blocks[1];
    fs::remove_file(object_path(&fs, obj)).expect("delete the object");

    repaired(
        &fs,
        &[],
        &[exact(format!(
            "object s3ql_data_{obj} is missing: /lost-data bytes {}..{} now read as zeros",
            blockno as usize * BLOCK,
            (blockno as usize + 1) * BLOCK
        ))],
        1,
    );
    fs.mount();
    check_files(&fs, &keep);
    let mut holed = original;
    holed[BLOCK..2 * BLOCK].fill(0);
    check_files(&fs, &[("lost-data".to_owned(), holed)]);
    new_file_works(&fs);
    fs.umount();
}

/// A junk object `s3ql_data_999` in the store: deleted, with its size reported.
#[test]
fn unreferenced_object() {
    let Some((mut fs, keep, _)) = build("fsck_unreferenced_object", &[]) else {
        return;
    };
    let junk = object_path(&fs, 999);
    fs::write(&junk, random_bytes(3000)).expect("write a junk object");

    repaired(
        &fs,
        &[],
        &[
            exact("object s3ql_data_999 (3000 bytes) is not used by any file; deleted"),
            exact("deleted 1 unreferenced object(s), 3000 bytes"),
            parts(&["next object number ", " is already in use; set to 1000"]),
        ],
        2,
    );
    assert!(!junk.exists(), "the junk object is still in the store");
    fs.mount();
    check_files(&fs, &keep);
    new_file_works(&fs);
    fs.umount();
}

/// Runs `s3ql_verify --data URL` writing its lists to `<root>/<prefix>-missing.txt` and
/// `-corrupted.txt`.
fn verify_data(fs: &TestFs, prefix: &str) -> Outcome {
    let mut cmd = Command::new(bin("s3ql_verify"));
    cmd.arg("--cachedir")
        .arg(&fs.cache)
        .arg("--authfile")
        .arg(&fs.authfile)
        .arg("--missing-file")
        .arg(fs.root.join(format!("{prefix}-missing.txt")))
        .arg("--corrupted-file")
        .arg(fs.root.join(format!("{prefix}-corrupted.txt")))
        .arg("--data")
        .arg(&fs.url);
    let out = run(&mut cmd, scaled(120));
    note(&format!(
        "{}: s3ql_verify --data exited {:?}\n  stdout:\n{}  stderr:\n{}",
        fs.name,
        out.code(),
        indent(&out.stdout),
        indent(&out.stderr)
    ));
    out
}

/// The lines of a list file written by `s3ql_verify` (empty if it was not written).
fn list(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// One flipped byte in a data object. `fsck.s3ql` does not download data, so it finds
/// nothing and the mount reads the file with EIO; `s3ql_verify --data` reports the object
/// (exit 46); once the listed object is removed (what S3QL tells users to do), fsck
/// repairs it as a missing object and the block reads as zeros.
#[test]
fn corrupted_object() {
    let Some((mut fs, keep, _)) =
        build("fsck_corrupted_object", &[("corrupt", random_bytes(BLOCK))])
    else {
        return;
    };
    let blocks = objects_of(&open_db(&fs), "corrupt");
    assert_eq!(blocks.len(), 1, "one block: {blocks:?}");
    let obj = blocks[0].1;
    let path = object_path(&fs, obj);
    let mut bytes = fs::read(&path).expect("read the object");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, bytes).expect("corrupt the object");

    // fsck.s3ql does not read data objects: nothing to report.
    second_run_is_clean(&fs);
    fs.mount();
    let err = fs::read(fs.mnt.join("corrupt")).expect_err("reading a corrupted object");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    note(&format!("{}: reading /corrupt: {err}", fs.name));
    check_files(&fs, &keep);
    fs.umount();

    let found = verify_data(&fs, "verify");
    found.expect_code(46);
    assert!(
        found.stdout.contains(" 0 missing, 1 corrupted."),
        "{}",
        found.output()
    );
    let corrupted = list(&fs.root.join("verify-corrupted.txt"));
    assert_eq!(corrupted, vec![format!("s3ql_data_{obj}")]);
    for name in &corrupted {
        fs::remove_file(fs.store.join(name)).expect("remove a corrupted object");
    }

    repaired(
        &fs,
        &[],
        &[exact(format!(
            "object s3ql_data_{obj} is missing: /corrupt bytes 0..{BLOCK} now read as zeros"
        ))],
        1,
    );
    verify_data(&fs, "after").expect_code(0);
    fs.mount();
    check_files(&fs, &keep);
    check_files(&fs, &[("corrupt".to_owned(), vec![0; BLOCK])]);
    new_file_works(&fs);
    fs.umount();
}

/// A wrong block reference count and a wrong inode link count in the local database.
#[test]
fn wrong_reference_counts() {
    let shared = random_bytes(BLOCK);
    let Some((mut fs, keep, extra)) = build(
        "fsck_wrong_reference_counts",
        &[("shared-a", shared.clone()), ("shared-b", shared)],
    ) else {
        return;
    };
    let (block, refs, ino) = {
        let c = open_db(&fs);
        let ino = inode_of(&c, "shared-a");
        let block: i64 = c
            .query_row(
                "SELECT block_id FROM inode_blocks WHERE inode = ?1 AND blockno = 0",
                [ino],
                |r| r.get(0),
            )
            .expect("block of shared-a");
        let refs: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM inode_blocks WHERE block_id = ?1",
                [block],
                |r| r.get(0),
            )
            .expect("references of the block");
        let keep0 = inode_of(&c, "keep-0");
        c.execute_batch(&format!(
            "UPDATE block_refcounts SET refcount = 7 WHERE id = {block};
             UPDATE inodes SET nlink = 5 WHERE id = {keep0};"
        ))
        .expect("damage the reference counts");
        (block, refs, keep0)
    };
    note(&format!(
        "fsck_wrong_reference_counts: block {block} of shared-a has {refs} reference(s)"
    ));

    repaired(
        &fs,
        &[],
        &[
            exact(format!(
                "block reference count of {block}: stored 7, recomputed {refs}"
            )),
            exact(format!("inode link count of {ino}: stored 5, recomputed 1")),
        ],
        2,
    );
    fs.mount();
    check_files(&fs, &keep);
    check_files(&fs, &extra);
    new_file_works(&fs);
    fs.umount();
}

/// A directory entry pointing to an inode that does not exist.
#[test]
fn dangling_entry() {
    let Some((mut fs, keep, _)) = build("fsck_dangling_entry", &[]) else {
        return;
    };
    open_db(&fs)
        .execute(
            "INSERT INTO contents (parent, name, inode) VALUES (?1, ?2, 9999)",
            params![ROOT_INODE, b"ghost".as_slice()],
        )
        .expect("add a dangling entry");

    repaired(
        &fs,
        &[],
        &[exact(
            "entry \"ghost\" in / points to missing inode 9999; removed",
        )],
        1,
    );
    fs.mount();
    assert!(
        fs::symlink_metadata(fs.mnt.join("ghost")).is_err(),
        "the dangling entry is still there"
    );
    check_files(&fs, &keep);
    new_file_works(&fs);
    fs.umount();
}

/// A file whose only directory entry is gone: moved to `/lost+found/inode-N`.
#[test]
fn orphan_inode() {
    let orphan = random_bytes(BLOCK + 100);
    let Some((mut fs, keep, _)) = build("fsck_orphan_inode", &[("orphan", orphan.clone())]) else {
        return;
    };
    let ino = {
        let c = open_db(&fs);
        let ino = inode_of(&c, "orphan");
        c.execute("DELETE FROM contents WHERE inode = ?1", [ino])
            .expect("remove the entry");
        ino
    };

    repaired(
        &fs,
        &[],
        &[exact(format!(
            "inode {ino} is not reachable from the root; moved to /lost+found/inode-{ino}"
        ))],
        1,
    );
    fs.mount();
    assert!(
        fs::symlink_metadata(fs.mnt.join("orphan")).is_err(),
        "/orphan came back"
    );
    check_files(&fs, &keep);
    check_files(&fs, &[(format!("lost+found/inode-{ino}"), orphan)]);
    new_file_works(&fs);
    fs.umount();
}

/// `kill -9` of the mount daemon after its data was flushed: the mount refuses (exit 31)
/// and fsck removes the stale lock (its holder runs on this host and is gone).
#[test]
fn stale_lock_of_killed_mount() {
    let Some((mut fs, mut keep, _)) = build("fsck_stale_lock_of_killed_mount", &[]) else {
        return;
    };
    fs.mount();
    let data = random_bytes(2 * BLOCK + 1);
    let mut file = fs::File::create(fs.mnt.join("before-kill")).expect("create");
    file.write_all(&data).expect("write");
    file.sync_all().expect("fsync");
    drop(file);
    keep.push(("before-kill".to_owned(), data));
    tool(
        "s3qlctrl",
        &[OsStr::new("flushcache"), fs.mnt.as_os_str()],
        None,
    )
    .expect_success();
    let pid = fs.daemon_pid().expect("daemon pid");
    fs.kill_mount();

    let mnt = fs.mnt.clone();
    let refused = fs.mount_cmd(&[], &mnt);
    note(&format!(
        "{}: mount.s3ql after kill -9 exited {:?}: {}",
        fs.name,
        refused.code(),
        refused.stderr.trim()
    ));
    refused.expect_code(31);

    repaired(
        &fs,
        &[],
        &[
            exact("the filesystem was not unmounted cleanly"),
            parts(&[
                "stale mount lock of host ",
                &format!(", pid {pid}, since "),
                " removed",
            ]),
        ],
        2,
    );
    fs.mount();
    check_files(&fs, &keep);
    new_file_works(&fs);
    fs.umount();
}

/// A lock object of a mount on another host: `--batch` refuses (exit 41, confirmation
/// needed), `--force-remote` removes it.
#[test]
fn lock_held_elsewhere() {
    let Some((mut fs, keep, _)) = build("fsck_lock_held_elsewhere", &[]) else {
        return;
    };
    fs::write(
        fs.store.join("s3ql_mount_lock"),
        r#"{"host":"elsewhere.invalid","pid":4000000,"since":0,"mount_id":"x"}"#,
    )
    .expect("write a lock object");

    let mnt = fs.mnt.clone();
    let refused = fs.mount_cmd(&[], &mnt);
    note(&format!(
        "{}: mount.s3ql with the lock of another host exited {:?}: {}",
        fs.name,
        refused.code(),
        refused.stderr.trim()
    ));
    refused.expect_code(31);
    let asks = fsck(&fs, &[], "lock of another host, --batch");
    asks.expect_code(41);
    assert!(
        asks.stderr.contains("host elsewhere.invalid, pid 4000000"),
        "{}",
        asks.output()
    );

    repaired(
        &fs,
        &["--force-remote"],
        &[parts(&[
            "stale mount lock of host elsewhere.invalid, pid 4000000, since ",
            " removed",
        ])],
        1,
    );
    assert!(!fs.store.join("s3ql_mount_lock").exists());
    fs.mount();
    check_files(&fs, &keep);
    new_file_works(&fs);
    fs.umount();
}
