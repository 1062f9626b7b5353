//! Metadata in the backend: a consistent snapshot of the database, cut into fixed-size
//! chunks, described by a manifest per generation.
//!
//! A chunk whose bytes equal the chunk at the same index of the previous generation is not
//! uploaded again; the new manifest points at the old object. A chunk in which few pages
//! changed is not uploaded whole either: its changed pages go into a patch object (shared
//! by all chunks of the generation) that the manifest lists after the chunk's object. To
//! know which pages changed, the page digests of the last uploaded generation are kept
//! beside the database (`<db>.uploaded`, checked against the manifest before use). So the
//! cost of an upload grows with the pages that changed, not with the size of the database
//! or the spread of the changes. The last [`KEPT_GENERATIONS`] manifests are kept; objects
//! no kept manifest names are deleted.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{FsError, FsResult};
use crate::format::{Codec, Compression};
use crate::meta::Db;
use crate::storage::ObjectStore;

/// Bytes of database per chunk object.
pub(crate) const CHUNK_SIZE: usize = 128 * 1024;
/// Number of metadata generations kept in the backend.
pub(crate) const KEPT_GENERATIONS: usize = 8;
/// The unit of change inside a chunk (SQLite's default page size).
const PAGE_SIZE: usize = 4096;
const PAGES_PER_CHUNK: usize = CHUNK_SIZE / PAGE_SIZE;
/// Bytes of a page digest (a truncated SHA-256).
const PAGE_DIGEST: usize = 16;
/// Bytes per chunk in `<db>.uploaded`: the chunk's SHA-256, then its page digests.
const DIGEST_ENTRY: usize = 32 + PAGES_PER_CHUNK * PAGE_DIGEST;
/// Most patches on top of one chunk object; a chunk that would need more is uploaded whole.
const MAX_PATCHES: usize = 8;
/// A chunk with more changed bytes than this is uploaded whole.
const MAX_PATCH_BYTES: usize = CHUNK_SIZE / 2;
/// Plaintext bytes per patch object (a patch object holds pages of many chunks).
const PATCH_OBJECT_SIZE: usize = 1 << 20;
/// Bytes of a patch record header: database offset (u64) and length (u32), little-endian.
const RECORD_HEADER: usize = 12;
/// Compression of metadata objects. They are uploaded in the background and mostly hold
/// only changed pages, so a slower level that makes them smaller pays.
const METADATA_COMPRESSION: Compression = Compression::Zstd(9);
const MANIFEST_PREFIX: &str = "s3ql_metadata_manifest_";
const CHUNK_PREFIX: &str = "s3ql_metadata_chunk_";
const PARALLEL_UPLOADS: usize = 16;

/// One chunk of a generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    pub object: String,
    pub sha256: String,
    pub size: u64,
    /// Patch objects whose records inside this chunk are applied, in this order, to the
    /// bytes of `object`; `sha256` and `size` describe the result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<String>,
}

impl ChunkRef {
    /// Every object this chunk is made of.
    fn objects(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.object).chain(&self.patches)
    }
}

/// The description of one metadata generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub generation: u64,
    pub chunks: Vec<ChunkRef>,
    /// When the generation was uploaded, seconds since the epoch (0 in manifests written
    /// before this field existed).
    #[serde(default)]
    pub created: i64,
}

/// What one upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UploadReport {
    pub db_bytes: u64,
    pub uploaded_bytes: u64,
}

/// Name of the manifest object of `generation`.
pub(crate) fn manifest_name(generation: u64) -> String {
    format!("{MANIFEST_PREFIX}{generation:020}")
}

fn snapshot_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".snapshot");
    PathBuf::from(s)
}

/// Reads the manifest of `generation`.
pub(crate) async fn load_manifest(
    store: &dyn ObjectStore,
    codec: &Codec,
    generation: u64,
) -> FsResult<Manifest> {
    let name = manifest_name(generation);
    let object = store.get(&name).await?;
    let json = codec.decode(&name, object)?;
    serde_json::from_slice(&json)
        .map_err(|e| FsError::Inconsistent(format!("manifest {generation}: {e}")))
}

fn digests_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".uploaded");
    PathBuf::from(s)
}

/// SHA-256 of a chunk and digests of its pages, as one entry of `<db>.uploaded`.
fn digest_entry(chunk: &[u8]) -> [u8; DIGEST_ENTRY] {
    let mut entry = [0u8; DIGEST_ENTRY];
    entry[..32].copy_from_slice(&Sha256::digest(chunk));
    for (i, page) in chunk.chunks(PAGE_SIZE).enumerate() {
        let at = 32 + i * PAGE_DIGEST;
        entry[at..at + PAGE_DIGEST].copy_from_slice(&Sha256::digest(page)[..PAGE_DIGEST]);
    }
    entry
}

/// The uploads one generation needs.
struct Plan {
    chunks: Vec<ChunkRef>,
    /// Chunks uploaded whole: object name and chunk index.
    whole: Vec<(String, usize)>,
    /// Patch objects: name and plaintext.
    patches: Vec<(String, Vec<u8>)>,
    /// The new content of `<db>.uploaded`.
    digests: Vec<u8>,
}

/// Decides how each chunk of `bytes` reaches generation `generation`: reused as it is in
/// `previous`, patched (if `uploaded`, the digests of the last upload, describe the
/// previous version of the chunk) or uploaded whole.
fn plan(bytes: &[u8], previous: Option<&Manifest>, uploaded: &[u8], generation: u64) -> Plan {
    let mut plan = Plan {
        chunks: Vec::new(),
        whole: Vec::new(),
        patches: Vec::new(),
        digests: Vec::with_capacity(bytes.len().div_ceil(CHUNK_SIZE) * DIGEST_ENTRY),
    };
    let mut patch = Vec::new();
    for (idx, chunk) in bytes.chunks(CHUNK_SIZE).enumerate() {
        let entry = digest_entry(chunk);
        plan.digests.extend_from_slice(&entry);
        let sha256 = hex::encode(&entry[..32]);
        let prev = previous.and_then(|m| m.chunks.get(idx));
        if let Some(prev) = prev.filter(|c| c.sha256 == sha256) {
            plan.chunks.push(prev.clone());
            continue;
        }
        let old = uploaded.get(idx * DIGEST_ENTRY..(idx + 1) * DIGEST_ENTRY);
        let base = prev.zip(old).filter(|(prev, old)| {
            prev.patches.len() < MAX_PATCHES && hex::encode(&old[..32]) == prev.sha256
        });
        let records = base.and_then(|(prev, old)| {
            let old_pages = (prev.size as usize).div_ceil(PAGE_SIZE);
            let changed = |page: usize| {
                let at = 32 + page * PAGE_DIGEST;
                page >= old_pages || old[at..at + PAGE_DIGEST] != entry[at..at + PAGE_DIGEST]
            };
            let mut records = Vec::new();
            let mut changed_bytes = 0;
            let pages = chunk.len().div_ceil(PAGE_SIZE);
            let mut page = 0;
            while page < pages {
                if !changed(page) {
                    page += 1;
                    continue;
                }
                let first = page;
                while page < pages && changed(page) {
                    page += 1;
                }
                let run = &chunk[first * PAGE_SIZE..(page * PAGE_SIZE).min(chunk.len())];
                changed_bytes += run.len();
                let offset = (idx * CHUNK_SIZE + first * PAGE_SIZE) as u64;
                records.extend_from_slice(&offset.to_le_bytes());
                records.extend_from_slice(&(run.len() as u32).to_le_bytes());
                records.extend_from_slice(run);
            }
            (changed_bytes <= MAX_PATCH_BYTES).then_some((prev, records))
        });
        let chunk_ref = match records {
            Some((prev, records)) => {
                if !patch.is_empty() && patch.len() + records.len() > PATCH_OBJECT_SIZE {
                    let name = patch_name(generation, plan.patches.len());
                    plan.patches.push((name, std::mem::take(&mut patch)));
                }
                patch.extend_from_slice(&records);
                let mut patches = prev.patches.clone();
                patches.push(patch_name(generation, plan.patches.len()));
                ChunkRef {
                    object: prev.object.clone(),
                    sha256,
                    size: chunk.len() as u64,
                    patches,
                }
            }
            None => {
                let object = format!("{CHUNK_PREFIX}{generation}_{idx}");
                plan.whole.push((object.clone(), idx));
                ChunkRef {
                    object,
                    sha256,
                    size: chunk.len() as u64,
                    patches: Vec::new(),
                }
            }
        };
        plan.chunks.push(chunk_ref);
    }
    if !patch.is_empty() {
        let name = patch_name(generation, plan.patches.len());
        plan.patches.push((name, patch));
    }
    plan
}

fn patch_name(generation: u64, n: usize) -> String {
    format!("{CHUNK_PREFIX}{generation}_p{n}")
}

/// Uploads a snapshot of `db` as `generation`, reusing the unchanged chunks of `previous`
/// and patching those with few changed pages.
pub(crate) async fn upload(
    store: &dyn ObjectStore,
    codec: &Codec,
    db: &Db,
    previous: Option<&Manifest>,
    generation: u64,
) -> FsResult<(Manifest, UploadReport)> {
    let snapshot = snapshot_path(db.path());
    let target = snapshot.clone();
    db.call_alone(move |conn| {
        let _ = std::fs::remove_file(&target);
        conn.backup(
            rusqlite::MAIN_DB,
            &target,
            None::<fn(rusqlite::backup::Progress)>,
        )?;
        Ok(())
    })
    .await?;
    let bytes = tokio::fs::read(&snapshot).await?;
    let _ = tokio::fs::remove_file(&snapshot).await;
    failpoint!(META_SNAPSHOT);

    let digests = digests_path(db.path());
    let uploaded = tokio::fs::read(&digests).await.unwrap_or_default();
    let previous = previous.cloned();
    let (bytes, plan) = tokio::task::spawn_blocking(move || {
        let plan = plan(&bytes, previous.as_ref(), &uploaded, generation);
        (bytes, plan)
    })
    .await
    .map_err(|e| FsError::Inconsistent(e.to_string()))?;

    let db_bytes = bytes.len() as u64;
    let bytes = Bytes::from(bytes);
    let objects: Vec<(String, Bytes)> = plan
        .whole
        .into_iter()
        .map(|(name, idx)| {
            let start = idx * CHUNK_SIZE;
            (
                name,
                bytes.slice(start..(start + CHUNK_SIZE).min(bytes.len())),
            )
        })
        .chain(
            plan.patches
                .into_iter()
                .map(|(name, plain)| (name, Bytes::from(plain))),
        )
        .collect();
    drop(bytes);
    let uploaded_bytes = futures::stream::iter(objects)
        .map(|(name, plain)| {
            let codec = codec.clone();
            async move {
                let object = tokio::task::spawn_blocking({
                    let name = name.clone();
                    move || codec.encode(&name, &plain, METADATA_COMPRESSION)
                })
                .await
                .map_err(|e| FsError::Inconsistent(e.to_string()))?;
                let len = object.len() as u64;
                failpoint!(META_CHUNK_PUT);
                store.put(&name, Bytes::from(object)).await?;
                Ok::<u64, FsError>(len)
            }
        })
        .buffer_unordered(PARALLEL_UPLOADS)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;

    let manifest = Manifest {
        generation,
        chunks: plan.chunks,
        created: crate::fs::unix_now(),
    };
    let json = serde_json::to_vec(&manifest).map_err(|e| FsError::Inconsistent(e.to_string()))?;
    let name = manifest_name(generation);
    failpoint!(META_MANIFEST_PUT);
    store
        .put(
            &name,
            Bytes::from(codec.encode(&name, &json, METADATA_COMPRESSION)),
        )
        .await?;
    // Only now do the digests describe an uploaded generation. If this fails, the next
    // upload sends changed chunks whole.
    if let Err(e) = write_digests(&digests, &plan.digests).await {
        tracing::warn!("could not record the digests of the uploaded metadata: {e}");
        let _ = tokio::fs::remove_file(&digests).await;
    }
    let report = UploadReport {
        db_bytes,
        uploaded_bytes,
    };
    Ok((manifest, report))
}

async fn write_digests(path: &Path, digests: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    tokio::fs::write(&tmp, digests).await?;
    tokio::fs::rename(&tmp, path).await
}

/// Applies the records of `patch` (the plaintext of patch object `name`) that lie inside
/// chunk `idx` to `chunk`.
fn apply_patch(name: &str, patch: &[u8], idx: usize, chunk: &mut Vec<u8>) -> FsResult<()> {
    let bad = || FsError::Inconsistent(format!("metadata patch {name} is malformed"));
    let (start, end) = ((idx * CHUNK_SIZE) as u64, ((idx + 1) * CHUNK_SIZE) as u64);
    let mut rest = patch;
    while !rest.is_empty() {
        let header = rest.get(..RECORD_HEADER).ok_or_else(bad)?;
        let offset = u64::from_le_bytes(header[..8].try_into().map_err(|_| bad())?);
        let len = u32::from_le_bytes(header[8..].try_into().map_err(|_| bad())?) as usize;
        let data = rest
            .get(RECORD_HEADER..RECORD_HEADER + len)
            .ok_or_else(bad)?;
        rest = &rest[RECORD_HEADER + len..];
        if offset < start || offset >= end {
            continue;
        }
        if offset + len as u64 > end {
            return Err(bad());
        }
        let at = (offset - start) as usize;
        if chunk.len() < at + len {
            chunk.resize(at + len, 0);
        }
        chunk[at..at + len].copy_from_slice(data);
    }
    Ok(())
}

/// Downloads generation `generation` into a new database file at `db_path`.
pub(crate) async fn download(
    store: &dyn ObjectStore,
    codec: &Codec,
    generation: u64,
    db_path: &Path,
) -> FsResult<()> {
    let manifest = load_manifest(store, codec, generation).await?;
    let fetch = |name: String| async move {
        let object = store.get(&name).await?;
        let plain = codec.decode(&name, object)?;
        Ok::<_, FsError>((name, plain))
    };
    let patch_names: BTreeSet<&String> = manifest.chunks.iter().flat_map(|c| &c.patches).collect();
    let patches: HashMap<String, Bytes> =
        futures::stream::iter(patch_names.into_iter().cloned().map(fetch))
            .buffer_unordered(PARALLEL_UPLOADS)
            .try_collect()
            .await?;
    let patches = &patches;
    let chunks: Vec<Vec<u8>> = futures::stream::iter(manifest.chunks.iter().enumerate())
        .map(|(idx, c)| async move {
            let (_, plain) = fetch(c.object.clone()).await?;
            let mut plain = Vec::from(plain);
            for name in &c.patches {
                apply_patch(name, &patches[name], idx, &mut plain)?;
            }
            plain.truncate(c.size as usize);
            if hex::encode(Sha256::digest(&plain)) != c.sha256 {
                return Err(FsError::Inconsistent(format!(
                    "metadata chunk {idx} (object {}, {} patches) does not match its checksum",
                    c.object,
                    c.patches.len()
                )));
            }
            Ok(plain)
        })
        .buffered(PARALLEL_UPLOADS)
        .try_collect()
        .await?;
    let mut tmp = db_path.as_os_str().to_owned();
    tmp.push(".download");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    for chunk in chunks {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    std::fs::rename(&tmp, db_path)?;
    Ok(())
}

/// Deletes manifests beyond the newest [`KEPT_GENERATIONS`] and every chunk that no kept
/// manifest references. Failures are logged; the next run retries.
pub(crate) async fn expire(store: &dyn ObjectStore, codec: &Codec, current: u64) {
    if let Err(e) = try_expire(store, codec, current).await {
        tracing::warn!("could not expire old metadata generations: {e}");
    }
}

/// The generations whose manifests are in the store, newest first. Each of them can be
/// loaded with [`download`]: fsck.s3ql and s3qladm fall back to an older one when the
/// newest is damaged.
pub(crate) async fn list_generations(store: &dyn ObjectStore) -> FsResult<Vec<u64>> {
    let mut generations: Vec<u64> = store
        .list(MANIFEST_PREFIX)
        .await?
        .iter()
        .filter_map(|o| o.name[MANIFEST_PREFIX.len()..].parse().ok())
        .collect();
    generations.sort_unstable_by(|a, b| b.cmp(a));
    Ok(generations)
}

async fn try_expire(store: &dyn ObjectStore, codec: &Codec, current: u64) -> FsResult<()> {
    let mut generations = list_generations(store).await?;
    generations.retain(|g| *g <= current);
    let (kept, old) = generations.split_at(generations.len().min(KEPT_GENERATIONS));
    let mut live = std::collections::HashSet::new();
    for g in kept {
        for c in load_manifest(store, codec, *g).await?.chunks {
            live.extend(c.objects().cloned());
        }
    }
    for g in old {
        failpoint!(META_EXPIRE);
        store.delete(&manifest_name(*g)).await?;
    }
    for chunk in store.list(CHUNK_PREFIX).await? {
        let generation: Option<u64> = chunk.name[CHUNK_PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|g| g.parse().ok());
        if !live.contains(&chunk.name) && generation.is_some_and(|g| g <= current) {
            failpoint!(META_EXPIRE);
            store.delete(&chunk.name).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    /// Every row of `sql`, as `row` reads it.
    async fn rows<T: Send + 'static>(
        db: &Db,
        sql: &'static str,
        row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        db.call(move |c| {
            let mut stmt = c.prepare(sql)?;
            let v = stmt.query_map([], row)?.collect::<Result<Vec<T>, _>>()?;
            Ok(v)
        })
        .await
        .expect("query")
    }

    /// The rows of table `p` (see `patched_generations_load_exactly`), in key order.
    async fn p_rows(db: &Db) -> Vec<(i64, Vec<u8>)> {
        rows(db, "SELECT k, v FROM p ORDER BY k", |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .await
    }

    #[tokio::test]
    async fn old_generations_are_kept_and_each_one_loads() {
        let store = MemoryStore::new();
        let codec = Codec::plain();
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("a.db")).expect("db");
        db.call(|c| Ok(c.execute_batch("CREATE TABLE t (v INTEGER)")?))
            .await
            .expect("schema");
        let total = KEPT_GENERATIONS as u64 + 3;
        let mut previous = None;
        for generation in 1..=total {
            db.call(move |c| Ok(c.execute("INSERT INTO t VALUES (?1)", [generation])?))
                .await
                .expect("insert");
            let (manifest, _) = upload(&store, &codec, &db, previous.as_ref(), generation)
                .await
                .expect("upload");
            previous = Some(manifest);
            expire(&store, &codec, generation).await;
        }
        let kept = list_generations(&store).await.expect("list");
        let expected: Vec<u64> = (total + 1 - KEPT_GENERATIONS as u64..=total)
            .rev()
            .collect();
        assert_eq!(kept, expected);
        for generation in kept {
            let path = dir.path().join(format!("g{generation}.db"));
            download(&store, &codec, generation, &path)
                .await
                .expect("download an old generation");
            let old = Db::open(&path).expect("open");
            let want: Vec<i64> = (1..=generation as i64).collect();
            let got: Vec<i64> = rows(&old, "SELECT v FROM t ORDER BY v", |r| r.get(0)).await;
            assert_eq!(got, want, "generation {generation}");
        }
    }

    /// Scattered small changes are uploaded as patches of their pages, never as whole
    /// chunks; chains stay bounded; growth, shrinking (VACUUM) and lost page digests are
    /// handled; every kept generation downloads to exactly its rows.
    #[tokio::test]
    async fn patched_generations_load_exactly() {
        let store = MemoryStore::new();
        let codec = Codec::plain();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.db");
        let db = Db::open(&path).expect("db");
        // About 1.2 MB: ten chunks, each row on its own part of a page.
        db.call(|c| {
            c.execute_batch("CREATE TABLE p (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")?;
            for k in 0..3000i64 {
                c.execute("INSERT INTO p VALUES (?1, randomblob(300))", [k])?;
            }
            Ok(())
        })
        .await
        .expect("fill");
        let (mut previous, _) = upload(&store, &codec, &db, None, 1).await.expect("upload");
        let mut expected = vec![(1, p_rows(&db).await)];
        let mut rebased = 0;
        // Past the patch limit after the VACUUM, so that kept generations include rebased
        // chunks.
        let (digests_lost, vacuum, total) = (5, 12, 12 + 2 * MAX_PATCHES as u64);
        for generation in 2..=total {
            let step = generation as i64;
            db.call(move |c| {
                // One row in every 300 (one that the VACUUM step keeps): a page in each
                // chunk.
                c.execute(
                    "UPDATE p SET v = randomblob(300) WHERE k % 300 = ?1",
                    [(3 * step + 1) % 300],
                )?;
                if step % 5 == 0 {
                    c.execute(
                        "INSERT INTO p (v) SELECT randomblob(300) FROM p LIMIT 50",
                        [],
                    )?;
                }
                Ok(())
            })
            .await
            .expect("change");
            if generation == digests_lost {
                std::fs::remove_file(digests_path(&path)).expect("digests exist");
            }
            if generation == vacuum {
                db.call_alone(|c| {
                    c.execute("DELETE FROM p WHERE k % 3 = 0", [])?;
                    c.execute_batch("VACUUM")?;
                    Ok(())
                })
                .await
                .expect("vacuum");
            }
            let (manifest, _) = upload(&store, &codec, &db, Some(&previous), generation)
                .await
                .expect("upload");
            let whole = manifest
                .chunks
                .iter()
                .filter(|c| {
                    c.object
                        .starts_with(&format!("{CHUNK_PREFIX}{generation}_"))
                })
                .count();
            let patched = manifest
                .chunks
                .iter()
                .filter(|c| c.patches.iter().any(|p| *p == patch_name(generation, 0)))
                .count();
            let grew = manifest.chunks.len() > previous.chunks.len();
            if generation == digests_lost || generation == vacuum {
                // Without digests, or after VACUUM moved every page, chunks go whole.
                assert!(whole > 0, "generation {generation}");
            } else {
                // Only a chunk that reached the patch limit or that is new goes whole.
                let limited = previous
                    .chunks
                    .iter()
                    .filter(|c| c.patches.len() == MAX_PATCHES)
                    .count();
                assert!(
                    patched > 0 || limited > 0,
                    "generation {generation} patched nothing"
                );
                assert!(
                    whole <= limited + usize::from(grew),
                    "generation {generation}: {whole} whole chunks, {limited} at the limit"
                );
                rebased += limited.min(whole);
            }
            assert!(manifest
                .chunks
                .iter()
                .all(|c| c.patches.len() <= MAX_PATCHES));
            expire(&store, &codec, generation).await;
            previous = manifest;
            expected.push((generation, p_rows(&db).await));
        }
        assert!(rebased > 0, "no chunk reached the patch limit");
        let kept = list_generations(&store).await.expect("list");
        assert_eq!(kept.len(), KEPT_GENERATIONS);
        for (generation, want) in expected.iter().filter(|(g, _)| kept.contains(g)) {
            let path = dir.path().join(format!("g{generation}.db"));
            download(&store, &codec, *generation, &path)
                .await
                .expect("download");
            let loaded = Db::open(&path).expect("open");
            assert!(p_rows(&loaded).await == *want, "generation {generation}");
        }
    }
}
