//! The kernel-mount options every adapter takes (`s3ql-fuser`, `s3ql-fuse-backend`).

/// How to mount: the options of `mount.s3ql` that reach the kernel mount. Each adapter
/// documents which of them its FUSE library can honour.
#[derive(Debug, Clone, Default)]
pub struct MountConfig {
    /// Source shown in mtab and `df` (`fsname=`), usually the storage URL.
    pub fs_name: String,
    /// Let every user access the mount (`allow_other`; needs `user_allow_other` for non-root).
    pub allow_other: bool,
    /// Let root access the mount besides its owner (ignored when `allow_other` is set).
    pub allow_root: bool,
    /// Mount read-only (`ro`).
    pub read_only: bool,
    /// Further `-o` words, e.g. `noatime`, `nosuid`, `nodev`, `dev`, `suid`.
    pub extra_options: Vec<String>,
    /// Number of request threads (at least 1).
    pub threads: usize,
}
