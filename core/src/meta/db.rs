//! The metadata database, owned by one thread.
//!
//! All statements run on the owner thread, one closure at a time, so no connection is
//! shared and no tokio worker ever blocks on SQLite. Closures that arrive while the thread
//! is busy are committed together in one transaction; each closure runs in its own
//! savepoint, so a closure that fails leaves no trace. A closure's effects are visible to
//! every later closure at once; they are durable after [`Db::sync`].

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::{FsError, FsResult};

/// A queued closure; returns whether it succeeded (failed ones are rolled back).
type Op = Box<dyn FnOnce(&Connection) -> bool + Send>;

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
    path: PathBuf,
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
        conn.set_prepared_statement_cache_capacity(128);
        super::create_temp_tables(&conn)?;
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("s3ql-db".into())
            .spawn(move || owner_loop(conn, queue))?;
        Ok(Db {
            jobs,
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
            let ok = result.is_ok();
            let _ = tx.send(result);
            ok
        });
        self.jobs
            .send(wrap(op))
            .map_err(|_| FsError::Inconsistent("metadata database is closed".into()))?;
        rx.await
            .map_err(|_| FsError::Inconsistent("metadata database thread failed".into()))?
    }
}

fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

fn owner_loop(conn: Connection, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        let mut in_tx = false;
        let mut done = 0;
        while let Some(job) = next.take() {
            match job {
                Job::InBatch(op) => {
                    if !in_tx {
                        exec(&conn, "BEGIN IMMEDIATE");
                        in_tx = true;
                    }
                    run_in_savepoint(&conn, op);
                }
                Job::Alone(op) => {
                    if in_tx {
                        exec(&conn, "COMMIT");
                        in_tx = false;
                    }
                    op(&conn);
                }
            }
            done += 1;
            if done < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if in_tx {
            exec(&conn, "COMMIT");
        }
    }
}

/// Runs one closure in a savepoint; a closure whose result is an error is rolled back.
fn run_in_savepoint(conn: &Connection, op: Op) {
    exec(conn, "SAVEPOINT op");
    if !op(conn) {
        exec(conn, "ROLLBACK TO op");
    }
    exec(conn, "RELEASE op");
}

fn exec(conn: &Connection, sql: &str) {
    if let Err(e) = conn.execute_batch(sql) {
        tracing::error!("metadata database: {sql} failed: {e}");
    }
}
