//! Opening the object store of a storage URL, and `--backend-options`.

use std::sync::Arc;

use s3ql_core::storage::{ObjectStore, OpendalStore, StoreError};

use crate::exit::{code, ExitError};
use crate::storage_url::StorageUrl;

/// One `--backend-options` element: `key=value` or a bare flag (`value` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendOption {
    /// Option name.
    pub key: String,
    /// Option value, `None` for a bare flag.
    pub value: Option<String>,
}

/// Splits a comma-separated `--backend-options` string (S3QL's `parse_suboptions`): empty
/// elements are skipped, keys and values are trimmed.
pub fn parse_backend_options(s: &str) -> Vec<BackendOption> {
    s.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| match o.split_once('=') {
            Some((k, v)) => BackendOption {
                key: k.trim().to_owned(),
                value: Some(v.trim().to_owned()),
            },
            None => BackendOption {
                key: o.to_owned(),
                value: None,
            },
        })
        .collect()
}

/// Checks the backend options against what the URL's backend understands; an unknown
/// option is exit 3. The `local` backend has none.
pub fn check_backend_options(url: &StorageUrl, options: &str) -> Result<(), ExitError> {
    let known: &[&str] = match url {
        StorageUrl::Local { .. } => &[],
    };
    for opt in parse_backend_options(options) {
        if !known.contains(&opt.key.as_str()) {
            return Err(ExitError::new(
                code::UNKNOWN_BACKEND_OPTION,
                format!(
                    "unknown backend option: {} (the {} backend has no options)",
                    opt.key,
                    url.scheme()
                ),
            ));
        }
    }
    Ok(())
}

/// Opens the object store for `url`. A missing storage location is exit 16.
pub fn open_store(url: &StorageUrl) -> Result<Arc<dyn ObjectStore>, ExitError> {
    match url {
        StorageUrl::Local { path } => match OpendalStore::local(path) {
            Ok(store) => Ok(Arc::new(store)),
            Err(StoreError::LocationMissing(_)) => Err(ExitError::new(
                code::LOCATION_MISSING,
                format!("storage directory {} does not exist", path.display()),
            )),
            Err(e) => Err(ExitError::new(
                code::GENERIC,
                format!("cannot open storage directory {}: {e}", path.display()),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn options_are_split_like_s3ql() {
        let opts = parse_backend_options(" no-ssl, ,tcp-timeout = 30,sse");
        assert_eq!(
            opts,
            vec![
                BackendOption {
                    key: "no-ssl".into(),
                    value: None
                },
                BackendOption {
                    key: "tcp-timeout".into(),
                    value: Some("30".into())
                },
                BackendOption {
                    key: "sse".into(),
                    value: None
                },
            ]
        );
        assert!(parse_backend_options("").is_empty());
    }

    #[test]
    fn local_backend_has_no_options() {
        let url = StorageUrl::Local {
            path: PathBuf::from("/x"),
        };
        assert!(check_backend_options(&url, "").is_ok());
        assert!(check_backend_options(&url, " , ").is_ok());
        let e = check_backend_options(&url, "no-ssl").expect_err("unknown");
        assert_eq!(e.code(), 3);
        assert!(e.message().contains("unknown backend option: no-ssl"));
    }

    #[test]
    fn missing_local_directory_is_exit_16() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = StorageUrl::Local {
            path: dir.path().join("missing"),
        };
        let e = open_store(&url).err().expect("missing dir");
        assert_eq!(e.code(), 16);
        let url = StorageUrl::Local {
            path: dir.path().to_path_buf(),
        };
        assert!(open_store(&url).is_ok());
    }
}
