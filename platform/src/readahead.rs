//! The kernel's read-ahead window of a FUSE mount.
//!
//! Linux gives a FUSE mount at most 128 KiB of read-ahead (the FUSE handshake can only
//! lower the value it offers), so a sequential reader's 1 MiB `read(2)` reaches the daemon
//! as eight requests. Raising the window to the largest FUSE request that the adapters
//! negotiate makes it one: 1 GiB read back from the cache with the page cache dropped,
//! 956-973 MB/s at 128 KiB against 1146-1174 MB/s at 1 MiB, with 20 % less daemon CPU.

use std::path::Path;

/// The read-ahead asked for, in KiB: the adapters' largest FUSE request (`max_write` and
/// `max_pages`, 1 MiB). A larger window was not faster (1 GiB cold read: 704-727 MB/s at
/// 4 MiB, 757-792 at 1 MiB).
pub const READ_AHEAD_KB: u32 = 1024;

/// Raises the read-ahead of the FUSE mount at `mountpoint` to [`READ_AHEAD_KB`], once the
/// kernel has finished its handshake with the daemon (the `stat` of the mount point waits
/// for it; a value written before would be lowered again). Best effort: only root may
/// write the value (in sysfs), and other systems have no such setting; then the kernel's
/// value stays and a debug line says why. Must not run on a FUSE request thread.
pub fn raise_kernel_readahead(mountpoint: &Path) {
    match write_readahead(mountpoint) {
        Ok(path) => tracing::debug!("kernel read-ahead set to {READ_AHEAD_KB} KiB ({path})"),
        Err(why) => tracing::debug!("kernel read-ahead left as is: {why}"),
    }
}

#[cfg(target_os = "linux")]
fn write_readahead(mountpoint: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(mountpoint)
        .map_err(|e| format!("cannot stat {}: {e}", mountpoint.display()))?
        .dev();
    let path = format!("/sys/class/bdi/{}/read_ahead_kb", device_name(dev));
    std::fs::write(&path, READ_AHEAD_KB.to_string()).map_err(|e| format!("{path}: {e}"))?;
    Ok(path)
}

#[cfg(not(target_os = "linux"))]
fn write_readahead(_mountpoint: &Path) -> Result<String, String> {
    Err("only Linux lets it be changed".into())
}

/// `major:minor` of a device number, in the encoding of Linux's `dev_t`.
#[cfg(target_os = "linux")]
fn device_name(dev: u64) -> String {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    format!("{major}:{minor}")
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn device_names_follow_the_kernel_encoding() {
        assert_eq!(device_name(0x0000_0803), "8:3");
        assert_eq!(device_name(0x0000_0038), "0:56");
        // minor 300 and major 259 spill into the high bits.
        let dev = (259u64 & 0xfff) << 8 | (300u64 & 0xff) | ((300u64 & !0xff) << 12);
        assert_eq!(device_name(dev), "259:300");
    }
}
