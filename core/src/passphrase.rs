//! The wrapped master key in the backend: four copies (`s3ql_passphrase` and
//! `s3ql_passphrase_bak1..3`), so that one damaged object does not lock the owner out.
//! Unwrapping never writes to the storage.

use bytes::Bytes;

use crate::crypto::{self, KeyError, MasterKey};
use crate::storage::{ObjectStore, StoreError};

/// Names of the copies of the wrapped master key.
pub const PASSPHRASE_OBJECTS: [&str; 4] = [
    "s3ql_passphrase",
    "s3ql_passphrase_bak1",
    "s3ql_passphrase_bak2",
    "s3ql_passphrase_bak3",
];

/// A passphrase; its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(pub Vec<u8>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// Why the master key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    /// See [`KeyError`].
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// Whether the filesystem in `store` is encrypted (has a wrapped master key).
pub async fn is_encrypted(store: &dyn ObjectStore) -> Result<bool, StoreError> {
    for name in PASSPHRASE_OBJECTS {
        if store.head(name).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Unwraps the master key with `passphrase`, trying each copy; `WrongPassphrase` if a
/// copy is intact but the passphrase does not open it.
pub async fn unlock(
    store: &dyn ObjectStore,
    passphrase: &Passphrase,
) -> Result<MasterKey, UnlockError> {
    let mut last = None;
    for name in PASSPHRASE_OBJECTS {
        let body = match store.get(name).await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        match crypto::unwrap(&body, &passphrase.0) {
            Ok(key) => return Ok(key),
            Err(KeyError::WrongPassphrase) => return Err(KeyError::WrongPassphrase.into()),
            Err(e) => {
                tracing::warn!("{name}: {e}");
                last = Some(e);
            }
        }
    }
    Err(last
        .unwrap_or_else(|| KeyError::Damaged("no passphrase object found".into()))
        .into())
}

/// Stores `key` wrapped with `passphrase` in every copy (replacing earlier ones).
pub async fn store_wrapped(
    store: &dyn ObjectStore,
    key: &MasterKey,
    passphrase: &Passphrase,
) -> Result<(), StoreError> {
    let body = Bytes::from(crypto::wrap(key, &passphrase.0));
    for name in PASSPHRASE_OBJECTS {
        store.put(name, body.clone()).await?;
    }
    Ok(())
}

/// Replaces the passphrase: unwraps with `old`, rewraps with `new`. Data stays readable.
pub async fn change(
    store: &dyn ObjectStore,
    old: &Passphrase,
    new: &Passphrase,
) -> Result<(), UnlockError> {
    let key = unlock(store, old).await?;
    store_wrapped(store, &key, new).await?;
    Ok(())
}
