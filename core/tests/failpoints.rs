//! Crashes and errors at every failpoint (needs the `failpoints` feature):
//!
//! ```text
//! cargo test -p s3ql-core --features failpoints --test failpoints
//! ```
//!
//! Each case runs a scripted workload (writes, truncates, unlinks, fsyncs, cache flushes and
//! drops, and metadata uploads, over a `local://` store) in a child process, this test
//! executable run again for that one test, with one failpoint armed from the second round
//! on:
//!
//! - [`Action::Kill`]: the child is killed with SIGKILL at the failpoint: a crash, after
//!   which nothing runs. The parent runs fsck (the in-process API, as `fsck.s3ql --batch`),
//!   mounts, and checks every file against the reference model: a file fsynced after its
//!   last change holds exactly what was fsynced; any other file is absent or holds, block
//!   by block, the contents of one of its versions since its last fsync (never garbage).
//!   Stored and recomputed reference counts agree, new writes work, and a second
//!   `fsck --force` finds nothing.
//! - [`Action::Error`]: the failpoint fails the operation once; the child stops the
//!   workload there and unmounts, which must succeed (a transient failure must not stick);
//!   then the parent checks as above.
//!
//! The child appends one journal line per finished operation, so the parent knows what was
//! acknowledged; the operation after the last line was in flight (old or new).
#![cfg(feature = "failpoints")]

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use s3ql_core::failpoint::{self, Action};
use s3ql_core::format::Codec;
use s3ql_core::fsck::{Fsck, FsckOptions, FsckReport};
use s3ql_core::storage::OpendalStore;
use s3ql_core::{
    Caller, FileKind, Filesystem, FsError, FsResult, SetAttr, XattrMode, CTRL_INODE, ROOT_INODE,
};

const BLOCK: u64 = 4096;
const FILES: [&str; 8] = ["f0", "f1", "f2", "f3", "f4", "d/f5", "d/f6", "d/f7"];
const CALLER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};
/// Set in the child: `<work dir>\n<failpoint>\n<action>\n<skip>`.
const CHILD_ENV: &str = "S3QL_FAILPOINT_CHILD";
/// Problems fsck may report after a crash: the crash itself and its expected leftovers.
const AFTER_CRASH: &[&str] = &[
    "was not unmounted cleanly",
    "stale mount lock",
    "was not uploaded before the crash; stored from the cache",
    "is not used by any file; deleted",
    "belongs to no linked file; discarded",
    "lies past its end",
];
/// Problems fsck may report after an injected error: objects whose deletion failed.
const AFTER_ERROR: &[&str] = &["is not used by any file; deleted"];

/// One step of the workload.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// Writes `len` bytes at `offset`, creating the file if needed; byte `p` of the file
    /// becomes `byte_at(seed, p)`, so equal seeds give equal (de-duplicated) blocks.
    Write {
        file: usize,
        offset: u64,
        len: u64,
        seed: u8,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    Unlink {
        file: usize,
    },
    Fsync {
        file: usize,
    },
    /// `s3qlctrl dropcache`: uploads every dirty block, then drops every cached block, so
    /// that later partial writes load their blocks from the store.
    Flush,
    /// `backup_metadata`: uploads the metadata as a new generation.
    Backup,
}

fn byte_at(seed: u8, pos: u64) -> u8 {
    (u64::from(seed) * 67 + (pos / BLOCK) * 13 + (pos % BLOCK) / 61) as u8 | 1
}

/// xorshift64: the script is the same in parent and child.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const ROUNDS: usize = 4;

/// The workload and the index of its first armed operation (the start of round 2). Each
/// round writes, fsyncs, truncates and unlinks, flushes and drops the cache midway (later
/// partial writes load their blocks from the store) and uploads the metadata near its end;
/// the first round uploads it 8 times, so that later uploads expire old generations. Every
/// failpoint is passed in every round.
fn script() -> (Vec<Op>, usize) {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut exists = [false; FILES.len()];
    let mut ops = Vec::new();
    let mut arm_at = 0;
    for round in 0..ROUNDS {
        if round == 1 {
            arm_at = ops.len();
        }
        for i in 0..32 {
            ops.push(random_op(&mut rng, &mut exists));
            if i == 15 {
                ops.push(Op::Flush);
            }
            if i == 25 {
                let uploads = if round == 0 { 8 } else { 1 };
                ops.extend(std::iter::repeat_n(Op::Backup, uploads));
            }
        }
    }
    (ops, arm_at)
}

fn random_op(rng: &mut Rng, exists: &mut [bool]) -> Op {
    let file = rng.below(FILES.len() as u64) as usize;
    let roll = rng.below(20);
    if !exists[file] || roll < 9 {
        exists[file] = true;
        let offset = rng.below(3) * BLOCK + [0, 0, 1000][rng.below(3) as usize];
        let len = rng.below(3) * BLOCK + [1, 100, 3000, BLOCK][rng.below(4) as usize];
        let seed = rng.below(4) as u8;
        return Op::Write {
            file,
            offset,
            len,
            seed,
        };
    }
    match roll {
        9..=14 => Op::Fsync { file },
        15..=17 => Op::Truncate {
            file,
            size: rng.below(3 * BLOCK),
        },
        _ => {
            exists[file] = false;
            Op::Unlink { file }
        }
    }
}

/// What one file may look like after a crash.
#[derive(Debug, Clone)]
struct FileModel {
    /// Its states since the last acknowledged fsync, oldest first (`None`: absent). The
    /// first one is durable; with only one, the file must be exactly that.
    versions: Vec<Option<Vec<u8>>>,
}

/// The reference model: every file's versions since its last fsync.
#[derive(Debug, Clone)]
struct Model {
    files: Vec<FileModel>,
}

impl Model {
    fn new() -> Self {
        Model {
            files: vec![
                FileModel {
                    versions: vec![None]
                };
                FILES.len()
            ],
        }
    }

    fn current(&self, file: usize) -> Option<&Vec<u8>> {
        self.files[file].versions.last().and_then(Option::as_ref)
    }

    /// Applies an acknowledged operation.
    fn apply(&mut self, op: Op) {
        match op {
            Op::Fsync { file } => {
                let now = self.current(file).cloned();
                self.files[file].versions = vec![now];
            }
            op => self.apply_unacknowledged(op),
        }
    }

    /// Applies an operation that may or may not have happened: its result (and the empty
    /// file a write creates first) is one more possible state (an fsync in flight makes
    /// nothing durable).
    fn apply_unacknowledged(&mut self, op: Op) {
        let next = match op {
            Op::Write {
                file,
                offset,
                len,
                seed,
            } => {
                if self.current(file).is_none() {
                    // Created, not yet written.
                    self.files[file].versions.push(Some(Vec::new()));
                }
                let mut data = self.current(file).cloned().unwrap_or_default();
                let end = (offset + len) as usize;
                if data.len() < end {
                    data.resize(end, 0);
                }
                for pos in offset..offset + len {
                    data[pos as usize] = byte_at(seed, pos);
                }
                (file, Some(data))
            }
            Op::Truncate { file, size } => {
                let mut data = self.current(file).cloned().unwrap_or_default();
                data.resize(size as usize, 0);
                (file, Some(data))
            }
            Op::Unlink { file } => (file, None),
            Op::Fsync { .. } | Op::Flush | Op::Backup => return,
        };
        self.files[next.0].versions.push(next.1);
    }

    /// Checks what the recovered filesystem holds for `file`; returns whether it had to
    /// be exact (fsynced after its last change).
    fn check(&self, file: usize, found: Option<&[u8]>) -> Result<bool, String> {
        let versions = &self.files[file].versions;
        let name = FILES[file];
        if versions.len() == 1 {
            return match (found, versions[0].as_deref()) {
                (a, b) if a == b => Ok(true),
                (a, b) => Err(format!(
                    "{name} was fsynced as {} but is {}",
                    describe(b),
                    describe(a)
                )),
            };
        }
        let Some(found) = found else {
            return if versions.contains(&None) {
                Ok(false)
            } else {
                Err(format!(
                    "{name} is missing, but every version since its fsync has it"
                ))
            };
        };
        let candidates: Vec<&Vec<u8>> = versions.iter().flatten().collect();
        if !candidates.iter().any(|v| v.len() == found.len()) {
            return Err(format!(
                "{name} is {} bytes; its versions since its fsync have {:?}",
                found.len(),
                candidates.iter().map(|v| v.len()).collect::<Vec<_>>()
            ));
        }
        for (b, chunk) in found.chunks(BLOCK as usize).enumerate() {
            let start = b * BLOCK as usize;
            let matches = candidates.iter().any(|v| {
                chunk
                    .iter()
                    .enumerate()
                    .all(|(i, byte)| v.get(start + i).copied().unwrap_or(0) == *byte)
            });
            if !matches {
                return Err(format!(
                    "{name}: block {b} matches none of its {} versions since its fsync",
                    candidates.len()
                ));
            }
        }
        Ok(false)
    }
}

fn describe(data: Option<&[u8]>) -> String {
    match data {
        None => "absent".into(),
        Some(d) => format!("{} bytes (sha {:02x?})", d.len(), &d[..d.len().min(4)]),
    }
}

/// The directory inode and the name of `FILES[file]`.
async fn locate(fs: &Filesystem, file: usize) -> FsResult<(u64, &'static OsStr)> {
    match FILES[file].split_once('/') {
        None => Ok((ROOT_INODE, OsStr::new(FILES[file]))),
        Some((dir, name)) => {
            let d = fs.lookup(ROOT_INODE, OsStr::new(dir)).await?;
            fs.forget(d.ino, 1);
            Ok((d.ino, OsStr::new(name)))
        }
    }
}

/// The inode of `FILES[file]`, if it exists (the lookup is forgotten at once, as the
/// kernel eventually does).
async fn find(fs: &Filesystem, file: usize) -> FsResult<Option<u64>> {
    let (dir, name) = locate(fs, file).await?;
    match fs.lookup(dir, name).await {
        Ok(attr) => {
            fs.forget(attr.ino, 1);
            Ok(Some(attr.ino))
        }
        Err(e) if e.errno() == libc::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

async fn run_op(fs: &Filesystem, op: Op) -> FsResult<()> {
    match op {
        Op::Write {
            file,
            offset,
            len,
            seed,
        } => {
            let (ino, fh) = match find(fs, file).await? {
                Some(ino) => (ino, fs.open(ino, libc::O_WRONLY).await?),
                None => {
                    let (dir, name) = locate(fs, file).await?;
                    let (attr, fh) = fs.create(CALLER, dir, name, 0o644, 0).await?;
                    fs.forget(attr.ino, 1);
                    (attr.ino, fh)
                }
            };
            let data: Vec<u8> = (offset..offset + len).map(|p| byte_at(seed, p)).collect();
            let written = fs.write(ino, fh, offset, &data).await;
            fs.release(ino, fh).await?;
            // A short write (a later block failed) is a failed operation for the journal.
            match written? {
                n if u64::from(n) == len => Ok(()),
                n => Err(FsError::Io(std::io::Error::other(format!(
                    "short write: {n} of {len} bytes"
                )))),
            }
        }
        Op::Truncate { file, size } => {
            let ino = find(fs, file).await?.expect("truncate of an existing file");
            let change = SetAttr {
                size: Some(size),
                ..SetAttr::default()
            };
            fs.setattr(CALLER, ino, change).await.map(drop)
        }
        Op::Unlink { file } => {
            let (dir, name) = locate(fs, file).await?;
            fs.unlink(dir, name).await
        }
        Op::Fsync { file } => {
            let ino = find(fs, file).await?.expect("fsync of an existing file");
            let fh = fs.open(ino, libc::O_WRONLY).await?;
            let synced = fs.fsync(ino, false).await;
            fs.release(ino, fh).await?;
            synced
        }
        Op::Flush => {
            let drop_cache = OsStr::new("s3ql_dropcache!");
            fs.setxattr(CALLER, CTRL_INODE, drop_cache, b"", XattrMode::Set)
                .await
        }
        Op::Backup => fs.backup_metadata().await,
    }
}

/// Appends one line to the journal with a single write(2) (a kill cannot tear it).
fn journal(dir: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("journal"))
        .expect("open journal");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("write journal");
}

/// The child: runs the workload with `name` armed from the second round on.
fn child(dir: &Path, name: &'static str, action: Action, skip: u64) {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let store = OpendalStore::local(&dir.join("store")).expect("store");
            let fs = common::mkfs_and_mount(&store, dir, BLOCK).await;
            let d = fs
                .mkdir(CALLER, ROOT_INODE, OsStr::new("d"), 0o755)
                .await
                .expect("mkdir");
            fs.forget(d.ino, 1);
            let (ops, arm_at) = script();
            let mut base = 0;
            for (i, op) in ops.iter().enumerate() {
                if i == arm_at {
                    base = failpoint::hits(name);
                    failpoint::arm(name, action, skip);
                }
                match run_op(&fs, *op).await {
                    Ok(()) => journal(dir, &format!("ok {i}")),
                    Err(e) if action == Action::Error => {
                        journal(dir, &format!("err {i} {e}"));
                        break;
                    }
                    Err(e) => panic!("operation {i} {op:?} failed: {e}"),
                }
            }
            let fired = failpoint::hits(name) - base > skip;
            failpoint::disarm_all();
            fs.unmount()
                .await
                .expect("unmount after the injected error");
            journal(dir, &format!("unmounted fired={fired}"));
        });
}

/// The child's settings, when this process is a child.
fn child_settings() -> Option<(std::path::PathBuf, &'static str, Action, u64)> {
    let env = std::env::var(CHILD_ENV).ok()?;
    let parts: Vec<&str> = env.split('\n').collect();
    let [dir, name, action, skip] = parts[..] else {
        panic!("bad {CHILD_ENV}: {env:?}");
    };
    let name = *failpoint::ALL
        .iter()
        .find(|n| **n == name)
        .expect("known failpoint");
    let action = if action == "Kill" {
        Action::Kill
    } else {
        Action::Error
    };
    Some((dir.into(), name, action, skip.parse().expect("skip")))
}

/// Reads the file's whole contents (`None` if it does not exist).
async fn read_file(fs: &Filesystem, file: usize) -> Option<Vec<u8>> {
    let ino = find(fs, file).await.expect("lookup")?;
    let attr = fs.getattr(ino).await.expect("getattr");
    assert_eq!(
        attr.kind,
        FileKind::Regular,
        "{} is not a file",
        FILES[file]
    );
    let fh = fs.open(ino, libc::O_RDONLY).await.expect("open");
    let data = fs
        .read(ino, fh, 0, attr.size as u32 + 1)
        .await
        .expect("read")
        .to_vec();
    fs.release(ino, fh).await.expect("release");
    Some(data)
}

/// Names in directory `ino` besides `.` and `..`.
async fn names(fs: &Filesystem, ino: u64) -> Vec<String> {
    let entries = fs.readdir(ino, 0, 1000).await.expect("readdir");
    let mut names: Vec<String> = entries
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    names
}

fn fsck(store: &OpendalStore, dir: &Path, force: bool) -> FsckReport {
    let opts = FsckOptions {
        force,
        ..FsckOptions::default()
    };
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(Fsck::run(
            Arc::new(store.clone()),
            &dir.join("fs"),
            Codec::plain(),
            opts,
        ))
        .expect("fsck")
}

/// Runs one case (see the module documentation) and prints one line of the matrix.
fn run_case(test: &str, name: &'static str, action: Action, skip: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("store")).expect("store dir");
    let log = std::fs::File::create(dir.join("child.log")).expect("child log");
    let status = Command::new(std::env::current_exe().expect("test executable"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{}\n{name}\n{action:?}\n{skip}", dir.display()),
        )
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .status()
        .expect("run the child");
    let child_log = || std::fs::read_to_string(dir.join("child.log")).unwrap_or_default();
    let lines = std::fs::read_to_string(dir.join("journal")).unwrap_or_default();
    let mut acked = 0;
    let mut failed = None;
    let mut unmounted = None;
    for line in lines.lines() {
        if line.starts_with("ok ") {
            acked += 1;
        } else if let Some(rest) = line.strip_prefix("err ") {
            failed = Some(rest.to_owned());
        } else if let Some(fired) = line.strip_prefix("unmounted fired=") {
            unmounted = Some(fired == "true");
        }
    }
    match action {
        Action::Kill => assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{name}: the child was not killed at the failpoint ({status}; journal: {} lines)\n{}",
            lines.lines().count(),
            child_log()
        ),
        Action::Error => {
            assert!(status.success(), "{name}: child {status}\n{}", child_log());
            assert_eq!(unmounted, Some(true), "{name}: the failpoint never fired");
        }
    }

    let (ops, _) = script();
    let mut model = Model::new();
    for op in &ops[..acked] {
        model.apply(*op);
    }
    // The last acknowledged state of every file, for the figures only: after a crash of
    // the process (not of the machine), everything acknowledged survives in this design.
    let latest: Vec<Option<Vec<u8>>> = (0..FILES.len())
        .map(|f| model.current(f).cloned())
        .collect();
    let in_flight = ops
        .get(acked)
        .filter(|_| unmounted.is_none() || failed.is_some());
    if let Some(op) = in_flight {
        model.apply_unacknowledged(*op);
    }

    let store = OpendalStore::local(&dir.join("store")).expect("store");
    let crash = action == Action::Kill;
    let report = fsck(&store, dir, !crash);
    assert!(!report.skipped_clean);
    let allowed = if crash { AFTER_CRASH } else { AFTER_ERROR };
    let unexpected: Vec<&String> = report
        .problems
        .iter()
        .filter(|p| !allowed.iter().any(|a| p.contains(a)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{name}: fsck found unexpected problems: {unexpected:#?}"
    );

    let (exact, loose, kept) = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let fs = Filesystem::mount(Arc::new(store.clone()), common::mount_options(dir))
                .await
                .expect("mount after fsck");
            let (mut exact, mut loose, mut kept) = (0, 0, 0);
            let mut errors = Vec::new();
            for (file, latest) in latest.iter().enumerate() {
                let found = read_file(&fs, file).await;
                if found == *latest || found.as_ref() == model.current(file) {
                    kept += 1;
                }
                match model.check(file, found.as_deref()) {
                    Ok(true) => exact += 1,
                    Ok(false) => loose += 1,
                    Err(e) => errors.push(e),
                }
            }
            assert!(
                errors.is_empty(),
                "{name} ({action:?}, skip {skip}; {acked} operations acknowledged, in flight: \
             {in_flight:?}):\n{}",
                errors.join("\n")
            );
            let d = fs.lookup(ROOT_INODE, OsStr::new("d")).await.expect("d");
            let found = [names(&fs, ROOT_INODE).await, names(&fs, d.ino).await].concat();
            let known: Vec<&str> = FILES
                .iter()
                .map(|f| f.trim_start_matches("d/"))
                .chain(["d", "lost+found"])
                .collect();
            let strays: Vec<&String> = found
                .iter()
                .filter(|n| !known.contains(&n.as_str()))
                .collect();
            assert!(strays.is_empty(), "{name}: unexpected names {strays:?}");
            let lost = fs
                .lookup(ROOT_INODE, OsStr::new("lost+found"))
                .await
                .expect("lost+found");
            assert_eq!(names(&fs, lost.ino).await, Vec::<String>::new());
            assert_eq!(
                fs.check_counts().await.expect("check"),
                Vec::<String>::new()
            );
            let (attr, fh) = fs
                .create(CALLER, ROOT_INODE, OsStr::new("after"), 0o644, 0)
                .await
                .expect("create after recovery");
            fs.write(attr.ino, fh, 0, b"new").await.expect("write");
            fs.release(attr.ino, fh).await.expect("release");
            fs.unmount().await.expect("unmount");
            (exact, loose, kept)
        });
    let again = fsck(&store, dir, true);
    assert_eq!(again.problems, Vec::<String>::new(), "{name}: second fsck");
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "FAILPOINT {name} {action:?} skip={skip}: {acked}/{} operations acknowledged{}; \
         fsck: {} problem(s); {} files checked ({exact} exact, {loose} old-or-new; {kept} \
         in their last acknowledged or in-flight state); refcounts consistent, second \
         fsck clean",
        ops.len(),
        failed.map_or(String::new(), |f| format!(", failed: {f}")),
        report.problems.len(),
        exact + loose,
    );
}

/// One test per failpoint: a crash there at each of the given hits, then an injected
/// error at its first hit; plus a check that every failpoint has its test.
macro_rules! failpoint_tests {
    ($($test:ident: $point:ident, kill at $skips:expr;)*) => {
        $(
            #[test]
            fn $test() {
                if let Some((dir, name, action, skip)) = child_settings() {
                    return child(&dir, name, action, skip);
                }
                let name = failpoint::$point;
                for skip in $skips {
                    run_case(stringify!($test), name, Action::Kill, skip);
                }
                run_case(stringify!($test), name, Action::Error, 0);
            }
        )*

        #[test]
        fn every_failpoint_has_a_test() {
            assert_eq!([$(failpoint::$point),*].as_slice(), failpoint::ALL);
        }
    };
}

failpoint_tests! {
    cache_write: CACHE_WRITE, kill at [0, 11];
    cache_loaded: CACHE_LOADED, kill at [0, 2];
    cache_fsync: CACHE_FSYNC, kill at [0, 4];
    writeback_hashed: WRITEBACK_HASHED, kill at [0];
    writeback_put: WRITEBACK_PUT, kill at [0, 3];
    writeback_uploaded: WRITEBACK_UPLOADED, kill at [0, 3];
    writeback_committed: WRITEBACK_COMMITTED, kill at [0];
    writeback_clean: WRITEBACK_CLEAN, kill at [0];
    object_delete: OBJECT_DELETE, kill at [0];
    db_commit: DB_COMMIT, kill at [0, 25];
    db_committed: DB_COMMITTED, kill at [0, 25];
    db_wal_sync: DB_WAL_SYNC, kill at [0];
    meta_snapshot: META_SNAPSHOT, kill at [0];
    meta_chunk_put: META_CHUNK_PUT, kill at [0];
    meta_manifest_put: META_MANIFEST_PUT, kill at [0];
    meta_params_local: META_PARAMS_LOCAL, kill at [0];
    meta_params_put: META_PARAMS_PUT, kill at [0];
    meta_expire: META_EXPIRE, kill at [0];
}
