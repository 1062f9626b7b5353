//! Riding out storage outages: re-attempts operations that failed with a transient error.
//!
//! The opendal stores retry each HTTP request for a few seconds already; this wrapper sits
//! above any store and gives an outage a longer grace period before the error reaches the
//! filesystem (where it becomes `EIO` for the operation that needed the storage). Only
//! [`StoreError::is_transient`] errors are re-attempted: a missing object, a missing bucket
//! or rejected credentials are answered at once.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{ObjectInfo, ObjectStore, StoreError, StoreFuture};

/// How long and how often [`RetryStore`] re-attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first re-attempt; doubles each time.
    pub first_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
    /// No re-attempt starts after this much time since the first attempt.
    pub patience: Duration,
}

impl Default for RetryPolicy {
    /// 100 ms doubling up to 5 s, for up to 30 s.
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            patience: Duration::from_secs(30),
        }
    }
}

/// A store that re-attempts transiently failed operations of `inner` (see the module
/// documentation). Every operation of the trait is idempotent, so re-attempting is safe;
/// `put_if_absent` after a lost reply may answer `false` for its own write, which callers
/// that care (the mount lock) detect by reading the object back.
#[derive(Clone)]
pub struct RetryStore {
    inner: Arc<dyn ObjectStore>,
    policy: RetryPolicy,
}

impl RetryStore {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: Arc<dyn ObjectStore>, policy: RetryPolicy) -> Self {
        Self { inner, policy }
    }

    async fn run<'a, T, F, Fut>(&'a self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn(&'a dyn ObjectStore) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let start = Instant::now();
        let mut delay = self.policy.first_delay;
        let mut attempt = 1u32;
        loop {
            match op(self.inner.as_ref()).await {
                Err(e) if e.is_transient() && start.elapsed() + delay <= self.policy.patience => {
                    tracing::warn!("{what} failed (attempt {attempt}), retrying in {delay:?}: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.policy.max_delay);
                    attempt += 1;
                }
                Err(e) => return Err(e),
                Ok(v) => {
                    if attempt > 1 {
                        tracing::info!("{what} succeeded after {attempt} attempts");
                    }
                    return Ok(v);
                }
            }
        }
    }
}

impl ObjectStore for RetryStore {
    fn get(&self, name: &str) -> StoreFuture<'_, Bytes> {
        let name = name.to_owned();
        Box::pin(async move { self.run(&format!("GET {name}"), |s| s.get(&name)).await })
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> StoreFuture<'_, Bytes> {
        let name = name.to_owned();
        Box::pin(async move {
            self.run(&format!("GET {name} {range:?}"), |s| {
                s.get_range(&name, range.clone())
            })
            .await
        })
    }

    fn put(&self, name: &str, data: Bytes) -> StoreFuture<'_, ()> {
        let name = name.to_owned();
        Box::pin(async move {
            self.run(&format!("PUT {name}"), |s| s.put(&name, data.clone()))
                .await
        })
    }

    fn put_if_absent(&self, name: &str, data: Bytes) -> StoreFuture<'_, bool> {
        let name = name.to_owned();
        Box::pin(async move {
            self.run(&format!("PUT (if absent) {name}"), |s| {
                s.put_if_absent(&name, data.clone())
            })
            .await
        })
    }

    fn delete(&self, name: &str) -> StoreFuture<'_, ()> {
        let name = name.to_owned();
        Box::pin(async move {
            self.run(&format!("DELETE {name}"), |s| s.delete(&name))
                .await
        })
    }

    fn list(&self, prefix: &str) -> StoreFuture<'_, Vec<ObjectInfo>> {
        let prefix = prefix.to_owned();
        Box::pin(async move {
            self.run(&format!("LIST {prefix}"), |s| s.list(&prefix))
                .await
        })
    }

    fn head(&self, name: &str) -> StoreFuture<'_, Option<u64>> {
        let name = name.to_owned();
        Box::pin(async move { self.run(&format!("HEAD {name}"), |s| s.head(&name)).await })
    }
}
