//! The object store over an `opendal::Operator`: a local directory, S3 and S3-compatible
//! services, Google Cloud Storage, OpenStack Swift and sftp.
//!
//! Every operator gets the same layers: a timeout layer inside a retry layer (opendal's
//! documented order: each attempt has its own deadline, and a timed-out attempt is retried
//! with backoff). Object names of the core are appended verbatim to the store's key prefix
//! (S3QL semantics: `s3c://host/bucket/fs1_` stores `fs1_s3ql_params`).
//!
//! A local store's objects bypass opendal: see `local_dir`.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use super::local_dir::LocalDir;
use super::{ObjectInfo, ObjectStore, StoreError, StoreFuture};

/// Attempts of one request before its error reaches the core (opendal's retry layer).
const REQUEST_ATTEMPTS: usize = 6;
/// Deadline of a control request (stat, delete) per attempt.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// Objects stored through opendal, behind a timeout layer and then a retry layer, so a
/// hung request is cut and retried with backoff.
#[derive(Debug, Clone)]
pub struct OpendalStore {
    op: Operator,
    /// Prepended to every object name.
    prefix: String,
    /// The objects are files in one directory (local, sftp): listing reads that directory
    /// instead of asking for a key prefix.
    flat_dir: bool,
    /// A local store: every object operation goes to plain file operations instead of
    /// `op` (one blocking task per call, and durable puts; see [`LocalDir`]).
    local: Option<Arc<LocalDir>>,
}

/// The text of an opendal error and all its sources, for classification.
fn error_text(e: &opendal::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(" | ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Maps an opendal error about object `name` to a [`StoreError`].
fn map_err(name: &str, e: opendal::Error) -> StoreError {
    let text = error_text(&e);
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    let what = format!("{name}: {e}");
    let missing_location = ["NoSuchBucket", "bucket does not exist", "NoSuchContainer"];
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConfigInvalid if has(&missing_location) => {
            StoreError::LocationMissing(what)
        }
        ErrorKind::NotFound => StoreError::NotFound(name.to_owned()),
        ErrorKind::PermissionDenied
            if has(&[
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "InvalidToken",
                "ExpiredToken",
                "AuthorizationHeaderMalformed",
                "401",
                "Unauthorized",
                "invalid_grant",
            ]) =>
        {
            StoreError::AuthFailed(what)
        }
        ErrorKind::PermissionDenied => StoreError::PermissionDenied(what),
        _ if has(&["dns error", "failed to lookup address"]) => StoreError::HostUnresolvable(what),
        // Temporary errors that survived the retry layer are marked persistent.
        _ if e.is_temporary() || e.is_persistent() || e.kind() == ErrorKind::RateLimited => {
            StoreError::Unavailable(what)
        }
        _ => StoreError::Backend(what),
    }
}

impl OpendalStore {
    /// Wraps an operator with the standard timeout and retry layers; `io_timeout` bounds
    /// each read, write and list call of one attempt.
    fn with_layers(op: Operator, io_timeout: Duration, prefix: &str, flat_dir: bool) -> Self {
        let op = op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(CONTROL_TIMEOUT)
                    .with_io_timeout(io_timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(REQUEST_ATTEMPTS)
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(20))
                    .with_max_delay(Duration::from_secs(5)),
            );
        Self {
            op,
            prefix: prefix.to_owned(),
            flat_dir,
            local: None,
        }
    }

    /// A store in the local directory `dir`, which must exist. Objects are written to a
    /// temporary file, synced and renamed into place, and the directory is synced before a
    /// put returns: a crash never leaves a torn object, and a put that returned survives a
    /// power loss.
    pub fn local(dir: &Path) -> Result<Self, StoreError> {
        if !dir.is_dir() {
            return Err(StoreError::LocationMissing(dir.display().to_string()));
        }
        // Not used for objects (see `local`), but every store has an operator.
        let builder = opendal::services::Fs::default().root(&dir.to_string_lossy());
        let op = Operator::new(builder).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self {
            local: Some(Arc::new(LocalDir::new(dir))),
            ..Self::with_layers(op, Duration::from_secs(60), "", true)
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The error of a ranged GET of `key`, which (unlike a HEAD) carries the backend's
    /// error body: tells bad credentials from a missing permission.
    async fn classify_denied(&self, name: &str, key: &str, e: opendal::Error) -> StoreError {
        match self.op.read_with(key).range(0..1).await {
            Err(read_err) => map_err(name, read_err),
            Ok(_) => map_err(name, e),
        }
    }
}

impl ObjectStore for OpendalStore {
    fn get(&self, name: &str) -> StoreFuture<'_, Bytes> {
        let name = name.to_owned();
        Box::pin(async move {
            if let Some(local) = &self.local {
                return local.get(&name).await;
            }
            let buf = self
                .op
                .read(&self.key(&name))
                .await
                .map_err(|e| map_err(&name, e))?;
            Ok(buf.to_bytes())
        })
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> StoreFuture<'_, Bytes> {
        let name = name.to_owned();
        Box::pin(async move {
            if let Some(local) = &self.local {
                return local.get_range(&name, range).await;
            }
            let buf = self
                .op
                .read_with(&self.key(&name))
                .range(range)
                .await
                .map_err(|e| map_err(&name, e))?;
            Ok(buf.to_bytes())
        })
    }

    fn put(&self, name: &str, data: Bytes) -> StoreFuture<'_, ()> {
        let name = name.to_owned();
        Box::pin(async move {
            if let Some(local) = &self.local {
                return local.put(&name, data).await;
            }
            self.op
                .write(&self.key(&name), data)
                .await
                .map_err(|e| map_err(&name, e))?;
            Ok(())
        })
    }

    /// Atomic where the backend supports conditional writes (local, S3, GCS, sftp); on the
    /// others (Swift) a check followed by a write, which a concurrent writer can race:
    /// callers that need exclusion read the object back (see `mount_lock`).
    fn put_if_absent(&self, name: &str, data: Bytes) -> StoreFuture<'_, bool> {
        let name = name.to_owned();
        Box::pin(async move {
            if let Some(local) = &self.local {
                return local.put_if_absent(&name, data).await;
            }
            let key = self.key(&name);
            if !self.op.info().capability().write_with_if_not_exists {
                if self.head(&name).await?.is_some() {
                    return Ok(false);
                }
                self.put(&name, data).await?;
                return Ok(true);
            }
            match self.op.write_with(&key, data).if_not_exists(true).await {
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
        Box::pin(async move {
            if let Some(local) = &self.local {
                return local.delete(&name).await;
            }
            self.op
                .delete(&self.key(&name))
                .await
                .map_err(|e| map_err(&name, e))
        })
    }

    fn list(&self, prefix: &str) -> StoreFuture<'_, Vec<ObjectInfo>> {
        let prefix = prefix.to_owned();
        Box::pin(async move {
            let full = self.key(&prefix);
            if let Some(local) = &self.local {
                return local.list(&full).await;
            }
            let entries = if self.flat_dir {
                self.op.list_with("").await
            } else {
                self.op.list_with(&full).recursive(true).await
            }
            .map_err(|e| map_err(&full, e))?;
            let mut found = Vec::new();
            for entry in entries {
                let path = entry.path();
                if !path.starts_with(&full) || path.ends_with('/') {
                    continue;
                }
                found.push(ObjectInfo {
                    name: path[self.prefix.len()..].to_owned(),
                    size: entry.metadata().content_length(),
                });
            }
            Ok(found)
        })
    }

    fn head(&self, name: &str) -> StoreFuture<'_, Option<u64>> {
        let name = name.to_owned();
        Box::pin(async move {
            if let Some(local) = &self.local {
                return local.head(&name).await;
            }
            let key = self.key(&name);
            match self.op.stat(&key).await {
                Ok(meta) => Ok(Some(meta.content_length())),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    Err(self.classify_denied(&name, &key, e).await)
                }
                Err(e) => Err(map_err(&name, e)),
            }
        })
    }
}

#[cfg(feature = "http")]
mod http {
    use super::*;
    use std::path::PathBuf;

    /// Transport settings of the HTTP backends (S3QL's `--backend-options`).
    #[derive(Debug, Clone)]
    pub struct HttpOptions {
        /// Certificate authorities to trust instead of the system's: a PEM file, or a
        /// directory whose `*.pem` and `*.crt` files are read (`ssl-ca-path`).
        pub ca_path: Option<PathBuf>,
        /// Connect and read timeout of one request (`tcp-timeout`, S3QL default 20 s).
        pub tcp_timeout: Duration,
    }

    impl Default for HttpOptions {
        fn default() -> Self {
            Self {
                ca_path: None,
                tcp_timeout: Duration::from_secs(20),
            }
        }
    }

    fn read_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, StoreError> {
        let bad = |e: &dyn std::fmt::Display| {
            StoreError::Backend(format!("ssl-ca-path {}: {e}", path.display()))
        };
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| bad(&e))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_owned()]
        };
        let mut certs = Vec::new();
        for file in files {
            let pem = std::fs::read(&file).map_err(|e| bad(&e))?;
            certs.extend(reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(&e))?);
        }
        if certs.is_empty() {
            return Err(bad(&"no certificates found"));
        }
        Ok(certs)
    }

    /// The operation context with a reqwest transport built from `opts`.
    pub(super) fn context(opts: &HttpOptions) -> Result<opendal::OperationContext, StoreError> {
        // rustls needs one process-wide crypto provider; ring builds fast and portably.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(opts.tcp_timeout)
            .read_timeout(opts.tcp_timeout);
        if let Some(path) = &opts.ca_path {
            builder = builder.tls_certs_only(read_certificates(path)?);
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot set up the HTTP client: {e}")))?;
        let transport = opendal::HttpTransporter::new(
            opendal_http_transport_reqwest::ReqwestTransport::new(client),
        );
        Ok(opendal::OperationContext::new().with_http_transport(transport))
    }

    /// Builds the operator of an HTTP service and adds the standard layers.
    pub(super) fn http_store<B: opendal::Builder>(
        builder: B,
        opts: &HttpOptions,
        prefix: &str,
    ) -> Result<OpendalStore, StoreError> {
        let ctx = context(opts)?;
        let op = Operator::new(builder)
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .with_context(ctx);
        // A whole-object transfer may legitimately take longer than one TCP read.
        let io_timeout = (opts.tcp_timeout * 3).max(Duration::from_secs(60));
        Ok(OpendalStore::with_layers(op, io_timeout, prefix, false))
    }
}
#[cfg(feature = "http")]
pub use http::HttpOptions;

/// An S3 or S3-compatible bucket (`s3://`, `s3c://`, `s3c4://`).
#[cfg(feature = "s3")]
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http(s)://host[:port]` of the service.
    pub endpoint: String,
    /// Region used in the V4 signature.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, used verbatim.
    pub prefix: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Address the bucket as `bucket.host` (AWS) instead of `host/bucket`.
    pub virtual_host_style: bool,
    /// Storage class of new objects (`None`: the service's default).
    pub storage_class: Option<String>,
    /// Ask the service to encrypt objects at rest with its own keys (SSE-S3).
    pub server_side_encryption: bool,
    /// Transport settings.
    pub http: HttpOptions,
}

#[cfg(feature = "s3")]
impl OpendalStore {
    /// An S3 bucket. Credentials come only from `cfg` (no environment, profile or instance
    /// metadata lookups: the caller decides where credentials come from).
    pub fn s3(cfg: &S3Config) -> Result<Self, StoreError> {
        let mut b = opendal::services::S3::default()
            .endpoint(&cfg.endpoint)
            .region(&cfg.region)
            .bucket(&cfg.bucket)
            .root("/")
            .access_key_id(&cfg.access_key_id)
            .secret_access_key(&cfg.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        if cfg.virtual_host_style {
            b = b.enable_virtual_host_style();
        }
        if let Some(class) = &cfg.storage_class {
            b = b.default_storage_class(class);
        }
        if cfg.server_side_encryption {
            b = b.server_side_encryption_with_s3_key();
        }
        http::http_store(b, &cfg.http, &cfg.prefix)
    }
}

/// A Google Cloud Storage bucket (`gs://`).
#[cfg(feature = "gcs")]
#[derive(Debug, Clone)]
pub struct GcsConfig {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix, used verbatim.
    pub prefix: String,
    /// Service account or authorized-user credentials (JSON); `None`: application default
    /// credentials (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's configuration).
    pub credential_json: Option<String>,
    /// Transport settings.
    pub http: HttpOptions,
}

#[cfg(feature = "gcs")]
impl OpendalStore {
    /// A GCS bucket.
    pub fn gcs(cfg: &GcsConfig) -> Result<Self, StoreError> {
        use base64::Engine;
        let mut b = opendal::services::Gcs::default()
            .bucket(&cfg.bucket)
            .root("/")
            .disable_vm_metadata();
        if let Some(json) = &cfg.credential_json {
            b = b
                .credential(&base64::engine::general_purpose::STANDARD.encode(json))
                .disable_config_load();
        }
        http::http_store(b, &cfg.http, &cfg.prefix)
    }
}

/// An OpenStack Swift container (`swift://`), authenticated with Swift's v1 protocol.
#[cfg(feature = "swift")]
#[derive(Debug, Clone)]
pub struct SwiftConfig {
    /// `http(s)://host[:port]` of the authentication server.
    pub auth_url: String,
    /// Container name.
    pub container: String,
    /// Key prefix, used verbatim.
    pub prefix: String,
    /// User (`X-Auth-User`).
    pub user: String,
    /// API key (`X-Auth-Key`).
    pub key: String,
    /// Transport settings.
    pub http: HttpOptions,
}

#[cfg(feature = "swift")]
impl OpendalStore {
    /// A Swift container. Authenticates first (at `/v1.0`, then `/auth/v1.0`, as S3QL does)
    /// to learn the storage URL and token. The token is not renewed: a mount that outlives
    /// it (usually 24 hours) fails its requests until remounted.
    pub async fn swift(cfg: &SwiftConfig) -> Result<Self, StoreError> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.http.tcp_timeout)
            .read_timeout(cfg.http.tcp_timeout)
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot set up the HTTP client: {e}")))?;
        let mut last = StoreError::Backend("no authentication endpoint answered".into());
        for path in ["/v1.0", "/auth/v1.0"] {
            let url = format!("{}{path}", cfg.auth_url.trim_end_matches('/'));
            let resp = client
                .get(&url)
                .header("X-Auth-User", &cfg.user)
                .header("X-Auth-Key", &cfg.key)
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    let text = format!("{url}: {e:?}");
                    return Err(if text.contains("dns error") {
                        StoreError::HostUnresolvable(text)
                    } else {
                        StoreError::Unavailable(text)
                    });
                }
            };
            let status = resp.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                last = StoreError::Backend(format!("{url}: 404"));
                continue;
            }
            if status == reqwest::StatusCode::UNAUTHORIZED {
                return Err(StoreError::AuthFailed(format!("{url}: {status}")));
            }
            let header = |h: &str| {
                resp.headers()
                    .get(h)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let (Some(storage_url), Some(token)) =
                (header("X-Storage-Url"), header("X-Auth-Token"))
            else {
                return Err(StoreError::Backend(format!(
                    "{url}: {status} without storage URL and token"
                )));
            };
            let b = opendal::services::Swift::default()
                .endpoint(&storage_url)
                .container(&cfg.container)
                .root("/")
                .token(&token);
            return http::http_store(b, &cfg.http, &cfg.prefix);
        }
        Err(last)
    }
}

/// A directory on an sftp server (`sftp://USER@HOST[:PORT]/PATH`), through the system's
/// `ssh` (keys from ssh-agent or `~/.ssh`, host keys checked against `known_hosts`).
#[cfg(feature = "sftp")]
#[derive(Debug, Clone)]
pub struct SftpConfig {
    /// `ssh://host[:port]`.
    pub endpoint: String,
    /// Login name.
    pub user: String,
    /// Absolute directory on the server.
    pub root: String,
    /// Private key file (`None`: ssh's defaults).
    pub key: Option<String>,
}

#[cfg(feature = "sftp")]
impl OpendalStore {
    /// An sftp directory.
    pub fn sftp(cfg: &SftpConfig) -> Result<Self, StoreError> {
        let mut b = opendal::services::Sftp::default()
            .endpoint(&cfg.endpoint)
            .user(&cfg.user)
            .root(&cfg.root)
            .known_hosts_strategy("strict");
        if let Some(key) = &cfg.key {
            b = b.key(key);
        }
        let op = Operator::new(b).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self::with_layers(op, Duration::from_secs(60), "", true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let e = |kind, msg: &str| opendal::Error::new(kind, msg.to_owned());
        assert!(matches!(
            map_err("x", e(ErrorKind::NotFound, "gone")),
            StoreError::NotFound(_)
        ));
        assert!(matches!(
            map_err(
                "x",
                e(
                    ErrorKind::ConfigInvalid,
                    "S3Error { code: \"NoSuchBucket\" }"
                )
            ),
            StoreError::LocationMissing(_)
        ));
        assert!(matches!(
            map_err(
                "x",
                e(
                    ErrorKind::PermissionDenied,
                    "S3Error { code: \"InvalidAccessKeyId\" }"
                )
            ),
            StoreError::AuthFailed(_)
        ));
        assert!(matches!(
            map_err(
                "x",
                e(
                    ErrorKind::PermissionDenied,
                    "S3Error { code: \"AccessDenied\" }"
                )
            ),
            StoreError::PermissionDenied(_)
        ));
        assert!(matches!(
            map_err(
                "x",
                e(ErrorKind::Unexpected, "send http request").set_persistent()
            ),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(
                "x",
                e(ErrorKind::Unexpected, "dns error: failed to lookup address")
            ),
            StoreError::HostUnresolvable(_)
        ));
        assert!(matches!(
            map_err("x", e(ErrorKind::Unsupported, "no")),
            StoreError::Backend(_)
        ));
    }

    #[tokio::test]
    async fn prefix_is_used_verbatim_on_a_flat_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = OpendalStore::local(dir.path()).expect("store");
        store
            .put("s3ql_a", Bytes::from_static(b"1"))
            .await
            .expect("put");
        assert!(!store
            .put_if_absent("s3ql_a", Bytes::new())
            .await
            .expect("pia"));
        assert!(store
            .put_if_absent("s3ql_b", Bytes::new())
            .await
            .expect("pia"));
        let mut names: Vec<String> = store
            .list("s3ql_")
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.name)
            .collect();
        names.sort();
        assert_eq!(names, ["s3ql_a", "s3ql_b"]);
        assert_eq!(store.head("s3ql_a").await.expect("head"), Some(1));
        assert_eq!(store.head("nope").await.expect("head"), None);
    }
}
