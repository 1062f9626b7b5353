//! The metadata database, owned by one thread.
//!
//! All statements run on the owner thread, one closure at a time, so no connection is
//! shared and no tokio worker ever blocks on SQLite. Closures that arrive while the thread
//! is busy are committed together in one transaction (group commit); each closure runs in
//! its own savepoint, so a closure that fails leaves no trace. A caller gets its result
//! only once the transaction is committed (in the WAL, surviving a crash of the process),
//! so whatever it does next (delete an object, mark a block clean) happens after the
//! change it depends on; if the commit fails, every caller of the batch gets the error.
//! Changes survive a crash of the machine after [`Db::sync`].
//!
//! A thread that blocks for its request anyway (an adapter's request thread, see
//! [`run_statements_here`]) runs its closures itself, under the connection lock, in a
//! transaction of their own: this saves two thread wake-ups per closure, which cost more
//! than most closures. The guarantees are the same.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::{Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{FsError, FsResult};

/// A queued closure: runs on the owner's connection and returns what it did.
type Op = Box<dyn FnOnce(&Connection) -> Ran + Send>;

/// Sends a closure's result to its caller, given the outcome of its commit.
type Reply = Box<dyn FnOnce(FsResult<()>) + Send>;

/// A closure that ran: whether it succeeded (a failed one is rolled back at once) and its
/// reply, to send once the fate of its transaction is known.
struct Ran {
    ok: bool,
    reply: Reply,
}

enum Job {
    /// Runs inside the current batch transaction.
    InBatch(Op),
    /// Commits the batch, then runs outside any transaction.
    Alone(Op),
}

/// Handle to the database's owner thread. Cloning is cheap; the thread ends when the last
/// handle is dropped, after committing.
#[derive(Clone)]
pub struct Db {
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
    path: PathBuf,
}

/// The connection, shared by the owner thread and the request threads.
struct Shared {
    conn: Mutex<Connection>,
    /// Request threads waiting for `conn`: the owner thread then ends its batch early and
    /// hands the connection over (fair unlock), so a request never waits behind a long
    /// stream of queued background work.
    waiting: AtomicUsize,
}

impl Shared {
    fn lock_for_request(&self) -> MutexGuard<'_, Connection> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let conn = self.conn.lock();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        conn
    }

    fn requests_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }
}

thread_local! {
    /// Set while this thread runs [`run_statements_here`].
    static STATEMENTS_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the closures it submits through [`Db::call`] executed on this thread
/// instead of the owner thread. Only for threads that may block (never a runtime worker):
/// the closure waits for the connection while the owner thread commits a batch.
pub fn run_statements_here<R>(f: impl FnOnce() -> R) -> R {
    let before = STATEMENTS_HERE.with(|here| here.replace(true));
    let result = f();
    STATEMENTS_HERE.with(|here| here.set(before));
    result
}

/// Most closures committed together in one transaction.
const MAX_BATCH: usize = 512;

impl Db {
    /// Opens (or creates) the database at `path` in WAL mode and starts its owner thread.
    pub fn open(path: &Path) -> FsResult<Db> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Plans must not depend on bound values: otherwise SQLite re-plans a cached
        // statement whenever an integer parameter changes (measured: once per file created,
        // about a tenth of the daemon's time when creating small files).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        conn.set_prepared_statement_cache_capacity(128);
        super::create_temp_tables(&conn)?;
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            waiting: AtomicUsize::new(0),
        });
        let (jobs, queue) = mpsc::channel();
        let owned = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("s3ql-db".into())
            .spawn(move || owner_loop(&owned, queue))?;
        Ok(Db {
            jobs,
            shared,
            path: path.to_owned(),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` atomically on the owner thread: all its changes apply, or none if it fails.
    pub async fn call<R, F>(&self, f: F) -> FsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> FsResult<R> + Send + 'static,
    {
        self.submit(f, Job::InBatch).await
    }

    /// Commits pending changes, then runs `f` outside any transaction (for VACUUM,
    /// backups and checkpoints).
    pub async fn call_alone<R, F>(&self, f: F) -> FsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> FsResult<R> + Send + 'static,
    {
        self.submit(f, Job::Alone).await
    }

    /// Makes every change made so far durable on the local disk (commit and WAL fsync).
    pub async fn sync(&self) -> FsResult<()> {
        let wal = wal_path(&self.path);
        self.call_alone(move |_conn| {
            failpoint!(DB_WAL_SYNC);
            if let Ok(f) = std::fs::File::open(&wal) {
                f.sync_data()?;
            }
            Ok(())
        })
        .await
    }

    async fn submit<R, F>(&self, f: F, wrap: fn(Op) -> Job) -> FsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> FsResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let result = f(conn);
            Ran {
                ok: result.is_ok(),
                reply: Box::new(move |committed| {
                    let _ = tx.send(committed.and(result));
                }),
            }
        });
        let job = wrap(op);
        match job {
            Job::InBatch(op) if STATEMENTS_HERE.with(Cell::get) => {
                let conn = self.shared.lock_for_request();
                exec(&conn, "BEGIN IMMEDIATE");
                let ran = run_in_savepoint(&conn, op);
                let replies = if ran.ok {
                    vec![ran.reply]
                } else {
                    (ran.reply)(Ok(()));
                    Vec::new()
                };
                commit(&conn, replies);
                MutexGuard::unlock_fair(conn);
            }
            job => self
                .jobs
                .send(job)
                .map_err(|_| FsError::Inconsistent("metadata database is closed".into()))?,
        }
        rx.await
            .map_err(|_| FsError::Inconsistent("metadata database thread failed".into()))?
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

fn owner_loop(shared: &Shared, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let conn = shared.conn.lock();
        let mut next = Some(first);
        // Replies of the closures in the open transaction (`None`: no transaction open).
        let mut batch: Option<Vec<Reply>> = None;
        let mut done = 0;
        while let Some(job) = next.take() {
            match job {
                Job::InBatch(op) => {
                    let replies = batch.get_or_insert_with(|| {
                        exec(&conn, "BEGIN IMMEDIATE");
                        Vec::new()
                    });
                    let ran = run_in_savepoint(&conn, op);
                    if ran.ok {
                        replies.push(ran.reply);
                    } else {
                        (ran.reply)(Ok(()));
                    }
                }
                Job::Alone(op) => {
                    if let Some(replies) = batch.take() {
                        commit(&conn, replies);
                    }
                    let ran = op(&conn);
                    (ran.reply)(Ok(()));
                }
            }
            done += 1;
            if done < MAX_BATCH && !shared.requests_waiting() {
                next = queue.try_recv().ok();
            }
        }
        if let Some(replies) = batch {
            commit(&conn, replies);
        }
        MutexGuard::unlock_fair(conn);
    }
}

/// Commits the open transaction and then replies to its closures; if the commit fails, the
/// transaction is rolled back and each of them gets the error.
fn commit(conn: &Connection, replies: Vec<Reply>) {
    let committed = (|| -> FsResult<()> {
        failpoint!(DB_COMMIT);
        conn.prepare_cached("COMMIT")?.execute([])?;
        failpoint!(DB_COMMITTED);
        Ok(())
    })();
    match committed {
        Ok(()) => replies.into_iter().for_each(|reply| reply(Ok(()))),
        Err(e) => {
            tracing::error!("metadata database: commit failed, rolled back: {e}");
            if !conn.is_autocommit() {
                exec(conn, "ROLLBACK");
            }
            let msg = e.to_string();
            for reply in replies {
                reply(Err(FsError::Io(std::io::Error::other(format!(
                    "metadata commit failed: {msg}"
                )))));
            }
        }
    }
}

/// Runs one closure in a savepoint; a closure whose result is an error is rolled back.
fn run_in_savepoint(conn: &Connection, op: Op) -> Ran {
    exec(conn, "SAVEPOINT op");
    let ran = op(conn);
    if !ran.ok {
        exec(conn, "ROLLBACK TO op");
    }
    exec(conn, "RELEASE op");
    ran
}

/// Runs one transaction-control statement (prepared once per connection: these run several
/// times per closure, and parsing them again each time costs more than the closures).
fn exec(conn: &Connection, sql: &str) {
    if let Err(e) = conn.prepare_cached(sql).and_then(|mut s| s.execute([])) {
        tracing::error!("metadata database: {sql} failed: {e}");
    }
}
