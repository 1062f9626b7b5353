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
//!
//! A change that no caller waits for ([`Db::defer`]) is applied at the start of the next
//! transaction, whoever opens it, so every later closure sees it; it is committed with that
//! transaction, by [`Db::commit_deferred`], or before a [`Db::call_alone`] closure runs.
//!
//! The connection locks the database file exclusively from its first access until it is
//! closed ([`Db::close`], or the last handle dropped): no other connection, in this process
//! or another, can open the file meanwhile.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use parking_lot::{Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{FsError, FsResult};

/// A queued closure: runs on the owner's connection (or gets the error that prevented
/// opening its transaction) and returns what it did.
type Op = Box<dyn FnOnce(FsResult<&Connection>) -> Ran + Send>;

/// Sends a closure's result to its caller, given the outcome of its commit.
type Reply = Box<dyn FnOnce(FsResult<()>) + Send>;

/// A change submitted with [`Db::defer`]. Kept until a transaction that applied it commits,
/// and applied again after a rollback, so it must give the same result when re-applied.
type Deferred = Arc<dyn Fn(&Connection) -> FsResult<()> + Send + Sync>;

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
    /// Deferred changes not yet applied, oldest first.
    deferred: Mutex<Vec<Deferred>>,
    /// Set by [`Db::close`]: every later call fails.
    closed: AtomicBool,
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

    /// Opens a write transaction on `conn` (whose lock the caller holds) and applies the
    /// deferred changes in it; returns them, to give back with [`Self::restore`] unless the
    /// transaction commits. On error nothing is open and nothing is lost.
    fn begin(&self, conn: &Connection) -> FsResult<Vec<Deferred>> {
        exec(conn, "BEGIN IMMEDIATE");
        let applied = std::mem::take(&mut *self.deferred.lock());
        if let Err(e) = applied.iter().try_for_each(|change| change(conn)) {
            tracing::error!("metadata database: a deferred change failed: {e}");
            exec(conn, "ROLLBACK");
            self.restore(applied);
            return Err(e);
        }
        Ok(applied)
    }

    /// Gives back deferred changes whose transaction did not commit, before any newer ones.
    fn restore(&self, applied: Vec<Deferred>) {
        if applied.is_empty() {
            return;
        }
        let mut deferred = self.deferred.lock();
        let newer = std::mem::replace(&mut *deferred, applied);
        deferred.extend(newer);
    }

    /// Commits the open transaction and then replies to its closures; if the commit fails,
    /// the transaction is rolled back, its deferred changes wait for the next one, and each
    /// closure gets the error. Returns whether it committed.
    fn commit(&self, conn: &Connection, applied: Vec<Deferred>, replies: Vec<Reply>) -> bool {
        let committed = (|| -> FsResult<()> {
            failpoint!(DB_COMMIT);
            conn.prepare_cached("COMMIT")?.execute([])?;
            failpoint!(DB_COMMITTED);
            Ok(())
        })();
        match committed {
            Ok(()) => {
                replies.into_iter().for_each(|reply| reply(Ok(())));
                true
            }
            Err(e) => {
                tracing::error!("metadata database: commit failed, rolled back: {e}");
                if !conn.is_autocommit() {
                    exec(conn, "ROLLBACK");
                }
                self.restore(applied);
                let msg = e.to_string();
                for reply in replies {
                    reply(Err(FsError::Io(std::io::Error::other(format!(
                        "metadata commit failed: {msg}"
                    )))));
                }
                false
            }
        }
    }
}

thread_local! {
    /// Set while this thread runs [`run_statements_here`].
    static STATEMENTS_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the closures it submits through [`Db::call`] and [`Db::query`] executed on
/// this thread instead of the owner thread. Only for threads that may block (never a runtime worker):
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
        // Exclusive: the lock is taken once, at the first access, and kept until the
        // connection closes, so no transaction pays for file locks (measured: 16 `fcntl`
        // per small file created), and the WAL index lives in this process's memory. Set
        // before the first access; a connection of a process that is closing (a crashed
        // mount in the same process) is waited for.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
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
            deferred: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
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

    /// Submits a change that needs no reply: it is applied before any closure submitted
    /// after this returns, and committed with the first transaction that follows (within
    /// about a second, see [`Self::commit_deferred`]). Until then a crash of the process
    /// loses it; [`Self::sync`] makes it durable.
    pub fn defer(&self, change: impl Fn(&Connection) -> FsResult<()> + Send + Sync + 'static) {
        self.shared.deferred.lock().push(Arc::new(change));
    }

    /// Commits the deferred changes, if there are any.
    pub async fn commit_deferred(&self) -> FsResult<()> {
        if self.shared.deferred.lock().is_empty() {
            return Ok(());
        }
        self.call(|_| Ok(())).await
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

    /// Runs `f`, which only reads, after every change submitted before this call (deferred
    /// ones included). On a request thread (see `run_statements_here`) it runs under the
    /// connection lock without a transaction of its own, which saves the statements that
    /// open and close one: nothing else can change the database while it holds the lock.
    pub async fn query<R, F>(&self, f: F) -> FsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> FsResult<R> + Send + 'static,
    {
        if STATEMENTS_HERE.with(Cell::get) && !self.shared.closed.load(Ordering::SeqCst) {
            let conn = self.shared.lock_for_request();
            if self.shared.deferred.lock().is_empty() {
                let changes = conn.total_changes();
                let result = f(&conn);
                debug_assert_eq!(
                    conn.total_changes(),
                    changes,
                    "a query changed the database"
                );
                MutexGuard::unlock_fair(conn);
                return result;
            }
            MutexGuard::unlock_fair(conn);
        }
        self.call(f).await
    }

    /// Commits everything and closes the database file, so that another connection (fsck,
    /// the next mount) can open it: the connection holds the file's lock while open. Every
    /// later call fails.
    pub async fn close(&self) -> FsResult<()> {
        self.call_alone(|_| Ok(())).await?;
        self.shared.closed.store(true, Ordering::SeqCst);
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || -> FsResult<()> {
            let mut conn = shared.conn.lock();
            *conn = Connection::open_in_memory()?;
            Ok(())
        })
        .await
        .map_err(|e| FsError::Inconsistent(e.to_string()))?
    }

    async fn submit<R, F>(&self, f: F, wrap: fn(Op) -> Job) -> FsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> FsResult<R> + Send + 'static,
    {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(FsError::Inconsistent("metadata database is closed".into()));
        }
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |conn| {
            let result = conn.and_then(f);
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
                run_alone_in_transaction(&self.shared, &conn, op);
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

/// Runs `op` in a transaction of its own. Without deferred changes in it, a failed closure
/// just rolls it back; with them, the closure runs in a savepoint so that they still commit.
fn run_alone_in_transaction(shared: &Shared, conn: &Connection, op: Op) {
    let applied = match shared.begin(conn) {
        Ok(applied) => applied,
        Err(e) => return (op(Err(e)).reply)(Ok(())),
    };
    let ran = if applied.is_empty() {
        op(Ok(conn))
    } else {
        run_in_savepoint(conn, op)
    };
    if ran.ok {
        shared.commit(conn, applied, vec![ran.reply]);
    } else {
        if applied.is_empty() {
            exec(conn, "ROLLBACK");
        } else {
            shared.commit(conn, applied, Vec::new());
        }
        (ran.reply)(Ok(()));
    }
}

fn owner_loop(shared: &Shared, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let conn = shared.conn.lock();
        let mut next = Some(first);
        // The open transaction: its deferred changes and the replies of its closures.
        let mut batch: Option<(Vec<Deferred>, Vec<Reply>)> = None;
        let mut done = 0;
        while let Some(job) = next.take() {
            match job {
                Job::InBatch(op) => {
                    let opened = match batch.take() {
                        Some(open) => Ok(open),
                        None => shared.begin(&conn).map(|applied| (applied, Vec::new())),
                    };
                    match opened {
                        Ok((applied, mut replies)) => {
                            let ran = run_in_savepoint(&conn, op);
                            if ran.ok {
                                replies.push(ran.reply);
                            } else {
                                (ran.reply)(Ok(()));
                            }
                            batch = Some((applied, replies));
                        }
                        Err(e) => (op(Err(e)).reply)(Ok(())),
                    }
                }
                Job::Alone(op) => {
                    let mut pending = batch.take();
                    let mut failed = None;
                    if pending.is_none() && !shared.deferred.lock().is_empty() {
                        match shared.begin(&conn) {
                            Ok(applied) => pending = Some((applied, Vec::new())),
                            Err(e) => failed = Some(e),
                        }
                    }
                    if let Some((applied, replies)) = pending {
                        if !shared.commit(&conn, applied, replies) {
                            failed =
                                Some(FsError::Io(std::io::Error::other("metadata commit failed")));
                        }
                    }
                    let ran = match failed {
                        Some(e) => op(Err(e)),
                        None => op(Ok(&conn)),
                    };
                    (ran.reply)(Ok(()));
                }
            }
            done += 1;
            if done < MAX_BATCH && !shared.requests_waiting() {
                next = queue.try_recv().ok();
            }
        }
        if let Some((applied, replies)) = batch {
            shared.commit(&conn, applied, replies);
        }
        MutexGuard::unlock_fair(conn);
    }
    // Every handle is gone: commit what is still deferred.
    let conn = shared.conn.lock();
    if !shared.deferred.lock().is_empty() {
        if let Ok(applied) = shared.begin(&conn) {
            shared.commit(&conn, applied, Vec::new());
        }
    }
}

/// Runs one closure in a savepoint; a closure whose result is an error is rolled back.
fn run_in_savepoint(conn: &Connection, op: Op) -> Ran {
    exec(conn, "SAVEPOINT op");
    let ran = op(Ok(conn));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Db {
        Db::open(&dir.join("t.db")).expect("open")
    }

    fn rows(c: &Connection) -> FsResult<i64> {
        Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
    }

    async fn count(db: &Db) -> FsResult<i64> {
        db.call(rows).await
    }

    fn defer_row(db: &Db, x: i64) {
        db.defer(move |c| {
            c.execute("INSERT OR REPLACE INTO t VALUES (?1)", [x])?;
            Ok(())
        });
    }

    fn failing(c: &Connection) -> FsResult<()> {
        c.execute("INSERT INTO t VALUES (100)", [])?;
        Err(FsError::Inconsistent("refused".into()))
    }

    #[tokio::test]
    async fn deferred_changes_are_seen_by_later_calls_and_survive_failed_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        db.call(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")?))
            .await
            .expect("create");
        defer_row(&db, 1);
        assert_eq!(
            count(&db).await.expect("count"),
            1,
            "seen by the owner thread"
        );

        defer_row(&db, 2);
        db.call(failing).await.expect_err("the closure fails");
        let here = db.clone();
        std::thread::spawn(move || {
            defer_row(&here, 3);
            run_statements_here(|| futures::executor::block_on(here.call(failing)))
                .expect_err("the closure fails on a request thread");
            let seen = run_statements_here(|| futures::executor::block_on(count(&here)));
            assert_eq!(seen.expect("count"), 3, "seen on a request thread");
        })
        .join()
        .expect("request thread");

        defer_row(&db, 4);
        db.close().await.expect("close");
        assert!(count(&db).await.is_err(), "a closed database refuses calls");
        let reopened = open(dir.path());
        assert_eq!(
            count(&reopened).await.expect("count"),
            4,
            "every deferred change was committed, no failed closure left a trace"
        );
    }

    #[test]
    fn queries_see_every_change_submitted_before_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        futures::executor::block_on(
            db.call(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")?)),
        )
        .expect("create");
        run_statements_here(|| {
            futures::executor::block_on(async {
                defer_row(&db, 1);
                assert_eq!(db.query(rows).await.expect("query"), 1, "a deferred change");
                db.call(|c| Ok(c.execute_batch("INSERT INTO t VALUES (2)")?))
                    .await
                    .expect("insert");
                assert_eq!(db.query(rows).await.expect("query"), 2, "a committed one");
            })
        });
        assert_eq!(
            futures::executor::block_on(db.query(rows)).expect("query"),
            2,
            "on the owner thread"
        );
    }

    #[tokio::test]
    async fn deferred_changes_are_committed_when_the_last_handle_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        db.call(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER PRIMARY KEY)")?))
            .await
            .expect("create");
        defer_row(&db, 1);
        drop(db);
        // The owner thread closes the file after its commit; the busy timeout waits for it.
        let reopened = open(dir.path());
        assert_eq!(count(&reopened).await.expect("count"), 1);
    }
}
