//! The single-mount rule: one writer at a time per filesystem, whichever machine, cache
//! directory or spelling of the storage URL the second one uses.
//!
//! Mounting creates the object [`LOCK_OBJECT`] with a conditional put (`put_if_absent`)
//! holding who mounts: host, pid, since when and a random mount id. The mount then reads
//! the object back and goes on only if it holds its own mount id (this also covers a reply
//! lost after a successful write, and backends without conditional writes, where the last
//! of two racing writers wins). A clean unmount deletes the object; a crashed mount leaves
//! it, and every later mount is refused naming the holder until `fsck.s3ql` clears it with
//! [`break_mount_lock`].
//!
//! The object is plain JSON (not encrypted): it must be readable without the passphrase so
//! that a refused mount can say who holds it, and it holds nothing but host, pid and time.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::storage::{ObjectStore, StoreError};

/// Name of the lock object.
pub const LOCK_OBJECT: &str = "s3ql_mount_lock";

/// Who holds the mount lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Host name of the machine that mounted.
    pub host: String,
    /// Process id of the mount daemon.
    pub pid: u32,
    /// When it mounted, seconds since the epoch.
    pub since: i64,
    /// Random id of that mount.
    pub mount_id: String,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {}, pid {}, since {}",
            self.host,
            self.pid,
            utc_time(self.since)
        )
    }
}

/// Why the lock could not be taken or released.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another mount holds the lock.
    #[error("the filesystem is mounted elsewhere ({0}); unmount it there, or run fsck.s3ql if that mount crashed")]
    Held(LockHolder),
    /// The lock object cannot be parsed.
    #[error("the mount lock object {LOCK_OBJECT} is damaged ({0}); run fsck.s3ql")]
    Damaged(String),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl LockError {
    /// S3QL's exit code: 31 (mounted elsewhere, as for S3QL's `is_mounted` flag), or the
    /// storage error's.
    pub fn exit_code(&self) -> i32 {
        match self {
            LockError::Held(_) | LockError::Damaged(_) => 31,
            LockError::Storage(e) => e.exit_code(),
        }
    }
}

impl From<LockError> for crate::FsError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Storage(e) => crate::FsError::Storage(e),
            e => crate::FsError::Inconsistent(e.to_string()),
        }
    }
}

/// The lock held by this process's mount.
#[derive(Debug, Clone)]
pub(crate) struct MountLock {
    holder: LockHolder,
}

/// The current holder, if the filesystem is locked.
pub async fn lock_holder(store: &dyn ObjectStore) -> Result<Option<LockHolder>, LockError> {
    match store.get(LOCK_OBJECT).await {
        Ok(body) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| LockError::Damaged(e.to_string())),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the mount lock whoever holds it, and returns who did. For `fsck.s3ql` (and
/// `s3qladm`) once the user confirmed that the holder is gone: a mount that still runs
/// would then no longer be protected from a second writer.
pub async fn break_mount_lock(store: &dyn ObjectStore) -> Result<Option<LockHolder>, LockError> {
    let holder = match lock_holder(store).await {
        Err(LockError::Damaged(e)) => {
            tracing::warn!("removing a damaged mount lock: {e}");
            None
        }
        other => other?,
    };
    store.delete(LOCK_OBJECT).await?;
    Ok(holder)
}

/// Whether `holder` is provably gone: a mount of this host whose process no longer runs
/// (or is a zombie). A holder on another host is never provably gone.
pub fn holder_is_gone(holder: &LockHolder) -> bool {
    if holder.host != host_name() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{}/stat", holder.pid)) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| matches!(state, 'Z' | 'X')),
    }
}

impl MountLock {
    /// Takes the lock for this process, or fails with [`LockError::Held`] naming the holder.
    pub(crate) async fn acquire(store: &dyn ObjectStore) -> Result<MountLock, LockError> {
        let holder = LockHolder {
            host: host_name(),
            pid: std::process::id(),
            since: crate::types::Timestamp::now().nanos / 1_000_000_000,
            mount_id: hex::encode(rand::random::<[u8; 16]>()),
        };
        let body = serde_json::to_vec(&holder).map_err(|e| LockError::Damaged(e.to_string()))?;
        // A holder that unmounts between our write and our read-back: try again.
        for _ in 0..3 {
            store
                .put_if_absent(LOCK_OBJECT, Bytes::from(body.clone()))
                .await?;
            match lock_holder(store).await? {
                Some(h) if h == holder => return Ok(MountLock { holder }),
                Some(other) => return Err(LockError::Held(other)),
                None => continue,
            }
        }
        Err(LockError::Storage(StoreError::Backend(format!(
            "{LOCK_OBJECT} vanished right after it was written"
        ))))
    }

    /// Fails unless the lock object still names this mount (it was not broken by fsck and
    /// taken by another mount meanwhile).
    pub(crate) async fn verify(&self, store: &dyn ObjectStore) -> Result<(), LockError> {
        match lock_holder(store).await? {
            Some(h) if h == self.holder => Ok(()),
            Some(other) => Err(LockError::Held(other)),
            None => Err(LockError::Damaged("it disappeared while mounted".into())),
        }
    }

    /// Releases the lock if it is still this mount's (otherwise leaves it alone).
    pub(crate) async fn release(&self, store: &dyn ObjectStore) -> Result<(), LockError> {
        match self.verify(store).await {
            Ok(()) => Ok(store.delete(LOCK_OBJECT).await?),
            Err(LockError::Storage(e)) => Err(e.into()),
            Err(e) => {
                tracing::warn!("not releasing the mount lock: {e}");
                Ok(())
            }
        }
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length; gethostname NUL-terminates within it
    // (or truncates, which the zeroed last byte guards against).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch.
pub(crate) fn utc_time(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FaultConfig, FaultyStore, MemoryStore, RetryPolicy, RetryStore};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn times_are_formatted_in_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }

    #[tokio::test]
    async fn second_lock_is_refused_until_released_or_broken() {
        let store = MemoryStore::new();
        let first = MountLock::acquire(&store).await.expect("first");
        let err = MountLock::acquire(&store).await.expect_err("second");
        assert_eq!(err.exit_code(), 31);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains(&host_name()), "{msg}");
        first.verify(&store).await.expect("still ours");

        first.release(&store).await.expect("release");
        assert!(lock_holder(&store).await.expect("read").is_none());
        let second = MountLock::acquire(&store).await.expect("after release");

        // A crashed holder: fsck breaks the lock; the old mount no longer owns it.
        let broken = break_mount_lock(&store).await.expect("break");
        assert_eq!(broken.as_ref(), Some(&second.holder));
        let third = MountLock::acquire(&store).await.expect("after break");
        assert!(second.verify(&store).await.is_err());
        second
            .release(&store)
            .await
            .expect("release of a lost lock is a no-op");
        third.verify(&store).await.expect("third still holds it");
    }

    #[tokio::test]
    async fn lock_survives_lost_replies() {
        // Errors after a successful write (lost replies) must not make the lock refuse
        // its own holder.
        let faulty = FaultyStore::new(
            Arc::new(MemoryStore::new()),
            FaultConfig {
                seed: 3,
                error_rate: 0.4,
                ..FaultConfig::default()
            },
        );
        let policy = RetryPolicy {
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            patience: Duration::from_secs(10),
        };
        let store = RetryStore::new(Arc::new(faulty.clone()), policy);
        for _ in 0..20 {
            let lock = MountLock::acquire(&store).await.expect("acquire");
            lock.release(&store).await.expect("release");
        }
        assert!(faulty.injected() > 0);
    }
}
