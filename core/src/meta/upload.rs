//! Metadata in the backend: a consistent snapshot of the database, cut into fixed-size
//! chunks, described by a manifest per generation.
//!
//! A chunk whose bytes equal the chunk at the same index of the previous generation is not
//! uploaded again; the new manifest points at the old object. So the cost of an upload
//! grows with the pages that changed, not with the size of the database. The last
//! [`KEPT_GENERATIONS`] manifests are kept; chunks no kept manifest names are deleted.

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
const MANIFEST_PREFIX: &str = "s3ql_metadata_manifest_";
const CHUNK_PREFIX: &str = "s3ql_metadata_chunk_";
const PARALLEL_UPLOADS: usize = 16;

/// One chunk of a generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ChunkRef {
    pub object: String,
    pub sha256: String,
    pub size: u64,
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

fn manifest_name(generation: u64) -> String {
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
    let json = codec.decode(&name, &object)?;
    serde_json::from_slice(&json)
        .map_err(|e| FsError::Inconsistent(format!("manifest {generation}: {e}")))
}

/// Uploads a snapshot of `db` as `generation`, reusing the unchanged chunks of `previous`.
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

    let mut chunks = Vec::new();
    let mut to_upload = Vec::new();
    for (idx, chunk) in bytes.chunks(CHUNK_SIZE).enumerate() {
        let sha256 = hex::encode(Sha256::digest(chunk));
        let reused = previous
            .and_then(|m| m.chunks.get(idx))
            .filter(|c| c.sha256 == sha256)
            .cloned();
        let chunk_ref = match reused {
            Some(c) => c,
            None => {
                let object = format!("{CHUNK_PREFIX}{generation}_{idx}");
                to_upload.push((object.clone(), idx));
                ChunkRef {
                    object,
                    sha256,
                    size: chunk.len() as u64,
                }
            }
        };
        chunks.push(chunk_ref);
    }
    let uploaded_bytes = futures::stream::iter(to_upload)
        .map(|(name, idx)| {
            let start = idx * CHUNK_SIZE;
            let plain = bytes[start..(start + CHUNK_SIZE).min(bytes.len())].to_vec();
            let codec = codec.clone();
            async move {
                let object = tokio::task::spawn_blocking({
                    let name = name.clone();
                    move || codec.encode(&name, &plain, Compression::Zstd(3))
                })
                .await
                .map_err(|e| FsError::Inconsistent(e.to_string()))?;
                let len = object.len() as u64;
                store.put(&name, Bytes::from(object)).await?;
                Ok::<u64, FsError>(len)
            }
        })
        .buffer_unordered(PARALLEL_UPLOADS)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;

    let manifest = Manifest {
        generation,
        chunks,
        created: crate::fs::unix_now(),
    };
    let json = serde_json::to_vec(&manifest).map_err(|e| FsError::Inconsistent(e.to_string()))?;
    let name = manifest_name(generation);
    store
        .put(
            &name,
            Bytes::from(codec.encode(&name, &json, Compression::Zstd(3))),
        )
        .await?;
    let report = UploadReport {
        db_bytes: bytes.len() as u64,
        uploaded_bytes,
    };
    Ok((manifest, report))
}

/// Downloads generation `generation` into a new database file at `db_path`.
pub(crate) async fn download(
    store: &dyn ObjectStore,
    codec: &Codec,
    generation: u64,
    db_path: &Path,
) -> FsResult<()> {
    let manifest = load_manifest(store, codec, generation).await?;
    let chunks: Vec<Vec<u8>> = futures::stream::iter(manifest.chunks.iter())
        .map(|c| async move {
            let object = store.get(&c.object).await?;
            let plain = codec.decode(&c.object, &object)?;
            if hex::encode(Sha256::digest(&plain)) != c.sha256 {
                return Err(FsError::Inconsistent(format!(
                    "metadata chunk {} does not match its checksum",
                    c.object
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
            live.insert(c.object);
        }
    }
    for g in old {
        store.delete(&manifest_name(*g)).await?;
    }
    for chunk in store.list(CHUNK_PREFIX).await? {
        let generation: Option<u64> = chunk.name[CHUNK_PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|g| g.parse().ok());
        if !live.contains(&chunk.name) && generation.is_some_and(|g| g <= current) {
            store.delete(&chunk.name).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    async fn rows(db: &Db) -> Vec<i64> {
        db.call(|c| {
            let mut stmt = c.prepare("SELECT v FROM t ORDER BY v")?;
            let v = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(v)
        })
        .await
        .expect("query")
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
            assert_eq!(rows(&old).await, want, "generation {generation}");
        }
    }
}
