//! `mount.s3ql`: mount a filesystem, as a daemon unless `--fg`/`--systemd`.
//!
//! Order of work: parse and check everything that can be checked without threads (options,
//! storage URL, authinfo2, cache directory, mount point, /proc/mounts, log file), fork into
//! the daemon (DESIGN.md §8: before any thread exists), then in the daemon build the tokio
//! runtime, open the store, `Filesystem::mount`, mount through FUSE, report success to the
//! waiting parent, serve until the kernel unmounts, and run `Filesystem::unmount`.
//!
//! Signals: SIGINT and SIGTERM are logged and answered by unmounting the mount point
//! (`fusermount3 -u`), lazily if it is busy (the kernel detaches it now and ends the session
//! once the last open file is closed); the session then ends and the normal unmount runs
//! (data and metadata are uploaded).
//!
//! With `--systemd` (systemd `Type=notify`), `READY=1` goes to `$NOTIFY_SOCKET` once the
//! mount is in place and `STOPPING=1` when the session has ended and the upload begins.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use s3ql_core::{Filesystem, MountOptions};

use crate::daemon::{self, ResultPipe};
use crate::exit::{self, code, fail};
use crate::logging::{self, LogTarget};
use crate::mount_opts::rewrite_mount_args;
use crate::options::{self, LogArgs, Resolved, StorageArgs};
use crate::sd_notify::Notifier;
use crate::{backend, fusermount, mounts, paths, unlock};

const LONG_ABOUT: &str = "\
Mount the S3QL filesystem at STORAGE_URL on MOUNTPOINT.

Unless --fg or --systemd is given, mount.s3ql becomes a daemon and returns once the filesystem
is mounted (or with the daemon's error). Unmount with umount.s3ql, which waits until all data
has been uploaded. SIGINT or SIGTERM to the daemon unmounts the filesystem cleanly (lazily if
it is busy) and uploads everything before the daemon exits.

The mount(8) form is accepted too, for `mount -t s3ql` and /etc/fstab:
  mount.s3ql STORAGE_URL MOUNTPOINT -o opt,opt=value,...
where `opt` means --opt and `opt=value` means --opt value (`_` may be used for `-`). The words
rw, defaults, auto, noauto, user, nouser, users, owner, group, _netdev, nofail, nobootwait,
mand, nomand, diratime, nodiratime, relatime, norelatime, strictatime, x-*, X-*, comment=*,
user=*, helper=* and uhelper=*, and mount(8)'s helper flags -n, -s and -v, are ignored; the
kernel flags dev, nodev, suid, nosuid, exec, noexec, atime, noatime, sync, async and dirsync
are passed to the FUSE mount; ro is refused (exit 35). Install the commands as
/sbin/mount.s3ql and /sbin/umount.fuse.s3ql for mount(8) and umount(8) to find them.

Storage URLs: local://PATH, s3://REGION/BUCKET[/PREFIX], s3c://HOST[:PORT]/BUCKET[/PREFIX] (and
s3c4://), gs://BUCKET[/PREFIX], swift://HOST[:PORT]/CONTAINER[/PREFIX], sftp://[USER@]HOST/PATH.
Credentials: authinfo2 backend-login/backend-password, else the environment, else asked for.";

const EXIT_CODES: &str = "\
Exit codes:
  0   success: the filesystem is mounted
  1   failure (see the message and the log file)
  2   usage error: bad option, storage URL, compression, authinfo2 key or value
  3   unknown backend option
  10  the log file cannot be created or written
  12  the authinfo2 file is readable by group or others
  14  the backend rejected the credentials
  15  the credentials do not allow access
  16  the storage location does not exist
  18  there is no s3ql filesystem at the storage URL
  19  the backend's host name cannot be resolved
  30  the filesystem was not unmounted cleanly: run fsck.s3ql
  31  the filesystem is mounted elsewhere (the message names host, pid and since when), or
      a crashed mount left its lock: run fsck.s3ql
  32  the filesystem revision is too old: run s3qladm upgrade
  33  the filesystem revision is too new for this version
  35  read-only mounting (-o ro) was requested
  36  the mount point does not exist
  39  the FUSE mount failed
  40  the filesystem is already mounted on this machine
  45  the cache directory cannot be created or used";

/// Upper bound of the automatic cache size.
const AUTO_CACHE_MAX: u64 = 10 * 1024 * 1024 * 1024;
/// Lower bound of the automatic cache size.
const AUTO_CACHE_MIN: u64 = 64 * 1024 * 1024;

/// Command line of `mount.s3ql`.
#[derive(Debug, Parser)]
#[command(
    name = "mount.s3ql",
    version,
    about = "Mount an S3QL filesystem",
    long_about = LONG_ABOUT,
    after_long_help = EXIT_CODES
)]
pub struct MountArgs {
    /// Storage URL of the filesystem, e.g. local:///srv/s3ql
    #[arg(value_name = "STORAGE_URL")]
    pub storage_url: String,
    /// Directory to mount the filesystem on
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Cache size in KiB [default: auto = 80% of the free space of the cache directory's
    /// filesystem (plus what the cache already holds), at least 64 MiB, at most 10 GiB]
    #[arg(long, value_name = "KiB", value_parser = clap::value_parser!(u64).range(1..))]
    pub cachesize: Option<u64>,
    /// Maximum number of cached blocks; past it, dirty blocks are uploaded and clean ones
    /// evicted (bounds the daemon's memory) [default: as S3QL, the hard open-file limit
    /// (4096 if unlimited) - 32 - 3 x max-connections, at least 1024]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_cache_entries: Option<u64>,
    /// Compression of new data: none, zstd-1..19, lzma-0..9, bzip2-1..9, zlib-0..9
    /// [default: authinfo2 `compress`, else zstd-3]
    #[arg(long, value_name = "ALGO-LEVEL")]
    pub compress: Option<String>,
    /// Keep cached (clean) data after unmounting, for a faster next mount
    #[arg(long)]
    pub keep_cache: bool,
    /// Let other users access the filesystem (file permissions are checked by the kernel;
    /// non-root users need user_allow_other in /etc/fuse.conf)
    #[arg(long, conflicts_with = "allow_root")]
    pub allow_other: bool,
    /// Like --allow-other, but only for root (besides the mounting user)
    #[arg(long)]
    pub allow_root: bool,
    /// Upload a dirty block once it has not been written for this many seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub dirty_block_upload_delay: u64,
    /// Stay in the foreground instead of becoming a daemon
    #[arg(long)]
    pub fg: bool,
    /// Name of the mount in /proc/mounts and df [default: the canonical storage URL]
    #[arg(long, value_name = "NAME")]
    pub fs_name: Option<String>,
    /// Run as a systemd Type=notify service: stay in the foreground, send READY=1 to
    /// $NOTIFY_SOCKET once mounted and STOPPING=1 when unmounting (exit 2 if NOTIFY_SOCKET
    /// is not set)
    #[arg(long)]
    pub systemd: bool,
    /// Upload metadata at least this often, in seconds (0: only at unmount and on request)
    #[arg(long, value_name = "SECONDS", default_value_t = 21600)]
    pub metadata_backup_interval: u64,
    /// Accepted for compatibility with S3QL (no effect in s3ql-rs)
    #[arg(long)]
    pub nfs: bool,
    /// Log target: a file, `syslog`, or `none` (console; only with --fg or --systemd)
    /// [default: ~/.s3ql/mount.log]
    #[arg(long, value_name = "TARGET")]
    pub log: Option<String>,
    /// FUSE library that serves the mount: `fuser` or `fuse-backend-rs` (fuse-backend-rs
    /// always mounts nosuid,nodev,noatime and cannot pass other -o words or --allow-root)
    /// [default: fuser on Linux and FreeBSD, fuse-backend-rs on macOS]
    #[arg(long, value_enum, default_value_t = Adapter::default(), hide_default_value = true)]
    pub adapter: Adapter,
    /// Options shared by the commands that take a storage URL.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Logging options.
    #[command(flatten)]
    pub logging: LogArgs,
}

/// The FUSE binding that serves a mount (`--adapter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Adapter {
    /// The fuser crate (Linux /dev/fuse, FreeBSD fusefs).
    Fuser,
    /// The fuse-backend-rs crate (Linux /dev/fuse, macFUSE or FUSE-T on macOS).
    #[value(name = "fuse-backend-rs")]
    FuseBackendRs,
}

impl Default for Adapter {
    /// fuse-backend-rs on macOS, fuser elsewhere.
    fn default() -> Self {
        if cfg!(target_os = "macos") {
            Adapter::FuseBackendRs
        } else {
            Adapter::Fuser
        }
    }
}

/// Everything needed to mount, computed before forking.
#[derive(Debug)]
struct MountPlan {
    resolved: Resolved,
    mountpoint: PathBuf,
    options: MountOptions,
    fuse: s3ql_core::MountConfig,
    adapter: Adapter,
}

/// Entry point of `mount.s3ql`.
pub fn main() -> ! {
    exit::run(|| {
        let rewritten = rewrite_mount_args(std::env::args_os().collect())?;
        let args = MountArgs::try_parse_from(&rewritten.args).unwrap_or_else(|e| e.exit());
        run(args, rewritten.kernel_flags)
    })
}

/// Runs `mount.s3ql` with parsed arguments and the kernel flags from `-o` lists.
pub fn run(args: MountArgs, kernel_flags: Vec<String>) -> anyhow::Result<()> {
    let foreground = args.fg || args.systemd;
    let target = match &args.log {
        Some(t) => LogTarget::parse(t),
        None => LogTarget::File(paths::default_s3ql_dir().join("mount.log")),
    };
    if target == LogTarget::Console && !foreground {
        return Err(fail(
            code::USAGE,
            "--log none is only allowed with --fg or --systemd",
        ));
    }
    logging::init(&target, &args.logging, "mount.s3ql")?;
    let notifier = match args.systemd {
        false => None,
        true => Some(Notifier::from_env().ok_or_else(|| {
            fail(
                code::USAGE,
                "--systemd needs $NOTIFY_SOCKET: run it from a systemd service with Type=notify (or use --fg)",
            )
        })?),
    };
    let plan = prepare(&args, kernel_flags)?;

    if foreground {
        return serve(plan, None, notifier);
    }
    let pipe = daemon::daemonize(&plan.resolved.cachedir)?;
    serve(plan, Some(pipe), None)
}

/// Checks the options and the environment and computes the mount settings.
fn prepare(args: &MountArgs, kernel_flags: Vec<String>) -> anyhow::Result<MountPlan> {
    let resolved = options::resolve(&args.storage_url, &args.storage)?;
    // SQLite puts its temporary files here (as S3QL does). Still single-threaded here.
    std::env::set_var("SQLITE_TMPDIR", &resolved.cachedir);
    let compression = resolved.compression(args.compress.as_deref())?;

    let mountpoint = options::absolute(&args.mountpoint)?;
    match std::fs::metadata(&mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(fail(
                code::NO_MOUNTPOINT,
                format!("mount point {} is not a directory", mountpoint.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail(
                code::NO_MOUNTPOINT,
                format!("mount point {} does not exist", mountpoint.display()),
            ))
        }
        Err(e) => {
            return Err(fail(
                code::NO_MOUNTPOINT,
                format!("cannot access mount point {}: {e}", mountpoint.display()),
            ))
        }
    }
    let table = mounts::read_mounts()
        .map_err(|e| fail(code::GENERIC, format!("cannot read /proc/mounts: {e}")))?;
    if let Some(m) = mounts::find_by_source(&table, &resolved.canonical_url) {
        return Err(fail(
            code::ALREADY_MOUNTED,
            format!(
                "{} is already mounted at {}",
                resolved.canonical_url,
                m.mountpoint.display()
            ),
        ));
    }

    let cache_size = match args.cachesize {
        Some(kib) => kib.saturating_mul(1024),
        None => auto_cache_size(&resolved.cachedir, &resolved.cache_path),
    };
    if args.nfs {
        tracing::debug!("--nfs has no effect");
    }
    let hard_fd_limit = raise_fd_limit();
    let max_cache_entries = args
        .max_cache_entries
        .unwrap_or_else(|| default_max_cache_entries(hard_fd_limit, resolved.max_connections));
    limit_malloc_arenas();

    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let passphrase = unlock::passphrase_if_needed(&resolved)?;
    let options = MountOptions {
        passphrase,
        cache_path: resolved.cache_path.clone(),
        cache_size,
        max_cache_entries: usize::try_from(max_cache_entries).unwrap_or(usize::MAX),
        compression,
        dirty_block_upload_delay: Duration::from_secs(args.dirty_block_upload_delay),
        metadata_backup_interval: Duration::from_secs(args.metadata_backup_interval),
        max_connections: resolved.max_connections,
        keep_cache: args.keep_cache,
        owner_uid: uid,
        owner_gid: gid,
    };
    let fuse = s3ql_core::MountConfig {
        fs_name: args
            .fs_name
            .clone()
            .unwrap_or_else(|| resolved.canonical_url.clone()),
        allow_other: args.allow_other,
        allow_root: args.allow_root,
        read_only: false,
        extra_options: kernel_flags,
        threads: fuse_threads(),
    };
    Ok(MountPlan {
        resolved,
        mountpoint,
        options,
        fuse,
        adapter: args.adapter,
    })
}

/// Runs the mount (in the daemon when `pipe` is given): an error before the mount is ready
/// is sent to the waiting parent and ends the daemon. `notifier` gets systemd's `READY=1`
/// and `STOPPING=1`.
fn serve(
    plan: MountPlan,
    mut pipe: Option<ResultPipe>,
    notifier: Option<Notifier>,
) -> anyhow::Result<()> {
    let result = serve_inner(plan, &mut pipe, notifier.as_ref());
    if let (Err(err), Some(pipe)) = (&result, pipe.take()) {
        let (code, message) = exit::describe(err);
        tracing::error!(target: logging::FILE_ONLY_TARGET, "{message} (exit code {code})");
        pipe.failure(code, &message);
        std::process::exit(code);
    }
    result
}

fn serve_inner(
    plan: MountPlan,
    pipe: &mut Option<ResultPipe>,
    notifier: Option<&Notifier>,
) -> anyhow::Result<()> {
    let MountPlan {
        resolved,
        mountpoint,
        options,
        fuse,
        adapter,
    } = plan;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(resolved.max_threads)
        .thread_name("s3ql-worker")
        .enable_all()
        .build()
        .map_err(|e| {
            fail(
                code::GENERIC,
                format!("cannot start the async runtime: {e}"),
            )
        })?;

    let store = backend::open_store(&resolved)?;
    tracing::info!(
        "Mounting {} at {}",
        resolved.canonical_url,
        mountpoint.display()
    );
    let fs: Arc<Filesystem> = runtime.block_on(Filesystem::mount(store, options))?;
    fs.set_log_control(Box::new(logging::set_level));

    let (handle, fs2) = (runtime.handle().clone(), Arc::clone(&fs));
    let mounted: std::io::Result<Box<dyn FnOnce() -> std::io::Result<()>>> = match adapter {
        #[cfg(not(target_os = "macos"))]
        Adapter::Fuser => s3ql_fuser::mount(fs2, handle, &mountpoint, &fuse)
            .map(|m| Box::new(move || m.wait()) as _),
        // fuser would need macFUSE's libfuse at build time: s3ql-fuser is not built there.
        #[cfg(target_os = "macos")]
        Adapter::Fuser => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the fuser adapter is not built on macOS; use --adapter fuse-backend-rs",
        )),
        Adapter::FuseBackendRs => s3ql_fuse_backend::mount(fs2, handle, &mountpoint, &fuse)
            .map(|m| Box::new(move || m.wait()) as _),
    };
    let wait = match mounted {
        Ok(wait) => wait,
        Err(e) => {
            if let Err(u) = runtime.block_on(fs.unmount()) {
                tracing::error!(
                    "closing the filesystem after the failed FUSE mount failed too: {u}"
                );
            }
            return Err(fail(
                code::FUSE_MOUNT_FAILED,
                format!("FUSE mount at {} failed: {e}", mountpoint.display()),
            ));
        }
    };
    tracing::info!(
        "Filesystem mounted at {} (adapter {adapter:?})",
        mountpoint.display()
    );
    crate::readahead::raise_kernel_readahead(&mountpoint);

    if let Some(pipe) = pipe.take() {
        if let Err(e) = daemon::detach_stdio() {
            tracing::warn!("cannot redirect standard input/output to /dev/null: {e}");
        }
        pipe.success();
    }
    notify(
        notifier,
        &format!("READY=1\nSTATUS=Mounted at {}", mountpoint.display()),
    );

    runtime.spawn(unmount_on_signal(mountpoint.clone()));
    if let Err(e) = wait() {
        tracing::warn!("the FUSE session ended with an error: {e}");
    }
    notify(notifier, "STOPPING=1\nSTATUS=Uploading data and metadata");
    tracing::info!("Unmounting: uploading data and metadata");
    let result = runtime.block_on(fs.unmount());
    drop(fs);
    runtime.shutdown_timeout(Duration::from_secs(10));
    match result {
        Ok(()) => {
            tracing::info!("Filesystem unmounted cleanly.");
            Ok(())
        }
        Err(e) => Err(fail(
            code::GENERIC,
            format!("unmounting failed: {e}; the cache directory was left as it is, run fsck.s3ql"),
        )),
    }
}

/// Sends `state` to systemd if `notifier` is set; a failure is logged (systemd then times
/// the service out, which stops it cleanly through SIGTERM).
fn notify(notifier: Option<&Notifier>, state: &str) {
    if let Some(n) = notifier {
        if let Err(e) = n.notify(state) {
            tracing::error!("cannot notify systemd ({state:?}): {e}");
        }
    }
}

/// On SIGINT or SIGTERM: log it and ask the kernel to unmount (lazily if the filesystem is
/// busy), which ends the FUSE session.
async fn unmount_on_signal(mountpoint: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot install signal handlers: {e}");
            return;
        }
    };
    loop {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::warn!("received {name}: unmounting {}", mountpoint.display());
        let mp = mountpoint.clone();
        let unmounted = tokio::task::spawn_blocking(move || {
            fusermount::kernel_unmount(&mp, false).or_else(|e| {
                tracing::warn!(
                    "cannot unmount {} ({e}); detaching it lazily: the upload starts when the last open file is closed",
                    mp.display()
                );
                fusermount::kernel_unmount(&mp, true)
            })
        })
        .await;
        match unmounted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot unmount {}: {e}", mountpoint.display()),
            Err(e) => tracing::error!("unmount task failed: {e}"),
        }
    }
}

/// The automatic cache size (bytes): 80% of the free space of the cache directory's
/// filesystem plus what this filesystem's cache already holds, within
/// [`AUTO_CACHE_MIN`]..=[`AUTO_CACHE_MAX`].
fn auto_cache_size(cachedir: &Path, cache_path: &Path) -> u64 {
    let free = free_space(cachedir).unwrap_or(AUTO_CACHE_MAX);
    let mut cache_dir = cache_path.as_os_str().to_owned();
    cache_dir.push("-cache");
    let used = dir_size(Path::new(&cache_dir), 3);
    (free.saturating_add(used) / 10 * 8).clamp(AUTO_CACHE_MIN, AUTO_CACHE_MAX)
}

/// Bytes available to unprivileged users on the filesystem of `dir`.
fn free_space(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `c` is a valid path; `st` is plain old data that statvfs fills in.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    // The field types differ between platforms (u64 on 64-bit Linux, u32 elsewhere).
    #[allow(clippy::useless_conversion)]
    let (avail, frsize) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Some(avail.saturating_mul(frsize))
}

/// Total size of the regular files below `dir`, descending at most `depth` levels.
fn dir_size(dir: &Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_file() => m.len(),
            Ok(m) if m.is_dir() && depth > 0 => dir_size(&e.path(), depth - 1),
            _ => 0,
        })
        .sum()
}

/// FUSE request threads: requests run on them (see the fuser adapter), and a read or write
/// that waits for the storage holds one, so there are enough for the kernel's concurrent
/// reads (12 in the background by default) beside metadata requests.
fn fuse_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(1)
        .clamp(8, 16)
}

/// Caps glibc's malloc arenas: by default each thread that allocates gets its own (up to 8
/// per core), and the block buffers that pass between runtime and blocking threads then
/// leave every arena holding freed memory, tripling the daemon's resident size.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; no thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Raises the soft limit of open files to the hard limit (cache files, connections);
/// returns the hard limit (`None`: unlimited or unknown).
fn raise_fd_limit() -> Option<u64> {
    // SAFETY: `lim` is plain old data that getrlimit fills in and setrlimit reads.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!(
                    "cannot raise the open file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        // rlim_t is u64 on Linux and macOS, i64 on FreeBSD.
        #[allow(clippy::unnecessary_fallible_conversions, clippy::useless_conversion)]
        let hard = u64::try_from(lim.rlim_max).ok();
        hard.filter(|_| lim.rlim_max != libc::RLIM_INFINITY)
    }
}

/// The default of `--max-cache-entries`: S3QL's, which keeps a descriptor per entry open,
/// from the hard open-file limit (`None`: unlimited, counted as 4096). Entries hold no
/// descriptor here, so a low limit is no error (S3QL exits 37): the floor is 1024.
fn default_max_cache_entries(hard_fd_limit: Option<u64>, max_connections: usize) -> u64 {
    let reserved = 32 + 3 * max_connections as u64;
    hard_fd_limit
        .unwrap_or(4096)
        .saturating_sub(reserved)
        .max(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::ffi::OsString;

    /// The arguments as `mount.s3ql` sees them after `-o` expansion.
    fn parse_for_test(args: &[&str]) -> Result<(MountArgs, Vec<String>), String> {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        let r = rewrite_mount_args(argv).map_err(|e| e.to_string())?;
        let a = MountArgs::try_parse_from(&r.args).map_err(|e| e.to_string())?;
        Ok((a, r.kernel_flags))
    }

    #[test]
    fn cli_is_consistent() {
        MountArgs::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let (a, flags) = parse_for_test(&["mount.s3ql", "local:///b", "/mnt"]).expect("parses");
        assert_eq!(a.dirty_block_upload_delay, 10);
        assert_eq!(a.metadata_backup_interval, 21600);
        assert!(!a.fg && !a.keep_cache && !a.allow_other && a.cachesize.is_none());
        assert!(flags.is_empty());
    }

    #[test]
    fn mount8_form() {
        let (a, flags) = parse_for_test(&[
            "mount.s3ql",
            "local:///b",
            "/mnt",
            "-o",
            "rw,noatime,allow_other,cachesize=2048,fg,compress=zlib-1",
        ])
        .expect("parses");
        assert!(a.allow_other && a.fg);
        assert_eq!(a.cachesize, Some(2048));
        assert_eq!(a.compress.as_deref(), Some("zlib-1"));
        assert_eq!(flags, ["noatime"]);
    }

    #[test]
    fn allow_other_and_allow_root_conflict() {
        let e = parse_for_test(&["mount.s3ql", "--allow-other", "--allow-root", "u", "m"])
            .expect_err("conflict");
        assert!(e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn default_max_cache_entries_follows_s3ql() {
        assert_eq!(
            default_max_cache_entries(Some(20_000), 32),
            20_000 - 32 - 96
        );
        assert_eq!(default_max_cache_entries(None, 32), 4096 - 32 - 96);
        assert_eq!(default_max_cache_entries(Some(256), 32), 1024);
    }

    #[test]
    fn auto_cache_size_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = auto_cache_size(dir.path(), &dir.path().join("x"));
        assert!((AUTO_CACHE_MIN..=AUTO_CACHE_MAX).contains(&size));
        let cache = dir.path().join("x-cache/sub");
        std::fs::create_dir_all(&cache).expect("mkdir");
        std::fs::write(cache.join("1-0"), vec![0u8; 4096]).expect("write");
        assert_eq!(dir_size(&dir.path().join("x-cache"), 3), 4096);
    }
}
