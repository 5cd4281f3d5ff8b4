//! Raw records by date ([`RawSource`]), and the outbox filter.
//!
//! # The date index
//!
//! Firestore indexes every field, so `where date >= from and date <= to` reads only
//! the matching documents. Here every document's top-level `date` field, when it is a
//! string, is copied into the `documents.date_key` column as the document is written
//! (in the same statement), and a partial index on `(collection_path, date_key, path)`
//! answers a day's range without touching the rest of the collection. Strings compare
//! as Firestore compares them (bytewise), so both stores return the same documents,
//! including strings that are not well-formed dates (the ETL quarantines those).
//! Only `date` is indexed: asking for another field is refused rather than answered
//! by a full scan.
//!
//! # The outbox filter
//!
//! In the cloud the Eventarc trigger's document pattern decides which writes produce
//! an event: raw collections are not mirrored, so their writes produce none. The
//! embedded equivalent is [`SqliteStore::set_outbox_filter`]: with a mirror
//! configuration set, only writes to paths one of its routes matches get an outbox
//! event. Without one (the default) every write does.

use async_trait::async_trait;
use chrono::NaiveDate;
use converge_core::raw_source::{check_date_range, date_text};
use converge_core::{Document, ErrorKind, Fields, MirrorConfig, RawSource, Scan, StoreError, Value};
use rusqlite::Connection;

use crate::error::{SqliteError, BACKEND};
use crate::{path, Inner, SqliteStore};

/// The one field the embedded store indexes for date ranges.
pub const INDEXED_DATE_FIELD: &str = "date";

/// The value `documents.date_key` holds for `fields`.
pub(crate) fn date_key(fields: &Fields) -> Option<&str> {
    match fields.get(INDEXED_DATE_FIELD) {
        Some(Value::String(text)) => Some(text),
        _ => None,
    }
}

/// Adds the date column and its index to a database created before them, filling
/// the column from the stored documents (once). Not versioned: checked at every open.
pub(crate) fn ensure_schema(conn: &Connection) -> Result<(), SqliteError> {
    crate::schema::ensure_derived_column(
        conn,
        "date_key",
        "TEXT",
        "CREATE INDEX IF NOT EXISTS documents_by_date ON documents (collection_path, date_key, path) WHERE date_key IS NOT NULL",
        |fields| date_key(fields).map(|key| rusqlite::types::Value::Text(key.to_owned())),
    )
}

impl SqliteStore {
    /// Only writes to paths `config` routes get an outbox event from now on (`None`:
    /// every write, the default). The embedded equivalent of the Eventarc trigger's
    /// document pattern: raw collections, which are not mirrored, produce no events.
    pub fn set_outbox_filter(&self, config: Option<MirrorConfig>) {
        *self.inner.outbox_filter.write().unwrap_or_else(|p| p.into_inner()) = config;
    }
}

impl Inner {
    /// Whether a write to `path` gets an outbox event under the current filter.
    pub(crate) fn outbox_wants(filter: &Option<MirrorConfig>, path: &str) -> bool {
        filter.as_ref().is_none_or(|config| config.route(path).is_some())
    }
}

#[async_trait]
impl RawSource for SqliteStore {
    async fn scan_by_date(&self, collection_path: &str, date_field: &str, from: NaiveDate, to: NaiveDate) -> Result<Scan<Document>, StoreError> {
        path::check_collection_path(collection_path)?;
        check_date_range(BACKEND, from, to)?;
        if date_field != INDEXED_DATE_FIELD {
            return Err(StoreError::new(
                ErrorKind::InvalidInput,
                BACKEND,
                format!("the embedded store indexes only the `{INDEXED_DATE_FIELD}` field for date ranges, not `{date_field}`; name raw records' date field `{INDEXED_DATE_FIELD}`"),
            ));
        }
        const SQL: &str = "SELECT path, fields, create_time_us, update_time_us FROM documents \
                           WHERE collection_path = ?1 AND date_key IS NOT NULL AND date_key >= ?2 AND date_key <= ?3 \
                           ORDER BY date_key, path";
        self.scan_query(SQL, vec![collection_path.to_owned(), date_text(from), date_text(to)], crate::document_from_row).await
    }
}

#[cfg(test)]
mod tests {
    use crate::schema;
    use std::sync::Arc;

    use converge_core::value::fields_from_json;
    use converge_core::{DocWrite, SourceStore, SystemClock};
    use converge_events::EventSource;

    use super::*;

    fn set(path: &str, json: serde_json::Value) -> DocWrite {
        DocWrite::Set { path: path.into(), fields: fields_from_json(&json).unwrap() }
    }

    fn open(dir: &std::path::Path) -> SqliteStore {
        SqliteStore::open(&dir.join("s.sqlite"), Arc::new(SystemClock), EventSource::local()).unwrap()
    }

    #[tokio::test]
    async fn a_day_is_read_through_the_date_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.apply(vec![set("orgs/a/ga4_pages/x", serde_json::json!({"date": "2025-01-01"}))]).await.unwrap();
        let conn = schema::open_reader(&dir.path().join("s.sqlite")).unwrap();
        let plan: Vec<String> = conn
            .prepare("EXPLAIN QUERY PLAN SELECT path, fields FROM documents WHERE collection_path = ?1 AND date_key IS NOT NULL AND date_key >= ?2 AND date_key <= ?3 ORDER BY date_key, path")
            .unwrap()
            .query_map(rusqlite::params!["orgs/a/ga4_pages", "2025-01-01", "2025-01-01"], |row| row.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(plan.iter().any(|step| step.contains("USING INDEX documents_by_date")), "plan: {plan:?}");
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "no sort needed: {plan:?}");
    }

    #[tokio::test]
    async fn another_date_field_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let day = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let error = store.scan_by_date("orgs/a/ga4_pages", "day", day, day).await.err().unwrap();
        assert_eq!(error.kind, ErrorKind::InvalidInput);
        assert!(error.message.contains("`date`"), "{error}");
    }

    #[tokio::test]
    async fn a_database_from_before_the_index_gains_it_with_its_dates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        {
            let store = open(dir.path());
            store.apply(vec![set("orgs/a/ga4_pages/x", serde_json::json!({"date": "2025-01-02"}))]).await.unwrap();
        }
        // Take the database back to its shape before the date column.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP INDEX documents_by_date; ALTER TABLE documents DROP COLUMN date_key;").unwrap();
        drop(conn);
        let store = open(dir.path());
        let day = NaiveDate::from_ymd_opt(2025, 1, 2).unwrap();
        let scan = store.scan_by_date("orgs/a/ga4_pages", "date", day, day).await.unwrap();
        use futures::StreamExt;
        let docs: Vec<_> = scan.items.collect().await;
        assert_eq!(docs.len(), 1, "the existing document is indexed on reopening");
    }

    #[tokio::test]
    async fn with_a_filter_only_mirrored_paths_get_outbox_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.apply(vec![set("orgs/a/ga4_pages/before", serde_json::json!({"date": "2025-01-02"}))]).await.unwrap();
        assert_eq!(store.outbox_stats().await.unwrap().pending, 1, "no filter: every write has its event");
        store.set_outbox_filter(Some(MirrorConfig::default()));
        store
            .apply(vec![
                set("orgs/a/records/r1", serde_json::json!({"amount": 1.0})),
                set("orgs/a/ga4_pages/p1", serde_json::json!({"date": "2025-01-02"})),
                set("orgs/a/ad_keywords/k1", serde_json::json!({"date": "2025-01-02"})),
            ])
            .await
            .unwrap();
        store.apply(vec![DocWrite::Delete { path: "orgs/a/ga4_pages/p1".into() }]).await.unwrap();
        assert_eq!(store.outbox_stats().await.unwrap().pending, 2, "the mirrored record's event only");
        let raw = store.get("orgs/a/ad_keywords/k1").await.unwrap();
        assert!(raw.is_some(), "unmirrored documents are still written");
        store.set_outbox_filter(None);
        store.apply(vec![set("orgs/a/ga4_pages/after", serde_json::json!({}))]).await.unwrap();
        assert_eq!(store.outbox_stats().await.unwrap().pending, 3);
    }
}
