//! An in-memory object store for tests; state is shared between clones.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::{ObjectInfo, ObjectStore, StoreError, StoreFuture};

/// Objects kept in a map in memory. Clones share the same objects, so a test can
/// "remount" by building a new filesystem over a clone.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Bytes>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ObjectStore for MemoryStore {
    fn get(&self, name: &str) -> StoreFuture<'_, Bytes> {
        let found = self.objects().get(name).cloned();
        let name = name.to_owned();
        Box::pin(async move { found.ok_or(StoreError::NotFound(name)) })
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> StoreFuture<'_, Bytes> {
        let found = self.objects().get(name).cloned();
        let name = name.to_owned();
        Box::pin(async move {
            let data = found.ok_or(StoreError::NotFound(name))?;
            let end = (range.end as usize).min(data.len());
            let start = (range.start as usize).min(end);
            Ok(data.slice(start..end))
        })
    }

    fn put(&self, name: &str, data: Bytes) -> StoreFuture<'_, ()> {
        self.objects().insert(name.to_owned(), data);
        Box::pin(async { Ok(()) })
    }

    fn put_if_absent(&self, name: &str, data: Bytes) -> StoreFuture<'_, bool> {
        let mut objects = self.objects();
        let created = !objects.contains_key(name);
        if created {
            objects.insert(name.to_owned(), data);
        }
        Box::pin(async move { Ok(created) })
    }

    fn delete(&self, name: &str) -> StoreFuture<'_, ()> {
        self.objects().remove(name);
        Box::pin(async { Ok(()) })
    }

    fn list(&self, prefix: &str) -> StoreFuture<'_, Vec<ObjectInfo>> {
        let found = self
            .objects()
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, data)| ObjectInfo {
                name: name.clone(),
                size: data.len() as u64,
            })
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn head(&self, name: &str) -> StoreFuture<'_, Option<u64>> {
        let size = self.objects().get(name).map(|d| d.len() as u64);
        Box::pin(async move { Ok(size) })
    }
}
