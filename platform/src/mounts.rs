//! The kernel's table of mounted filesystems: `/proc/mounts` on Linux, `getmntinfo(3)` on
//! macOS and FreeBSD.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The filesystem type of an s3ql mount made through fusermount (`fuse.` + subtype).
pub const S3QL_FSTYPE: &str = "fuse.s3ql";

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The source (for s3ql: the FUSE `fsname`, by default the canonical storage URL).
    pub source: String,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The filesystem type, e.g. `fuse.s3ql`.
    pub fstype: String,
}

/// Decodes the octal escapes (`\040` for space, `\011`, `\012`, `\134`) of a field.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Parses the text of `/proc/mounts`; malformed lines are skipped.
pub fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let source = fields.next()?;
            let mountpoint = fields.next()?;
            let fstype = fields.next()?;
            Some(MountEntry {
                source: String::from_utf8_lossy(&unescape(source)).into_owned(),
                mountpoint: PathBuf::from(OsString::from_vec(unescape(mountpoint))),
                fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
            })
        })
        .collect()
}

/// Reads `/proc/mounts` (empty where it does not exist).
#[cfg(not(any(target_os = "macos", target_os = "freebsd")))]
pub fn read_mounts() -> std::io::Result<Vec<MountEntry>> {
    match std::fs::read("/proc/mounts") {
        Ok(bytes) => Ok(parse_mounts(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Reads the mount table with `getmntinfo(3)`, in mount order. FUSE mounts show type
/// `fusefs.s3ql` on FreeBSD and `macfuse` (or FUSE-T's `nfs`) on macOS.
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
pub fn read_mounts() -> std::io::Result<Vec<MountEntry>> {
    use std::ffi::CStr;
    let mut table: *mut libc::statfs = std::ptr::null_mut();
    // SAFETY: getmntinfo points `table` at `n` entries in a buffer it owns (valid until the
    // next call in this thread); MNT_NOWAIT only skips refreshing the figures.
    let n = unsafe { libc::getmntinfo(&mut table, libc::MNT_NOWAIT) };
    if n <= 0 || table.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above, `table` holds `n` initialized entries.
    let entries = unsafe { std::slice::from_raw_parts(table, n as usize) };
    let text = |field: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates these fixed-size fields.
        unsafe { CStr::from_ptr(field.as_ptr()) }
            .to_bytes()
            .to_vec()
    };
    Ok(entries
        .iter()
        .map(|st| MountEntry {
            source: String::from_utf8_lossy(&text(&st.f_mntfromname)).into_owned(),
            mountpoint: PathBuf::from(OsString::from_vec(text(&st.f_mntonname))),
            fstype: String::from_utf8_lossy(&text(&st.f_fstypename)).into_owned(),
        })
        .collect())
}

/// The first mount whose source is `source` (S3QL's "already mounted" test).
pub fn find_by_source<'a>(entries: &'a [MountEntry], source: &str) -> Option<&'a MountEntry> {
    entries.iter().find(|e| e.source == source)
}

/// The mount currently visible at `mountpoint` (the last entry for it: mounts stack).
pub fn find_by_mountpoint<'a>(
    entries: &'a [MountEntry],
    mountpoint: &Path,
) -> Option<&'a MountEntry> {
    entries.iter().rev().find(|e| e.mountpoint == mountpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
sysfs /sys sysfs rw,nosuid 0 0
local:///srv/my\\040fs/ /mnt/a\\040b fuse.s3ql rw,nosuid,nodev,user_id=0 0 0
/dev/vda / ext4 rw 0 0
tmpfs /mnt/a\\040b tmpfs rw 0 0
short line
";

    #[test]
    fn parses_and_unescapes() {
        let m = parse_mounts(TEXT);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].source, "local:///srv/my fs/");
        assert_eq!(m[1].mountpoint, PathBuf::from("/mnt/a b"));
        assert_eq!(m[1].fstype, S3QL_FSTYPE);
        assert_eq!(unescape("a\\134b\\011"), b"a\\b\t");
        assert_eq!(unescape("trailing\\04"), b"trailing\\04");
    }

    #[test]
    fn lookups() {
        let m = parse_mounts(TEXT);
        assert_eq!(
            find_by_source(&m, "local:///srv/my fs/").map(|e| e.fstype.as_str()),
            Some("fuse.s3ql")
        );
        assert!(find_by_source(&m, "local:///srv/other/").is_none());
        // The tmpfs is stacked on top of the s3ql mount.
        assert_eq!(
            find_by_mountpoint(&m, Path::new("/mnt/a b")).map(|e| e.fstype.as_str()),
            Some("tmpfs")
        );
        assert!(find_by_mountpoint(&m, Path::new("/mnt")).is_none());
    }

    #[test]
    fn reads_this_machine() {
        let m = read_mounts().expect("readable");
        assert!(find_by_mountpoint(&m, Path::new("/")).is_some() || m.is_empty());
    }
}
