//! s3ql-platform: the s3ql-rs commands (`mkfs.s3ql`, `mount.s3ql`, `umount.s3ql`, and
//! `s3qlcp`, `s3qlctrl`, `s3qllock`, `s3qlrm`, `s3qlstat` for mounted filesystems).
//!
//! This is the only crate with command-line parsing (clap), `anyhow`, process handling
//! (daemonizing, signals) and terminal output. The filesystem itself is `s3ql-core`; the
//! kernel binding is `s3ql-fuser`. Names, options, defaults and exit codes follow S3QL 6.3
//! (`S3QL-CLI.md`).

#![warn(missing_docs)]

pub mod authinfo;
pub mod backend;
pub mod commands;
pub mod ctrl;
pub mod daemon;
pub mod exit;
pub mod fusermount;
pub mod ini;
pub mod logging;
pub mod mount_opts;
pub mod mounts;
pub mod options;
pub mod paths;
pub mod prompt;
pub mod readahead;
pub mod sd_notify;
pub mod storage_url;
pub mod unlock;
