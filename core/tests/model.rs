//! Property test: random operation sequences applied to the core (over the in-memory
//! store) and to a simple in-memory reference model must agree after every step, again
//! after a remount from the store alone (empty cache), and every stored reference count
//! must equal the recomputed one. The operations include the S3QL tree operations
//! (snapshot, lock, tree removal); every change below a locked path must fail with `EPERM`.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use proptest::prelude::*;
use s3ql_core::storage::MemoryStore;
use s3ql_core::{Caller, FileKind, Filesystem, RenameFlags, SetAttr, XattrMode, ROOT_INODE};

const BLOCK: u64 = 4096;
/// "No such attribute" (`ENOATTR` off Linux).
#[cfg(target_os = "linux")]
const ENOATTR: i32 = libc::ENODATA;
#[cfg(not(target_os = "linux"))]
const ENOATTR: i32 = libc::ENOATTR;
const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const CALLER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};

/// One node of the reference model; hard links share a node id.
#[derive(Debug, Clone)]
enum Node {
    File { data: Vec<u8> },
    Dir { children: BTreeMap<String, usize> },
    Symlink { target: String },
}

#[derive(Debug, Clone)]
struct ModelNode {
    node: Node,
    mode: u32,
    xattrs: BTreeMap<String, Vec<u8>>,
    locked: bool,
}

/// The reference model: an arena of nodes, node 0 is the root.
#[derive(Debug, Clone)]
struct Model {
    nodes: Vec<ModelNode>,
}

/// What a path looks like, compared between model and core.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    nlink: u32,
    size: u64,
    data: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Paths of the same inode (hard-link group), sorted.
    group: Vec<String>,
}

#[derive(Debug, Clone)]
enum Op {
    Create(usize, usize),
    Mkdir(usize, usize),
    Symlink(usize, usize, usize),
    Write(usize, u64, usize, u8),
    Truncate(usize, u64),
    Unlink(usize),
    Rmdir(usize),
    Rename(usize, usize, usize, bool),
    Link(usize, usize, usize),
    SetXattr(usize, usize, u8),
    RemoveXattr(usize, usize),
    Chmod(usize, u32),
    Flush,
    CopyTree(usize, usize, usize),
    LockTree(usize),
    RemoveTree(usize),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let i = || 0usize..64;
    let n = || 0usize..NAMES.len();
    prop_oneof![
        3 => (i(), n()).prop_map(|(d, n)| Op::Create(d, n)),
        2 => (i(), n()).prop_map(|(d, n)| Op::Mkdir(d, n)),
        1 => (i(), n(), n()).prop_map(|(d, n, t)| Op::Symlink(d, n, t)),
        5 => (i(), 0u64..(4 * BLOCK), 0usize..(2 * BLOCK as usize), any::<u8>()).prop_map(|(f, o, l, b)| Op::Write(f, o, l, b)),
        2 => (i(), 0u64..(4 * BLOCK)).prop_map(|(f, s)| Op::Truncate(f, s)),
        2 => i().prop_map(Op::Unlink),
        1 => i().prop_map(Op::Rmdir),
        2 => (i(), i(), n(), any::<bool>()).prop_map(|(s, d, n, x)| Op::Rename(s, d, n, x)),
        1 => (i(), i(), n()).prop_map(|(f, d, n)| Op::Link(f, d, n)),
        1 => (i(), 0usize..2, any::<u8>()).prop_map(|(p, n, v)| Op::SetXattr(p, n, v)),
        1 => (i(), 0usize..2).prop_map(|(p, n)| Op::RemoveXattr(p, n)),
        1 => (i(), 0u32..0o7777).prop_map(|(p, m)| Op::Chmod(p, m)),
        1 => Just(Op::Flush),
        1 => (i(), i(), n()).prop_map(|(s, d, n)| Op::CopyTree(s, d, n)),
        1 => i().prop_map(Op::LockTree),
        1 => i().prop_map(Op::RemoveTree),
    ]
}

impl Model {
    fn new() -> Self {
        let root = ModelNode {
            node: Node::Dir {
                children: BTreeMap::from([("lost+found".to_string(), 1)]),
            },
            mode: 0o755,
            xattrs: BTreeMap::new(),
            locked: false,
        };
        let lost = ModelNode {
            node: Node::Dir {
                children: BTreeMap::new(),
            },
            mode: 0o700,
            xattrs: BTreeMap::new(),
            locked: false,
        };
        Model {
            nodes: vec![root, lost],
        }
    }

    /// Every path (with its parent node and final name), root excluded, depth first.
    fn paths(&self) -> Vec<(String, usize, String, usize)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), 0usize)];
        while let Some((prefix, id)) = stack.pop() {
            if let Node::Dir { children } = &self.nodes[id].node {
                for (name, child) in children {
                    let path = format!("{prefix}/{name}");
                    out.push((path.clone(), id, name.clone(), *child));
                    stack.push((path, *child));
                }
            }
        }
        out.sort();
        out
    }

    fn dirs(&self) -> Vec<(String, usize)> {
        let mut d: Vec<(String, usize)> = vec![(String::new(), 0)];
        d.extend(
            self.paths()
                .into_iter()
                .filter(|p| matches!(self.nodes[p.3].node, Node::Dir { .. }))
                .map(|p| (p.0, p.3)),
        );
        d
    }

    fn locked(&self, id: usize) -> bool {
        self.nodes[id].locked
    }

    /// `top` and every node below it, each once.
    fn subtree(&self, top: usize) -> Vec<usize> {
        let mut seen = vec![top];
        let mut i = 0;
        while i < seen.len() {
            if let Node::Dir { children } = &self.nodes[seen[i]].node {
                for c in children.values() {
                    if !seen.contains(c) {
                        seen.push(*c);
                    }
                }
            }
            i += 1;
        }
        seen
    }

    /// Copies the tree `top` (hard links inside it stay shared, copies are unlocked);
    /// returns the copy's node.
    fn copy_subtree(&mut self, top: usize) -> usize {
        let old = self.subtree(top);
        let base = self.nodes.len();
        let new_id = |id: usize| base + old.iter().position(|o| *o == id).unwrap_or(0);
        for id in &old {
            let mut n = self.nodes[*id].clone();
            n.locked = false;
            if let Node::Dir { children } = &mut n.node {
                for c in children.values_mut() {
                    *c = new_id(*c);
                }
            }
            self.nodes.push(n);
        }
        new_id(top)
    }

    fn children(&mut self, dir: usize) -> &mut BTreeMap<String, usize> {
        match &mut self.nodes[dir].node {
            Node::Dir { children } => children,
            _ => unreachable!("not a directory"),
        }
    }

    fn is_ancestor(
        &self,
        anc: usize,
        mut node: usize,
        paths: &[(String, usize, String, usize)],
    ) -> bool {
        loop {
            if node == anc {
                return true;
            }
            if node == 0 {
                return false;
            }
            node = paths.iter().find(|p| p.3 == node).map(|p| p.1).unwrap_or(0);
        }
    }

    fn seen(&self) -> BTreeMap<String, Seen> {
        let paths = self.paths();
        let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (p, _, _, id) in &paths {
            groups.entry(*id).or_default().push(p.clone());
        }
        let mut out = BTreeMap::new();
        for (p, _, _, id) in &paths {
            let n = &self.nodes[*id];
            let (kind, size, data, nlink) = match &n.node {
                Node::File { data } => (
                    "file",
                    data.len() as u64,
                    data.clone(),
                    groups[id].len() as u32,
                ),
                Node::Dir { children } => {
                    let subdirs = children
                        .values()
                        .filter(|c| matches!(self.nodes[**c].node, Node::Dir { .. }))
                        .count();
                    ("dir", 0, Vec::new(), 2 + subdirs as u32)
                }
                Node::Symlink { target } => (
                    "symlink",
                    target.len() as u64,
                    target.clone().into_bytes(),
                    groups[id].len() as u32,
                ),
            };
            let mode = if kind == "symlink" { 0o777 } else { n.mode };
            out.insert(
                p.clone(),
                Seen {
                    kind,
                    mode,
                    nlink,
                    size,
                    data,
                    xattrs: n.xattrs.clone(),
                    group: groups[id].clone(),
                },
            );
        }
        out
    }
}

/// The core under test, with path resolution for the test.
struct Real {
    fs: Arc<Filesystem>,
}

impl Real {
    /// The inode at `path`; every lookup is forgotten again at once, as the kernel would
    /// eventually do, so that removed inodes are freed during the run.
    async fn resolve(&self, path: &str) -> u64 {
        let mut ino = ROOT_INODE;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self
                .fs
                .lookup(ino, OsStr::new(part))
                .await
                .expect("lookup")
                .ino;
            self.fs.forget(ino, 1);
        }
        ino
    }

    /// Opens `ino` for writing (as the kernel does before writes), writes, releases.
    async fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<(), i32> {
        let fh = self
            .fs
            .open(ino, libc::O_WRONLY)
            .await
            .map_err(|e| e.errno())?;
        let written = errno_of(self.fs.write(ino, fh, offset, data).await);
        self.fs.release(ino, fh).await.expect("release");
        written
    }

    async fn seen(&self) -> BTreeMap<String, Seen> {
        let mut flat: Vec<(String, u64)> = Vec::new();
        let mut stack = vec![(String::new(), ROOT_INODE)];
        while let Some((prefix, dir)) = stack.pop() {
            let entries = self.fs.readdir(dir, 0, 10_000).await.expect("readdir");
            for e in entries {
                if e.name == "." || e.name == ".." {
                    continue;
                }
                let path = format!("{prefix}/{}", e.name.to_string_lossy());
                if e.kind == FileKind::Directory {
                    stack.push((path.clone(), e.ino));
                }
                flat.push((path, e.ino));
            }
        }
        let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (p, ino) in &flat {
            groups.entry(*ino).or_default().push(p.clone());
        }
        let mut out = BTreeMap::new();
        for (p, ino) in &flat {
            let attr = self.fs.getattr(*ino).await.expect("getattr");
            let (kind, data) = match attr.kind {
                FileKind::Regular => (
                    "file",
                    self.fs
                        .read(*ino, 0, 0, u32::MAX)
                        .await
                        .expect("read")
                        .to_vec(),
                ),
                FileKind::Directory => ("dir", Vec::new()),
                FileKind::Symlink => ("symlink", self.fs.readlink(*ino).await.expect("readlink")),
                _ => ("other", Vec::new()),
            };
            let mut xattrs = BTreeMap::new();
            let names = self.fs.listxattr(*ino).await.expect("listxattr");
            for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
                let value = self
                    .fs
                    .getxattr(CALLER, *ino, OsStr::from_bytes(name))
                    .await
                    .expect("getxattr");
                xattrs.insert(String::from_utf8_lossy(name).into_owned(), value);
            }
            let mut group = groups[ino].clone();
            group.sort();
            out.insert(
                p.clone(),
                Seen {
                    kind,
                    mode: u32::from(attr.perm),
                    nlink: attr.nlink,
                    size: attr.size,
                    data,
                    xattrs,
                    group,
                },
            );
        }
        out
    }
}

fn errno_of<T>(r: Result<T, s3ql_core::FsError>) -> Result<(), i32> {
    r.map(|_| ()).map_err(|e| e.errno())
}

/// Applies `op` to both; returns (model result, core result).
async fn apply(model: &mut Model, real: &Real, op: &Op) -> (Result<(), i32>, Result<(), i32>) {
    let paths = model.paths();
    let dirs = model.dirs();
    let pick = |i: usize| paths.get(i % paths.len().max(1)).cloned();
    let pick_dir = |i: usize| dirs[i % dirs.len()].clone();
    let fs = &real.fs;
    match op.clone() {
        Op::Create(d, n) | Op::Mkdir(d, n) | Op::Symlink(d, n, _) => {
            let (dpath, did) = pick_dir(d);
            let name = NAMES[n].to_string();
            let parent = real.resolve(&dpath).await;
            let exists = model.children(did).contains_key(&name);
            let (node, mode) = match op {
                Op::Create(..) => (Node::File { data: Vec::new() }, 0o644),
                Op::Mkdir(..) => (
                    Node::Dir {
                        children: BTreeMap::new(),
                    },
                    0o755,
                ),
                Op::Symlink(_, _, t) => (
                    Node::Symlink {
                        target: NAMES[*t].repeat(3),
                    },
                    0o777,
                ),
                _ => unreachable!(),
            };
            let r = match &node {
                Node::File { .. } => {
                    errno_of(fs.create(CALLER, parent, OsStr::new(&name), 0o644, 0).await)
                }
                Node::Dir { .. } => {
                    errno_of(fs.mkdir(CALLER, parent, OsStr::new(&name), 0o755).await)
                }
                Node::Symlink { target } => errno_of(
                    fs.symlink(CALLER, parent, OsStr::new(&name), OsStr::new(target))
                        .await,
                ),
            };
            // A directory created in a setgid directory inherits the setgid bit.
            let inherit = matches!(node, Node::Dir { .. }) && model.nodes[did].mode & 0o2000 != 0;
            let mode = if inherit { mode | 0o2000 } else { mode };
            let expect = if model.locked(did) {
                Err(libc::EPERM)
            } else if exists {
                Err(libc::EEXIST)
            } else {
                model.nodes.push(ModelNode {
                    node,
                    mode,
                    xattrs: BTreeMap::new(),
                    locked: false,
                });
                let id = model.nodes.len() - 1;
                model.children(did).insert(name, id);
                Ok(())
            };
            (expect, r)
        }
        Op::Write(f, off, len, byte) => {
            let Some((path, _, _, id)) = pick(f) else {
                return (Ok(()), Ok(()));
            };
            let locked = model.locked(id);
            let Node::File { data } = &mut model.nodes[id].node else {
                return (Ok(()), Ok(()));
            };
            let expect = if locked {
                Err(libc::EPERM)
            } else {
                let end = off as usize + len;
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[off as usize..end].fill(byte);
                Ok(())
            };
            let ino = real.resolve(&path).await;
            (expect, real.write(ino, off, &vec![byte; len]).await)
        }
        Op::Truncate(f, size) => {
            let Some((path, _, _, id)) = pick(f) else {
                return (Ok(()), Ok(()));
            };
            let locked = model.locked(id);
            let Node::File { data } = &mut model.nodes[id].node else {
                return (Ok(()), Ok(()));
            };
            let expect = if locked {
                Err(libc::EPERM)
            } else {
                data.resize(size as usize, 0);
                Ok(())
            };
            let ino = real.resolve(&path).await;
            let r = fs
                .setattr(
                    CALLER,
                    ino,
                    SetAttr {
                        size: Some(size),
                        ..Default::default()
                    },
                )
                .await;
            (expect, errno_of(r))
        }
        Op::Unlink(p) | Op::Rmdir(p) => {
            let Some((path, parent_id, name, id)) = pick(p) else {
                return (Ok(()), Ok(()));
            };
            let want_dir = matches!(op, Op::Rmdir(_));
            let parent_path = path
                .rsplit_once('/')
                .map(|x| x.0.to_string())
                .unwrap_or_default();
            let parent = real.resolve(&parent_path).await;
            let expect = match (&model.nodes[id].node, want_dir) {
                _ if model.locked(parent_id) || model.locked(id) => Err(libc::EPERM),
                (Node::Dir { .. }, false) => Err(libc::EISDIR),
                (Node::Dir { children }, true) if !children.is_empty() => Err(libc::ENOTEMPTY),
                (Node::Dir { .. }, true) => Ok(()),
                (_, true) => Err(libc::ENOTDIR),
                (_, false) => Ok(()),
            };
            if expect.is_ok() {
                model.children(parent_id).remove(&name);
            }
            let r = if want_dir {
                errno_of(fs.rmdir(parent, OsStr::new(&name)).await)
            } else {
                errno_of(fs.unlink(parent, OsStr::new(&name)).await)
            };
            (expect, r)
        }
        Op::Rename(s, d, n, exchange) => {
            let Some((spath, sparent, sname, sid)) = pick(s) else {
                return (Ok(()), Ok(()));
            };
            let (dpath, did) = pick_dir(d);
            let dname = NAMES[n].to_string();
            let sparent_path = spath
                .rsplit_once('/')
                .map(|x| x.0.to_string())
                .unwrap_or_default();
            let sp = real.resolve(&sparent_path).await;
            let dp = real.resolve(&dpath).await;
            let target = model.children(did).get(&dname).copied();
            let src_is_dir = matches!(model.nodes[sid].node, Node::Dir { .. });
            let same = sparent == did && sname == dname;
            let expect = if model.locked(sparent) || model.locked(did) || model.locked(sid) {
                Err(libc::EPERM)
            } else if exchange {
                match target {
                    None => Err(libc::ENOENT),
                    Some(t) if model.locked(t) => Err(libc::EPERM),
                    Some(t) => {
                        let t_is_dir = matches!(model.nodes[t].node, Node::Dir { .. });
                        if same || t == sid {
                            Ok(())
                        } else if src_is_dir && model.is_ancestor(sid, did, &paths)
                            || t_is_dir && model.is_ancestor(t, sparent, &paths)
                        {
                            Err(libc::EINVAL)
                        } else {
                            model.children(sparent).insert(sname.clone(), t);
                            model.children(did).insert(dname.clone(), sid);
                            Ok(())
                        }
                    }
                }
            } else if src_is_dir && model.is_ancestor(sid, did, &paths) {
                Err(libc::EINVAL)
            } else {
                match target {
                    Some(t) if t == sid => Ok(()),
                    Some(t) if model.locked(t) => Err(libc::EPERM),
                    Some(t) => {
                        let t_node = model.nodes[t].node.clone();
                        match (src_is_dir, t_node) {
                            (true, Node::Dir { children }) if !children.is_empty() => {
                                Err(libc::ENOTEMPTY)
                            }
                            (true, Node::Dir { .. })
                            | (false, Node::File { .. } | Node::Symlink { .. }) => {
                                model.children(sparent).remove(&sname);
                                model.children(did).insert(dname.clone(), sid);
                                Ok(())
                            }
                            (true, _) => Err(libc::ENOTDIR),
                            (false, _) => Err(libc::EISDIR),
                        }
                    }
                    None => {
                        model.children(sparent).remove(&sname);
                        model.children(did).insert(dname.clone(), sid);
                        Ok(())
                    }
                }
            };
            let flags = RenameFlags {
                exchange,
                noreplace: false,
            };
            let r = errno_of(
                fs.rename(sp, OsStr::new(&sname), dp, OsStr::new(&dname), flags)
                    .await,
            );
            (expect, r)
        }
        Op::Link(f, d, n) => {
            let Some((path, _, _, id)) = pick(f) else {
                return (Ok(()), Ok(()));
            };
            let (dpath, did) = pick_dir(d);
            let name = NAMES[n].to_string();
            let ino = real.resolve(&path).await;
            let dp = real.resolve(&dpath).await;
            let expect = if matches!(model.nodes[id].node, Node::Dir { .. })
                || model.locked(id)
                || model.locked(did)
            {
                Err(libc::EPERM)
            } else if model.children(did).contains_key(&name) {
                Err(libc::EEXIST)
            } else {
                model.children(did).insert(name.clone(), id);
                Ok(())
            };
            (expect, errno_of(fs.link(ino, dp, OsStr::new(&name)).await))
        }
        Op::SetXattr(p, n, v) => {
            let Some((path, _, _, id)) = pick(p) else {
                return (Ok(()), Ok(()));
            };
            let name = format!("user.x{n}");
            let expect = if model.locked(id) {
                Err(libc::EPERM)
            } else {
                model.nodes[id].xattrs.insert(name.clone(), vec![v; 3]);
                Ok(())
            };
            let ino = real.resolve(&path).await;
            (
                expect,
                errno_of(
                    fs.setxattr(CALLER, ino, OsStr::new(&name), &[v; 3], XattrMode::Set)
                        .await,
                ),
            )
        }
        Op::RemoveXattr(p, n) => {
            let Some((path, _, _, id)) = pick(p) else {
                return (Ok(()), Ok(()));
            };
            let name = format!("user.x{n}");
            let expect = if model.locked(id) {
                Err(libc::EPERM)
            } else {
                model.nodes[id]
                    .xattrs
                    .remove(&name)
                    .map(|_| ())
                    .ok_or(ENOATTR)
            };
            let ino = real.resolve(&path).await;
            (
                expect,
                errno_of(fs.removexattr(ino, OsStr::new(&name)).await),
            )
        }
        Op::Chmod(p, m) => {
            let Some((path, _, _, id)) = pick(p) else {
                return (Ok(()), Ok(()));
            };
            if matches!(model.nodes[id].node, Node::Symlink { .. }) {
                return (Ok(()), Ok(()));
            }
            let expect = if model.locked(id) {
                Err(libc::EPERM)
            } else {
                model.nodes[id].mode = m;
                Ok(())
            };
            let ino = real.resolve(&path).await;
            (
                expect,
                errno_of(
                    fs.setattr(
                        CALLER,
                        ino,
                        SetAttr {
                            mode: Some(m),
                            ..Default::default()
                        },
                    )
                    .await,
                ),
            )
        }
        Op::Flush => (Ok(()), errno_of(fs.flush_cache().await)),
        Op::CopyTree(s, d, n) => {
            let (spath, sid) = pick_dir(s);
            let (dpath, did) = pick_dir(d);
            let name = NAMES[n].to_string();
            let src = real.resolve(&spath).await;
            let dst = real.resolve(&dpath).await;
            let expect = if model.locked(did) {
                Err(libc::EPERM)
            } else if model.children(did).contains_key(&name) {
                Err(libc::EEXIST)
            } else if model.is_ancestor(sid, did, &paths) {
                Err(libc::EINVAL)
            } else {
                let copy = model.copy_subtree(sid);
                model.children(did).insert(name.clone(), copy);
                Ok(())
            };
            let r = errno_of(fs.copy_tree(src, dst, OsStr::new(&name)).await);
            (expect, r)
        }
        Op::LockTree(p) => {
            let Some((path, _, _, id)) = pick(p) else {
                return (Ok(()), Ok(()));
            };
            for n in model.subtree(id) {
                model.nodes[n].locked = true;
            }
            let ino = real.resolve(&path).await;
            (Ok(()), errno_of(fs.lock_tree(ino).await))
        }
        Op::RemoveTree(p) => {
            let Some((path, parent_id, name, _)) = pick(p) else {
                return (Ok(()), Ok(()));
            };
            let expect = if model.locked(parent_id) {
                Err(libc::EPERM)
            } else {
                model.children(parent_id).remove(&name);
                Ok(())
            };
            let parent_path = path
                .rsplit_once('/')
                .map(|x| x.0.to_string())
                .unwrap_or_default();
            let parent = real.resolve(&parent_path).await;
            (
                expect,
                errno_of(fs.remove_tree(parent, OsStr::new(&name)).await),
            )
        }
    }
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = MemoryStore::new();
    let dir1 = tempfile::tempdir().expect("tempdir");
    let fs = common::mkfs_and_mount(&store, dir1.path(), BLOCK).await;
    let real = Real { fs };
    let mut model = Model::new();
    for (i, op) in ops.iter().enumerate() {
        let (expect, got) = apply(&mut model, &real, op).await;
        prop_assert_eq!(expect, got, "step {} {:?}", i, op);
        prop_assert_eq!(
            model.seen(),
            real.seen().await,
            "state after step {} {:?}",
            i,
            op
        );
    }
    prop_assert_eq!(
        real.fs.check_counts().await.expect("check"),
        Vec::<String>::new()
    );
    real.fs.unmount().await.expect("unmount");
    drop(real);

    let dir2 = tempfile::tempdir().expect("tempdir");
    let fs = Filesystem::mount(Arc::new(store.clone()), common::mount_options(dir2.path()))
        .await
        .expect("remount");
    let real = Real { fs };
    prop_assert_eq!(
        model.seen(),
        real.seen().await,
        "after remount from the store alone"
    );
    prop_assert_eq!(
        real.fs.check_counts().await.expect("check"),
        Vec::<String>::new()
    );
    real.fs.unmount().await.expect("unmount");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn core_matches_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(run_case(ops))?;
    }
}
