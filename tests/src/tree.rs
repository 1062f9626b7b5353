//! Walks, copies and compares directory trees, attribute by attribute and byte by byte.
//!
//! A [`Manifest`] records everything `lstat`, `readlink` and `llistxattr` say about each entry
//! of a tree, keyed by the path relative to the tree's root (`""` is the root). The scan
//! `lstat`s a directory before it lists it, so that the listing cannot change the recorded
//! atime. Comparison covers type, mode (all 12 permission bits), uid, gid, size (not for
//! directories, whose size is filesystem specific), nlink (directories: 2 + subdirectories),
//! atime/mtime in nanoseconds, symlink targets, `user.*` xattrs, device numbers and hard-link
//! groups (which paths share an inode inside the tree).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::sys::{self, Time};

/// The type of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Unix socket.
    Socket,
}

/// What the tree comparison looks at for one path.
#[derive(Debug, Clone)]
pub struct Entry {
    /// File type.
    pub kind: Kind,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `st_size`.
    pub size: u64,
    /// `st_nlink`.
    pub nlink: u64,
    /// `st_ino`, only meaningful within one tree.
    pub ino: u64,
    /// `st_rdev`.
    pub rdev: u64,
    /// Access time.
    pub atime: Time,
    /// Modification time.
    pub mtime: Time,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// `user.*` extended attributes.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Every entry of a tree by relative path.
pub type Manifest = BTreeMap<PathBuf, Entry>;

fn kind_of(ft: fs::FileType) -> Kind {
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else {
        Kind::Socket
    }
}

/// Reads the attributes of one path (no symlink following). Note that reading a symlink's
/// target updates its atime (Linux `readlink` does), which [`scan`] takes care of.
pub fn entry(path: &Path) -> io::Result<Entry> {
    let mut e = lstat_entry(path)?;
    fill_target(path, &mut e)?;
    Ok(e)
}

/// `lstat` and xattrs of one path: everything but the symlink target.
fn lstat_entry(path: &Path) -> io::Result<Entry> {
    let m = fs::symlink_metadata(path)?;
    let kind = kind_of(m.file_type());
    let mut xattrs = BTreeMap::new();
    if matches!(kind, Kind::File | Kind::Dir) {
        for name in sys::list_xattrs(path)? {
            if sys::is_user_xattr(&name) {
                let value = sys::get_xattr(path, &name)?;
                xattrs.insert(name, value);
            }
        }
    }
    Ok(Entry {
        kind,
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        nlink: m.nlink(),
        ino: m.ino(),
        rdev: m.rdev(),
        atime: (m.atime(), m.atime_nsec()),
        mtime: (m.mtime(), m.mtime_nsec()),
        target: None,
        xattrs,
    })
}

fn fill_target(path: &Path, e: &mut Entry) -> io::Result<()> {
    if e.kind == Kind::Symlink {
        e.target = Some(fs::read_link(path)?.as_os_str().as_bytes().to_vec());
    }
    Ok(())
}

/// Records the whole tree below (and including) `root`. Nothing that can change an atime
/// happens before every atime was recorded: each directory is `lstat`ed before it is listed,
/// and symlink targets (readlink updates the atime of the link, which may have several
/// names) are read in a second pass.
pub fn scan(root: &Path) -> io::Result<Manifest> {
    let mut out = Manifest::new();
    scan_into(root, PathBuf::new(), &mut out)?;
    for (rel, e) in out.iter_mut() {
        let path = root.join(rel);
        fill_target(&path, e).map_err(|err| annotate(err, &path))?;
    }
    Ok(out)
}

fn scan_into(root: &Path, rel: PathBuf, out: &mut Manifest) -> io::Result<()> {
    let path = root.join(&rel);
    let e = lstat_entry(&path).map_err(|err| annotate(err, &path))?;
    let is_dir = e.kind == Kind::Dir;
    out.insert(rel.clone(), e);
    if is_dir {
        for name in sorted_names(&path)? {
            scan_into(root, rel.join(name), out)?;
        }
    }
    Ok(())
}

fn sorted_names(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|err| annotate(err, dir))? {
        names.push(e.map_err(|err| annotate(err, dir))?.file_name());
    }
    names.sort();
    Ok(names)
}

fn annotate(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

fn mode_str(mode: u32) -> String {
    format!("{mode:o}")
}

/// A timespec as "<sec>s+<nsec>ns" (unambiguous before 1970, where the value is
/// sec + nsec/1e9 with a negative sec).
fn fmt_time(t: Time) -> String {
    format!("{}s+{}ns", t.0, t.1)
}

/// Options of [`compare`].
#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    /// Compare atimes too.
    pub atime: bool,
}

/// Lists every difference between the `expected` and `actual` trees (empty = identical).
pub fn compare(expected: &Manifest, actual: &Manifest, opts: CompareOptions) -> Vec<String> {
    let mut diffs = Vec::new();
    for path in expected.keys() {
        if !actual.contains_key(path) {
            diffs.push(format!("{path:?}: missing"));
        }
    }
    for path in actual.keys() {
        if !expected.contains_key(path) {
            diffs.push(format!("{path:?}: unexpected entry"));
        }
    }
    // Directories have 2 + (number of subdirectories) links, counted in the tree itself.
    let mut subdirs: HashMap<&Path, u64> = HashMap::new();
    for (path, e) in expected {
        if e.kind == Kind::Dir {
            if let Some(parent) = path.parent() {
                *subdirs.entry(parent).or_default() += 1;
            }
        }
    }
    for (path, exp) in expected {
        let Some(act) = actual.get(path) else {
            continue;
        };
        let mut d = |what: &str, e: String, a: String| {
            if e != a {
                diffs.push(format!("{path:?}: {what}: expected {e}, got {a}"));
            }
        };
        d("type", format!("{:?}", exp.kind), format!("{:?}", act.kind));
        d("mode", mode_str(exp.mode), mode_str(act.mode));
        d("uid", exp.uid.to_string(), act.uid.to_string());
        d("gid", exp.gid.to_string(), act.gid.to_string());
        d("mtime", fmt_time(exp.mtime), fmt_time(act.mtime));
        if opts.atime {
            d("atime", fmt_time(exp.atime), fmt_time(act.atime));
        }
        if exp.kind == Kind::Dir {
            let want = 2 + subdirs.get(path.as_path()).copied().unwrap_or(0);
            d(
                "directory nlink (2 + subdirectories)",
                want.to_string(),
                act.nlink.to_string(),
            );
        } else {
            d("size", exp.size.to_string(), act.size.to_string());
            d("nlink", exp.nlink.to_string(), act.nlink.to_string());
        }
        if matches!(exp.kind, Kind::Char | Kind::Block) {
            d(
                "rdev",
                format!("{}:{}", libc::major(exp.rdev), libc::minor(exp.rdev)),
                format!("{}:{}", libc::major(act.rdev), libc::minor(act.rdev)),
            );
        }
        if exp.target != act.target {
            let show = |t: &Option<Vec<u8>>| match t {
                None => "none".to_owned(),
                Some(t) if t.len() > 80 => format!(
                    "{} bytes starting {:?}",
                    t.len(),
                    String::from_utf8_lossy(&t[..80])
                ),
                Some(t) => format!("{:?}", String::from_utf8_lossy(t)),
            };
            d("symlink target", show(&exp.target), show(&act.target));
        }
        if exp.xattrs != act.xattrs {
            let show = |x: &BTreeMap<Vec<u8>, Vec<u8>>| {
                x.iter()
                    .map(|(k, v)| format!("{}={}B", String::from_utf8_lossy(k), v.len()))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let differing: Vec<String> = exp
                .xattrs
                .keys()
                .chain(act.xattrs.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| exp.xattrs.get(*k) != act.xattrs.get(*k))
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            diffs.push(format!(
                "{path:?}: xattrs differ in {differing:?}: expected [{}], got [{}]",
                show(&exp.xattrs),
                show(&act.xattrs)
            ));
        }
    }
    let (eg, ag) = (link_groups(expected), link_groups(actual));
    for g in eg.difference(&ag) {
        diffs.push(format!("hard-link group {g:?} not preserved"));
    }
    for g in ag.difference(&eg) {
        diffs.push(format!("unexpected hard-link group {g:?}"));
    }
    diffs
}

/// Sets of paths that share an inode (non-directories; groups of one are left out).
fn link_groups(m: &Manifest) -> BTreeSet<Vec<PathBuf>> {
    let mut by_ino: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    for (p, e) in m {
        if e.kind != Kind::Dir {
            by_ino.entry(e.ino).or_default().push(p.clone());
        }
    }
    by_ino
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect()
}

/// Compares the bytes of every regular file of `manifest` under `a` and `b`.
pub fn compare_contents(a: &Path, b: &Path, manifest: &Manifest) -> Vec<String> {
    let mut diffs = Vec::new();
    for (rel, e) in manifest {
        if e.kind != Kind::File {
            continue;
        }
        if let Err(msg) = same_bytes(&a.join(rel), &b.join(rel), e.size) {
            diffs.push(format!("{rel:?}: {msg}"));
        }
    }
    diffs
}

/// Reads as much as possible into `buf` (short only at EOF).
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Checks that files `a` and `b` both hold exactly `size` identical bytes.
pub fn same_bytes(a: &Path, b: &Path, size: u64) -> Result<(), String> {
    let mut fa = File::open(a).map_err(|e| format!("open {}: {e}", a.display()))?;
    let mut fb = File::open(b).map_err(|e| format!("open {}: {e}", b.display()))?;
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| format!("read {}: {e}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| format!("read {}: {e}", b.display()))?;
        if ba[..na.min(nb)] != bb[..na.min(nb)] {
            let i = (0..na.min(nb)).find(|&i| ba[i] != bb[i]).unwrap_or(0);
            return Err(format!(
                "contents differ at byte {} (expected {:#04x}, got {:#04x})",
                off + i as u64,
                ba[i],
                bb[i]
            ));
        }
        if na != nb {
            return Err(format!(
                "length differs: expected {} bytes, read {}",
                off + na as u64,
                off + nb as u64
            ));
        }
        off += na as u64;
        if na == 0 {
            break;
        }
    }
    if off != size {
        return Err(format!("read {off} bytes, but st_size was {size}"));
    }
    Ok(())
}

/// Copies `src` to `dst` (which must not exist) preserving everything [`compare`] checks:
/// hard links (within the tree), holes (SEEK_DATA/SEEK_HOLE), xattrs, owners, modes
/// including setuid/setgid/sticky, and nanosecond atime/mtime (set last, directories after
/// their contents). The times copied are those the source has when the copy reaches it;
/// listing and reading the source moves its atimes, so callers that compare atimes set
/// them from a manifest taken before ([`restore_times`]).
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let mut links = HashMap::new();
    copy_entry(src, dst, &mut links)
}

fn copy_entry(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> io::Result<()> {
    let m = fs::symlink_metadata(src).map_err(|e| annotate(e, src))?;
    let kind = kind_of(m.file_type());
    if kind != Kind::Dir && m.nlink() > 1 {
        if let Some(first) = links.get(&(m.dev(), m.ino())) {
            return fs::hard_link(first, dst).map_err(|e| annotate(e, dst));
        }
    }
    let ctx = |e: io::Error| annotate(e, dst);
    match kind {
        Kind::Dir => {
            fs::create_dir(dst).map_err(ctx)?;
            for name in sorted_names(src)? {
                copy_entry(&src.join(&name), &dst.join(&name), links)?;
            }
        }
        Kind::File => copy_file_sparse(src, dst).map_err(ctx)?,
        Kind::Symlink => std::os::unix::fs::symlink(fs::read_link(src)?, dst).map_err(ctx)?,
        Kind::Fifo | Kind::Char | Kind::Block | Kind::Socket => {
            sys::mknod(dst, (m.mode() & libc::S_IFMT) | 0o600, m.rdev()).map_err(ctx)?
        }
    }
    if matches!(kind, Kind::File | Kind::Dir) {
        for name in sys::list_xattrs(src)? {
            if sys::is_user_xattr(&name) {
                let value = sys::get_xattr(src, &name)?;
                sys::set_xattr(dst, &name, &value).map_err(ctx)?;
            }
        }
    }
    // chown clears setuid/setgid, so it comes before chmod.
    sys::lchown(dst, m.uid(), m.gid()).map_err(ctx)?;
    if kind != Kind::Symlink {
        sys::chmod(dst, m.mode() & 0o7777).map_err(ctx)?;
    }
    sys::set_times(
        dst,
        (m.atime(), m.atime_nsec()),
        (m.mtime(), m.mtime_nsec()),
    )
    .map_err(ctx)?;
    if kind != Kind::Dir && m.nlink() > 1 {
        links.insert((m.dev(), m.ino()), dst.to_owned());
    }
    Ok(())
}

/// Copies the data regions of `src` to a new file `dst` and sets its length, so holes stay
/// holes.
pub fn copy_file_sparse(src: &Path, dst: &Path) -> io::Result<()> {
    let from = File::open(src)?;
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    let len = from.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let Some(start) = sys::seek_data(&from, pos)? else {
            break;
        };
        let end = sys::seek_hole(&from, start)?.unwrap_or(len).min(len);
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..n], off)?;
            to.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
        pos = end;
    }
    to.set_len(len)?;
    Ok(())
}

/// Sets atime and mtime of every entry under `root` back to the manifest's values (children
/// before their directory). Reading files and listing directories may have moved atimes.
pub fn restore_times(root: &Path, manifest: &Manifest) -> io::Result<()> {
    for (rel, e) in manifest.iter().rev() {
        let p = root.join(rel);
        sys::set_times(&p, e.atime, e.mtime).map_err(|err| annotate(err, &p))?;
    }
    Ok(())
}

/// Panics with all `diffs` (at most 200 shown) if there are any.
pub fn assert_no_diffs(what: &str, diffs: &[String]) {
    if diffs.is_empty() {
        return;
    }
    let shown: Vec<&str> = diffs.iter().take(200).map(String::as_str).collect();
    panic!(
        "{what}: {} difference(s):\n  {}{}",
        diffs.len(),
        shown.join("\n  "),
        if diffs.len() > shown.len() {
            "\n  ..."
        } else {
            ""
        }
    );
}
