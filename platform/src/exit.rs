//! Exit codes and the one-line error every command prints before it exits.
//!
//! Commands return `anyhow::Result`; an error that should end the process with a specific
//! S3QL exit code carries an [`ExitError`] (created with [`fail`]) somewhere in its chain.
//! Anything else is exit code 1. [`run`] prints `ERROR: <message>` on one line to stderr and
//! exits with the code; a panic is reported the same way (exit 1), never as a backtrace.

use std::fmt;
use std::panic::AssertUnwindSafe;

/// The exit codes of S3QL 6.3 that these commands use (see S3QL-CLI.md §4).
pub mod code {
    /// Crash or generic failure.
    pub const GENERIC: i32 = 1;
    /// Usage error: bad option, storage URL, authinfo2 key or value, compression spec.
    pub const USAGE: i32 = 2;
    /// Unknown backend option.
    pub const UNKNOWN_BACKEND_OPTION: i32 = 3;
    /// The log file cannot be created or written.
    pub const LOG_FILE: i32 = 10;
    /// The authinfo2 file is readable by group or others.
    pub const INSECURE_AUTHFILE: i32 = 12;
    /// The storage location (directory, bucket) does not exist.
    pub const LOCATION_MISSING: i32 = 16;
    /// `-o ro` was requested.
    pub const READ_ONLY: i32 = 35;
    /// The mount point does not exist.
    pub const NO_MOUNTPOINT: i32 = 36;
    /// The FUSE mount failed.
    pub const FUSE_MOUNT_FAILED: i32 = 39;
    /// The filesystem is already mounted on this machine.
    pub const ALREADY_MOUNTED: i32 = 40;
    /// The cache directory cannot be created or accessed.
    pub const CACHE_DIR: i32 = 45;
}

/// An error that ends the command with `code` and the one-line `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitError {
    code: i32,
    message: String,
}

impl ExitError {
    /// An error with exit code `code`; newlines in `message` are folded into spaces.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: one_line(&message.into()),
        }
    }

    /// The process exit code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The one-line message (without the `ERROR: ` prefix).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExitError {}

impl From<s3ql_core::OpenError> for ExitError {
    fn from(e: s3ql_core::OpenError) -> Self {
        ExitError::new(e.exit_code(), e.to_string())
    }
}

/// Shorthand for an `anyhow::Error` that exits with `code`.
pub fn fail(code: i32, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(ExitError::new(code, message))
}

/// The exit code and one-line message for `err`: the first [`ExitError`],
/// `s3ql_core::storage::StoreError`, `s3ql_core::OpenError` or
/// `s3ql_core::admin::AdminError` in its chain decides the code (context added on top of it
/// is kept in the message); anything else is exit code 1.
pub fn describe(err: &anyhow::Error) -> (i32, String) {
    let code = err
        .chain()
        .find_map(|e| {
            if let Some(x) = e.downcast_ref::<ExitError>() {
                Some(x.code())
            } else if let Some(s) = e.downcast_ref::<s3ql_core::storage::StoreError>() {
                Some(s.exit_code())
            } else if let Some(a) = e.downcast_ref::<s3ql_core::admin::AdminError>() {
                Some(a.exit_code())
            } else {
                e.downcast_ref::<s3ql_core::OpenError>()
                    .map(|o| o.exit_code())
            }
        })
        .unwrap_or(code::GENERIC);
    (code, one_line(&format!("{err:#}")))
}

/// Folds a message onto one line.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// Prints `ERROR: <message>` to stderr and logs it (so the log file has it too).
pub fn report(code: i32, message: &str) {
    tracing::error!(target: crate::logging::FILE_ONLY_TARGET, "{message} (exit code {code})");
    eprintln!("ERROR: {message}");
}

/// Runs a command's body and exits the process: 0 on success, otherwise the error's code
/// after printing it on one line. A panic is caught and reported as an internal error
/// (exit 1) instead of a backtrace.
pub fn run(body: impl FnOnce() -> anyhow::Result<()>) -> ! {
    std::panic::set_hook(Box::new(|info| {
        let msg = one_line(&info.to_string());
        tracing::error!(target: crate::logging::FILE_ONLY_TARGET, "internal error: {msg}");
        eprintln!("ERROR: internal error (this is a bug, please report it): {msg}");
    }));
    let code = match std::panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(err)) => {
            let (code, message) = describe(&err);
            report(code, &message);
            code
        }
        Err(_) => code::GENERIC,
    };
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_error_keeps_code_through_context() {
        let err: anyhow::Result<()> = Err(fail(36, "mount point /x does not exist"));
        let err = err.context("cannot mount").expect_err("is an error");
        let (code, msg) = describe(&err);
        assert_eq!(code, 36);
        assert_eq!(msg, "cannot mount: mount point /x does not exist");
    }

    #[test]
    fn other_errors_are_exit_code_1() {
        let err = anyhow::anyhow!("boom\nsecond line");
        assert_eq!(describe(&err), (1, "boom second line".to_owned()));
    }

    #[test]
    fn messages_are_one_line() {
        let e = ExitError::new(2, "a\n  b\n\nc");
        assert_eq!(e.message(), "a b c");
        assert_eq!(e.code(), 2);
    }
}
