//! Blocks left in the cache directory by a crashed mount.
//!
//! The set of dirty blocks lived only in the mount's memory, so every `<inode>-<blockno>`
//! file is examined: its SHA-256 is compared with the block the metadata records for that
//! position; if they differ the file is newer (it is written before the metadata and
//! uploaded after it), so it is stored (de-duplicated against existing blocks) and the
//! position repointed at it. Files of inodes that no longer exist, or that lie wholly past
//! the end of their file, are discarded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use super::open::Session;
use super::{in_db, path_of, FsckError, FsckOptions, FsckReport};
use crate::blocks::{self, data_object_name};
use crate::cache::is_spare_dir;
use crate::error::FsError;
use crate::types::mode_bits;

/// One cache file and what the metadata says about its position.
struct Cached {
    file: PathBuf,
    inode: u64,
    blockno: u64,
    /// SHA-256 and length of its contents; `None` for all zeros (a hole).
    content: Option<Content>,
}

/// SHA-256 and length of a block's contents.
type Content = (Vec<u8>, u64);

/// What to do with a cache file.
enum Verdict {
    /// Matches the metadata.
    Keep,
    /// Belongs to nothing (the message says why).
    Discard(String),
    /// Differs from the metadata: store it.
    Store,
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let (ino, blockno) = name.split_once('-')?;
    Some((ino.parse().ok()?, blockno.parse().ok()?))
}

fn read_dir(dir: &Path, report: &mut FsckReport) -> std::io::Result<Vec<(PathBuf, u64, u64)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        match name.as_deref().and_then(parse_name) {
            Some((ino, blockno)) => found.push((path, ino, blockno)),
            // Empty files the mount reuses (see `cache::is_spare_dir`).
            None if name.as_deref().is_some_and(is_spare_dir) => {}
            None => {
                report.note(format!("removing stray cache file {}", path.display()));
                std::fs::remove_file(&path)?;
            }
        }
    }
    found.sort_by_key(|f| (f.1, f.2));
    Ok(found)
}

/// Uploads the cache files that differ from the metadata and repoints their blocks;
/// deletes every cache file unless `keep`. Returns the objects that lost their last
/// reference.
pub(super) async fn recover(
    session: &Session,
    opts: &FsckOptions,
    report: &mut FsckReport,
) -> Result<Vec<u64>, FsckError> {
    let (db, store, codec) = (&session.db, session.store.as_ref(), &session.codec);
    let (compression, block_size) = (opts.compression, session.block_size);
    let cache_dir = session.paths.cache_dir.as_path();
    let files = read_dir(cache_dir, report).map_err(FsError::from)?;
    let cached: Vec<Cached> = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|(file, inode, blockno)| {
                let data = std::fs::read(&file)?;
                let content = (!data.iter().all(|b| *b == 0))
                    .then(|| (Sha256::digest(&data).to_vec(), data.len() as u64));
                Ok(Cached {
                    file,
                    inode,
                    blockno,
                    content,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .map_err(|e| FsError::Inconsistent(e.to_string()))?
    .map_err(FsError::from)?;

    let (cached, verdicts) = in_db(db, move |c| {
        let mut verdicts = Vec::new();
        for f in &cached {
            let size: Option<u64> = rusqlite::OptionalExtension::optional(c.query_row(
                "SELECT size FROM inodes WHERE id = ?1 AND (mode & ?2) = ?3 AND nlink > 0",
                rusqlite::params![f.inode, mode_bits::S_IFMT, mode_bits::S_IFREG],
                |r| r.get(0),
            ))?;
            let stored = blocks::block_of(c, f.inode, f.blockno)?;
            let verdict = match size {
                None => Verdict::Discard(format!(
                    "cached block {} of inode {} belongs to no linked file; discarded",
                    f.blockno, f.inode
                )),
                Some(size) if f.blockno * block_size >= size => Verdict::Discard(format!(
                    "cached block {} of {} lies past its end ({size} bytes); discarded",
                    f.blockno,
                    path_of(c, f.inode)
                )),
                Some(_) => match (&f.content, &stored) {
                    (None, None) => Verdict::Keep,
                    (Some((hash, len)), Some(s)) if *hash == s.hash && *len == s.size => {
                        Verdict::Keep
                    }
                    _ => Verdict::Store,
                },
            };
            verdicts.push(verdict);
        }
        Ok((cached, verdicts))
    })
    .await?;

    // Upload the new contents, once per distinct hash not stored yet.
    let mut to_store: Vec<&Cached> = Vec::new();
    for (f, v) in cached.iter().zip(&verdicts) {
        match v {
            Verdict::Discard(msg) => report.problem(msg.clone()),
            Verdict::Store => to_store.push(f),
            Verdict::Keep => {}
        }
    }
    let mut new_hashes: HashMap<Vec<u8>, &Cached> = HashMap::new();
    for f in &to_store {
        if let Some((hash, _)) = &f.content {
            new_hashes.entry(hash.clone()).or_insert(f);
        }
    }
    let candidates: Vec<(Vec<u8>, PathBuf)> = new_hashes
        .iter()
        .map(|(h, f)| (h.clone(), f.file.clone()))
        .collect();
    let unknown: Vec<(Vec<u8>, PathBuf)> = in_db(db, move |c| {
        let mut unknown = Vec::new();
        for (hash, file) in candidates {
            if blocks::block_by_hash(c, &hash)?.is_none() {
                unknown.push((hash, file));
            }
        }
        Ok(unknown)
    })
    .await?;
    let uploaded: Vec<(Vec<u8>, u64, u64, u64)> = futures::stream::iter(unknown)
        .map(|(hash, file)| async move {
            let obj_id = db.call(blocks::next_object_id).await?;
            let codec = codec.clone();
            let (object, len) = tokio::task::spawn_blocking(move || {
                let data = std::fs::read(&file)?;
                let len = data.len() as u64;
                Ok::<_, FsError>((
                    codec.encode(&data_object_name(obj_id), &data, compression),
                    len,
                ))
            })
            .await
            .map_err(|e| FsError::Inconsistent(e.to_string()))??;
            let stored = object.len() as u64;
            store
                .put(&data_object_name(obj_id), Bytes::from(object))
                .await?;
            Ok::<_, FsError>((hash, len, obj_id, stored))
        })
        .buffer_unordered(opts.max_connections.max(1))
        .try_collect()
        .await?;

    let repoint: Vec<(u64, u64, Option<Content>)> = to_store
        .iter()
        .map(|f| (f.inode, f.blockno, f.content.clone()))
        .collect();
    let (dead, messages) = in_db(db, move |c| {
        for (hash, len, obj_id, stored) in uploaded {
            blocks::insert_block(c, &hash, len, obj_id, stored)?;
        }
        // Resolve every target first and hold one extra reference to each while
        // repointing: a block that one position drops may be what another one needs.
        let mut targets = Vec::new();
        for (inode, blockno, content) in repoint {
            let block = match &content {
                None => None,
                Some((hash, _)) => Some(
                    blocks::block_by_hash(c, hash)?
                        .ok_or_else(|| FsError::Inconsistent("uploaded block vanished".into()))?,
                ),
            };
            targets.push((inode, blockno, block));
        }
        let mut held: Vec<u64> = targets.iter().filter_map(|t| t.2).collect();
        held.sort_unstable();
        held.dedup();
        for id in &held {
            blocks::add_ref(c, *id)?;
        }
        let mut dead = Vec::new();
        let mut messages = Vec::new();
        for (inode, blockno, block) in targets {
            dead.extend(blocks::set_block(c, inode, blockno, block)?);
            messages.push(format!(
                "block {blockno} of {} was not uploaded before the crash; stored from the cache",
                path_of(c, inode)
            ));
        }
        for id in held {
            dead.extend(blocks::release_block(c, id)?);
        }
        Ok((dead, messages))
    })
    .await?;
    for m in messages {
        report.problem(m);
    }
    if !opts.keep_cache {
        for f in &cached {
            std::fs::remove_file(&f.file).map_err(FsError::from)?;
        }
    }
    Ok(dead)
}
