//! Opening the object store of a storage URL: `--backend-options`, credentials and the
//! mapping of storage errors to exit codes.
//!
//! Credentials come from authinfo2 (`backend-login`, `backend-password`), else from the
//! environment (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` for s3, s3c and s3c4,
//! `ST_USER`/`ST_KEY` for swift), else they are asked for (on a terminal without echo,
//! otherwise one line each from stdin), never from the command line. gs takes
//! `backend-login: adc` (application default credentials) or a service-account or
//! authorized-user JSON key file as `backend-login: json` with its path as
//! `backend-password`. sftp authenticates through ssh (agent, `~/.ssh`).
//!
//! Every store is wrapped in a [`RetryStore`] so that an outage of up to 30 s is ridden out
//! before an operation fails. For tests, `S3QL_FAULT_INJECTION=seed=N,errors=P,latency_ms=M,
//! truncate=Q` wraps it in a [`FaultyStore`] first (see `s3ql_core::storage::FaultConfig`).

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use s3ql_core::storage::{
    FaultConfig, FaultyStore, GcsConfig, HttpOptions, ObjectStore, OpendalStore, RetryPolicy,
    RetryStore, S3Config, SftpConfig, StoreError, SwiftConfig,
};

use crate::authinfo::AuthInfo;
use crate::exit::{code, ExitError};
use crate::options::Resolved;
use crate::prompt;
use crate::storage_url::{Location, StorageUrl};

/// Environment variable that enables fault injection (tests only).
pub const FAULT_INJECTION_ENV: &str = "S3QL_FAULT_INJECTION";

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

/// The backend options S3QL documents for each scheme.
fn known_options(url: &StorageUrl) -> &'static [&'static str] {
    match url.scheme() {
        "s3" => &[
            "no-ssl",
            "ssl-ca-path",
            "tcp-timeout",
            "sse",
            "ia",
            "oia",
            "rrs",
            "it",
        ],
        "s3c" => &[
            "no-ssl",
            "ssl-ca-path",
            "tcp-timeout",
            "dumb-copy",
            "disable-expect100",
        ],
        "s3c4" => &[
            "no-ssl",
            "ssl-ca-path",
            "tcp-timeout",
            "dumb-copy",
            "disable-expect100",
            "sig-region",
        ],
        "gs" => &["ssl-ca-path", "tcp-timeout"],
        "swift" => &[
            "no-ssl",
            "ssl-ca-path",
            "tcp-timeout",
            "disable-expect100",
            "no-feature-detection",
        ],
        _ => &[],
    }
}

/// The parsed `--backend-options` (each field `None`/false when not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendSettings {
    /// `no-ssl`: plain HTTP.
    pub no_ssl: bool,
    /// `ssl-ca-path=`.
    pub ssl_ca_path: Option<PathBuf>,
    /// `tcp-timeout=` in seconds.
    pub tcp_timeout: Option<u64>,
    /// `sig-region=` (s3c4).
    pub sig_region: Option<String>,
    /// `sse` (s3).
    pub sse: bool,
    /// Storage class from `ia`, `oia`, `rrs`, `it` (s3; the first in that order wins).
    pub storage_class: Option<&'static str>,
}

/// Checks and parses the backend options of `url`. An unknown option is exit 3; a missing
/// or malformed value is exit 2. `dumb-copy`, `disable-expect100` and
/// `no-feature-detection` are accepted and have no effect (s3ql-rs never copies objects and
/// never sends `Expect: 100-continue`).
pub fn parse_settings(url: &StorageUrl, options: &str) -> Result<BackendSettings, ExitError> {
    let known = known_options(url);
    let mut s = BackendSettings::default();
    let mut classes = Vec::new();
    for opt in parse_backend_options(options) {
        if !known.contains(&opt.key.as_str()) {
            let which = if known.is_empty() {
                format!("the {} backend has no options", url.scheme())
            } else {
                format!("the {} backend knows {}", url.scheme(), known.join(", "))
            };
            return Err(ExitError::new(
                code::UNKNOWN_BACKEND_OPTION,
                format!("unknown backend option: {} ({which})", opt.key),
            ));
        }
        let value = || {
            opt.value.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
                ExitError::new(
                    code::USAGE,
                    format!("backend option {} needs a value ({}=...)", opt.key, opt.key),
                )
            })
        };
        match opt.key.as_str() {
            "no-ssl" => s.no_ssl = true,
            "ssl-ca-path" => s.ssl_ca_path = Some(PathBuf::from(value()?)),
            "tcp-timeout" => {
                let v = value()?;
                let secs = v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ExitError::new(
                        code::USAGE,
                        format!("backend option tcp-timeout={v}: expected seconds"),
                    )
                })?;
                s.tcp_timeout = Some(secs);
            }
            "sig-region" => s.sig_region = Some(value()?),
            "sse" => s.sse = true,
            "ia" => classes.push("ia"),
            "oia" => classes.push("oia"),
            "rrs" => classes.push("rrs"),
            "it" => classes.push("it"),
            _ => {}
        }
    }
    s.storage_class = [
        ("ia", "STANDARD_IA"),
        ("oia", "ONEZONE_IA"),
        ("rrs", "REDUCED_REDUNDANCY"),
        ("it", "INTELLIGENT_TIERING"),
    ]
    .into_iter()
    .find(|(opt, _)| classes.contains(opt))
    .map(|(_, class)| class);
    Ok(s)
}

/// Backend login and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `backend-login`.
    pub login: String,
    /// `backend-password`.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}

/// The credentials `url` needs: authinfo2, else the environment, else asked for. `None`
/// for backends without a login (local, sftp).
pub fn credentials(url: &StorageUrl, auth: &AuthInfo) -> Result<Option<Credentials>, ExitError> {
    let env_names = match url.location {
        Location::Local { .. } | Location::Sftp { .. } => return Ok(None),
        Location::S3 { .. } | Location::S3c { .. } => {
            Some(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
        }
        Location::Swift { .. } => Some(("ST_USER", "ST_KEY")),
        Location::Gs { .. } => None,
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let login = match (&auth.backend_login, env_names) {
        (Some(l), _) => l.clone(),
        (None, Some((l, _))) if env(l).is_some() => env(l).unwrap_or_default(),
        _ => prompt::secret("Enter backend login: ", "backend login")?,
    };
    let password = match (&auth.backend_password, env_names) {
        (Some(p), _) => p.clone(),
        (None, Some((_, p))) if env(p).is_some() => env(p).unwrap_or_default(),
        _ => prompt::secret("Enter backend password: ", "backend password")?,
    };
    Ok(Some(Credentials { login, password }))
}

fn store_failure(what: &str, e: StoreError) -> ExitError {
    ExitError::new(e.exit_code(), format!("{what}: {e}"))
}

/// Exit 19 unless `host` resolves (checked before any request, as S3QL does).
fn check_resolvable(host: &str, port: u16) -> Result<(), ExitError> {
    match (host, port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ExitError::new(
            19,
            format!("host name {host} does not resolve to any address"),
        )),
        Err(e) => Err(ExitError::new(
            19,
            format!("host name {host} cannot be resolved: {e}"),
        )),
    }
}

fn endpoint(host: &str, port: Option<u16>, no_ssl: bool) -> (String, u16) {
    let (scheme, default_port) = if no_ssl { ("http", 80) } else { ("https", 443) };
    let port = port.unwrap_or(default_port);
    (format!("{scheme}://{host}:{port}"), port)
}

/// The fault injection asked for by [`FAULT_INJECTION_ENV`], if any.
fn fault_config() -> Result<Option<FaultConfig>, ExitError> {
    let Ok(spec) = std::env::var(FAULT_INJECTION_ENV) else {
        return Ok(None);
    };
    let bad = || {
        ExitError::new(
            code::USAGE,
            format!("{FAULT_INJECTION_ENV}={spec}: invalid"),
        )
    };
    let mut c = FaultConfig::default();
    for opt in parse_backend_options(&spec) {
        let v = opt.value.as_deref().ok_or_else(bad)?;
        match opt.key.as_str() {
            "seed" => c.seed = v.parse().map_err(|_| bad())?,
            "errors" => c.error_rate = v.parse().map_err(|_| bad())?,
            "truncate" => c.truncate_rate = v.parse().map_err(|_| bad())?,
            "latency_ms" => c.max_latency = Duration::from_millis(v.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        }
    }
    Ok(Some(c))
}

/// Opens the object store of `resolved` (URL, backend options, credentials) and, for a
/// network backend, lists it once. Exit codes: 14 rejected credentials, 15 no permission,
/// 16 missing directory or bucket, 19 unresolvable host, 1 other failures (an unreachable
/// endpoint after the retries, a bad gs login). Must not be called from within a runtime.
pub fn open_store(resolved: &Resolved) -> Result<Arc<dyn ObjectStore>, ExitError> {
    let s = &resolved.backend;
    let http = HttpOptions {
        ca_path: s.ssl_ca_path.clone(),
        tcp_timeout: Duration::from_secs(s.tcp_timeout.unwrap_or(20)),
    };
    let creds = || {
        resolved.credentials.clone().ok_or_else(|| {
            ExitError::new(code::GENERIC, "this backend needs a login and a password")
        })
    };
    let store = match &resolved.url.location {
        Location::Local { path } => OpendalStore::local(path).map_err(|e| match e {
            StoreError::LocationMissing(_) => ExitError::new(
                code::LOCATION_MISSING,
                format!("storage directory {} does not exist", path.display()),
            ),
            e => store_failure(
                &format!("cannot open storage directory {}", path.display()),
                e,
            ),
        })?,
        Location::S3 {
            region,
            bucket,
            prefix,
        } => {
            let suffix = if region.starts_with("cn-") { ".cn" } else { "" };
            let host = format!("s3.{region}.amazonaws.com{suffix}");
            let (endpoint, port) = endpoint(&host, None, s.no_ssl);
            check_resolvable(&host, port)?;
            let c = creds()?;
            OpendalStore::s3(&S3Config {
                endpoint,
                region: region.clone(),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                access_key_id: c.login,
                secret_access_key: c.password,
                virtual_host_style: true,
                storage_class: s.storage_class.map(str::to_owned),
                server_side_encryption: s.sse,
                http,
            })
            .map_err(|e| store_failure("cannot set up the s3 backend", e))?
        }
        Location::S3c {
            host,
            port,
            bucket,
            prefix,
            ..
        } => {
            let (endpoint, port) = endpoint(host, *port, s.no_ssl);
            check_resolvable(host, port)?;
            let c = creds()?;
            OpendalStore::s3(&S3Config {
                endpoint,
                region: s.sig_region.clone().unwrap_or_else(|| "us-east-1".into()),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                access_key_id: c.login,
                secret_access_key: c.password,
                virtual_host_style: false,
                storage_class: None,
                server_side_encryption: false,
                http,
            })
            .map_err(|e| store_failure("cannot set up the s3c backend", e))?
        }
        Location::Gs { bucket, prefix } => {
            let c = creds()?;
            let credential_json = match c.login.as_str() {
                "adc" => None,
                "json" => Some(std::fs::read_to_string(&c.password).map_err(|e| {
                    ExitError::new(
                        code::GENERIC,
                        format!("cannot read the gs key file {}: {e}", c.password),
                    )
                })?),
                other => {
                    return Err(ExitError::new(
                        code::GENERIC,
                        format!(
                            "gs backend login {other:?} is not supported: use `adc` (application \
                             default credentials) or `json` with the key file as password"
                        ),
                    ))
                }
            };
            OpendalStore::gcs(&GcsConfig {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                credential_json,
                http,
            })
            .map_err(|e| store_failure("cannot set up the gs backend", e))?
        }
        Location::Swift {
            host,
            port,
            container,
            prefix,
        } => {
            let (auth_url, port) = endpoint(host, *port, s.no_ssl);
            check_resolvable(host, port)?;
            let c = creds()?;
            let cfg = SwiftConfig {
                auth_url,
                container: container.clone(),
                prefix: prefix.clone(),
                user: c.login,
                key: c.password,
                http,
            };
            block_on(OpendalStore::swift(&cfg))?
                .map_err(|e| store_failure("swift authentication failed", e))?
        }
        Location::Sftp {
            user,
            host,
            port,
            path,
        } => {
            let port = port.unwrap_or(22);
            check_resolvable(host, port)?;
            OpendalStore::sftp(&SftpConfig {
                endpoint: format!("ssh://{host}:{port}"),
                user: user.clone().unwrap_or_default(),
                root: path.clone(),
                key: None,
            })
            .map_err(|e| store_failure("cannot set up the sftp backend", e))?
        }
    };
    let mut store: Arc<dyn ObjectStore> = Arc::new(store);
    if let Some(faults) = fault_config()? {
        tracing::warn!("{FAULT_INJECTION_ENV} is set: injecting storage faults {faults:?}");
        store = Arc::new(FaultyStore::new(store, faults));
    }
    let store: Arc<dyn ObjectStore> = Arc::new(RetryStore::new(store, RetryPolicy::default()));
    if !matches!(resolved.url.location, Location::Local { .. }) {
        // One listing request: a missing bucket (16), rejected credentials (14), a missing
        // permission (15) or an unreachable endpoint fail here, before any other work.
        block_on(store.list(PROBE_PREFIX))?
            .map_err(|e| store_failure(&format!("cannot use {}", resolved.canonical_url), e))?;
    }
    Ok(store)
}

/// Listed once when a network store is opened (any object name works; this one is short).
const PROBE_PREFIX: &str = "s3ql_params";

/// Runs `f` on a short-lived single-threaded runtime that is shut down before returning,
/// so that it can be used before the mount daemon forks.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, ExitError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ExitError::new(code::GENERIC, format!("cannot start a runtime: {e}")))?;
    let out = runtime.block_on(f);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn url(u: &str) -> StorageUrl {
        StorageUrl::parse_in(u, Path::new("/")).expect("valid URL")
    }

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
        let u = url("local:///x");
        assert!(parse_settings(&u, "").is_ok());
        assert!(parse_settings(&u, " , ").is_ok());
        let e = parse_settings(&u, "no-ssl").expect_err("unknown");
        assert_eq!(e.code(), 3);
        assert!(e.message().contains("unknown backend option: no-ssl"));
    }

    #[test]
    fn network_options_are_checked_per_scheme() {
        let s = parse_settings(
            &url("s3c4://h:9000/b"),
            "no-ssl,tcp-timeout=5,sig-region=eu-1,dumb-copy,disable-expect100",
        )
        .expect("valid");
        assert!(s.no_ssl);
        assert_eq!(s.tcp_timeout, Some(5));
        assert_eq!(s.sig_region.as_deref(), Some("eu-1"));
        assert_eq!(
            parse_settings(&url("s3c://h/b"), "sig-region=x")
                .expect_err("s3c has no sig-region")
                .code(),
            3
        );
        assert_eq!(
            parse_settings(&url("s3c://h/b"), "tcp-timeout=soon")
                .expect_err("bad value")
                .code(),
            2
        );
        assert_eq!(
            parse_settings(&url("s3c://h/b"), "ssl-ca-path")
                .expect_err("missing value")
                .code(),
            2
        );
        let s = parse_settings(&url("s3://eu-west-1/bkt"), "it,rrs,sse").expect("valid");
        assert_eq!(s.storage_class, Some("REDUCED_REDUNDANCY"));
        assert!(s.sse);
        assert_eq!(
            parse_settings(&url("gs://b"), "no-ssl")
                .expect_err("gs")
                .code(),
            3
        );
    }

    #[test]
    fn credentials_come_from_authinfo_first() {
        let auth = AuthInfo {
            backend_login: Some("key".into()),
            backend_password: Some("secret".into()),
            ..AuthInfo::default()
        };
        let c = credentials(&url("s3c://h/b"), &auth)
            .expect("ok")
            .expect("needed");
        assert_eq!((c.login.as_str(), c.password.as_str()), ("key", "secret"));
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(
            credentials(&url("local:///x"), &AuthInfo::default()).expect("ok"),
            None
        );
    }

    #[test]
    fn loopback_resolves() {
        // (An unresolvable name is not tested: resolving it would query a DNS server.)
        assert!(check_resolvable("127.0.0.1", 80).is_ok());
        assert!(check_resolvable("localhost", 80).is_ok());
    }

    #[test]
    fn fault_spec_is_parsed() {
        std::env::set_var(
            FAULT_INJECTION_ENV,
            "seed=3,errors=0.05,latency_ms=10,truncate=0",
        );
        let c = fault_config().expect("valid").expect("set");
        std::env::remove_var(FAULT_INJECTION_ENV);
        assert_eq!(c.seed, 3);
        assert_eq!(c.error_rate, 0.05);
        assert_eq!(c.max_latency, Duration::from_millis(10));
    }
}
