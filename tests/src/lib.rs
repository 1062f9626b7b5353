//! Test harness for s3ql-rs integration tests over real FUSE mounts.
//!
//! - [`harness`]: creates a `local://` store, cache and mount point in a temporary
//!   directory and runs the real `mkfs.s3ql` / `mount.s3ql` / `umount.s3ql` with timeouts.
//! - [`tree`]: copies and compares directory trees attribute by attribute.
//! - [`s3server`]: the embedded s3s-fs server that `s3c://` tests talk to.
//! - [`sys`]: libc wrappers (lchown, utimensat, mknod, xattrs, SEEK_DATA).
//!
//! The tests themselves live in `tests/tests/*.rs`. They need root and `/dev/fuse`; without
//! them they print `SKIPPED <test>: <reason>` and return (set `S3QL_TESTS_REQUIRE_FUSE=1` to
//! make that a failure).

pub mod harness;
pub mod s3server;
pub mod sys;
pub mod tree;

pub use harness::{note, TestFs};
