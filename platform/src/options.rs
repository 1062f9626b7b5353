//! Options shared by the commands (clap argument groups) and their resolution: command
//! line over authinfo2 over built-in default (S3QL-CLI.md §0).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use clap::Args;
use s3ql_core::Compression;

use crate::authinfo::AuthInfo;
use crate::backend::{BackendSettings, Credentials};
use crate::exit::{code, ExitError};
use crate::logging::{self, LogTarget};
use crate::paths;
use crate::storage_url::{cache_path, StorageUrl};

/// Default of `--max-connections` (S3QL's).
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;

/// Options of every command that takes a storage URL.
#[derive(Debug, Clone, Default, Args)]
pub struct StorageArgs {
    /// Read credentials and per-URL defaults from this authinfo2 file
    /// [default: ~/.s3ql/authinfo2]
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// Store cached data and metadata in this directory (created with mode 0700)
    /// [default: authinfo2 `cachedir`, else ~/.s3ql]
    #[arg(long, value_name = "PATH")]
    pub cachedir: Option<PathBuf>,
    /// Backend options, comma-separated `key=value` or `flag`, e.g. no-ssl,tcp-timeout=30
    /// (s3c: no-ssl, ssl-ca-path, tcp-timeout, dumb-copy, disable-expect100; local: none)
    #[arg(long, value_name = "OPTIONS")]
    pub backend_options: Option<String>,
    /// Maximum concurrent backend transfers (for local:// concurrent disk operations)
    /// [default: 32]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Threads for compression and other CPU work [default: min(2 × cores, 10)]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_threads: Option<u32>,
}

/// Logging options of every command (`--log` is declared by the commands that have it).
#[derive(Debug, Clone, Default, Args)]
pub struct LogArgs {
    /// Log debug messages of all s3ql modules
    #[arg(long)]
    pub debug: bool,
    /// Log debug messages of this module (repeatable; `all` = every module, including
    /// libraries), e.g. `cache`, `meta`, `fs`, `opendal`
    #[arg(long = "debug-modules", value_name = "MODULE", action = clap::ArgAction::Append)]
    pub debug_modules: Vec<String>,
    /// Print only warnings and errors on the console
    #[arg(long)]
    pub quiet: bool,
}

/// `--log` (console by default) and the logging options of the commands that act on a
/// mounted filesystem (umount.s3ql, s3qlcp, s3qlctrl, s3qllock, s3qlrm, s3qlstat).
#[derive(Debug, Clone, Args)]
pub struct ToolLogArgs {
    /// Log target: a file, `syslog`, or `none` (console)
    #[arg(long, value_name = "TARGET", default_value = "none")]
    pub log: String,
    /// Logging options.
    #[command(flatten)]
    pub logging: LogArgs,
}

impl ToolLogArgs {
    /// Sets up logging for `program` (exit 10 if the log file cannot be written).
    pub fn init(&self, program: &str) -> Result<(), ExitError> {
        logging::init(&LogTarget::parse(&self.log), &self.logging, program)
    }
}

/// The effective settings for one storage URL.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The parsed storage URL.
    pub url: StorageUrl,
    /// Its canonical form.
    pub canonical_url: String,
    /// What authinfo2 said for it.
    pub auth: AuthInfo,
    /// The cache directory (exists after [`resolve`]).
    pub cachedir: PathBuf,
    /// `<cachedir>/<escaped canonical URL>`.
    pub cache_path: PathBuf,
    /// Backend options (already checked).
    pub backend: BackendSettings,
    /// Backend login and password (`None` for backends without one).
    pub credentials: Option<Credentials>,
    /// Concurrent backend transfers.
    pub max_connections: usize,
    /// CPU worker threads.
    pub max_threads: usize,
}

impl Resolved {
    /// `--compress` over authinfo2 `compress` over the built-in default (`zstd-3`); a bad
    /// specification is exit 2.
    pub fn compression(&self, cli: Option<&str>) -> Result<Compression, ExitError> {
        match cli {
            Some(s) => s
                .parse::<Compression>()
                .map_err(|e| ExitError::new(code::USAGE, e.to_string())),
            None => Ok(self.auth.compress.unwrap_or_default()),
        }
    }
}

/// The automatic `--max-threads`: `min(2 × cores, 10)`, as in S3QL.
pub fn auto_threads() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (2 * cores).min(10)
}

/// Parses the URL, reads authinfo2, checks the backend options and creates the cache
/// directory; asks for missing backend credentials (see [`crate::backend::credentials`]).
/// Exit codes: 2 (URL, authinfo2 key or value), 1 (authinfo2 syntax or no credentials), 12
/// (authinfo2 permissions), 3 (backend option), 45 (cache directory).
pub fn resolve(url: &str, args: &StorageArgs) -> Result<Resolved, ExitError> {
    let url = StorageUrl::parse(url)?;
    let canonical_url = url.canonical().to_owned();
    let authfile = args
        .authfile
        .clone()
        .unwrap_or_else(paths::default_authfile);
    let auth = AuthInfo::load(&authfile, &canonical_url)?;

    let cachedir = match (&args.cachedir, &auth.cachedir) {
        (Some(c), _) => c.clone(),
        (None, Some(c)) => PathBuf::from(c),
        (None, None) => paths::default_s3ql_dir(),
    };
    let cachedir = absolute(&cachedir)?;
    ensure_cachedir(&cachedir)?;

    let backend_options = args
        .backend_options
        .clone()
        .or_else(|| auth.backend_options.clone())
        .unwrap_or_default();
    let backend = crate::backend::parse_settings(&url, &backend_options)?;
    let credentials = crate::backend::credentials(&url, &auth)?;

    let max_connections = args
        .max_connections
        .map(|n| n as usize)
        .or(auth.max_connections)
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let max_threads = args
        .max_threads
        .map(|n| n as usize)
        .or(auth.max_threads)
        .unwrap_or_else(auto_threads);

    Ok(Resolved {
        cache_path: cache_path(&cachedir, &canonical_url),
        url,
        canonical_url,
        auth,
        cachedir,
        backend,
        credentials,
        max_connections,
        max_threads,
    })
}

/// `p` made absolute against the current directory (the daemon changes directory).
pub fn absolute(p: &Path) -> Result<PathBuf, ExitError> {
    std::path::absolute(p).map_err(|e| {
        ExitError::new(
            code::GENERIC,
            format!("cannot make {} absolute: {e}", p.display()),
        )
    })
}

/// Creates the cache directory with mode 0700 if it is missing; exit 45 if it cannot be
/// created or is not a writable directory.
pub fn ensure_cachedir(dir: &Path) -> Result<(), ExitError> {
    let err = |what: String| {
        ExitError::new(
            code::CACHE_DIR,
            format!("cache directory {}: {what}", dir.display()),
        )
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(format!("cannot create it: {e}")))?;
    }
    if !dir.is_dir() {
        return Err(err("is not a directory".to_owned()));
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| err("contains a NUL byte".to_owned()))?;
    // SAFETY: `c` is a valid NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(err(format!(
            "not writable: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cli_over_authinfo_over_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        std::fs::create_dir(&store).expect("mkdir");
        let authfile = dir.path().join("authinfo2");
        let auth_cache = dir.path().join("authcache");
        std::fs::write(
            &authfile,
            format!(
                "[s]\nstorage-url = local://{}\ncachedir = {}\nmax-connections = 5\ncompress = zlib-2\n",
                dir.path().display(),
                auth_cache.display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&authfile, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let url = format!("local://{}", store.display());

        let args = StorageArgs {
            authfile: Some(authfile.clone()),
            ..Default::default()
        };
        let r = resolve(&url, &args).expect("resolves");
        assert_eq!(r.canonical_url, format!("local://{}/", store.display()));
        assert_eq!(r.cachedir, auth_cache);
        let mode = std::fs::metadata(&auth_cache)
            .expect("created")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(r.max_connections, 5);
        assert_eq!(r.max_threads, auto_threads());
        assert_eq!(r.compression(None).expect("ok"), Compression::Zlib(2));
        assert_eq!(r.compression(Some("none")).expect("ok"), Compression::None);
        assert_eq!(r.compression(Some("zip")).expect_err("bad").code(), 2);
        assert!(r.cache_path.starts_with(&auth_cache));

        let cli_cache = dir.path().join("cli");
        let args = StorageArgs {
            authfile: Some(authfile),
            cachedir: Some(cli_cache.clone()),
            max_connections: Some(7),
            max_threads: Some(2),
            ..Default::default()
        };
        let r = resolve(&url, &args).expect("resolves");
        assert_eq!(r.cachedir, cli_cache);
        assert_eq!((r.max_connections, r.max_threads), (7, 2));

        let none = StorageArgs {
            authfile: Some(dir.path().join("none")),
            cachedir: Some(cli_cache),
            ..Default::default()
        };
        let r = resolve(&url, &none).expect("resolves");
        assert_eq!(r.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(r.compression(None).expect("ok"), Compression::Zstd(3));
    }

    #[test]
    fn bad_backend_option_and_cachedir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = StorageArgs {
            authfile: Some(dir.path().join("none")),
            cachedir: Some(dir.path().join("c")),
            backend_options: Some("no-ssl".into()),
            ..Default::default()
        };
        assert_eq!(resolve("local:///x", &args).expect_err("option").code(), 3);
        let file = dir.path().join("file");
        std::fs::write(&file, b"").expect("write");
        let args = StorageArgs {
            authfile: Some(dir.path().join("none")),
            cachedir: Some(file.join("sub")),
            ..Default::default()
        };
        assert_eq!(
            resolve("local:///x", &args).expect_err("cachedir").code(),
            45
        );
    }
}
