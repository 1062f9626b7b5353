//! Helpers shared by the core's integration tests: a filesystem over the in-memory store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use s3ql_core::storage::ObjectStore;
use s3ql_core::{Compression, Filesystem, MkfsOptions, MountOptions};

/// Mount settings for tests: a large cache, no automatic uploads (tests flush explicitly).
pub fn mount_options(dir: &Path) -> MountOptions {
    MountOptions {
        cache_path: dir.join("fs"),
        cache_size: 1 << 30,
        max_cache_entries: 100_000,
        compression: Compression::Zstd(1),
        dirty_block_upload_delay: Duration::from_secs(3600),
        metadata_backup_interval: Duration::ZERO,
        max_connections: 4,
        keep_cache: false,
        owner_uid: 0,
        owner_gid: 0,
        passphrase: None,
    }
}

/// Creates an unencrypted filesystem with `block_size`-byte blocks in `store` and mounts
/// it with its cache in `dir`.
pub async fn mkfs_and_mount<S: ObjectStore + Clone>(
    store: &S,
    dir: &Path,
    block_size: u64,
) -> Arc<Filesystem> {
    let mkfs = MkfsOptions {
        label: String::new(),
        data_block_size: block_size,
        force: false,
        root_uid: 0,
        root_gid: 0,
        passphrase: None,
    };
    Filesystem::mkfs(Arc::new(store.clone()), &dir.join("fs"), mkfs)
        .await
        .expect("mkfs");
    Filesystem::mount(Arc::new(store.clone()), mount_options(dir))
        .await
        .expect("mount")
}
