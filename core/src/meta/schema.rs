//! The database schema (see DESIGN.md §4). Reference counts (`inodes.nlink`,
//! `block_refcounts.refcount`) are derived data that fsck recomputes from `contents` and
//! `inode_blocks`.
//!
//! The layout keeps the metadata upload of a snapshot small (the upload sends the database
//! pages that changed, see `upload.rs`): a snapshot appends rows with new inode numbers,
//! which land on fresh pages at the end of the file, and otherwise rewrites only the narrow
//! `block_refcounts` rows of the blocks it shares (not the wide `blocks` rows with their
//! hashes, and no index ordered by block). `contents_by_parent` is not redundant with
//! `UNIQUE (parent, name)`: readdir pages through a directory by `(parent, id)`.

use rusqlite::Connection;

/// Key in `fs_meta` of the next data object number to hand out.
pub(crate) const META_NEXT_OBJECT_ID: &str = "next_object_id";

const SCHEMA: &str = "
CREATE TABLE inodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    atime_ns INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    rdev INTEGER NOT NULL DEFAULT 0,
    nlink INTEGER NOT NULL,
    locked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE contents (
    id INTEGER PRIMARY KEY,
    parent INTEGER NOT NULL,
    name BLOB NOT NULL,
    inode INTEGER NOT NULL,
    UNIQUE (parent, name)
);
CREATE INDEX contents_by_parent ON contents (parent);
CREATE INDEX contents_by_inode ON contents (inode);
CREATE TABLE symlink_targets (
    inode INTEGER PRIMARY KEY,
    target BLOB NOT NULL
);
CREATE TABLE ext_attributes (
    inode INTEGER NOT NULL,
    name BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (inode, name)
) WITHOUT ROWID;
CREATE TABLE blocks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    obj_id INTEGER NOT NULL UNIQUE,
    stored_size INTEGER NOT NULL
);
CREATE TABLE block_refcounts (
    id INTEGER PRIMARY KEY,
    refcount INTEGER NOT NULL
);
CREATE TABLE inode_blocks (
    inode INTEGER NOT NULL,
    blockno INTEGER NOT NULL,
    block_id INTEGER NOT NULL,
    PRIMARY KEY (inode, blockno)
) WITHOUT ROWID;
CREATE TABLE fs_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Indexes added after the first databases were made: [`create_schema`] makes them, and a
/// mount adds them to a database that lacks them (a one-time scan). `inodes_unlinked` holds
/// only the inodes whose last name is gone, so that the mount finds those left open by
/// the previous one without reading every inode (at a million files, that read took
/// 0.3-0.8 s of the mount with the page cache dropped).
const LATER_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS inodes_unlinked ON inodes (id) WHERE nlink = 0;
";

/// Key in `fs_meta` of the number of rows of `inodes` (named in [`TOTALS_TRIGGERS`] too).
const META_TOTAL_INODES: &str = "total_inodes";
/// Key in `fs_meta` of the sum of `blocks.stored_size` (named in [`TOTALS_TRIGGERS`] too).
const META_TOTAL_STORED_BYTES: &str = "total_stored_bytes";

/// Triggers that keep the totals of `statfs` in `fs_meta` in the same transaction as
/// every change of `inodes` and `blocks`, so that `statfs` reads two rows instead of
/// counting a million (0.06-0.18 s at a million files, during which the database serves
/// nothing else). The core never uses `REPLACE` on these tables (it would insert without
/// the matching delete trigger).
const TOTALS_TRIGGERS: [(&str, &str); 5] = [
    (
        "totals_inode_added",
        "AFTER INSERT ON inodes BEGIN
         UPDATE fs_meta SET value = value + 1 WHERE key = 'total_inodes'; END",
    ),
    (
        "totals_inode_removed",
        "AFTER DELETE ON inodes BEGIN
         UPDATE fs_meta SET value = value - 1 WHERE key = 'total_inodes'; END",
    ),
    (
        "totals_block_added",
        "AFTER INSERT ON blocks BEGIN
         UPDATE fs_meta SET value = value + NEW.stored_size WHERE key = 'total_stored_bytes'; END",
    ),
    (
        "totals_block_removed",
        "AFTER DELETE ON blocks BEGIN
         UPDATE fs_meta SET value = value - OLD.stored_size WHERE key = 'total_stored_bytes'; END",
    ),
    (
        "totals_block_resized",
        "AFTER UPDATE OF stored_size ON blocks BEGIN
         UPDATE fs_meta SET value = value + NEW.stored_size - OLD.stored_size
         WHERE key = 'total_stored_bytes'; END",
    ),
];

/// Temporary tables of the owner connection for set-based operations on many inodes (whole
/// trees). They are never part of the stored metadata; whoever fills one empties it first.
const TEMP_SCHEMA: &str = "
CREATE TEMP TABLE inode_set (id INTEGER PRIMARY KEY);
CREATE TEMP TABLE inode_map (old INTEGER PRIMARY KEY, new INTEGER NOT NULL UNIQUE);
CREATE TEMP TABLE block_delta (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
";

/// Creates the temporary tables of a connection (see `TEMP_SCHEMA`).
pub(crate) fn create_temp_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(TEMP_SCHEMA)
}

/// Creates every table of an empty database.
pub(crate) fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    create_later_schema(conn)?;
    conn.execute(
        "INSERT INTO fs_meta (key, value) VALUES (?1, 1)",
        [META_NEXT_OBJECT_ID],
    )?;
    Ok(())
}

/// Adds what [`LATER_INDEXES`] and [`TOTALS_TRIGGERS`] define and `conn`'s database
/// lacks. Where a totals trigger or total is missing (or a total is negative, which only
/// damage can make), the totals are counted from the tables first (a one-time scan), in
/// the caller's transaction, so no change escapes them.
pub(crate) fn create_later_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(LATER_INDEXES)?;
    let present: usize = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'totals\\_%' ESCAPE '\\'",
        [],
        |r| r.get(0),
    )?;
    let valid = matches!(stored_totals(conn)?, Some((inodes, bytes)) if inodes >= 0 && bytes >= 0);
    if present != TOTALS_TRIGGERS.len() || !valid {
        recount_totals(conn)?;
        for (name, body) in TOTALS_TRIGGERS {
            conn.execute_batch(&format!("CREATE TRIGGER IF NOT EXISTS {name} {body};"))?;
        }
    }
    Ok(())
}

/// The totals kept by the triggers: `(inodes, stored bytes)`; `None` if never counted.
/// Signed, as stored: a damaged database may hold a negative one.
pub(crate) fn stored_totals(conn: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.query_row(
        "SELECT (SELECT value FROM fs_meta WHERE key = ?1),
                (SELECT value FROM fs_meta WHERE key = ?2)",
        [META_TOTAL_INODES, META_TOTAL_STORED_BYTES],
        |r| Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?)),
    )
}

/// The totals counted from the tables: `(inodes, stored bytes)` (a full scan).
pub(crate) fn counted_totals(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(
        "SELECT (SELECT COUNT(*) FROM inodes), (SELECT COALESCE(SUM(stored_size), 0) FROM blocks)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Stores the totals counted from the tables.
pub(crate) fn recount_totals(conn: &Connection) -> rusqlite::Result<()> {
    let (inodes, stored) = counted_totals(conn)?;
    let mut put =
        conn.prepare_cached("INSERT OR REPLACE INTO fs_meta (key, value) VALUES (?1, ?2)")?;
    put.execute(rusqlite::params![META_TOTAL_INODES, inodes])?;
    put.execute(rusqlite::params![META_TOTAL_STORED_BYTES, stored])?;
    Ok(())
}
