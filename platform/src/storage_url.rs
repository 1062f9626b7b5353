//! Storage URLs: syntax check, canonical form and the per-filesystem cache path.
//!
//! The canonical form follows S3QL 6.3 exactly because it names the cache files and is what
//! authinfo2 `storage-url` prefixes are matched against: `local://X` becomes `local://` +
//! the absolute, lexically normalized path + `/` (symlinks are not resolved); `s3://A` and
//! `gs://A` without a slash, and `s3c|s3c4|swift|swiftks|rackspace://A/B` with exactly one
//! slash, get a trailing `/`; nothing else is changed.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use crate::exit::{code, ExitError};

/// Schemes S3QL knows whose backends s3ql-rs does not implement yet.
const NOT_YET_SUPPORTED: &[&str] = &["swiftks", "rackspace", "b2"];

/// Where a filesystem's objects live: the parsed storage URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `local://PATH`: objects are files below the directory `path` (absolute, normalized).
    Local {
        /// The absolute directory that holds the objects.
        path: PathBuf,
    },
    /// `s3://REGION/BUCKET/PREFIX` (Amazon S3).
    S3 {
        /// AWS region, e.g. `eu-west-1`.
        region: String,
        /// Bucket name.
        bucket: String,
        /// Key prefix, used verbatim.
        prefix: String,
    },
    /// `s3c://HOST[:PORT]/BUCKET/PREFIX` and `s3c4://...` (S3-compatible services).
    S3c {
        /// Host name or address.
        host: String,
        /// Port (default 443, 80 with `no-ssl`).
        port: Option<u16>,
        /// Bucket name.
        bucket: String,
        /// Key prefix, used verbatim.
        prefix: String,
        /// `s3c4`: the signature region is configurable (`sig-region`).
        v4: bool,
    },
    /// `gs://BUCKET/PREFIX` (Google Cloud Storage).
    Gs {
        /// Bucket name.
        bucket: String,
        /// Key prefix, used verbatim.
        prefix: String,
    },
    /// `swift://HOST[:PORT]/CONTAINER/PREFIX` (OpenStack Swift, v1 authentication).
    Swift {
        /// Host name of the authentication server.
        host: String,
        /// Port (default 443, 80 with `no-ssl`).
        port: Option<u16>,
        /// Container name.
        container: String,
        /// Key prefix, used verbatim.
        prefix: String,
    },
    /// `sftp://[USER@]HOST[:PORT]/PATH` (extension: a directory on an ssh server).
    Sftp {
        /// Login name (`None`: ssh's default).
        user: Option<String>,
        /// Host name.
        host: String,
        /// Port (default 22).
        port: Option<u16>,
        /// Absolute directory on the server.
        path: String,
    },
}

/// A parsed storage URL of a supported backend, with its canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageUrl {
    /// Where the objects are.
    pub location: Location,
    canonical: String,
}

impl StorageUrl {
    /// Parses `url`, relative `local://` paths being resolved against the current directory.
    /// A malformed URL, an unknown scheme or a backend that is not implemented yet is a
    /// usage error (exit 2).
    pub fn parse(url: &str) -> Result<Self, ExitError> {
        let cwd = std::env::current_dir().map_err(|e| {
            ExitError::new(
                code::GENERIC,
                format!("cannot determine the current directory: {e}"),
            )
        })?;
        Self::parse_in(url, &cwd)
    }

    /// Like [`StorageUrl::parse`], resolving relative local paths against `cwd`.
    pub fn parse_in(url: &str, cwd: &Path) -> Result<Self, ExitError> {
        let (scheme, rest) = split_scheme(url)?;
        let usage = |what: &str| ExitError::new(code::USAGE, format!("{url}: {what}"));
        let location = match scheme {
            "local" => Location::Local {
                path: abspath(Path::new(rest), cwd),
            },
            "s3" => {
                let (region, bucket, prefix) = three_parts(rest)
                    .ok_or_else(|| usage("expected s3://REGION/BUCKET[/PREFIX]"))?;
                if !valid_s3_bucket(bucket) {
                    return Err(usage(&format!("invalid bucket name {bucket}")));
                }
                Location::S3 {
                    region: region.to_owned(),
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                }
            }
            "s3c" | "s3c4" => {
                let (hostport, bucket, prefix) = three_parts(rest)
                    .ok_or_else(|| usage("expected s3c://HOST[:PORT]/BUCKET[/PREFIX]"))?;
                let (host, port) = host_port(hostport).ok_or_else(|| usage("invalid port"))?;
                Location::S3c {
                    host,
                    port,
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                    v4: scheme == "s3c4",
                }
            }
            "gs" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(usage("expected gs://BUCKET[/PREFIX]"));
                }
                Location::Gs {
                    bucket: bucket.to_owned(),
                    prefix: prefix.to_owned(),
                }
            }
            "swift" => {
                let (hostport, container, prefix) = three_parts(rest)
                    .ok_or_else(|| usage("expected swift://HOST[:PORT]/CONTAINER[/PREFIX]"))?;
                let (host, port) = host_port(hostport).ok_or_else(|| usage("invalid port"))?;
                Location::Swift {
                    host,
                    port,
                    container: container.to_owned(),
                    prefix: prefix.to_owned(),
                }
            }
            "sftp" => {
                let (authority, path) = rest
                    .split_once('/')
                    .ok_or_else(|| usage("expected sftp://[USER@]HOST[:PORT]/PATH"))?;
                let (user, hostport) = match authority.rsplit_once('@') {
                    Some((u, h)) => (Some(u.to_owned()), h),
                    None => (None, authority),
                };
                let (host, port) = host_port(hostport).ok_or_else(|| usage("invalid port"))?;
                Location::Sftp {
                    user,
                    host,
                    port,
                    path: format!("/{}", path.trim_start_matches('/')),
                }
            }
            s if NOT_YET_SUPPORTED.contains(&s) => {
                return Err(ExitError::new(
                    code::USAGE,
                    format!("backend {s} is not supported yet"),
                ))
            }
            s => {
                return Err(ExitError::new(
                    code::USAGE,
                    format!("unknown storage backend {s} in storage URL {url}"),
                ))
            }
        };
        Ok(StorageUrl {
            canonical: canonicalize(url, cwd)?,
            location,
        })
    }

    /// The URL scheme (`local`, `s3`, ...).
    pub fn scheme(&self) -> &'static str {
        match &self.location {
            Location::Local { .. } => "local",
            Location::S3 { .. } => "s3",
            Location::S3c { v4: false, .. } => "s3c",
            Location::S3c { v4: true, .. } => "s3c4",
            Location::Gs { .. } => "gs",
            Location::Swift { .. } => "swift",
            Location::Sftp { .. } => "sftp",
        }
    }

    /// The canonical URL: used for authinfo2 matching, the cache file names and as the
    /// default FUSE `fsname`.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }
}

/// `A/B[/C]` split into `A`, `B` and `C` (`C` verbatim, possibly empty); `None` if `A` or
/// `B` is empty.
fn three_parts(rest: &str) -> Option<(&str, &str, &str)> {
    let (a, tail) = rest.split_once('/')?;
    let (b, c) = tail.split_once('/').unwrap_or((tail, ""));
    (!a.is_empty() && !b.is_empty()).then_some((a, b, c))
}

/// `HOST[:PORT]`; `None` if the port is not a number or the host is empty.
fn host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (s, None),
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// S3QL's bucket name rule for `s3://`: `[a-z0-9][a-z0-9.-]{1,60}[a-z0-9]`.
fn valid_s3_bucket(b: &str) -> bool {
    let bytes = b.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&bytes.len())
        && inner(&bytes[0])
        && inner(&bytes[bytes.len() - 1])
        && bytes.iter().all(|c| inner(c) || *c == b'.' || *c == b'-')
}

/// Checks S3QL's syntax `^[A-Za-z0-9]+://.+$` and splits off the scheme.
fn split_scheme(url: &str) -> Result<(&str, &str), ExitError> {
    let bad = || ExitError::new(code::USAGE, format!("{url} is not a valid storage URL"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    if scheme.is_empty()
        || !scheme.bytes().all(|b| b.is_ascii_alphanumeric())
        || rest.is_empty()
        || rest.contains('\n')
    {
        return Err(bad());
    }
    Ok((scheme, rest))
}

/// The canonical form of any syntactically valid storage URL, including the schemes that
/// are not supported yet (S3QL's rules; see the module documentation).
pub fn canonicalize(url: &str, cwd: &Path) -> Result<String, ExitError> {
    let (scheme, rest) = split_scheme(url)?;
    Ok(match scheme {
        "local" => format!("local://{}/", abspath(Path::new(rest), cwd).display()),
        "s3" | "gs" if !rest.contains('/') => format!("{url}/"),
        "s3c" | "s3c4" | "swift" | "swiftks" | "rackspace"
            if rest.matches('/').count() == 1 && !rest.starts_with('/') && !rest.ends_with('/') =>
        {
            format!("{url}/")
        }
        _ => url.to_owned(),
    })
}

/// Python's `os.path.abspath`: joins `p` to `cwd` if relative and normalizes lexically
/// (`.` dropped, `..` removes the previous component, repeated slashes collapsed, no
/// trailing slash). Symlinks are not resolved.
fn abspath(p: &Path, cwd: &Path) -> PathBuf {
    // POSIX (and Python) keep a leading "//" that is not followed by a third slash.
    let bytes = p.as_os_str().as_encoded_bytes();
    let double_root = bytes.starts_with(b"//") && !bytes.starts_with(b"///");
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in joined.components() {
        match c {
            Component::Normal(s) => parts.push(s),
            Component::ParentDir => {
                parts.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    let mut out: Vec<u8> = if double_root {
        b"/".to_vec()
    } else {
        Vec::new()
    };
    if parts.is_empty() {
        out.push(b'/');
    }
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(part.as_encoded_bytes());
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The path prefix of a filesystem's cache files: `cachedir` joined with the canonical URL
/// escaped as S3QL does (`=` → `=3D`, `/` → `=2F`, NUL → `=00`). The core appends `.db`,
/// `.params` and `-cache/` to it.
pub fn cache_path(cachedir: &Path, canonical_url: &str) -> PathBuf {
    let mut name = String::with_capacity(canonical_url.len() + 16);
    for ch in canonical_url.chars() {
        match ch {
            '=' => name.push_str("=3D"),
            '/' => name.push_str("=2F"),
            '\0' => name.push_str("=00"),
            c => name.push(c),
        }
    }
    cachedir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(url: &str) -> String {
        StorageUrl::parse_in(url, Path::new("/home/u"))
            .map(|u| u.canonical().to_owned())
            .unwrap_or_else(|e| format!("error {}: {}", e.code(), e.message()))
    }

    #[test]
    fn local_urls_are_made_absolute_with_trailing_slash() {
        assert_eq!(canon("local:///srv/fs"), "local:///srv/fs/");
        assert_eq!(canon("local:///srv/fs/"), "local:///srv/fs/");
        assert_eq!(canon("local:///srv//a/./b/../fs"), "local:///srv/a/fs/");
        assert_eq!(canon("local://fs"), "local:///home/u/fs/");
        assert_eq!(canon("local://../x"), "local:///home/x/");
        assert_eq!(canon("local:///"), "local:////");
        assert_eq!(canon("local:///.."), "local:////");
        // POSIX (and Python's abspath) keep exactly two leading slashes.
        assert_eq!(canon("local:////srv"), "local:////srv/");
        assert_eq!(canon("local://///srv"), "local:///srv/");
    }

    #[test]
    fn local_path_is_kept() {
        let url = StorageUrl::parse_in("local://data", Path::new("/tmp")).expect("valid");
        assert_eq!(
            url.location,
            Location::Local {
                path: PathBuf::from("/tmp/data")
            }
        );
        assert_eq!(url.scheme(), "local");
    }

    #[test]
    fn malformed_urls_are_usage_errors() {
        for url in [
            "",
            "local://",
            "local:/x",
            "/tmp/x",
            "lo-cal://x",
            "://x",
            "local://a\nb",
        ] {
            let e = StorageUrl::parse_in(url, Path::new("/")).expect_err(url);
            assert_eq!(e.code(), 2, "{url}");
            assert!(e.message().contains("not a valid storage URL"), "{url}");
        }
        for url in [
            "s3://eu-west-1",
            "s3://eu-west-1/",
            "s3://eu-west-1/Bad_Bucket",
            "s3c://h:port/b",
            "s3c://h:9000",
            "gs:///x",
            "swift://h",
            "sftp://h",
        ] {
            let e = StorageUrl::parse_in(url, Path::new("/")).expect_err(url);
            assert_eq!(e.code(), 2, "{url}");
        }
    }

    #[test]
    fn network_urls_are_split_with_verbatim_prefixes() {
        let p = |u: &str| StorageUrl::parse_in(u, Path::new("/")).expect(u).location;
        assert_eq!(
            p("s3://eu-west-1/bkt/some/pre_"),
            Location::S3 {
                region: "eu-west-1".into(),
                bucket: "bkt".into(),
                prefix: "some/pre_".into()
            }
        );
        assert_eq!(
            p("s3c://127.0.0.1:9000/b"),
            Location::S3c {
                host: "127.0.0.1".into(),
                port: Some(9000),
                bucket: "b".into(),
                prefix: String::new(),
                v4: false
            }
        );
        assert_eq!(
            p("s3c4://host/b/p/"),
            Location::S3c {
                host: "host".into(),
                port: None,
                bucket: "b".into(),
                prefix: "p/".into(),
                v4: true
            }
        );
        assert_eq!(
            p("gs://b"),
            Location::Gs {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            p("swift://h:8080/c/x"),
            Location::Swift {
                host: "h".into(),
                port: Some(8080),
                container: "c".into(),
                prefix: "x".into()
            }
        );
        assert_eq!(
            p("sftp://me@h:2222/srv/s3ql"),
            Location::Sftp {
                user: Some("me".into()),
                host: "h".into(),
                port: Some(2222),
                path: "/srv/s3ql".into()
            }
        );
        assert_eq!(canon("s3c://h:9000/b"), "s3c://h:9000/b/");
    }

    #[test]
    fn unsupported_backends_are_usage_errors() {
        for url in ["swiftks://h/r:c", "rackspace://r/c", "b2://bucket"] {
            let e = StorageUrl::parse_in(url, Path::new("/")).expect_err(url);
            assert_eq!(e.code(), 2);
            assert!(
                e.message().contains("is not supported yet"),
                "{}",
                e.message()
            );
        }
        let e = StorageUrl::parse_in("foo://x", Path::new("/")).expect_err("unknown");
        assert_eq!(e.code(), 2);
        assert!(e.message().contains("unknown storage backend foo"));
    }

    #[test]
    fn canonicalize_follows_s3ql_for_every_scheme() {
        let cwd = Path::new("/w");
        let c = |u: &str| canonicalize(u, cwd).expect("valid");
        assert_eq!(c("s3://eu-west-1"), "s3://eu-west-1/");
        assert_eq!(c("s3://eu-west-1/bucket"), "s3://eu-west-1/bucket");
        assert_eq!(c("gs://bucket"), "gs://bucket/");
        assert_eq!(c("gs://bucket/prefix"), "gs://bucket/prefix");
        assert_eq!(c("s3c://host:9000/bucket"), "s3c://host:9000/bucket/");
        assert_eq!(c("s3c://host:9000/bucket/p"), "s3c://host:9000/bucket/p");
        assert_eq!(c("s3c://host:9000/bucket/"), "s3c://host:9000/bucket/");
        assert_eq!(c("swift://host/container"), "swift://host/container/");
        assert_eq!(c("local://x/"), "local:///w/x/");
        assert_eq!(c("b2://bucket"), "b2://bucket");
    }

    #[test]
    fn cache_path_escapes_like_s3ql() {
        let p = cache_path(Path::new("/root/.s3ql"), "s3c://host/bkt/");
        assert_eq!(p, PathBuf::from("/root/.s3ql/s3c:=2F=2Fhost=2Fbkt=2F"));
        let p = cache_path(Path::new("/c"), "local:///a=b/\0/");
        assert_eq!(p, PathBuf::from("/c/local:=2F=2F=2Fa=3Db=2F=00=2F"));
    }
}
