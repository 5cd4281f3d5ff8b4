//! What an incremental reconcile asks of the store ([`SourceStore::changed_since`],
//! [`SourceStore::count_range`], [`SourceStore::scan_states_in`]), answered the way
//! Firestore answers it and no cheaper.
//!
//! # The change-field index
//!
//! Firestore indexes every field, so `where updated_at >= since` reads only the
//! documents written since. Here each document's top-level [`INDEXED_CHANGE_FIELD`],
//! when it is a timestamp, is copied into `documents.change_key` (µs) in the statement
//! that writes the document, and a partial index on `(change_key, collection_path,
//! path)` answers the query for a collection or a subtree without touching other
//! documents. Only that field is indexed: a route naming another change field is
//! refused (as [`crate::INDEXED_DATE_FIELD`] is the one date field), rather than
//! answered by reading everything.
//!
//! # Ranges
//!
//! A [`PathRange`] of a collection is a range of its paths in byte order (Firestore's
//! `__name__` order within one collection): counted and scanned on the
//! `documents_by_collection` index. A scope of several collections takes only the whole
//! range, as on Firestore, whose `__name__` order across collections is segment by
//! segment.
//!
//! [`SourceStore::changed_since`]: converge_core::SourceStore::changed_since
//! [`SourceStore::count_range`]: converge_core::SourceStore::count_range
//! [`SourceStore::scan_states_in`]: converge_core::SourceStore::scan_states_in

use converge_core::{DocState, Document, ErrorKind, Fields, PathRange, Scan, SourceScope, StoreError, Timestamp, Value};
use rusqlite::{params, Connection};

use crate::error::{SqliteError, BACKEND};
use crate::{outbox, SqliteStore};

/// The one field the embedded store indexes for incremental reconciles.
pub const INDEXED_CHANGE_FIELD: &str = converge_core::config::DEFAULT_CHANGE_FIELD;

/// The value `documents.change_key` holds for `fields`.
pub(crate) fn change_key(fields: &Fields) -> Option<i64> {
    match fields.get(INDEXED_CHANGE_FIELD) {
        Some(Value::Timestamp(at)) => Some(at.as_micros()),
        _ => None,
    }
}

/// The index `count()` reads: a collection's paths and nothing else. The scans'
/// covering index (`documents_by_collection`) also carries each document's update time
/// and 64-character hash, ~120 bytes an entry against ~50 here, and a count's time is
/// the entries' bytes: 1,024 ranges over 10,000,000 documents took 2.3 s on the wide
/// index and 1.6 s on this one (one reader, 1.4 s and 0.9 s on two). Only a create or a
/// delete writes it (an update keeps a document's path). A macro, so the queries that
/// name it (`INDEXED BY`, here and in `lib.rs`) spell it from this one place.
macro_rules! count_index {
    () => {
        "documents_by_collection_path"
    };
}
pub(crate) use count_index;
const COUNT_INDEX: &str = count_index!();

/// Adds the change column and its index to a database created before them, filling
/// the column from the stored documents (once), and the count index. Not versioned:
/// checked at every open.
pub(crate) fn ensure_schema(conn: &Connection) -> Result<(), SqliteError> {
    crate::schema::ensure_derived_column(
        conn,
        "change_key",
        "INTEGER",
        "CREATE INDEX IF NOT EXISTS documents_by_change ON documents (change_key, collection_path, path) WHERE change_key IS NOT NULL",
        |fields| change_key(fields).map(rusqlite::types::Value::Integer),
    )?;
    let exists: bool = conn.query_row("SELECT count(*) > 0 FROM sqlite_master WHERE type = 'index' AND name = ?1", [COUNT_INDEX], |row| row.get(0))?;
    if !exists {
        // Minutes on a database of tens of millions of documents, once. The build's
        // sort spills to a temporary file rather than memory (the connection keeps its
        // temporary store in memory otherwise: at 10,000,000 documents this open
        // peaked at 1 GB). Changing `temp_store` drops temporary tables; at open there
        // are none.
        let timer = std::time::Instant::now();
        conn.pragma_update(None, "temp_store", "FILE")?;
        let created = conn.execute_batch(&format!("CREATE INDEX {COUNT_INDEX} ON documents (collection_path, path)"));
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        created?;
        tracing::info!(index = COUNT_INDEX, millis = timer.elapsed().as_millis() as u64, "sqlite source store: created the count index");
    }
    Ok(())
}

fn refused(detail: String) -> StoreError {
    StoreError::new(ErrorKind::InvalidInput, BACKEND, detail)
}

/// The bounds of `range` within the collection at `collection_path`: every path of the
/// collection lies in `collection_path/` … `collection_path0` (`0` follows `/`).
fn collection_bounds(collection_path: &str, range: &PathRange) -> (String, String) {
    let low = format!("{collection_path}/");
    let high = format!("{collection_path}0");
    let start = range.start.clone().map_or(low.clone(), |start| start.max(low));
    let end = range.end.clone().map_or(high.clone(), |end| end.min(high));
    (start, end)
}

impl SqliteStore {
    pub(crate) async fn changed_documents(&self, scope: &SourceScope, field: &str, since: Timestamp) -> Result<Scan<Document>, StoreError> {
        if field != INDEXED_CHANGE_FIELD {
            return Err(refused(format!(
                "the embedded store indexes only the `{INDEXED_CHANGE_FIELD}` field for changes, not `{field}`; name the route's change_field `{INDEXED_CHANGE_FIELD}`"
            )));
        }
        let since = since.as_micros().to_string();
        // `+` keeps the scope's terms off the indexes (SQLite's documented way to
        // disqualify a term from driving one): without statistics the planner chose the
        // collection's index and read all of it — 3.1 s at 10,000,000 documents for the
        // 9,000 changed ones, 40 ms through the change index.
        match scope.collection_path() {
            Some(collection_path) => {
                const SQL: &str = "SELECT path, fields, create_time_us, update_time_us FROM documents \
                                   WHERE change_key IS NOT NULL AND change_key >= CAST(?2 AS INTEGER) AND +collection_path = ?1";
                self.scan_query(SQL, vec![collection_path, since], crate::document_from_row).await
            }
            None => {
                let (from, to) = crate::subtree_range(&scope.parent()).unwrap_or_else(|| (String::new(), "\u{10FFFF}".into()));
                const SQL: &str = "SELECT path, fields, create_time_us, update_time_us FROM documents \
                                   WHERE change_key IS NOT NULL AND change_key >= CAST(?3 AS INTEGER) AND +path > ?1 AND +path < ?2";
                self.scan_filtered(SQL, vec![from, to, since], Some(scope.clone()), crate::document_from_row).await
            }
        }
    }

    pub(crate) async fn count_in(&self, scope: &SourceScope, range: &PathRange) -> Result<u64, StoreError> {
        let Some(collection_path) = scope.collection_path() else {
            if range.is_all() {
                return converge_core::SourceStore::count(self, scope).await;
            }
            return Err(refused(format!(
                "{scope} spans more than one collection: only its whole range can be counted (Firestore orders `__name__` segment by segment), not {range}"
            )));
        };
        let (start, end) = collection_bounds(&collection_path, range);
        self.blocking(move |inner| {
            inner.with_reader(|conn| {
                let mut stmt = conn.prepare_cached(concat!("SELECT count(*) FROM documents INDEXED BY ", count_index!(), " WHERE collection_path = ?1 AND path >= ?2 AND path < ?3"))?;
                Ok(outbox::non_negative(stmt.query_row(params![collection_path, start, end], |row| row.get(0))?))
            })
        })
        .await
    }

    pub(crate) async fn states_in(&self, scope: &SourceScope, range: &PathRange) -> Result<Scan<DocState>, StoreError> {
        let Some(collection_path) = scope.collection_path() else {
            if range.is_all() {
                return converge_core::SourceStore::scan_states(self, scope).await;
            }
            return Err(refused(format!(
                "{scope} spans more than one collection: only its whole range can be scanned by range (Firestore orders `__name__` segment by segment), not {range}"
            )));
        };
        let (start, end) = collection_bounds(&collection_path, range);
        const SQL: &str = "SELECT path, update_time_us, content_hash FROM documents \
                           WHERE collection_path = ?1 AND path >= ?2 AND path < ?3 ORDER BY path";
        self.scan_query(SQL, vec![collection_path, start, end], |path, row| Ok(DocState::from_source(path.to_owned(), row.get(1)?, row.get(2)?))).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use converge_core::value::fields_from_json;
    use converge_core::{DocWrite, SourceStore, SystemClock};
    use converge_events::EventSource;

    use super::*;
    use crate::schema;

    fn open(dir: &std::path::Path) -> SqliteStore {
        SqliteStore::open(&dir.join("s.sqlite"), Arc::new(SystemClock), EventSource::local()).unwrap()
    }

    fn write(paths: &[&str]) -> Vec<DocWrite> {
        paths.iter().map(|path| DocWrite::Set { path: (*path).into(), fields: fields_from_json(&serde_json::json!({"n": 1})).unwrap() }).collect()
    }

    #[tokio::test]
    async fn a_range_is_counted_on_the_narrow_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.apply(write(&["c/a", "c/b"])).await.unwrap();
        let conn = schema::open_reader(&dir.path().join("s.sqlite")).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN SELECT count(*) FROM documents INDEXED BY {COUNT_INDEX} WHERE collection_path = ?1 AND path >= ?2 AND path < ?3"))
            .unwrap()
            .query_map(params!["c", "c/", "c0"], |row| row.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(plan.iter().any(|step| step.contains(&format!("COVERING INDEX {COUNT_INDEX}"))), "plan: {plan:?}");
        let scope = SourceScope::collection("c").unwrap();
        assert_eq!(store.count_range(&scope, &PathRange::new(Some("c/b".into()), None)).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_database_from_before_the_count_index_gains_it() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path()).apply(write(&["c/a", "c/b", "c/b/d/e"])).await.unwrap();
        // Take the database back to its shape before the count index.
        let conn = Connection::open(dir.path().join("s.sqlite")).unwrap();
        conn.execute_batch(&format!("DROP INDEX {COUNT_INDEX}")).unwrap();
        drop(conn);
        let store = open(dir.path());
        assert_eq!(store.count_range(&SourceScope::collection("c").unwrap(), &PathRange::all()).await.unwrap(), 2, "the existing documents are counted on reopening");
        assert_eq!(store.count(&SourceScope::collection("c").unwrap()).await.unwrap(), 2);
    }
}
