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
const NOT_YET_SUPPORTED: &[&str] = &[
    "s3",
    "s3c",
    "s3c4",
    "gs",
    "swift",
    "swiftks",
    "rackspace",
    "b2",
    "sftp",
];

/// A parsed storage URL of a supported backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// `local://PATH`: objects are files below the directory `path` (absolute, normalized).
    Local {
        /// The absolute directory that holds the objects.
        path: PathBuf,
    },
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
        match scheme {
            "local" => Ok(StorageUrl::Local {
                path: abspath(Path::new(rest), cwd),
            }),
            s if NOT_YET_SUPPORTED.contains(&s) => Err(ExitError::new(
                code::USAGE,
                format!("backend {s} is not supported yet (only local:// is)"),
            )),
            s => Err(ExitError::new(
                code::USAGE,
                format!("unknown storage backend {s} in storage URL {url}"),
            )),
        }
    }

    /// The URL scheme (`local`, ...).
    pub fn scheme(&self) -> &'static str {
        match self {
            StorageUrl::Local { .. } => "local",
        }
    }

    /// The canonical URL: used for authinfo2 matching, the cache file names and as the
    /// default FUSE `fsname`.
    pub fn canonical(&self) -> String {
        match self {
            StorageUrl::Local { path } => format!("local://{}/", path.display()),
        }
    }
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
            .map(|u| u.canonical())
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
            url,
            StorageUrl::Local {
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
    }

    #[test]
    fn other_backends_are_not_supported_yet() {
        for url in [
            "s3://eu-west-1/bucket",
            "s3c://h:9000/b",
            "gs://b",
            "swift://h/c",
            "sftp://u@h/p",
        ] {
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
