//! The authinfo2 file: per-storage-URL credentials and option defaults (S3QL-CLI.md §3).
//!
//! Rules, as in S3QL 6.3: a missing or non-regular file is empty; a regular file readable by
//! group or others is refused (exit 12); the INI dialect is Python's `configparser` (see
//! [`crate::ini`], which also says why the `config` crate is not used); section names do not
//! matter: a section applies when the canonical storage URL starts with its `storage-url`,
//! and all applicable sections are merged in file order, later ones winning per key; only
//! the keys in [`ALLOWED_KEYS`] (or their `_` spellings) may appear in an applicable section
//! (exit 2 otherwise); syntax errors and duplicate sections or keys are exit 1; a value that
//! does not parse is exit 2.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;

use s3ql_core::Compression;

use crate::exit::{code, ExitError};
use crate::ini::Ini;

/// The keys an applicable section may contain besides `storage-url` (hyphen spelling).
pub const ALLOWED_KEYS: &[&str] = &[
    "backend-login",
    "backend-password",
    "fs-passphrase",
    "backend-options",
    "cachedir",
    "max-connections",
    "max-threads",
    "compress",
];

/// The settings authinfo2 gives for one storage URL; `None` = not set there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthInfo {
    /// `backend-login`.
    pub backend_login: Option<String>,
    /// `backend-password`.
    pub backend_password: Option<String>,
    /// `fs-passphrase`.
    pub fs_passphrase: Option<String>,
    /// `backend-options` (comma list, as on the command line).
    pub backend_options: Option<String>,
    /// `cachedir` (a leading `~` is expanded).
    pub cachedir: Option<String>,
    /// `max-connections`.
    pub max_connections: Option<usize>,
    /// `max-threads`.
    pub max_threads: Option<usize>,
    /// `compress`.
    pub compress: Option<Compression>,
}

impl AuthInfo {
    /// Reads the settings for `canonical_url` from the authinfo2 file at `path`.
    pub fn load(path: &Path, canonical_url: &str) -> Result<Self, ExitError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => m,
            // Missing or not a regular file (e.g. /dev/null): no settings, as in S3QL.
            _ => return Ok(Self::default()),
        };
        if meta.permissions().mode() & 0o044 != 0 {
            return Err(ExitError::new(
                code::INSECURE_AUTHFILE,
                format!(
                    "{} has insecure permissions (readable by group or others), aborting; run chmod 600 on it",
                    path.display()
                ),
            ));
        }
        let text = std::fs::read(path).map_err(|e| {
            ExitError::new(
                code::GENERIC,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let text = String::from_utf8(text).map_err(|_| {
            ExitError::new(
                code::GENERIC,
                format!("{} is not valid UTF-8", path.display()),
            )
        })?;
        Self::from_text(&text, canonical_url)
            .map_err(|e| ExitError::new(e.code(), format!("{}: {}", path.display(), e.message())))
    }

    /// Parses authinfo2 `text` and returns the settings for `canonical_url`.
    pub fn from_text(text: &str, canonical_url: &str) -> Result<Self, ExitError> {
        let syntax = |e: crate::ini::IniError| ExitError::new(code::GENERIC, e.to_string());
        let ini = Ini::parse(text).map_err(syntax)?;

        let mut merged: Vec<(String, String)> = Vec::new();
        for section in ini.sections() {
            let Some(pattern) = ini.get(section, "storage-url").map_err(syntax)? else {
                continue;
            };
            if pattern.is_empty() || !canonical_url.starts_with(&pattern) {
                continue;
            }
            for (key, value) in ini.items(section).map_err(syntax)? {
                if key == "storage-url" {
                    continue;
                }
                let norm = key.replace('_', "-");
                // `storage_url` is not an alias of `storage-url`: S3QL rejects it as unknown.
                let norm = if key == "storage_url" {
                    key.clone()
                } else {
                    norm
                };
                merged.retain(|(k, _)| *k != norm);
                merged.push((norm, value));
            }
        }

        let mut unknown: Vec<&str> = merged
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !ALLOWED_KEYS.contains(k))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(ExitError::new(
                code::USAGE,
                format!(
                    "Unknown key(s) in authentication file: {}",
                    unknown.join(", ")
                ),
            ));
        }

        let mut info = AuthInfo::default();
        for (key, value) in merged {
            let invalid = |what: &str| {
                ExitError::new(
                    code::USAGE,
                    format!("invalid value '{value}' for {key}: {what}"),
                )
            };
            match key.as_str() {
                "backend-login" => info.backend_login = Some(value),
                "backend-password" => info.backend_password = Some(value),
                "fs-passphrase" => info.fs_passphrase = Some(value),
                "backend-options" => info.backend_options = Some(value),
                "cachedir" => info.cachedir = Some(crate::paths::expand_tilde(&value)),
                "max-connections" => {
                    let n = parse_count(&value)
                        .ok_or_else(|| invalid("expected a positive integer"))?;
                    info.max_connections = Some(n);
                }
                "max-threads" => {
                    let n = parse_count(&value)
                        .ok_or_else(|| invalid("expected a positive integer"))?;
                    info.max_threads = Some(n);
                }
                "compress" => {
                    let c = Compression::from_str(&value).map_err(|e| invalid(&e.to_string()))?;
                    info.compress = Some(c);
                }
                _ => {}
            }
        }
        Ok(info)
    }
}

/// A positive integer.
fn parse_count(s: &str) -> Option<usize> {
    s.trim().parse::<usize>().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const URL: &str = "local:///srv/backup/";

    #[test]
    fn prefix_match_and_later_sections_win() {
        let text = "\
[general]
storage-url: local://
backend-login: general
max-connections = 4

[specific]
storage-url = local:///srv/
backend-login = specific

[other]
storage-url = local:///elsewhere/
backend-login = other
";
        let info = AuthInfo::from_text(text, URL).expect("valid");
        assert_eq!(info.backend_login.as_deref(), Some("specific"));
        assert_eq!(info.max_connections, Some(4));
        // Order decides, not prefix length.
        let swapped = "[a]\nstorage-url = local:///srv/\nfs-passphrase = long\n[b]\nstorage-url = local://\nfs-passphrase = short\n";
        let info = AuthInfo::from_text(swapped, URL).expect("valid");
        assert_eq!(info.fs_passphrase.as_deref(), Some("short"));
    }

    #[test]
    fn sections_without_storage_url_do_not_apply() {
        let info = AuthInfo::from_text("[x]\nbackend-login = a\n", URL).expect("valid");
        assert_eq!(info, AuthInfo::default());
    }

    #[test]
    fn default_section_is_inherited() {
        let text = "[DEFAULT]\nbackend-password = p%%w\n[s]\nstorage-url = local://\n";
        let info = AuthInfo::from_text(text, URL).expect("valid");
        assert_eq!(info.backend_password.as_deref(), Some("p%w"));
    }

    #[test]
    fn percent_must_be_doubled() {
        let e = AuthInfo::from_text("[s]\nstorage-url = local://\nfs-passphrase = 50%\n", URL)
            .expect_err("bad percent");
        assert_eq!(e.code(), 1);
        assert!(e.message().contains("%%"), "{}", e.message());
    }

    #[test]
    fn keys_are_case_insensitive_and_underscores_accepted() {
        let text = "[s]\nStorage-URL = local://\nBACKEND_LOGIN = u\nmax_threads = 3\ncompress = lzma-2\nbackend_options = a,b=c\ncachedir = /var/cache/s3ql\n";
        let info = AuthInfo::from_text(text, URL).expect("valid");
        assert_eq!(info.backend_login.as_deref(), Some("u"));
        assert_eq!(info.max_threads, Some(3));
        assert_eq!(info.compress, Some(Compression::Lzma(2)));
        assert_eq!(info.backend_options.as_deref(), Some("a,b=c"));
        assert_eq!(info.cachedir.as_deref(), Some("/var/cache/s3ql"));
    }

    #[test]
    fn unknown_keys_are_exit_2_only_in_applicable_sections() {
        let e = AuthInfo::from_text("[s]\nstorage-url = local://\nfoo = 1\nbar = 2\n", URL)
            .expect_err("unknown");
        assert_eq!(e.code(), 2);
        assert_eq!(
            e.message(),
            "Unknown key(s) in authentication file: bar, foo"
        );
        let ok = AuthInfo::from_text("[s]\nstorage-url = s3://x/\nfoo = 1\n", URL);
        assert!(ok.is_ok());
        let e = AuthInfo::from_text("[s]\nstorage-url = local://\nstorage_url = x\n", URL)
            .expect_err("storage_url is no alias");
        assert_eq!(e.code(), 2);
    }

    #[test]
    fn invalid_values_are_exit_2() {
        for bad in [
            "max-connections = many",
            "max-threads = 0",
            "compress = lzma-99",
            "compress = rar",
        ] {
            let text = format!("[s]\nstorage-url = local://\n{bad}\n");
            let e = AuthInfo::from_text(&text, URL).expect_err(bad);
            assert_eq!(e.code(), 2, "{bad}");
        }
    }

    #[test]
    fn duplicates_are_exit_1() {
        let e = AuthInfo::from_text("[s]\n[s]\n", URL).expect_err("dup section");
        assert_eq!(e.code(), 1);
        let e = AuthInfo::from_text("[s]\na=1\nA=2\n", URL).expect_err("dup key");
        assert_eq!(e.code(), 1);
    }

    #[test]
    fn file_permissions_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        assert_eq!(
            AuthInfo::load(&missing, URL).expect("missing is empty"),
            AuthInfo::default()
        );
        assert_eq!(
            AuthInfo::load(Path::new("/dev/null"), URL).expect("not regular"),
            AuthInfo::default()
        );

        let path = dir.path().join("authinfo2");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(b"[s]\nstorage-url = local://\nbackend-login = me\n")
            .expect("write");
        drop(f);
        for mode in [0o644, 0o640, 0o604] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let e = AuthInfo::load(&path, URL).expect_err("insecure");
            assert_eq!(e.code(), 12, "mode {mode:o}");
        }
        // Write bits for others are not checked (as in S3QL).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o622)).expect("chmod");
        let info = AuthInfo::load(&path, URL).expect("secure enough");
        assert_eq!(info.backend_login.as_deref(), Some("me"));
    }
}
