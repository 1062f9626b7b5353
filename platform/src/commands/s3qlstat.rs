//! `s3qlstat`: print the statistics of a mounted filesystem (`getxattr(ctrl, "s3qlstat")`).

use std::path::PathBuf;

use clap::Parser;
use s3ql_core::Stats;

use crate::ctrl;
use crate::exit;
use crate::options::ToolLogArgs;

const LONG_ABOUT: &str = "\
Print statistics of the S3QL filesystem mounted at MOUNTPOINT:

  Directory entries       names in all directories (a hard link counts once per name)
  Inodes                  files, directories, symlinks etc., including the root, the control
                          file and removed files that are still open
  Data objects            data objects in the backend (one per distinct block)
  Total data size         sum of the sizes of all files (and symlink targets)
  After de-duplication    sum of the sizes of the distinct stored blocks
  After compression       sum of the sizes of the data objects in the backend
  Database size           size of the metadata database
  Cache size (dirty)      blocks in the local cache (not yet uploaded: uploads pending)
  Queued object removals  always 0: objects are deleted as soon as nothing refers to them
  File names              distinct names
  Failed uploads          dirty blocks whose last upload failed (write-back retries them;
                          s3qlctrl flushcache reports the error)

Data that is still only in the cache is counted by the cache figures until it is uploaded
(s3qlctrl flushcache uploads it). Only root and the user who mounted the filesystem may run
s3qlstat.";

const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   failure: MOUNTPOINT is not the mount point of an S3QL filesystem, or the caller may not
      use its control file
  2   usage error
  10  the log file cannot be created or written";

/// Command line of `s3qlstat`.
#[derive(Debug, Parser)]
#[command(
    name = "s3qlstat",
    version,
    about = "Print statistics of a mounted S3QL filesystem",
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES
)]
pub struct StatArgs {
    /// Mount point of the filesystem
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Print sizes in bytes instead of KiB, MiB, ...
    #[arg(long)]
    pub raw: bool,
    /// Print the figures as one JSON object (sizes in bytes; an s3ql-rs extension)
    #[arg(long, conflicts_with = "raw")]
    pub json: bool,
    /// Logging options.
    #[command(flatten)]
    pub log: ToolLogArgs,
}

/// Entry point of `s3qlstat`.
pub fn main() -> ! {
    exit::run(|| run(StatArgs::parse()))
}

/// Runs `s3qlstat` with parsed arguments.
pub fn run(args: StatArgs) -> anyhow::Result<()> {
    args.log.init("s3qlstat")?;
    let ctrl_file = ctrl::open_mountpoint(&args.mountpoint, "s3qlstat")?;
    let stats = ctrl::stats(&ctrl_file)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", report(&stats, args.raw));
    }
    Ok(())
}

/// A size as S3QL prints it: `N bytes` below 1 KiB (always with `raw`), else KiB, MiB, GiB
/// or TiB with 2 decimals below 10, 1 below 100 and none above (truncated).
pub fn pretty_size(bytes: u64, raw: bool) -> String {
    if raw || bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let (value, unit) = [("KiB", 1u64 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .into_iter()
        .find(|(_, scale)| bytes < scale << 10)
        .map_or(
            (bytes as f64 / (1u64 << 40) as f64, "TiB"),
            |(unit, scale)| (bytes as f64 / scale as f64, unit),
        );
    if value < 10.0 {
        format!("{value:.2} {unit}")
    } else if value < 100.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{} {unit}", value as u64)
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The text s3qlstat prints: S3QL's lines in S3QL's order, then the extensions.
fn report(s: &Stats, raw: bool) -> String {
    let size = |n| pretty_size(n, raw);
    format!(
        "Directory entries:    {}\n\
         Inodes:               {}\n\
         Data objects:         {}\n\
         Total data size:      {}\n\
         After de-duplication: {} ({:.2}% of total)\n\
         After compression:    {} ({:.2}% of total, {:.2}% of de-duplicated)\n\
         Database size:        {} (uncompressed)\n\
         Cache size:           {}, {} entries\n\
         Cache size (dirty):   {}, {} entries\n\
         Queued object removals: 0\n\
         File names:           {}\n\
         Failed uploads:       {} entries\n",
        s.entries,
        s.inodes,
        s.objects,
        size(s.data_bytes),
        size(s.dedup_bytes),
        percent(s.dedup_bytes, s.data_bytes),
        size(s.stored_bytes),
        percent(s.stored_bytes, s.data_bytes),
        percent(s.stored_bytes, s.dedup_bytes),
        size(s.db_bytes),
        size(s.cache_bytes),
        s.cache_entries,
        size(s.dirty_bytes),
        s.dirty_entries,
        s.names,
        s.failed_uploads,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        StatArgs::command().debug_assert();
        assert!(StatArgs::try_parse_from(["s3qlstat", "--raw", "--json", "/m"]).is_err());
    }

    #[test]
    fn sizes_as_s3ql_prints_them() {
        assert_eq!(pretty_size(1023, false), "1023 bytes");
        assert_eq!(pretty_size(1024, false), "1.00 KiB");
        assert_eq!(pretty_size(15 * 1024 + 512, false), "15.5 KiB");
        assert_eq!(pretty_size(999 * 1024 * 1024, false), "999 MiB");
        assert_eq!(pretty_size(3 << 30, false), "3.00 GiB");
        assert_eq!(pretty_size(5 << 40, false), "5.00 TiB");
        assert_eq!(pretty_size(5 << 40, true), "5497558138880 bytes");
    }

    #[test]
    fn report_has_s3ql_labels() {
        let s = Stats {
            entries: 3,
            data_bytes: 2048,
            dedup_bytes: 1024,
            stored_bytes: 512,
            ..Stats::default()
        };
        let text = report(&s, true);
        assert!(text.starts_with("Directory entries:    3\n"), "{text}");
        assert!(
            text.contains("After de-duplication: 1024 bytes (50.00% of total)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "After compression:    512 bytes (25.00% of total, 50.00% of de-duplicated)\n"
            ),
            "{text}"
        );
        assert!(text.contains("Queued object removals: 0\n"), "{text}");
        assert!(
            text.ends_with("Failed uploads:       0 entries\n"),
            "{text}"
        );
    }
}
