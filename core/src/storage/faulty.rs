//! A fault-injecting store for tests: errors, added latency and truncated bodies on every
//! operation, from a seeded random generator, plus an outage switch.
//!
//! Injected errors are [`StoreError::Unavailable`] (what a backend outage looks like after
//! the request retries). Half of them happen before the wrapped operation runs and half
//! after it (a lost reply: the write did happen), so callers must cope with both. A
//! truncated body is a successful `get` that returns only a prefix of the object, as a
//! broken transfer would; the object format and block checksums must catch it.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{ObjectInfo, ObjectStore, StoreError, StoreFuture};

/// What [`FaultyStore`] injects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Seed of the random generator (same seed and same call order, same faults).
    pub seed: u64,
    /// Probability that an operation fails.
    pub error_rate: f64,
    /// Each operation first sleeps a random time up to this.
    pub max_latency: Duration,
    /// Probability that a successful `get`/`get_range` returns a truncated body.
    pub truncate_rate: f64,
}

impl Default for FaultConfig {
    /// No faults.
    fn default() -> Self {
        Self {
            seed: 0,
            error_rate: 0.0,
            max_latency: Duration::ZERO,
            truncate_rate: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Before,
    After,
}

struct State {
    config: Mutex<FaultConfig>,
    rng: Mutex<StdRng>,
    outage: AtomicBool,
    injected: AtomicU64,
}

/// Wraps a store and injects faults into every operation (see the module documentation).
/// Clones share the configuration, the generator and the outage switch.
#[derive(Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<State>,
}

impl FaultyStore {
    /// Wraps `inner`, injecting what `config` says.
    pub fn new(inner: Arc<dyn ObjectStore>, config: FaultConfig) -> Self {
        Self {
            inner,
            state: Arc::new(State {
                rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
                config: Mutex::new(config),
                outage: AtomicBool::new(false),
                injected: AtomicU64::new(0),
            }),
        }
    }

    /// While on, every operation fails (after its latency) without reaching the store.
    pub fn set_outage(&self, on: bool) {
        self.state.outage.store(on, Ordering::SeqCst);
    }

    /// Replaces the fault configuration (the generator keeps its state).
    pub fn set_config(&self, config: FaultConfig) {
        *self.state.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Number of faults (errors, truncations, outage refusals) injected so far.
    pub fn injected(&self) -> u64 {
        self.state.injected.load(Ordering::Relaxed)
    }

    /// Draws the latency, the fault and the truncation point of one operation.
    fn draw(&self) -> (Duration, Fault, Option<f64>) {
        let config = *self.state.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut rng = self.state.rng.lock().unwrap_or_else(|e| e.into_inner());
        let latency = if config.max_latency.is_zero() {
            Duration::ZERO
        } else {
            config.max_latency.mul_f64(rng.random::<f64>())
        };
        let fault = if rng.random::<f64>() < config.error_rate {
            if rng.random::<bool>() {
                Fault::Before
            } else {
                Fault::After
            }
        } else {
            Fault::None
        };
        let truncate = (rng.random::<f64>() < config.truncate_rate).then(|| rng.random::<f64>());
        (latency, fault, truncate)
    }

    fn fail(&self, what: &str, name: &str) -> StoreError {
        self.state.injected.fetch_add(1, Ordering::Relaxed);
        StoreError::Unavailable(format!("{name}: injected {what}"))
    }

    /// Runs `op` on the inner store with the drawn latency and fault.
    async fn run<T>(
        &self,
        name: &str,
        op: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<(T, Option<f64>), StoreError> {
        let (latency, fault, truncate) = self.draw();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if self.state.outage.load(Ordering::SeqCst) {
            return Err(self.fail("outage", name));
        }
        if matches!(fault, Fault::Before) {
            return Err(self.fail("error", name));
        }
        let value = op.await?;
        if matches!(fault, Fault::After) {
            return Err(self.fail("error after the operation", name));
        }
        Ok((value, truncate))
    }

    fn truncated(&self, body: Bytes, truncate: Option<f64>) -> Bytes {
        match truncate {
            Some(f) if !body.is_empty() => {
                self.state.injected.fetch_add(1, Ordering::Relaxed);
                let keep = ((body.len() as f64 * f) as usize).min(body.len() - 1);
                body.slice(..keep)
            }
            _ => body,
        }
    }
}

impl ObjectStore for FaultyStore {
    fn get(&self, name: &str) -> StoreFuture<'_, Bytes> {
        let name = name.to_owned();
        Box::pin(async move {
            let (body, truncate) = self.run(&name, self.inner.get(&name)).await?;
            Ok(self.truncated(body, truncate))
        })
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> StoreFuture<'_, Bytes> {
        let name = name.to_owned();
        Box::pin(async move {
            let (body, truncate) = self.run(&name, self.inner.get_range(&name, range)).await?;
            Ok(self.truncated(body, truncate))
        })
    }

    fn put(&self, name: &str, data: Bytes) -> StoreFuture<'_, ()> {
        let name = name.to_owned();
        Box::pin(async move {
            self.run(&name, self.inner.put(&name, data))
                .await
                .map(|(v, _)| v)
        })
    }

    fn put_if_absent(&self, name: &str, data: Bytes) -> StoreFuture<'_, bool> {
        let name = name.to_owned();
        Box::pin(async move {
            self.run(&name, self.inner.put_if_absent(&name, data))
                .await
                .map(|(v, _)| v)
        })
    }

    fn delete(&self, name: &str) -> StoreFuture<'_, ()> {
        let name = name.to_owned();
        Box::pin(async move {
            self.run(&name, self.inner.delete(&name))
                .await
                .map(|(v, _)| v)
        })
    }

    fn list(&self, prefix: &str) -> StoreFuture<'_, Vec<ObjectInfo>> {
        let prefix = prefix.to_owned();
        Box::pin(async move {
            self.run(&prefix, self.inner.list(&prefix))
                .await
                .map(|(v, _)| v)
        })
    }

    fn head(&self, name: &str) -> StoreFuture<'_, Option<u64>> {
        let name = name.to_owned();
        Box::pin(async move {
            self.run(&name, self.inner.head(&name))
                .await
                .map(|(v, _)| v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    #[tokio::test]
    async fn faults_are_seeded_and_outage_blocks_everything() {
        let config = FaultConfig {
            seed: 7,
            error_rate: 0.3,
            max_latency: Duration::ZERO,
            truncate_rate: 0.3,
        };
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let inner = MemoryStore::new();
            inner
                .put("o", Bytes::from_static(b"0123456789"))
                .await
                .expect("put");
            let store = FaultyStore::new(Arc::new(inner), config);
            let mut seen = Vec::new();
            for _ in 0..50 {
                seen.push(match store.get("o").await {
                    Ok(b) => b.len(),
                    Err(e) => {
                        assert!(e.is_transient());
                        usize::MAX
                    }
                });
            }
            assert!(seen.contains(&10) && seen.contains(&usize::MAX));
            assert!(seen.iter().any(|n| *n < 10), "some bodies are truncated");
            outcomes.push(seen);
            store.set_outage(true);
            store.set_config(FaultConfig::default());
            assert!(store.head("o").await.is_err());
            store.set_outage(false);
            assert_eq!(store.head("o").await.expect("head"), Some(10));
        }
        assert_eq!(outcomes[0], outcomes[1], "same seed, same faults");
    }
}
