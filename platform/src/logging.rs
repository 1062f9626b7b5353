//! Logging setup (tracing-subscriber) for `--log`, `--debug`, `--debug-modules`, `--quiet`.
//!
//! Two outputs. The console (stderr): `INFO` messages bare, others prefixed `LEVEL: `; INFO
//! and up from the s3ql crates, WARN and up from libraries; only warnings and errors with
//! `--quiet`. And, unless `--log none`, a log target: a file (`YYYY-mm-dd HH:MM:SS.mmm PID
//! LEVEL thread target: message`, rotated at 10 MiB keeping 5 old files, as S3QL does) or
//! `syslog` (the system logger, through libc). Debug messages (`--debug`: all s3ql crates;
//! `--debug-modules`) go to the log target, or to the console when the target is `none`.
//! In the daemon the console is /dev/null once the mount is up. The filter of the log target
//! can be changed at run time ([`set_level`], for `s3qlctrl log`).

use std::ffi::CString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, FilterFn, LevelFilter};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::exit::{code, ExitError};
use crate::options::LogArgs;

/// Target of events that go to the log target but never to the console (used for the final
/// error, which the command prints itself).
pub const FILE_ONLY_TARGET: &str = "s3ql_platform::fatal";

/// A log file is rotated when it would grow beyond this size.
const ROTATE_SIZE: u64 = 10 * 1024 * 1024;
/// Number of rotated files kept (`log.1` … `log.5`).
const ROTATE_KEEP: usize = 5;

/// The crates whose debug messages `--debug` enables.
const OWN_CRATES: &[&str] = &[
    "s3ql_core",
    "s3ql_fuser",
    "s3ql_fuse_backend",
    "s3ql_platform",
];

/// Where `--log` sends log messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// `none`: the console only.
    Console,
    /// `syslog`: the system logger.
    Syslog,
    /// A file (a leading `~` expanded; parent directories are created).
    File(PathBuf),
}

impl LogTarget {
    /// Parses a `--log` value (`none` and `syslog` in any case, else a path).
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "none" => LogTarget::Console,
            "syslog" => LogTarget::Syslog,
            _ => LogTarget::File(PathBuf::from(crate::paths::expand_tilde(s))),
        }
    }
}

/// The default filter: INFO from the s3ql crates, WARN from libraries.
fn base_directives() -> Vec<String> {
    let mut d = vec!["warn".to_owned()];
    d.extend(OWN_CRATES.iter().map(|c| format!("{c}=info")));
    d
}

fn parse_filter(directives: &[String]) -> Result<EnvFilter, ExitError> {
    EnvFilter::builder()
        .parse(directives.join(","))
        .map_err(|e| ExitError::new(code::USAGE, format!("invalid --debug-modules value: {e}")))
}

/// The filter for the log target: [`base_directives`] plus the debug directives of `args`.
/// An invalid module name is exit 2.
pub fn debug_filter(args: &LogArgs) -> Result<EnvFilter, ExitError> {
    let mut directives = base_directives();
    if args.debug {
        directives.extend(OWN_CRATES.iter().map(|c| format!("{c}=debug")));
    }
    for module in &args.debug_modules {
        for m in module.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if m == "all" {
                // The crate directives of the base filter are more specific than a bare
                // level, so they are raised too.
                directives.push("debug".to_owned());
                directives.extend(OWN_CRATES.iter().map(|c| format!("{c}=debug")));
            } else if m.starts_with("s3ql_") || m.contains("::") {
                directives.push(format!("{m}=debug"));
            } else {
                // S3QL module names (`cache`, `meta.upload`) name core modules; anything
                // else (`opendal`) is taken as a crate name as well.
                directives.push(format!("s3ql_core::{}=debug", m.replace('.', "::")));
                directives.push(format!("{m}=debug"));
            }
        }
    }
    parse_filter(&directives)
}

/// The filter of the log target for `s3qlctrl log LEVEL [MODULE...]`: `debug` for the
/// modules (as `--debug-modules`; none = `all`), `info` (the default filter) or `warn`
/// (warnings and errors only; no modules allowed). Anything else is exit 2.
pub fn level_filter(level: &str, modules: &[String]) -> Result<EnvFilter, ExitError> {
    let usage = |msg: String| Err(ExitError::new(code::USAGE, msg));
    match level {
        "debug" => debug_filter(&LogArgs {
            debug_modules: if modules.is_empty() {
                vec!["all".to_owned()]
            } else {
                modules.to_vec()
            },
            ..LogArgs::default()
        }),
        "info" | "warn" if !modules.is_empty() => usage(format!(
            "modules can only be given with level debug, not {level}"
        )),
        "info" => parse_filter(&base_directives()),
        "warn" => parse_filter(&["warn".to_owned()]),
        _ => usage(format!(
            "invalid log level {level:?} (use debug, info or warn)"
        )),
    }
}

/// Replaces the filter of the log target installed by [`init`].
type Reload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static RELOAD: OnceLock<Reload> = OnceLock::new();

/// Changes the filter of the log target at run time (see [`level_filter`]); the
/// `s3ql_core::LogControl` of the mount daemon.
pub fn set_level(level: &str, modules: &[String]) -> Result<(), String> {
    let filter = level_filter(level, modules).map_err(|e| e.message().to_owned())?;
    let reload = RELOAD
        .get()
        .ok_or_else(|| "logging is not set up".to_owned())?;
    reload(filter)?;
    tracing::info!("log level set to {level} {}", modules.join(" "));
    Ok(())
}

/// `filter` made replaceable through [`RELOAD`].
fn reloadable<S: 'static>(filter: EnvFilter) -> reload::Layer<EnvFilter, S> {
    let (layer, handle) = reload::Layer::new(filter);
    let replace: Reload = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
    // Only the first subscriber of a process can be installed, so only its handle counts.
    let _ = RELOAD.set(replace);
    layer
}

/// Installs the global subscriber. Exit 10 if the log file cannot be created; exit 2 for an
/// invalid `--debug-modules`. `program` names the process in syslog.
pub fn init(target: &LogTarget, args: &LogArgs, program: &str) -> Result<(), ExitError> {
    let filter = debug_filter(args)?;
    let not_file_only = FilterFn::new(|meta: &Metadata<'_>| meta.target() != FILE_ONLY_TARGET);
    let console_level = if args.quiet {
        LevelFilter::WARN
    } else {
        LevelFilter::TRACE
    };
    let console = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(false)
        .event_format(ConsoleFormat);

    let registry = tracing_subscriber::registry();
    let result = match target {
        LogTarget::Console => registry
            .with(
                console
                    .with_filter(reloadable(filter))
                    .with_filter(console_level)
                    .with_filter(not_file_only),
            )
            .try_init(),
        LogTarget::File(path) => {
            let writer = RotatingFile::open(path)?;
            registry
                .with(
                    console
                        .with_filter(parse_filter(&base_directives())?)
                        .with_filter(console_level)
                        .with_filter(not_file_only),
                )
                .with(file_layer(writer).with_filter(reloadable(filter)))
                .try_init()
        }
        LogTarget::Syslog => {
            let writer = SyslogWriter::open(program);
            registry
                .with(
                    console
                        .with_filter(parse_filter(&base_directives())?)
                        .with_filter(console_level)
                        .with_filter(not_file_only),
                )
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(writer)
                        .with_ansi(false)
                        .without_time()
                        .with_level(false)
                        .with_thread_names(true)
                        .with_filter(reloadable(filter)),
                )
                .try_init()
        }
    };
    result.map_err(|e| ExitError::new(code::GENERIC, format!("cannot set up logging: {e}")))
}

/// The fmt layer of the log file.
fn file_layer<S>(writer: Arc<RotatingFile>) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(RotatingFileWriter(writer))
        .with_ansi(false)
        .with_timer(LocalTimeAndPid)
        .with_thread_names(true)
        .with_target(true)
}

/// The console line format: `message` for INFO, `LEVEL: message` otherwise.
struct ConsoleFormat;

impl<S, N> FormatEvent<S, N> for ConsoleFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match *event.metadata().level() {
            Level::INFO => {}
            Level::WARN => write!(writer, "WARNING: ")?,
            level => write!(writer, "{level}: ")?,
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Timestamps in local time with milliseconds, followed by the process id.
struct LocalTimeAndPid;

impl FormatTime for LocalTimeAndPid {
    fn format_time(&self, w: &mut format::Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = libc::time_t::try_from(now.as_secs()).unwrap_or(0);
        // SAFETY: `tm` is plain old data filled in by localtime_r from a valid time_t.
        let tm = unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            libc::localtime_r(&secs, &mut tm);
            tm
        };
        write!(
            w,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} {}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            now.subsec_millis(),
            std::process::id()
        )
    }
}

/// An append-only log file that rotates itself at [`ROTATE_SIZE`].
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    state: Mutex<RotatingState>,
}

#[derive(Debug)]
struct RotatingState {
    file: File,
    size: u64,
}

impl RotatingFile {
    /// Opens (creating it and its parent directories) the log file; exit 10 on failure.
    pub fn open(path: &Path) -> Result<Arc<Self>, ExitError> {
        // Absolute, because the daemon changes its directory and rotation renames by path.
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let err = |e: io::Error| {
            ExitError::new(
                code::LOG_FILE,
                format!("cannot write log file {}: {e}", path.display()),
            )
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let file = open_append(path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(Arc::new(Self {
            path: path.to_owned(),
            state: Mutex::new(RotatingState { file, size }),
        }))
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Renames `log.4` → `log.5`, …, `log` → `log.1` and opens a new `log`.
    fn rotate(&self, state: &mut RotatingState) -> io::Result<()> {
        for n in (1..ROTATE_KEEP).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        state.file = open_append(&self.path)?;
        state.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.size > 0 && state.size + buf.len() as u64 > ROTATE_SIZE {
            // A failed rotation keeps writing to the current file.
            let _ = self.rotate(&mut state);
        }
        state.file.write_all(buf)?;
        state.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RotatingFileWriter {
    type Writer = &'a RotatingFile;

    fn make_writer(&'a self) -> Self::Writer {
        &self.0
    }
}

/// [`MakeWriter`] over a shared [`RotatingFile`].
#[derive(Debug, Clone)]
pub struct RotatingFileWriter(Arc<RotatingFile>);

/// Sends each event to syslog(3) with the priority of its level.
#[derive(Debug, Clone, Copy)]
struct SyslogWriter;

impl SyslogWriter {
    fn open(program: &str) -> Self {
        // openlog keeps the pointer: the identifier must live for the whole process.
        let ident: &'static std::ffi::CStr = Box::leak(
            CString::new(program)
                .unwrap_or_else(|_| c"s3ql".to_owned())
                .into_boxed_c_str(),
        );
        // SAFETY: `ident` is a valid NUL-terminated string that is never freed.
        unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        SyslogWriter
    }
}

/// One syslog message being assembled.
struct SyslogLine {
    priority: libc::c_int,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text: Vec<u8> = self.buf.iter().copied().filter(|b| *b != 0).collect();
        let text = String::from_utf8_lossy(&text);
        let Ok(msg) = CString::new(text.trim_end()) else {
            return;
        };
        if msg.is_empty() {
            return;
        }
        // SAFETY: the format string and the argument are valid NUL-terminated strings.
        unsafe { libc::syslog(self.priority, c"%s".as_ptr(), msg.as_ptr()) };
    }
}

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine {
            priority: libc::LOG_INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        let priority = match *meta.level() {
            Level::ERROR => libc::LOG_ERR,
            Level::WARN => libc::LOG_WARNING,
            Level::INFO => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        SyslogLine {
            priority,
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(LogTarget::parse("none"), LogTarget::Console);
        assert_eq!(LogTarget::parse("NONE"), LogTarget::Console);
        assert_eq!(LogTarget::parse("syslog"), LogTarget::Syslog);
        assert_eq!(
            LogTarget::parse("/var/log/x"),
            LogTarget::File(PathBuf::from("/var/log/x"))
        );
    }

    #[test]
    fn debug_filters() {
        let f = debug_filter(&LogArgs::default()).expect("ok").to_string();
        assert!(f.contains("s3ql_core=info") && f.contains("warn"), "{f}");
        let args = LogArgs {
            debug: true,
            debug_modules: vec!["cache,meta.upload".into()],
            quiet: false,
        };
        let f = debug_filter(&args).expect("ok").to_string();
        assert!(f.contains("s3ql_core=debug"), "{f}");
        assert!(f.contains("s3ql_core::meta::upload=debug"), "{f}");
        let bad = LogArgs {
            debug_modules: vec!["a b=c=d".into()],
            ..Default::default()
        };
        assert_eq!(debug_filter(&bad).expect_err("invalid").code(), 2);
    }

    #[test]
    fn level_filters() {
        let f = level_filter("debug", &[]).expect("ok").to_string();
        assert!(f.contains("s3ql_core=debug"), "{f}");
        let f = level_filter("debug", &["cache".into()])
            .expect("ok")
            .to_string();
        assert!(f.contains("s3ql_core::cache=debug"), "{f}");
        assert_eq!(level_filter("warn", &[]).expect("ok").to_string(), "warn");
        assert_eq!(
            level_filter("info", &["cache".into()])
                .expect_err("modules need debug")
                .code(),
            2
        );
        assert!(level_filter("verbose", &[]).is_err());
    }

    #[test]
    fn log_file_is_created_and_rotated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/dir/mount.log");
        let f = RotatingFile::open(&path).expect("opens");
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..(ROTATE_SIZE as usize / chunk.len() * (ROTATE_KEEP + 2)) {
            (&*f).write_all(&chunk).expect("write");
        }
        assert!(path.exists());
        for n in 1..=ROTATE_KEEP {
            let old = f.rotated(n);
            let len = std::fs::metadata(&old).expect("rotated file").len();
            assert!(len <= ROTATE_SIZE, "{len}");
        }
        assert!(!f.rotated(ROTATE_KEEP + 1).exists());
    }

    #[test]
    fn unwritable_log_file_is_exit_10() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"").expect("write");
        let e = RotatingFile::open(&file.join("x.log")).expect_err("parent is a file");
        assert_eq!(e.code(), 10);
    }
}
