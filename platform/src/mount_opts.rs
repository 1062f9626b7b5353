//! mount(8)'s calling convention for `mount.s3ql`: `mount.s3ql URL MOUNTPOINT -o a,b=c`
//! (what `mount -t s3ql` and fstab run).
//!
//! Every `-o LIST` (or `-oLIST`) before a `--` is removed from the arguments and its words
//! are handled one by one:
//! - `ro` is refused (exit 35);
//! - words that only matter to mount(8) and fstab are ignored, as in S3QL: `rw defaults auto
//!   noauto user nouser users owner group _netdev nofail nobootwait mand nomand diratime
//!   nodiratime relatime norelatime strictatime`, and the userspace `x-*`, `X-*`, `comment=`,
//!   `user=`, `helper=` and `uhelper=`;
//! - the kernel mount flags `dev nodev suid nosuid exec noexec atime noatime sync async
//!   dirsync` are passed to the FUSE mount (DESIGN.md §11; S3QL ignores them);
//! - any other word `a` becomes `--a` and `b=c` becomes `--b c`, with `_` in the name read
//!   as `-` (so both `allow-other` and `allow_other` work).
//!
//! The flags mount(8) passes to helpers for its own `-n`, `-s` and `-v` are dropped too.

use std::ffi::OsString;

use crate::exit::{code, ExitError};

/// Words of mount(8)/fstab that are accepted and ignored.
pub const IGNORED: &[&str] = &[
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "nobootwait",
    "mand",
    "nomand",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
];

/// Prefixes of mount(8)'s userspace `key=value` options (and `x-`/`X-` names), ignored.
const IGNORED_PREFIXES: &[&str] = &["x-", "X-", "comment=", "user=", "helper=", "uhelper="];

/// Flags mount(8) gives its helpers (`-n` no mtab, `-s` sloppy, `-v` verbose), ignored.
const HELPER_FLAGS: &[&str] = &["-n", "-s", "-v"];

/// Kernel mount flags that are passed to the FUSE mount.
pub const KERNEL_FLAGS: &[&str] = &[
    "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "sync", "async",
    "dirsync",
];

/// The command line after `-o` expansion, and the kernel flags found in `-o` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// Arguments for the option parser (including the program name).
    pub args: Vec<OsString>,
    /// Kernel mount flags, in order of appearance.
    pub kernel_flags: Vec<String>,
}

/// Expands the `-o` lists of `args` (the full argv, program name first).
pub fn rewrite_mount_args(args: Vec<OsString>) -> Result<Rewritten, ExitError> {
    let mut out = Vec::with_capacity(args.len());
    let mut kernel_flags = Vec::new();
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(iter.by_ref());
            break;
        }
        if HELPER_FLAGS.iter().any(|f| arg == *f) {
            continue;
        }
        let list = if arg == "-o" {
            iter.next().ok_or_else(|| {
                ExitError::new(
                    code::USAGE,
                    "option -o needs a value (a comma-separated list)",
                )
            })?
        } else if let Some(rest) = arg.to_str().and_then(|a| a.strip_prefix("-o")) {
            OsString::from(rest)
        } else {
            out.push(arg);
            continue;
        };
        let list = list
            .into_string()
            .map_err(|_| ExitError::new(code::USAGE, "the -o list is not valid UTF-8"))?;
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "ro" {
                return Err(ExitError::new(
                    code::READ_ONLY,
                    "read-only mounting (-o ro) is not supported",
                ));
            }
            if IGNORED.contains(&word) || IGNORED_PREFIXES.iter().any(|p| word.starts_with(p)) {
                continue;
            }
            if KERNEL_FLAGS.contains(&word) {
                kernel_flags.push(word.to_owned());
                continue;
            }
            match word.split_once('=') {
                Some((key, value)) => {
                    out.push(OsString::from(format!("--{}", key.replace('_', "-"))));
                    out.push(OsString::from(value));
                }
                None => out.push(OsString::from(format!("--{}", word.replace('_', "-")))),
            }
        }
    }
    Ok(Rewritten {
        args: out,
        kernel_flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(args: &[&str]) -> Result<Rewritten, ExitError> {
        rewrite_mount_args(args.iter().map(OsString::from).collect())
    }

    fn strs(r: &Rewritten) -> Vec<&str> {
        r.args.iter().map(|a| a.to_str().expect("utf-8")).collect()
    }

    #[test]
    fn fstab_form() {
        let r = rw(&[
            "mount.s3ql",
            "local:///b",
            "/mnt",
            "-o",
            "rw,allow_other,cachedir=/var/c,nosuid,_netdev,x-systemd.automount,fg",
        ])
        .expect("valid");
        assert_eq!(
            strs(&r),
            [
                "mount.s3ql",
                "local:///b",
                "/mnt",
                "--allow-other",
                "--cachedir",
                "/var/c",
                "--fg"
            ]
        );
        assert_eq!(r.kernel_flags, ["nosuid"]);
    }

    #[test]
    fn as_mount8_helper() {
        // What `mount -v -t s3ql URL MNT -o ...` runs, with an fstab line's options.
        let r = rw(&[
            "mount.s3ql",
            "s3c://h/b/",
            "/mnt",
            "-v",
            "-o",
            "rw,_netdev,allow-other,authfile=/etc/a,compress=zstd-1,user=bob,uhelper=x,X-y,nofail",
            "-n",
        ])
        .expect("valid");
        assert_eq!(
            strs(&r),
            [
                "mount.s3ql",
                "s3c://h/b/",
                "/mnt",
                "--allow-other",
                "--authfile",
                "/etc/a",
                "--compress",
                "zstd-1"
            ]
        );
    }

    #[test]
    fn o_anywhere_and_joined() {
        let r = rw(&["m", "-okeep-cache", "u", "-o", "compress=zlib-1", "p"]).expect("valid");
        assert_eq!(
            strs(&r),
            ["m", "--keep-cache", "u", "--compress", "zlib-1", "p"]
        );
    }

    #[test]
    fn after_double_dash_nothing_changes() {
        let r = rw(&["m", "--", "-o", "ro"]).expect("valid");
        assert_eq!(strs(&r), ["m", "--", "-o", "ro"]);
    }

    #[test]
    fn ro_is_exit_35_and_missing_list_exit_2() {
        assert_eq!(
            rw(&["m", "u", "p", "-o", "defaults,ro"])
                .expect_err("ro")
                .code(),
            35
        );
        assert_eq!(rw(&["m", "u", "p", "-o"]).expect_err("missing").code(), 2);
    }

    #[test]
    fn normal_arguments_pass_through() {
        let r = rw(&["m", "--fg", "--log", "none", "u", "p"]).expect("valid");
        assert_eq!(strs(&r), ["m", "--fg", "--log", "none", "u", "p"]);
        assert!(r.kernel_flags.is_empty());
    }
}
