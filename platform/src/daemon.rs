//! Turning `mount.s3ql` into a daemon *before* any thread or the tokio runtime exists
//! (DESIGN.md §8: a fork after threads exist can inherit a held lock).
//!
//! [`daemonize`] creates a close-on-exec pipe and forks. The parent blocks on the pipe until
//! the child reports (one status byte, then a UTF-8 message), prints `ERROR: <message>` for a
//! failure, and exits with the reported code; if the child dies without reporting, the
//! parent exits with its exit status (1 if it was killed). The child starts a new session,
//! changes to the cache directory and carries on; once the kernel mount is in place it
//! calls [`detach_stdio`] and then [`ResultPipe::success`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::exit::{code, ExitError};

/// The child's end of the result pipe: report exactly once, then it is closed.
#[derive(Debug)]
pub struct ResultPipe {
    file: File,
}

impl ResultPipe {
    /// Tells the waiting parent that the mount is ready (it exits 0).
    pub fn success(self) {
        self.send(0, "");
    }

    /// Tells the waiting parent to print `message` and exit with `exit_code`.
    pub fn failure(self, exit_code: i32, message: &str) {
        let code = u8::try_from(exit_code)
            .ok()
            .filter(|c| *c != 0)
            .unwrap_or(1);
        self.send(code, message);
    }

    fn send(mut self, code: u8, message: &str) {
        let mut buf = Vec::with_capacity(message.len() + 1);
        buf.push(code);
        buf.extend_from_slice(message.as_bytes());
        // The parent may be gone (killed); there is nobody else to tell.
        let _ = self.file.write_all(&buf);
    }
}

/// The number of threads of this process, from /proc (None where unavailable).
pub fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// Forks into a daemon. Returns only in the child, as its session leader with `workdir` as
/// the current directory; the parent waits for the child's report and exits. Fails (exit
/// 1) if the process already has more than one thread or the fork fails.
pub fn daemonize(workdir: &Path) -> Result<ResultPipe, ExitError> {
    if let Some(n) = thread_count().filter(|n| *n > 1) {
        return Err(ExitError::new(
            code::GENERIC,
            format!("internal error: cannot daemonize with {n} threads running"),
        ));
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe to fill. (Not pipe2, which macOS
    // lacks: with a single thread, nothing can exec between pipe and fcntl.)
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(os_error("cannot create a pipe"));
    }
    // SAFETY: pipe succeeded, so both descriptors are open and owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&read_end, &write_end] {
        // SAFETY: `fd` is open; F_SETFD only changes its close-on-exec flag.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(os_error("cannot set close-on-exec on a pipe"));
        }
    }

    // SAFETY: the process is single-threaded (checked above), so the child may run
    // arbitrary code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_error("cannot fork"));
    }
    if pid > 0 {
        drop(write_end);
        wait_for_report(File::from(read_end), pid);
    }
    drop(read_end);
    // SAFETY: plain system calls without memory arguments.
    if unsafe { libc::setsid() } < 0 {
        return Err(os_error("setsid failed"));
    }
    std::env::set_current_dir(workdir).map_err(|e| {
        ExitError::new(
            code::CACHE_DIR,
            format!("cannot change to {}: {e}", workdir.display()),
        )
    })?;
    Ok(ResultPipe {
        file: File::from(write_end),
    })
}

/// The parent: waits for the child's report and exits accordingly.
fn wait_for_report(mut pipe: File, child: libc::pid_t) -> ! {
    let mut buf = Vec::new();
    let read = pipe.read_to_end(&mut buf);
    if let (Ok(_), Some((&status, message))) = (read, buf.split_first()) {
        if status != 0 {
            eprintln!("ERROR: {}", String::from_utf8_lossy(message));
        }
        std::process::exit(i32::from(status));
    }
    // No report: the child died before the mount was ready.
    let mut status: libc::c_int = 0;
    let (code, message) = loop {
        // SAFETY: `status` is a valid int for waitpid to fill.
        let rc = unsafe { libc::waitpid(child, &mut status, 0) };
        if rc == child {
            if libc::WIFEXITED(status) {
                let c = libc::WEXITSTATUS(status);
                break (if c == 0 { 1 } else { c }, format!("the mount daemon exited with code {c} before the mount was ready (see the log file)"));
            }
            if libc::WIFSIGNALED(status) {
                let s = libc::WTERMSIG(status);
                break (1, format!("the mount daemon was killed by signal {s} before the mount was ready (see the log file)"));
            }
        } else if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break (
                1,
                "the mount daemon ended before the mount was ready (see the log file)".to_owned(),
            );
        }
    };
    eprintln!("ERROR: {message}");
    std::process::exit(code)
}

/// Points stdin, stdout and stderr at /dev/null (the daemon logs to its log target).
pub fn detach_stdio() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, from a descriptor we own.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn os_error(what: &str) -> ExitError {
    ExitError::new(
        code::GENERIC,
        format!("{what}: {}", io::Error::last_os_error()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_count_is_known_on_linux() {
        assert!(thread_count().is_some_and(|n| n >= 1));
    }

    #[test]
    fn refuses_to_fork_with_threads() {
        // The test harness runs tests on threads, so this process is multi-threaded.
        let _keep =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        let e = daemonize(Path::new("/")).expect_err("threads exist");
        assert_eq!(e.code(), 1);
    }
}
