//! Puts symlinks with the S3QL command names (`mount.s3ql` -> `mount-s3ql`, ...) beside the
//! binaries in target/<profile>/ (see Cargo.toml for why the binaries cannot carry those
//! names themselves). The links may dangle until the binaries are built.

use std::path::{Path, PathBuf};

/// (S3QL name, cargo binary name).
const COMMANDS: &[(&str, &str)] = &[
    ("mkfs.s3ql", "mkfs-s3ql"),
    ("mount.s3ql", "mount-s3ql"),
    ("umount.s3ql", "umount-s3ql"),
    // umount(8)'s helper for type fuse.s3ql (installed as /sbin/umount.fuse.s3ql).
    ("umount.fuse.s3ql", "umount-s3ql"),
    ("fsck.s3ql", "fsck-s3ql"),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    // OUT_DIR = target/[<triple>/]<profile>/build/<package>-<hash>/out
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        return;
    };
    for (name, bin) in COMMANDS {
        let link = profile_dir.join(name);
        if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(bin)) {
            continue;
        }
        let _ = std::fs::remove_file(&link);
        #[cfg(unix)]
        if let Err(e) = std::os::unix::fs::symlink(bin, &link) {
            println!("cargo:warning=cannot create {}: {e}", link.display());
        }
    }
}
