//! The database schema and connection settings.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::SqliteError;

/// `PRAGMA user_version` of the schema below.
const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for a lock before reporting SQLITE_BUSY (which maps
/// to a retryable error). Only the checkpointer and other processes contend: in
/// this process, writes are serialized by the writer mutex.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = r#"
-- The last commit time handed out, so commit times stay strictly increasing across
-- restarts even when every document has been deleted.
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE documents (
    path            TEXT PRIMARY KEY NOT NULL,
    collection_path TEXT NOT NULL,
    doc_id          TEXT NOT NULL,
    fields          BLOB NOT NULL,   -- see codec.rs
    content_hash    TEXT NOT NULL,   -- converge_core::hash::content_hash(fields)
    create_time_us  INTEGER NOT NULL,
    update_time_us  INTEGER NOT NULL
);
-- Covers scan_states and count: a collection in path order without touching the
-- table (whose rows carry the field blobs).
CREATE INDEX documents_by_collection
    ON documents (collection_path, path, update_time_us, content_hash);

CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    event_time_us   INTEGER NOT NULL,
    document        TEXT NOT NULL,
    data            BLOB NOT NULL,   -- protobuf DocumentEventData, the CloudEvent body
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_us INTEGER NOT NULL DEFAULT 0,
    delivered_us    INTEGER,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'rejected')),
    last_error      TEXT
);
-- Only pending rows are indexed, so the relay's query stays cheap however many
-- delivered rows the outbox keeps.
CREATE INDEX outbox_pending ON outbox (seq, next_attempt_us) WHERE status = 'pending';

CREATE TABLE sync_errors (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant        TEXT NOT NULL,
    doc_id        TEXT NOT NULL,
    doc_path      TEXT NOT NULL,
    action        TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    error         TEXT NOT NULL,
    attempts      INTEGER NOT NULL,
    -- Timestamps as seconds + nanoseconds: exact, and they sort.
    first_seen_s  INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    last_seen_s   INTEGER NOT NULL,
    last_seen_ns  INTEGER NOT NULL,
    resolved      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sync_errors_open ON sync_errors (tenant, id) WHERE resolved = 0;

CREATE TABLE quarantine (
    id             TEXT PRIMARY KEY NOT NULL,
    reason         TEXT NOT NULL,
    detail         TEXT NOT NULL,
    event_id       TEXT,
    event_type     TEXT,
    content_type   TEXT,
    headers_json   TEXT NOT NULL,
    payload        BLOB NOT NULL,
    payload_bytes  INTEGER NOT NULL,
    received_at_s  INTEGER NOT NULL,
    received_at_ns INTEGER NOT NULL,
    attempts       INTEGER NOT NULL
);
CREATE INDEX quarantine_by_time ON quarantine (received_at_s, received_at_ns);
"#;

/// Opens the one connection that writes, creating or checking the schema.
pub fn open_writer(path: &Path) -> Result<Connection, SqliteError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let journal_mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::CorruptRow { what: "journal mode (WAL could not be enabled)", value: journal_mode });
    }
    // In WAL mode, NORMAL syncs the WAL at checkpoints rather than at every commit. A
    // committed transaction is in the WAL file (in the OS page cache) before
    // COMMIT returns, so it survives a crash of this process; only an OS crash or
    // power loss can lose the last few commits, and then whole transactions only
    // (a document and its outbox event together), never leaving the file corrupt.
    // FULL would fsync every batch and cost the bulk load most of its speed.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 32 MiB of page cache: the bulk load touches the documents index constantly.
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.set_prepared_statement_cache_capacity(32);
    migrate(&conn)?;
    // Not versioned: added if missing, so older databases gain it too.
    crate::raw::ensure_schema(&conn)?;
    crate::changes::ensure_schema(&conn)?;
    // Not versioned: created if missing, so older databases gain it too.
    crate::opportunities::ensure_schema(&conn)?;
    // Not versioned: the quarantine's replay columns, added if missing.
    crate::error_log::ensure_schema(&conn)?;
    Ok(conn)
}

/// Opens a connection that only reads: each read transaction sees one snapshot
/// while the writer keeps committing (WAL).
pub fn open_reader(path: &Path) -> Result<Connection, SqliteError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), SqliteError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    match version {
        0 => {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
            Ok(())
        }
        SCHEMA_VERSION => Ok(()),
        other => Err(SqliteError::CorruptRow { what: "schema version (PRAGMA user_version)", value: other.to_string() }),
    }
}

const LAST_COMMIT_KEY: &str = "last_commit_us";
/// The latest read time handed out (µs): every later commit is dated after it.
const READ_FLOOR_KEY: &str = "read_floor_us";

fn read_meta(conn: &Connection, key: &str) -> Result<Option<i64>, SqliteError> {
    let mut stmt = conn.prepare_cached("SELECT value FROM store_meta WHERE key = ?1")?;
    Ok(stmt.query_row([key], |row| row.get(0)).optional()?)
}

fn write_meta(conn: &Connection, key: &str, value: i64) -> Result<(), SqliteError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO store_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?;
    stmt.execute(rusqlite::params![key, value])?;
    Ok(())
}

pub fn read_last_commit(conn: &Connection) -> Result<Option<i64>, SqliteError> {
    read_meta(conn, LAST_COMMIT_KEY)
}

pub fn write_last_commit(conn: &Connection, commit_us: i64) -> Result<(), SqliteError> {
    write_meta(conn, LAST_COMMIT_KEY, commit_us)
}

pub fn read_read_floor(conn: &Connection) -> Result<Option<i64>, SqliteError> {
    read_meta(conn, READ_FLOOR_KEY)
}

pub fn write_read_floor(conn: &Connection, read_us: i64) -> Result<(), SqliteError> {
    write_meta(conn, READ_FLOOR_KEY, read_us)
}

/// Whether `table` has `column`.
pub(crate) fn has_column(conn: &Connection, table: &'static str, column: &str) -> Result<bool, SqliteError> {
    Ok(conn.query_row(&format!("SELECT count(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"), [column], |row| row.get(0))?)
}

/// Adds each of `columns` (name, SQL definition) that `table` lacks: how a table made by
/// an older version gains the columns added since (old rows read their default).
pub(crate) fn add_missing_columns(conn: &Connection, table: &'static str, columns: &[(&str, &str)]) -> Result<(), SqliteError> {
    for (column, definition) in columns {
        if !has_column(conn, table, column)? {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"))?;
        }
    }
    Ok(())
}

/// Adds column `column` (of SQL type `sql_type`) to `documents` when a database created
/// before it lacks it, filling it from each stored document's fields with `derive`
/// (once, in one transaction), then creates `index` if missing. What the date and the
/// change-field indexes need at every open (`crate::raw`, `crate::changes`).
pub(crate) fn ensure_derived_column(
    conn: &Connection,
    column: &str,
    sql_type: &str,
    index: &str,
    derive: impl Fn(&converge_core::Fields) -> Option<rusqlite::types::Value>,
) -> Result<(), SqliteError> {
    if !has_column(conn, "documents", column)? {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(&format!("ALTER TABLE documents ADD COLUMN {column} {sql_type}"))?;
        {
            let mut select = tx.prepare("SELECT path, fields FROM documents")?;
            let mut update = tx.prepare(&format!("UPDATE documents SET {column} = ?2 WHERE path = ?1"))?;
            let mut rows = select.query([])?;
            while let Some(row) = rows.next()? {
                let path: String = row.get(0)?;
                let blob: Vec<u8> = row.get(1)?;
                let fields = crate::codec::decode_fields(&blob).map_err(|source| SqliteError::CorruptDocument { path: path.clone(), source })?;
                if let Some(value) = derive(&fields) {
                    update.execute(rusqlite::params![path, value])?;
                }
            }
        }
        tx.commit()?;
        tracing::info!(column, "sqlite source store: added an indexed column to an existing database");
    }
    conn.execute_batch(index)?;
    Ok(())
}
