//! The filesystem parameters ("superblock"): stored in the backend as `s3ql_params` and
//! beside the database as `<cache_path>.params`.
//!
//! `seq_no` grows by one at every metadata upload; a local copy whose `seq_no` equals the
//! backend's is current, so its database can be used without any download.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{FsError, FsResult};
use crate::format::{Codec, Compression};
use crate::storage::{ObjectStore, StoreError};

/// Name of the parameters object.
pub const PARAMS_OBJECT: &str = "s3ql_params";
/// Revision of the filesystem layout (tables, object names) this build reads and writes.
pub const FS_REVISION: u32 = 1;

/// The parameters of one filesystem.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FsParams {
    /// Filesystem layout revision.
    pub revision: u32,
    /// Label given at mkfs.
    pub label: String,
    /// Plaintext size of a data block, fixed at mkfs.
    pub data_block_size: u64,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Metadata sequence number.
    pub seq_no: u64,
    /// Metadata generation holding the database of `seq_no`.
    pub metadata_generation: u64,
    /// Set while a mount (or fsck) uses this metadata; left set by a crash.
    pub mounted: bool,
    /// The database must be checked by fsck.s3ql before it is mounted (set in the local
    /// copy by `s3qladm restore-metadata`; cleared by fsck). False when absent.
    #[serde(default)]
    pub needs_fsck: bool,
    /// Last fsck, seconds since the epoch.
    pub last_fsck: i64,
}

/// Where the local files of one filesystem live.
#[derive(Debug, Clone)]
pub(crate) struct LocalPaths {
    pub db: PathBuf,
    pub params: PathBuf,
    pub cache_dir: PathBuf,
}

impl LocalPaths {
    pub(crate) fn new(cache_path: &Path) -> Self {
        let with = |suffix: &str| {
            let mut s = cache_path.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        };
        LocalPaths {
            db: with(".db"),
            params: with(".params"),
            cache_dir: with("-cache"),
        }
    }

    /// Renames a non-empty cache directory to `-cache.bak<N>` (the first free `N`), so that
    /// blocks that do not belong to the database in use are neither lost nor mistaken for
    /// its data. Returns the new name; `None` if the directory is missing or empty.
    pub(crate) fn set_aside_cache(&self) -> std::io::Result<Option<PathBuf>> {
        let non_empty = std::fs::read_dir(&self.cache_dir).is_ok_and(|mut d| d.next().is_some());
        if !non_empty {
            return Ok(None);
        }
        let bak = (0..u32::MAX)
            .map(|n| {
                let mut bak = self.cache_dir.as_os_str().to_owned();
                bak.push(format!(".bak{n}"));
                PathBuf::from(bak)
            })
            .find(|bak| !bak.exists())
            .ok_or_else(|| std::io::Error::other("no free name for a cache backup"))?;
        std::fs::rename(&self.cache_dir, &bak)?;
        Ok(Some(bak))
    }

    /// Removes the database, the parameters and the cache directory.
    pub(crate) fn remove_all(&self) -> std::io::Result<()> {
        self.remove_db()?;
        for result in [
            std::fs::remove_file(&self.params),
            std::fs::remove_dir_all(&self.cache_dir),
        ] {
            match result {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the database and its WAL files.
    pub(crate) fn remove_db(&self) -> std::io::Result<()> {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.db.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::remove_file(PathBuf::from(p)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

impl FsParams {
    /// Reads the backend copy; `None` if there is no filesystem.
    pub(crate) async fn load_remote(
        store: &dyn ObjectStore,
        codec: &Codec,
    ) -> FsResult<Option<FsParams>> {
        let object = match store.get(PARAMS_OBJECT).await {
            Ok(o) => o,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let json = codec.decode(PARAMS_OBJECT, object)?;
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|e| FsError::Inconsistent(format!("{PARAMS_OBJECT}: {e}")))
    }

    /// Writes the backend copy.
    pub(crate) async fn save_remote(&self, store: &dyn ObjectStore, codec: &Codec) -> FsResult<()> {
        let json = serde_json::to_vec(self).map_err(|e| FsError::Inconsistent(e.to_string()))?;
        let object = codec.encode(PARAMS_OBJECT, &json, Compression::None);
        store.put(PARAMS_OBJECT, Bytes::from(object)).await?;
        Ok(())
    }

    /// Reads the local copy; `None` if missing or unreadable.
    pub(crate) fn load_local(path: &Path) -> Option<FsParams> {
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the local copy durably (temporary file, fsync, rename, directory fsync).
    pub(crate) fn save_local(&self, path: &Path) -> FsResult<()> {
        let json =
            serde_json::to_vec_pretty(self).map_err(|e| FsError::Inconsistent(e.to_string()))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, json)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Checks that `key` is the master key of the filesystem in `store` (it decrypts the
/// parameters object). Reads only.
pub async fn check_master_key(
    store: &dyn ObjectStore,
    key: &crate::crypto::MasterKey,
) -> FsResult<()> {
    let codec = Codec::encrypted(key.clone());
    FsParams::load_remote(store, &codec)
        .await?
        .map(|_| ())
        .ok_or_else(|| FsError::Inconsistent(format!("{PARAMS_OBJECT} is missing")))
}
