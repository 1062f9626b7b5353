//! Creating, mounting and unmounting a filesystem, and the background work of a mount.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::params;

use super::inode::{self, NewInode};
use super::Filesystem;
use crate::cache::{BlockCache, CacheConfig};
use crate::crypto::{KeyError, MasterKey};
use crate::error::{FsError, FsResult};
use crate::format::{Codec, Compression, FormatError};
use crate::meta::{self, upload, Db};
use crate::mount_lock::{LockError, MountLock};
use crate::params::{FsParams, LocalPaths, FS_REVISION, PARAMS_OBJECT};
use crate::passphrase::{self, Passphrase, UnlockError};
use crate::storage::{ObjectStore, StoreError};
use crate::types::{mode_bits, Timestamp, CTRL_INODE, ROOT_INODE};

/// Settings of `mkfs`.
#[derive(Debug, Clone)]
pub struct MkfsOptions {
    /// Filesystem label.
    pub label: String,
    /// Plaintext bytes per data block (fixed for the life of the filesystem).
    pub data_block_size: u64,
    /// Replace an existing filesystem (deleting all its objects).
    pub force: bool,
    /// Owner of the root directory.
    pub root_uid: u32,
    /// Group of the root directory.
    pub root_gid: u32,
    /// Encrypt with a new master key wrapped by this passphrase (`None`: unencrypted).
    pub passphrase: Option<Passphrase>,
}

/// Settings of a mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// `<cachedir>/<escaped storage URL>`; the database, parameters and cached blocks live
    /// at this path plus `.db`, `.params` and `-cache/`.
    pub cache_path: PathBuf,
    /// Upper bound of the block cache, bytes.
    pub cache_size: u64,
    /// Upper bound of the number of cached blocks (it bounds the cache's memory).
    pub max_cache_entries: usize,
    /// Compression of new objects.
    pub compression: Compression,
    /// Dirty blocks untouched this long are uploaded.
    pub dirty_block_upload_delay: Duration,
    /// Metadata is uploaded at least this often (zero: only on demand and at unmount).
    pub metadata_backup_interval: Duration,
    /// Most concurrent storage transfers.
    pub max_connections: usize,
    /// Keep clean cached blocks after unmount.
    pub keep_cache: bool,
    /// The user who mounts (owner of the control file).
    pub owner_uid: u32,
    /// That user's group.
    pub owner_gid: u32,
    /// Passphrase of an encrypted filesystem (ignored for an unencrypted one).
    pub passphrase: Option<Passphrase>,
}

/// Why a filesystem could not be created or opened; each maps to S3QL's exit code.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// mkfs found a filesystem and `force` was not given.
    #[error("a filesystem already exists at this storage URL (use --force to overwrite it)")]
    AlreadyExists,
    /// No filesystem at the storage URL.
    #[error("no s3ql filesystem found at this storage URL")]
    NoFilesystem,
    /// Written by a newer version.
    #[error("filesystem revision {0} is too new for this program (supports {FS_REVISION})")]
    TooNew(u32),
    /// Needs an upgrade.
    #[error("filesystem revision {0} is too old (run s3qladm upgrade)")]
    TooOld(u32),
    /// The local metadata shows an unclean unmount.
    #[error("filesystem was not unmounted cleanly; run fsck.s3ql first")]
    NeedsFsck,
    /// The filesystem is encrypted and no passphrase was given.
    #[error("the filesystem is encrypted and no passphrase was given")]
    PassphraseRequired,
    /// The passphrase does not open the master key.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The wrapped master key cannot be read.
    #[error("{0}")]
    KeyDamaged(String),
    /// The storage location does not exist.
    #[error("{0}")]
    LocationMissing(String),
    /// Another mount holds the mount lock (or it cannot be taken).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The cache directory cannot be used.
    #[error("cannot use cache directory {0}: {1}")]
    CacheDir(PathBuf, std::io::Error),
    /// Anything else (storage, database).
    #[error("{0}")]
    Failed(#[from] FsError),
}

impl OpenError {
    /// S3QL's exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            OpenError::AlreadyExists => 1,
            OpenError::NoFilesystem => 18,
            OpenError::TooNew(_) => 33,
            OpenError::TooOld(_) => 32,
            OpenError::NeedsFsck => 30,
            OpenError::PassphraseRequired
            | OpenError::WrongPassphrase
            | OpenError::KeyDamaged(_) => 17,
            OpenError::Failed(FsError::Format(
                FormatError::Unauthentic | FormatError::EncryptionMismatch,
            )) => 17,
            OpenError::LocationMissing(_) => 16,
            OpenError::Lock(e) => e.exit_code(),
            OpenError::Failed(FsError::Storage(e)) => e.exit_code(),
            OpenError::CacheDir(..) => 45,
            OpenError::Failed(FsError::Format(FormatError::TooNew(_))) => 33,
            OpenError::Failed(_) => 1,
        }
    }
}

impl From<StoreError> for OpenError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LocationMissing(p) => {
                OpenError::LocationMissing(format!("storage location {p} does not exist"))
            }
            e => OpenError::Failed(e.into()),
        }
    }
}

impl From<UnlockError> for OpenError {
    fn from(e: UnlockError) -> Self {
        match e {
            UnlockError::Key(KeyError::WrongPassphrase) => OpenError::WrongPassphrase,
            UnlockError::Key(e) => OpenError::KeyDamaged(e.to_string()),
            UnlockError::Storage(e) => e.into(),
        }
    }
}

/// The codec of the filesystem in `store`: encrypted (unlocked with `passphrase`) if it has
/// a wrapped master key, plain otherwise. Reads only; never writes to the storage.
pub async fn open_codec(
    store: &dyn ObjectStore,
    passphrase: Option<&Passphrase>,
) -> Result<Codec, OpenError> {
    if !passphrase::is_encrypted(store).await? {
        return Ok(Codec::plain());
    }
    let passphrase = passphrase.ok_or(OpenError::PassphraseRequired)?;
    Ok(Codec::encrypted(
        passphrase::unlock(store, passphrase).await?,
    ))
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> i64 {
    Timestamp::now().nanos / 1_000_000_000
}

/// Creates the directory that holds the database, parameters and cache of `paths`.
pub(crate) fn prepare_cache_dir(paths: &LocalPaths) -> Result<(), OpenError> {
    if let Some(dir) = paths.db.parent() {
        std::fs::create_dir_all(dir).map_err(|e| OpenError::CacheDir(dir.to_owned(), e))?;
    }
    Ok(())
}

/// Accepts only the layout revision this build reads and writes: a larger one is
/// [`OpenError::TooNew`] (exit 33), a smaller one [`OpenError::TooOld`] (exit 32).
pub(crate) fn check_revision(revision: u32) -> Result<(), OpenError> {
    match revision.cmp(&FS_REVISION) {
        std::cmp::Ordering::Greater => Err(OpenError::TooNew(revision)),
        std::cmp::Ordering::Less => Err(OpenError::TooOld(revision)),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Makes the local database the backend's current metadata, as a mount needs it, and
/// returns the backend's parameters. Refused for another layout revision (32/33) and after
/// an unclean unmount or a metadata restore ([`OpenError::NeedsFsck`]). The local copy is
/// reused when its sequence number equals the backend's; otherwise the generation the
/// backend names is downloaded. The caller holds the mount lock.
pub(crate) async fn load_metadata(
    store: &dyn ObjectStore,
    codec: &Codec,
    paths: &LocalPaths,
) -> Result<FsParams, OpenError> {
    let params = FsParams::load_remote(store, codec)
        .await?
        .ok_or(OpenError::NoFilesystem)?;
    check_revision(params.revision)?;
    let local_current = match FsParams::load_local(&paths.params) {
        Some(l) if l.mounted || l.needs_fsck || l.seq_no > params.seq_no => {
            return Err(OpenError::NeedsFsck)
        }
        Some(l) => l.seq_no == params.seq_no && paths.db.exists(),
        None => false,
    };
    if !local_current {
        tracing::info!(
            "downloading metadata generation {}",
            params.metadata_generation
        );
        paths.remove_db().map_err(FsError::from)?;
        upload::download(store, codec, params.metadata_generation, &paths.db).await?;
    }
    Ok(params)
}

fn empty_cache_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Filesystem {
    /// Creates a new, empty filesystem in `store`: root directory, control inode and
    /// `lost+found`, metadata generation 1. Returns when it is durable in the backend.
    pub async fn mkfs(
        store: Arc<dyn ObjectStore>,
        cache_path: &Path,
        opts: MkfsOptions,
    ) -> Result<Option<MasterKey>, OpenError> {
        let paths = LocalPaths::new(cache_path);
        prepare_cache_dir(&paths)?;
        if store.head(PARAMS_OBJECT).await?.is_some() {
            if !opts.force {
                return Err(OpenError::AlreadyExists);
            }
            for object in store.list("s3ql_").await? {
                store.delete(&object.name).await?;
            }
        }
        paths.remove_db().map_err(FsError::from)?;
        empty_cache_dir(&paths.cache_dir).map_err(FsError::from)?;
        let db = Db::open(&paths.db)?;
        let (uid, gid) = (opts.root_uid, opts.root_gid);
        db.call(move |c| {
            meta::create_schema(c)?;
            let now = Timestamp::now();
            let node = |mode, nlink| NewInode {
                mode,
                uid,
                gid,
                rdev: 0,
                nlink,
                now,
            };
            let root = inode::insert(c, &node(mode_bits::S_IFDIR | 0o755, 3))?;
            let ctrl = inode::insert(c, &node(mode_bits::S_IFREG | 0o600, 1))?;
            let lost = inode::insert(c, &node(mode_bits::S_IFDIR | 0o700, 2))?;
            if root.id != ROOT_INODE || ctrl.id != CTRL_INODE {
                return Err(FsError::Inconsistent(
                    "unexpected inode numbers in a new database".into(),
                ));
            }
            c.execute(
                "INSERT INTO contents (parent, name, inode) VALUES (?1, ?2, ?3)",
                params![ROOT_INODE, b"lost+found".as_slice(), lost.id],
            )?;
            Ok(())
        })
        .await?;
        let key = opts.passphrase.as_ref().map(|_| MasterKey::generate());
        let codec = match (&key, &opts.passphrase) {
            (Some(key), Some(passphrase)) => {
                passphrase::store_wrapped(store.as_ref(), key, passphrase).await?;
                Codec::encrypted(key.clone())
            }
            _ => Codec::plain(),
        };
        let (manifest, _) = upload::upload(store.as_ref(), &codec, &db, None, 1).await?;
        let params = FsParams {
            revision: FS_REVISION,
            label: opts.label,
            data_block_size: opts.data_block_size,
            created: unix_now(),
            seq_no: 1,
            metadata_generation: manifest.generation,
            mounted: false,
            needs_fsck: false,
            last_fsck: unix_now(),
        };
        params.save_remote(store.as_ref(), &codec).await?;
        params.save_local(&paths.params)?;
        Ok(key)
    }

    /// Opens the filesystem in `store` for use: takes the mount lock (refused with
    /// [`OpenError::Lock`] while another mount holds it), reuses the local database if it
    /// is current, otherwise downloads the newest metadata generation. Starts write-back.
    pub async fn mount(
        store: Arc<dyn ObjectStore>,
        opts: MountOptions,
    ) -> Result<Arc<Filesystem>, OpenError> {
        let lock = MountLock::acquire(store.as_ref()).await?;
        let mounted = Self::mount_locked(store.clone(), opts, lock.clone()).await;
        if mounted.is_err() {
            if let Err(e) = lock.release(store.as_ref()).await {
                tracing::warn!("could not release the mount lock after the failed mount: {e}");
            }
        }
        mounted
    }

    async fn mount_locked(
        store: Arc<dyn ObjectStore>,
        opts: MountOptions,
        mount_lock: MountLock,
    ) -> Result<Arc<Filesystem>, OpenError> {
        let paths = LocalPaths::new(&opts.cache_path);
        prepare_cache_dir(&paths)?;
        let codec = open_codec(store.as_ref(), opts.passphrase.as_ref()).await?;
        let mut params = load_metadata(store.as_ref(), &codec, &paths).await?;
        let manifest =
            upload::load_manifest(store.as_ref(), &codec, params.metadata_generation).await?;
        params.mounted = true;
        params.save_local(&paths.params)?;

        let db = Db::open(&paths.db)?;
        db.call(|c| Ok(meta::create_later_schema(c)?)).await?;
        let probed_names = db.call(super::xattr::ProbedNames::load).await?;
        let cache = BlockCache::new(
            CacheConfig {
                dir: paths.cache_dir.clone(),
                max_size: opts.cache_size,
                max_entries: opts.max_cache_entries,
                dirty_delay: opts.dirty_block_upload_delay,
                max_connections: opts.max_connections,
                compression: opts.compression,
                codec: codec.clone(),
            },
            params.data_block_size,
            db.clone(),
            store.clone(),
        )
        .map_err(|e| match e {
            FsError::Io(io) => OpenError::CacheDir(paths.cache_dir.clone(), io),
            e => e.into(),
        })?;
        let fs = Arc::new_cyclic(|me| Filesystem {
            me: me.clone(),
            runtime: tokio::runtime::Handle::current(),
            db,
            cache: Arc::new(cache),
            store,
            codec,
            paths,
            block_size: params.data_block_size,
            params: tokio::sync::Mutex::new(params),
            manifest: tokio::sync::Mutex::new(Some(manifest)),
            opts,
            nodes: Mutex::new(HashMap::new()),
            size_epoch: AtomicU64::new(0),
            next_fh: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            background: Mutex::new(Vec::new()),
            control: Default::default(),
            mount_lock,
            probed_names,
        });
        fs.free_orphans().await?;
        fs.start_background();
        Ok(fs)
    }

    /// Deletes inodes left unlinked but open by an earlier mount.
    async fn free_orphans(&self) -> FsResult<()> {
        let orphans: Vec<u64> = self
            .db
            .call(|c| {
                let mut stmt = c.prepare("SELECT id FROM inodes WHERE nlink = 0 AND id > ?1")?;
                let ids = stmt
                    .query_map([CTRL_INODE], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                Ok(ids)
            })
            .await?;
        for ino in orphans {
            self.free_if_unlinked(ino).await?;
        }
        Ok(())
    }

    fn start_background(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let writeback = {
            let me = me.clone();
            tokio::spawn(async move {
                while !me.stopping.load(Ordering::Relaxed) {
                    me.cache.wait_for_work(Duration::from_secs(1)).await;
                    if let Err(e) = me.db.commit_deferred().await {
                        tracing::error!("metadata database: {e}");
                    }
                    me.cache.writeback_pass().await;
                }
            })
        };
        let mut tasks = vec![writeback];
        let interval = self.opts.metadata_backup_interval;
        if !interval.is_zero() {
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    if me.stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Err(e) = me.backup_metadata().await {
                        tracing::error!("periodic metadata upload failed: {e}");
                    }
                }
            }));
        }
        *self.background.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
    }

    /// Returns when every dirty block is in the backend; an error if some could not be
    /// uploaded (they stay dirty in the cache).
    pub async fn flush_cache(&self) -> FsResult<()> {
        self.cache.flush_all().await
    }

    /// Uploads the metadata as a new generation and records it in the parameters.
    pub async fn backup_metadata(&self) -> FsResult<()> {
        self.mount_lock.verify(self.store.as_ref()).await?;
        let mut params = self.params.lock().await;
        let mut manifest = self.manifest.lock().await;
        let generation = params.metadata_generation + 1;
        let (new, report) = upload::upload(
            self.store.as_ref(),
            &self.codec,
            &self.db,
            manifest.as_ref(),
            generation,
        )
        .await?;
        tracing::info!(
            "metadata generation {generation}: database {} bytes, uploaded {} bytes",
            report.db_bytes,
            report.uploaded_bytes
        );
        let mut next = params.clone();
        next.seq_no += 1;
        next.metadata_generation = generation;
        // The local parameters first: after a crash between the two, the local database
        // (which has everything) counts as the newer one, and fsck uses it with the cache.
        failpoint!(META_PARAMS_LOCAL);
        next.save_local(&self.paths.params)?;
        let mut remote = next.clone();
        remote.mounted = false;
        failpoint!(META_PARAMS_PUT);
        remote.save_remote(self.store.as_ref(), &self.codec).await?;
        *params = next;
        *manifest = Some(new);
        upload::expire(self.store.as_ref(), &self.codec, generation).await;
        Ok(())
    }

    /// Ends the mount: stops write-back, uploads every dirty block, waits for the deletion of
    /// unreferenced objects, uploads the metadata, marks the filesystem clean, empties the
    /// cache (unless `keep_cache`) and closes the local database. Call it once, after the
    /// kernel session ended. On error nothing is lost: the cache and the local database
    /// stay, and the filesystem stays marked as in use until fsck.
    pub async fn unmount(&self) -> FsResult<()> {
        self.stopping.store(true, Ordering::Relaxed);
        let tasks = std::mem::take(&mut *self.background.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        self.cache.flush_all().await?;
        self.cache.wait_for_deletes().await;
        self.db.sync().await?;
        self.backup_metadata().await?;
        let mut params = self.params.lock().await;
        params.mounted = false;
        params.save_local(&self.paths.params)?;
        self.mount_lock.release(self.store.as_ref()).await?;
        if !self.opts.keep_cache {
            self.cache.drop_clean().await;
        }
        self.db.close().await
    }
}
