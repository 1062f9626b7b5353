//! The object store over an `opendal::Operator` (local directory today; S3, GCS, Swift and
//! sftp share this code through other opendal services).

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use super::{ObjectInfo, ObjectStore, StoreError, StoreFuture};

/// Objects stored through opendal, behind a timeout layer and then a retry layer, so a
/// hung request is cut and retried with backoff.
#[derive(Debug, Clone)]
pub struct OpendalStore {
    op: Operator,
}

fn map_err(name: &str, e: opendal::Error) -> StoreError {
    match e.kind() {
        ErrorKind::NotFound => StoreError::NotFound(name.to_owned()),
        _ => StoreError::Backend(format!("{name}: {e}")),
    }
}

impl OpendalStore {
    /// Wraps an operator with the standard timeout and retry layers.
    pub fn new(op: Operator) -> Self {
        let op = op
            .layer(TimeoutLayer::new().with_timeout(Duration::from_secs(60)))
            .layer(
                RetryLayer::new()
                    .with_max_times(8)
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(20))
                    .with_max_delay(Duration::from_secs(10)),
            );
        Self { op }
    }

    /// A store in the local directory `dir`, which must exist. Objects are written to a
    /// temporary file, synced and renamed into place, so a crash never leaves a torn object.
    pub fn local(dir: &Path) -> Result<Self, StoreError> {
        if !dir.is_dir() {
            return Err(StoreError::LocationMissing(dir.display().to_string()));
        }
        let root = dir.to_string_lossy();
        let tmp = dir.join(".tmp");
        let builder = opendal::services::Fs::default()
            .root(&root)
            .atomic_write_dir(&tmp.to_string_lossy());
        let op = Operator::new(builder).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self::new(op))
    }
}

impl ObjectStore for OpendalStore {
    fn get(&self, name: &str) -> StoreFuture<'_, Bytes> {
        let name = name.to_owned();
        Box::pin(async move {
            let buf = self.op.read(&name).await.map_err(|e| map_err(&name, e))?;
            Ok(buf.to_bytes())
        })
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> StoreFuture<'_, Bytes> {
        let name = name.to_owned();
        Box::pin(async move {
            let buf = self
                .op
                .read_with(&name)
                .range(range)
                .await
                .map_err(|e| map_err(&name, e))?;
            Ok(buf.to_bytes())
        })
    }

    fn put(&self, name: &str, data: Bytes) -> StoreFuture<'_, ()> {
        let name = name.to_owned();
        Box::pin(async move {
            self.op
                .write(&name, data)
                .await
                .map_err(|e| map_err(&name, e))?;
            Ok(())
        })
    }

    fn put_if_absent(&self, name: &str, data: Bytes) -> StoreFuture<'_, bool> {
        let name = name.to_owned();
        Box::pin(async move {
            match self.op.write_with(&name, data).if_not_exists(true).await {
                Ok(_) => Ok(true),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConditionNotMatch | ErrorKind::AlreadyExists
                    ) =>
                {
                    Ok(false)
                }
                Err(e) => Err(map_err(&name, e)),
            }
        })
    }

    fn delete(&self, name: &str) -> StoreFuture<'_, ()> {
        let name = name.to_owned();
        Box::pin(async move { self.op.delete(&name).await.map_err(|e| map_err(&name, e)) })
    }

    fn list(&self, prefix: &str) -> StoreFuture<'_, Vec<ObjectInfo>> {
        let prefix = prefix.to_owned();
        Box::pin(async move {
            let entries = self
                .op
                .list_with("")
                .await
                .map_err(|e| map_err(&prefix, e))?;
            let mut found = Vec::new();
            for entry in entries {
                let name = entry.path();
                if !name.starts_with(&prefix) || name.ends_with('/') {
                    continue;
                }
                found.push(ObjectInfo {
                    name: name.to_owned(),
                    size: entry.metadata().content_length(),
                });
            }
            Ok(found)
        })
    }

    fn head(&self, name: &str) -> StoreFuture<'_, Option<u64>> {
        let name = name.to_owned();
        Box::pin(async move {
            match self.op.stat(&name).await {
                Ok(meta) => Ok(Some(meta.content_length())),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(map_err(&name, e)),
            }
        })
    }
}
