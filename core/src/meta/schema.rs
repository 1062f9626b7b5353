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
    create_later_indexes(conn)?;
    conn.execute(
        "INSERT INTO fs_meta (key, value) VALUES (?1, 1)",
        [META_NEXT_OBJECT_ID],
    )?;
    Ok(())
}

/// Adds the indexes of [`LATER_INDEXES`] that `conn`'s database lacks.
pub(crate) fn create_later_indexes(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(LATER_INDEXES)
}
