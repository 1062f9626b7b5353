//! The local block cache and its write-back to the storage.
//!
//! Guarantees: `write` returns once the bytes are in a cache file; a dirty block is never
//! evicted before it is in the storage; a block that is written while its upload runs
//! stays dirty (the upload took a snapshot and marks the block clean only if no write
//! happened since); a block read from the storage is verified against the SHA-256 in the
//! metadata and an altered object is `EIO`, never returned.
//!
//! A block just loaded from the storage is also kept in memory (see [`RecentBlocks`]) until
//! a read reaches its end, so that a sequential reader does not read its cache file back.
//! Such a buffer is used only while the entry's `generation` is the one it was loaded at
//! (every write and truncate bumps it) and is dropped with its entry.
//!
//! The cache holds at most `max_entries` entries and `max_size` bytes beyond what the
//! write-back has not uploaded yet: past either bound, every dirty block is uploaded and
//! clean ones are evicted, least recently used first. Its memory is therefore bounded
//! however many files are written. Files of evicted blocks become spares ([`spares`]).

mod spares;
pub(crate) use spares::is_spare_dir;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};

use crate::blocks::{self, data_object_name};
use crate::error::{FsError, FsResult};
use crate::format::{self, Codec, Compression};
use crate::meta::Db;
use crate::storage::ObjectStore;
use spares::Spares;

type Key = (u64, u64);

/// Most cache files synced at once by one `fsync` (the device merges their flushes).
const PARALLEL_SYNCS: usize = 16;

/// Most spare files kept (see [`spares`]); they are read at every mount.
const MAX_SPARES: usize = 16 * 1024;

/// Fraction of `max_entries` that eviction leaves once the cache had too many entries.
const EVICT_TO_ENTRIES: f64 = 0.9;

/// While writers wait for room, uploads completed between evictions within one pass.
const EVICT_EVERY_UPLOADS: usize = 64;

/// Bound of the memory held by block uploads at any time (plaintext read from the cache
/// file plus its encoded object), in bytes; at least one block is always allowed.
const UPLOAD_BUFFER_BYTES: u64 = 32 << 20;

/// Most bytes of blocks fetched ahead of one sequential reader. A remote store serves each
/// GET slowly (s3s-fs here: about 16 MB/s per stream), so throughput grows with the GETs
/// in flight. 1 GiB cold read from s3s-fs, MB/s and the daemon's peak RSS: 8 MiB ahead
/// 137-141 (77 MB), 16 MiB 174-195 (88 MB), 32 MiB 199-231 (114-131 MB).
pub(crate) const READ_AHEAD_BYTES: u64 = 16 << 20;

/// Most bytes of decoded blocks kept in memory after their load (see [`RecentBlocks`]);
/// a block dropped from there is read from its cache file.
const RECENT_BLOCKS_BYTES: u64 = 8 << 20;

/// Decoded blocks just loaded from the storage, oldest first, at most
/// [`RECENT_BLOCKS_BYTES`] plus one block in all: the blocks a sequential reader is about
/// to read. Adding past the bound drops the oldest.
#[derive(Default)]
struct RecentBlocks {
    /// `(key, generation of the entry when loaded, contents)`.
    blocks: VecDeque<(Key, u64, Bytes)>,
    bytes: u64,
}

impl RecentBlocks {
    fn insert(&mut self, key: Key, generation: u64, data: Bytes, max: u64) {
        self.remove(key);
        self.bytes += data.len() as u64;
        self.blocks.push_back((key, generation, data));
        while self.bytes > max {
            let Some((_, _, old)) = self.blocks.pop_front() else {
                break;
            };
            self.bytes -= old.len() as u64;
        }
    }

    fn remove(&mut self, key: Key) -> Option<(u64, Bytes)> {
        let at = self.blocks.iter().position(|(k, _, _)| *k == key)?;
        let (_, generation, data) = self.blocks.remove(at)?;
        self.bytes -= data.len() as u64;
        Some((generation, data))
    }

    /// The contents of `key` if loaded at `generation`; forgotten if `last_use` (the
    /// reader reached its end) or stale.
    fn get(&mut self, key: Key, generation: u64, last_use: bool) -> Option<Bytes> {
        let at = self.blocks.iter().position(|(k, _, _)| *k == key)?;
        if !last_use && self.blocks[at].1 == generation {
            return Some(self.blocks[at].2.clone());
        }
        let (loaded_at, data) = self.remove(key)?;
        (loaded_at == generation).then_some(data)
    }
}

#[derive(Default)]
struct EntryState {
    loaded: bool,
    len: u64,
    dirty_since: Option<Instant>,
    generation: u64,
    /// Newest generation whose upload is recorded in the metadata (an older upload that
    /// finishes later must not re-point the block at its stale content).
    recorded: u64,
    removed: bool,
    /// The last upload of this block failed (write-back retries it).
    upload_failed: bool,
    /// This process created the block's cache file.
    has_file: bool,
    /// Written since its cache file was last synced to the disk.
    unsynced: bool,
    /// Its cache file was created since the cache directory was last synced.
    name_unsynced: bool,
}

struct Entry {
    key: Key,
    state: Arc<tokio::sync::Mutex<EntryState>>,
    last_use: AtomicU64,
}

/// Object deletions started and not yet ended.
#[derive(Default)]
struct RunningDeletes {
    count: AtomicUsize,
    /// Notified when `count` drops to zero.
    idle: Notify,
}

/// Counts as one running deletion until dropped: [`BlockCache::wait_for_deletes`] waits
/// for it. Taken by work that may start deletions later (freeing forgotten inodes), so that
/// an unmount cannot slip between that work's commit and its deletions.
pub(crate) struct PendingDeletion(Arc<RunningDeletes>);

impl Drop for PendingDeletion {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Settings of the block cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Directory holding one file per cached block.
    pub dir: PathBuf,
    /// Upper bound of the bytes in the cache directory.
    pub max_size: u64,
    /// Upper bound of the number of cached blocks.
    pub max_entries: usize,
    /// A dirty block untouched this long is uploaded.
    pub dirty_delay: Duration,
    /// Most concurrent uploads and downloads.
    pub max_connections: usize,
    /// Compression of new objects.
    pub compression: Compression,
    /// Encryption of objects.
    pub codec: Codec,
}

/// Figures of the cache, for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheUsage {
    /// Bytes of cached blocks.
    pub bytes: u64,
    /// Number of cached blocks.
    pub entries: u64,
    /// Bytes of dirty blocks.
    pub dirty_bytes: u64,
    /// Number of dirty blocks.
    pub dirty_entries: u64,
    /// Number of dirty blocks whose last upload failed.
    pub failed_entries: u64,
}

/// Cached blocks of all files, keyed by `(inode, block number)`.
pub(crate) struct BlockCache {
    cfg: CacheConfig,
    block_size: u64,
    entries: Mutex<BTreeMap<Key, Arc<Entry>>>,
    used: AtomicU64,
    max_size: AtomicU64,
    clock: AtomicU64,
    db: Db,
    store: Arc<dyn ObjectStore>,
    transfers: Arc<Semaphore>,
    deletes: Arc<RunningDeletes>,
    /// One permit per block an upload may hold in memory (see [`UPLOAD_BUFFER_BYTES`]).
    upload_buffers: Semaphore,
    /// One permit per core for CPU-bound work (see `on_cpu`).
    cpu: Semaphore,
    space_freed: Notify,
    /// Writers wait for room (logged once until the cache fits again).
    writers_wait: AtomicBool,
    wake_flusher: Notify,
    recent: Mutex<RecentBlocks>,
    spares: Arc<Spares>,
    /// Inodes created by this process, with a handle still open, none of whose blocks is
    /// recorded in the metadata yet: their blocks load as holes without a query.
    unrecorded: Mutex<HashSet<u64>>,
}

impl BlockCache {
    pub(crate) fn new(
        cfg: CacheConfig,
        block_size: u64,
        db: Db,
        store: Arc<dyn ObjectStore>,
    ) -> FsResult<Self> {
        let spares = Spares::open(&cfg.dir, MAX_SPARES.min(cfg.max_entries))?;
        Ok(Self {
            block_size,
            entries: Mutex::new(BTreeMap::new()),
            used: AtomicU64::new(0),
            max_size: AtomicU64::new(cfg.max_size),
            clock: AtomicU64::new(0),
            db,
            store,
            transfers: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
            deletes: Arc::default(),
            upload_buffers: Semaphore::new(
                (UPLOAD_BUFFER_BYTES / (2 * block_size.max(1))).max(1) as usize
            ),
            cpu: Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())),
            space_freed: Notify::new(),
            writers_wait: AtomicBool::new(false),
            wake_flusher: Notify::new(),
            recent: Mutex::new(RecentBlocks::default()),
            spares,
            unrecorded: Mutex::new(HashSet::new()),
            cfg,
        })
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<Key, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn recent(&self) -> MutexGuard<'_, RecentBlocks> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unrecorded(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.unrecorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `inode` was just created: until [`Self::forget_new_file`] or the first
    /// upload of one of its blocks, no block of it is in the metadata, so writing into one
    /// needs no lookup of its stored version.
    pub(crate) fn note_new_file(&self, inode: u64) {
        self.unrecorded().insert(inode);
    }

    /// Ends what [`Self::note_new_file`] recorded (its creating handle was released).
    pub(crate) fn forget_new_file(&self, inode: u64) {
        self.unrecorded().remove(&inode);
    }

    fn path(&self, key: Key) -> PathBuf {
        self.cfg.dir.join(format!("{}-{}", key.0, key.1))
    }

    fn entry(&self, key: Key) -> Arc<Entry> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        let entry = self
            .map()
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Entry {
                    key,
                    state: Arc::new(tokio::sync::Mutex::new(EntryState::default())),
                    last_use: AtomicU64::new(0),
                })
            })
            .clone();
        entry.last_use.store(tick, Ordering::Relaxed);
        entry
    }

    /// Opens the cache file of an existing block.
    fn open(&self, key: Key) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(key))
    }

    /// Opens the cache file of `key` for writing, creating it (from a spare if there is
    /// one) if needed; its name then waits for the next directory sync, see `sync_inode`.
    /// A file this process did not make holds nothing of the block: it is emptied.
    fn open_for_update(&self, key: Key, state: &mut EntryState) -> std::io::Result<File> {
        if !state.has_file {
            self.spares.take(&self.path(key));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(!state.has_file)
            .open(self.path(key))?;
        note_file_created(state);
        Ok(file)
    }

    fn set_len(&self, state: &mut EntryState, len: u64) {
        if len >= state.len {
            self.used.fetch_add(len - state.len, Ordering::Relaxed);
        } else {
            self.used.fetch_sub(state.len - len, Ordering::Relaxed);
        }
        state.len = len;
    }

    /// Locks the live entry for `key`, loading it from the storage unless `skip_load`.
    async fn lock_loaded(
        &self,
        key: Key,
        skip_load: bool,
    ) -> FsResult<tokio::sync::OwnedMutexGuard<EntryState>> {
        loop {
            let mut guard = self.entry(key).state.clone().lock_owned().await;
            if guard.removed {
                continue;
            }
            if !guard.loaded {
                if !skip_load {
                    self.load(key, &mut guard).await?;
                }
                guard.loaded = true;
            }
            return Ok(guard);
        }
    }

    /// Runs CPU-bound work (hashing, compression, encryption) on a blocking thread, at most
    /// one job per core at a time, so that uploads and downloads queue with their buffers
    /// unallocated rather than all computing (and holding memory) at once.
    async fn on_cpu<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> FsResult<R> {
        let _core = self.cpu.acquire().await;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| FsError::Inconsistent(e.to_string()))
    }

    async fn load(&self, key: Key, state: &mut EntryState) -> FsResult<()> {
        if self.unrecorded().contains(&key.0) {
            return Ok(());
        }
        let stored = self
            .db
            .call(move |c| blocks::block_of(c, key.0, key.1))
            .await?;
        let Some(stored) = stored else {
            return Ok(());
        };
        let name = data_object_name(stored.obj_id);
        let object = {
            let _permit = self.transfers.acquire().await;
            self.store.get(&name).await?
        };
        let codec = self.cfg.codec.clone();
        let object_name = name.clone();
        let path = self.path(key);
        let loading = self.cfg.dir.join(format!("{}-{}.loading", key.0, key.1));
        let spares = Arc::clone(&self.spares);
        let plain = self
            .on_cpu(move || -> FsResult<Bytes> {
                let plain = codec.decode(&object_name, object)?;
                if plain.len() as u64 != stored.size
                    || Sha256::digest(&plain).as_slice() != stored.hash
                {
                    return Err(format::FormatError::Corrupted(
                        "content does not match its SHA-256",
                    )
                    .into());
                }
                // Written under a name of its own and renamed once whole: fsck takes any
                // block file that differs from the metadata for newer data, so a file torn
                // by a crash or a full disk must never carry the block's name. Here rather
                // than on a runtime worker, which other tasks wait for.
                spares.take(&loading);
                let written = std::fs::write(&loading, &plain)
                    .map_err(FsError::from)
                    .and_then(|()| {
                        failpoint!(CACHE_LOADED);
                        Ok(std::fs::rename(&loading, &path)?)
                    });
                if written.is_err() {
                    let _ = std::fs::remove_file(&loading);
                }
                written.map(|()| plain)
            })
            .await?
            .inspect_err(|e| {
                tracing::error!("object {name} (inode {} block {}): {e}", key.0, key.1)
            })?;
        note_file_created(state);
        self.set_len(state, plain.len() as u64);
        let max = RECENT_BLOCKS_BYTES + self.block_size;
        self.recent().insert(key, state.generation, plain, max);
        Ok(())
    }

    /// The `len` bytes at `offset` within block `blockno` of `inode`; bytes past the
    /// block's stored end read as zeros. A block just loaded is read from memory (forgotten
    /// there once a read reaches its end), and when it holds all `len` bytes they are a
    /// slice of its buffer, not a copy; any other block is read from its cache file.
    pub(crate) async fn read(
        &self,
        inode: u64,
        blockno: u64,
        offset: u64,
        len: usize,
    ) -> FsResult<Bytes> {
        let key = (inode, blockno);
        let mut state = self.lock_loaded(key, false).await?;
        let avail = state.len.saturating_sub(offset).min(len as u64) as usize;
        let recent = if avail > 0 {
            let last_use = offset + len as u64 >= state.len;
            let recent = self.recent().get(key, state.generation, last_use);
            recent.filter(|data| data.len() as u64 == state.len)
        } else {
            None
        };
        let start = offset as usize;
        let data = match recent {
            Some(block) if avail == len => block.slice(start..start + len),
            recent => {
                let mut buf = vec![0u8; len];
                if let Some(block) = recent {
                    buf[..avail].copy_from_slice(&block[start..start + avail]);
                } else if avail > 0 {
                    self.open(key)?.read_exact_at(&mut buf[..avail], offset)?;
                }
                Bytes::from(buf)
            }
        };
        let lock = tokio::sync::OwnedMutexGuard::mutex(&state).clone();
        self.forget_hole(key, &lock, &mut state);
        Ok(data)
    }

    /// Drops the entry of `key` (whose mutex `lock` the caller holds as `state`) if it is a
    /// clean hole: it holds no bytes, so keeping it would only grow the map (reading a large
    /// sparse file) and the entry count.
    fn forget_hole(
        &self,
        key: Key,
        lock: &Arc<tokio::sync::Mutex<EntryState>>,
        state: &mut EntryState,
    ) {
        if state.removed || state.len > 0 || state.dirty_since.is_some() {
            return;
        }
        let entry = self
            .map()
            .get(&key)
            .filter(|e| Arc::ptr_eq(&e.state, lock))
            .cloned();
        if let Some(entry) = entry {
            self.drop_entry(&entry, state);
        }
    }

    /// Starts loading the blocks `blocks` of `inode` that are not cached, in the background
    /// (at most `max_connections` downloads at a time, shared with every other transfer).
    /// A failed load is logged and left for the read that needs the block.
    pub(crate) fn read_ahead(self: &Arc<Self>, inode: u64, blocks: std::ops::Range<u64>) {
        for blockno in blocks {
            let key = (inode, blockno);
            if self.map().contains_key(&key) {
                continue;
            }
            // Created now, so that the next read-ahead does not start a second download.
            self.entry(key);
            let cache = Arc::clone(self);
            tokio::spawn(async move {
                let _ = cache.lock_loaded(key, false).await;
            });
        }
    }

    /// Writes `data` at `offset` within block `blockno` of `inode` and marks it dirty.
    pub(crate) async fn write(
        &self,
        inode: u64,
        blockno: u64,
        offset: u64,
        data: &[u8],
    ) -> FsResult<()> {
        self.wait_for_space().await;
        let whole = offset == 0 && data.len() as u64 == self.block_size;
        let mut state = self.lock_loaded((inode, blockno), whole).await?;
        failpoint!(CACHE_WRITE);
        let file = self.open_for_update((inode, blockno), &mut state)?;
        if whole && state.len > 0 {
            file.set_len(0)?;
            self.set_len(&mut state, 0);
        }
        file.write_all_at(data, offset)?;
        let end = (offset + data.len() as u64).max(state.len);
        self.set_len(&mut state, end);
        mark_dirty(&mut state);
        if offset + data.len() as u64 == self.block_size {
            start_writeback(&file);
        }
        Ok(())
    }

    /// Cuts block `blockno` of `inode` to `len` bytes (a no-op if it is not longer).
    pub(crate) async fn truncate(&self, inode: u64, blockno: u64, len: u64) -> FsResult<()> {
        let mut state = self.lock_loaded((inode, blockno), false).await?;
        if state.len > len {
            failpoint!(CACHE_WRITE);
            self.open_for_update((inode, blockno), &mut state)?
                .set_len(len)?;
            self.set_len(&mut state, len);
            mark_dirty(&mut state);
        }
        Ok(())
    }

    /// Forgets blocks `first..` of `inode`, dirty or not (after truncate or delete).
    /// In-flight uploads of them are discarded.
    pub(crate) async fn remove(&self, inode: u64, first: u64) {
        let doomed: Vec<Arc<Entry>> = self
            .map()
            .range((inode, first)..=(inode, u64::MAX))
            .map(|(_, e)| e.clone())
            .collect();
        for entry in doomed {
            let mut state = entry.state.lock().await;
            self.drop_entry(&entry, &mut state);
        }
        self.space_freed.notify_waiters();
    }

    fn drop_entry(&self, entry: &Entry, state: &mut EntryState) {
        if state.removed {
            return;
        }
        state.removed = true;
        self.set_len(state, 0);
        self.recent().remove(entry.key);
        if std::mem::take(&mut state.has_file) {
            self.spares.retire(&self.path(entry.key));
        }
        let mut map = self.map();
        if map
            .get(&entry.key)
            .is_some_and(|e| std::ptr::eq(&**e, entry))
        {
            map.remove(&entry.key);
        }
    }

    /// Makes the cached blocks of `inode` durable on the local disk: the cache files
    /// written since their last sync (in parallel), then the cache directory if any of
    /// them is new.
    pub(crate) async fn sync_inode(&self, inode: u64) -> FsResult<()> {
        failpoint!(CACHE_FSYNC);
        let entries: Vec<Arc<Entry>> = self
            .map()
            .range((inode, 0)..=(inode, u64::MAX))
            .map(|(_, e)| e.clone())
            .collect();
        let mut unsynced = Vec::new();
        let mut new_names = false;
        for entry in entries {
            let mut state = entry.state.lock().await;
            if !state.removed && state.unsynced {
                // Cleared first: a write during the sync sets it again.
                state.unsynced = false;
                new_names |= std::mem::take(&mut state.name_unsynced);
                unsynced.push(entry.clone());
            }
        }
        let paths: Vec<PathBuf> = unsynced.iter().map(|e| self.path(e.key)).collect();
        let results: Vec<std::io::Result<()>> = futures::stream::iter(paths)
            .map(sync_cache_file)
            .buffer_unordered(PARALLEL_SYNCS)
            .collect()
            .await;
        let mut synced = results.into_iter().collect::<std::io::Result<()>>();
        if synced.is_ok() && new_names {
            synced = File::open(&self.cfg.dir).and_then(|dir| dir.sync_all());
        }
        if let Err(e) = synced {
            for entry in &unsynced {
                let mut state = entry.state.lock().await;
                state.unsynced = true;
                state.name_unsynced |= new_names;
            }
            return Err(e.into());
        }
        Ok(())
    }

    async fn upload(&self, entry: &Arc<Entry>) -> FsResult<()> {
        let key = entry.key;
        let _buffers = self.upload_buffers.acquire().await;
        let (data, generation) = {
            let state = entry.state.lock().await;
            if state.removed || state.dirty_since.is_none() {
                return Ok(());
            }
            let mut data = vec![0u8; state.len as usize];
            if state.len > 0 {
                self.open(key)?.read_exact_at(&mut data, 0)?;
            }
            (data, state.generation)
        };
        let compression = self.cfg.compression;
        let (hash, encoded) = self
            .on_cpu(move || {
                if data.iter().all(|b| *b == 0) {
                    return (None, Vec::new());
                }
                let hash = Sha256::digest(&data).to_vec();
                (Some((hash, data.len() as u64)), data)
            })
            .await?;
        failpoint!(WRITEBACK_HASHED);

        let mut uploaded: Option<(u64, u64)> = None;
        if let Some((hash, _)) = &hash {
            let h = hash.clone();
            let existing = self.db.call(move |c| blocks::block_by_hash(c, &h)).await?;
            if existing.is_none() {
                let obj_id = self.db.call(blocks::next_object_id).await?;
                failpoint!(WRITEBACK_PUT);
                let codec = self.cfg.codec.clone();
                let object = self
                    .on_cpu(move || codec.encode(&data_object_name(obj_id), &encoded, compression))
                    .await?;
                let stored_size = object.len() as u64;
                let _permit = self.transfers.acquire().await;
                self.store
                    .put(&data_object_name(obj_id), Bytes::from(object))
                    .await?;
                failpoint!(WRITEBACK_UPLOADED);
                uploaded = Some((obj_id, stored_size));
            }
        }

        let mut state = entry.state.lock().await;
        let mut dead = Vec::new();
        if state.removed || generation <= state.recorded {
            dead.extend(uploaded.map(|(id, _)| id));
        } else {
            dead = self
                .db
                .call(move |c| {
                    let mut dead = Vec::new();
                    let block_id = match hash {
                        None => None,
                        Some((hash, size)) => Some(match blocks::block_by_hash(c, &hash)? {
                            Some(id) => {
                                dead.extend(uploaded.map(|(id, _)| id));
                                id
                            }
                            None => {
                                let (obj_id, stored) = uploaded.ok_or_else(|| {
                                    FsError::Inconsistent("block vanished during upload".into())
                                })?;
                                blocks::insert_block(c, &hash, size, obj_id, stored)?
                            }
                        }),
                    };
                    dead.extend(blocks::set_block(c, key.0, key.1, block_id)?);
                    Ok(dead)
                })
                .await?;
            failpoint!(WRITEBACK_COMMITTED);
            self.forget_new_file(key.0);
            state.recorded = generation;
            if state.generation == generation {
                state.dirty_since = None;
                failpoint!(WRITEBACK_CLEAN);
                self.forget_hole(key, &entry.state, &mut state);
            }
        }
        drop(state);
        self.delete_objects(dead);
        Ok(())
    }

    /// Deletes objects that no block references any more (after the commit that dropped
    /// them), in the background, as storage transfers (at most `max_connections` at a time
    /// with uploads and downloads). [`Self::wait_for_deletes`] waits for them.
    pub(crate) fn delete_objects(&self, obj_ids: Vec<u64>) {
        for id in obj_ids {
            let store = self.store.clone();
            let transfers = Arc::clone(&self.transfers);
            let pending = self.pending_deletion();
            tokio::spawn(async move {
                let name = data_object_name(id);
                let deleted = async {
                    let _permit = transfers.acquire().await;
                    failpoint!(OBJECT_DELETE);
                    store.delete(&name).await?;
                    FsResult::Ok(())
                };
                if let Err(e) = deleted.await {
                    tracing::warn!(
                        "could not delete unreferenced object {name}: {e} (fsck.s3ql removes it)"
                    );
                }
                drop(pending);
            });
        }
    }

    /// A deletion that counts as running from now until the guard is dropped.
    pub(crate) fn pending_deletion(&self) -> PendingDeletion {
        self.deletes.count.fetch_add(1, Ordering::AcqRel);
        PendingDeletion(Arc::clone(&self.deletes))
    }

    /// Waits until every deletion started by [`Self::delete_objects`], and every
    /// [`PendingDeletion`], has ended.
    pub(crate) async fn wait_for_deletes(&self) {
        loop {
            let idle = self.deletes.idle.notified();
            if self.deletes.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    fn dirty_entries(&self, older_than: Option<Duration>) -> Vec<Arc<Entry>> {
        let now = Instant::now();
        self.map()
            .values()
            .filter(|e| {
                e.state.try_lock().map_or(true, |s| match s.dirty_since {
                    None => false,
                    Some(t) => older_than.is_none_or(|d| now.duration_since(t) >= d),
                })
            })
            .cloned()
            .collect()
    }

    /// Uploads the blocks that are dirty now, once (unlike `flush_all`, this ends while
    /// writers go on; what they write meanwhile stays dirty).
    pub(crate) async fn flush_dirty_now(&self) -> FsResult<()> {
        self.upload_all(self.dirty_entries(None)).await
    }

    /// Uploads every dirty block; fails if any could not be uploaded (it stays dirty).
    pub(crate) async fn flush_all(&self) -> FsResult<()> {
        loop {
            let dirty = self.dirty_entries(None);
            if dirty.is_empty() {
                return Ok(());
            }
            self.upload_all(dirty).await?;
            if self.usage().dirty_entries == 0 {
                return Ok(());
            }
        }
    }

    /// Uploads `dirty`, at most `max_connections` at a time; each upload's state is made
    /// only when it starts, so memory does not grow with the number of dirty blocks.
    async fn upload_all(&self, dirty: Vec<Arc<Entry>>) -> FsResult<()> {
        let mut uploads = futures::stream::iter(dirty)
            .map(|e| async move {
                let result = self.upload(&e).await;
                e.state.lock().await.upload_failed = result.is_err();
                result
            })
            .buffer_unordered(self.cfg.max_connections.max(1));
        let mut first_err = None;
        let mut done = 0;
        while let Some(result) = uploads.next().await {
            if let Err(e) = result {
                tracing::error!("upload failed: {e}");
                first_err.get_or_insert(e);
            }
            done += 1;
            if done % EVICT_EVERY_UPLOADS == 0 && self.writers_wait.load(Ordering::Relaxed) {
                self.evict();
            }
        }
        drop(uploads);
        self.evict();
        first_err.map_or(Ok(()), Err)
    }

    /// One pass of the background write-back: uploads blocks dirty for longer than the
    /// delay (all of them if the cache is over its size), then evicts clean blocks.
    pub(crate) async fn writeback_pass(&self) {
        let delay = if self.over_bounds() {
            None
        } else {
            Some(self.cfg.dirty_delay)
        };
        let dirty = self.dirty_entries(delay);
        if !dirty.is_empty() {
            let _ = self.upload_all(dirty).await;
        } else {
            self.evict();
        }
    }

    /// Waits until the flusher is woken or `period` passes.
    pub(crate) async fn wait_for_work(&self, period: Duration) {
        let _ = tokio::time::timeout(period, self.wake_flusher.notified()).await;
    }

    /// Waits while the cache is over its size by more than a block, or over its number of
    /// entries: until uploads let clean blocks be evicted.
    async fn wait_for_space(&self) {
        while self.used.load(Ordering::Relaxed)
            > self.max_size.load(Ordering::Relaxed) + self.block_size
            || self.map().len() > self.cfg.max_entries
        {
            if !self.writers_wait.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "cache full of dirty blocks (--cachesize or --max-cache-entries), writers wait for uploads"
                );
            }
            self.wake_flusher.notify_one();
            let _ =
                tokio::time::timeout(Duration::from_millis(200), self.space_freed.notified()).await;
        }
    }

    /// Whether the cache holds more bytes or entries than it may keep.
    fn over_bounds(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.max_size.load(Ordering::Relaxed)
            || self.map().len() > self.cfg.max_entries
    }

    /// Evicts clean, idle blocks, least recently used first, until the cache fits; past
    /// the entry bound, down to [`EVICT_TO_ENTRIES`] of it, so that writers that wait for
    /// room are not woken for one entry at a time.
    fn evict(&self) {
        if !self.over_bounds() {
            self.writers_wait.store(false, Ordering::Relaxed);
            self.space_freed.notify_waiters();
            return;
        }
        let max_entries = (self.cfg.max_entries as f64 * EVICT_TO_ENTRIES) as usize;
        let fits = || {
            self.used.load(Ordering::Relaxed) <= self.max_size.load(Ordering::Relaxed)
                && self.map().len() <= max_entries
        };
        let mut candidates: Vec<Arc<Entry>> = self.map().values().cloned().collect();
        candidates.sort_unstable_by_key(|e| e.last_use.load(Ordering::Relaxed));
        for entry in candidates {
            if fits() {
                break;
            }
            if let Ok(mut state) = entry.state.try_lock() {
                if state.dirty_since.is_none() {
                    self.drop_entry(&entry, &mut state);
                }
            }
        }
        self.space_freed.notify_waiters();
    }

    /// Drops every clean block (after a flush, all of them).
    pub(crate) async fn drop_clean(&self) {
        let all: Vec<Arc<Entry>> = self.map().values().cloned().collect();
        for entry in all {
            let mut state = entry.state.lock().await;
            if state.dirty_since.is_none() {
                self.drop_entry(&entry, &mut state);
            }
        }
    }

    /// Changes the cache size limit.
    pub(crate) fn set_max_size(&self, bytes: u64) {
        self.max_size.store(bytes, Ordering::Relaxed);
        self.wake_flusher.notify_one();
    }

    /// Current figures. A clean entry without bytes (a hole being read or read ahead) is no
    /// cache entry: it has no file in the cache directory.
    pub(crate) fn usage(&self) -> CacheUsage {
        let mut u = CacheUsage::default();
        for e in self.map().values() {
            if let Ok(s) = e.state.try_lock() {
                if s.len == 0 && s.dirty_since.is_none() {
                    continue;
                }
                u.entries += 1;
                u.bytes += s.len;
                if s.dirty_since.is_some() {
                    u.dirty_entries += 1;
                    u.dirty_bytes += s.len;
                    u.failed_entries += u64::from(s.upload_failed);
                }
            } else {
                u.entries += 1;
                u.dirty_entries += 1;
            }
        }
        u
    }
}

/// Syncs one cache file's data to the disk, on a blocking thread; a file removed meanwhile
/// (truncated or deleted) has nothing left to sync.
async fn sync_cache_file(path: PathBuf) -> std::io::Result<()> {
    let synced = tokio::task::spawn_blocking(move || match File::open(path) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    });
    synced.await.map_err(std::io::Error::other)?
}

/// Starts writing a cache file's dirty pages to the disk without waiting, so that the disk
/// works while the writer goes on and a later `fsync` has little left to do (a block
/// written to its end is rarely written again soon). A hint: failure changes nothing.
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Records that the block's cache file exists; a file new to this process waits for the
/// next sync of the cache directory (see `sync_inode`).
fn note_file_created(state: &mut EntryState) {
    if !state.has_file {
        state.has_file = true;
        state.name_unsynced = true;
    }
}

fn mark_dirty(state: &mut EntryState) {
    state.generation += 1;
    state.dirty_since = Some(Instant::now());
    state.unsynced = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(byte: u8) -> Bytes {
        Bytes::from(vec![byte; 10])
    }

    #[test]
    fn recent_blocks_are_bounded_and_valid_for_their_generation_only() {
        let mut recent = RecentBlocks::default();
        for n in 0..4 {
            recent.insert((1, n), 0, block(n as u8), 30);
        }
        assert_eq!(recent.bytes, 30);
        assert_eq!(recent.get((1, 0), 0, false), None, "the oldest was dropped");
        assert_eq!(recent.get((1, 1), 0, false), Some(block(1)));
        assert_eq!(recent.get((1, 1), 0, true), Some(block(1)));
        assert_eq!(
            recent.get((1, 1), 0, false),
            None,
            "forgotten after its last use"
        );
        assert_eq!(
            recent.get((1, 2), 1, false),
            None,
            "written since it was loaded"
        );
        assert_eq!(
            recent.get((1, 2), 0, false),
            None,
            "the stale buffer is gone"
        );
        assert_eq!(recent.bytes, 10);
        assert_eq!(recent.remove((1, 3)), Some((0, block(3))));
        assert_eq!(recent.bytes, 0);
    }
}
