//! From a document change to a changelog row.
//!
//! [`DocumentChange`] is one Firestore event, decoded (by `converge-events`) but not yet
//! interpreted. [`ChangeRow::from_change`] applies the rules of ARCHITECTURE.md: the op
//! follows from which of `value` / `old_value` are present, the version is the
//! source's commit time (see [`crate::version`]), deletes become tombstones, promoted
//! fields are typed or the change is refused as a schema violation.

use serde::Serialize;

use crate::config::{ColumnType, PromotedColumn, RoutedPath};
use crate::hash::content_hash;
use crate::value::{fields_to_json_string, Document, Fields, Timestamp, Value};
use crate::version::{delete_version, is_source_read, Op, RowOrder, Version, MAX_CLOCK_SKEW_MICROS};

/// One document change as Eventarc reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentChange {
    /// The CloudEvent `id`: unique per change, repeated on redelivery.
    pub event_id: String,
    /// The CloudEvent `type`, e.g. `google.cloud.firestore.document.v1.written`.
    pub event_type: String,
    /// The CloudEvent `time`.
    pub event_time: Timestamp,
    /// Path relative to the documents root (`document` extension), e.g. `orgs/a/records/r1`.
    pub document: String,
    /// The document after the change; absent for a delete.
    pub value: Option<Document>,
    /// The document before the change; absent for a create.
    pub old_value: Option<Document>,
    pub update_mask: Vec<String>,
}

/// A promoted column's typed value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PromotedValue {
    String(String),
    Int64(i64),
    Float64(f64),
    Bool(bool),
    /// Microseconds since the epoch.
    Timestamp(i64),
    /// Days since 1970-01-01.
    Date(i32),
}

/// Who wrote a row, for the audit columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowContext {
    pub ingested_at: Timestamp,
    pub run_id: String,
    pub code_version: String,
}

/// One appended changelog row. The warehouse never updates or deletes one in place.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRow {
    /// The changelog table this row goes to (not a column).
    #[serde(skip)]
    pub table: String,
    pub tenant: String,
    pub collection: String,
    pub doc_id: String,
    pub doc_path: String,
    pub op: Op,
    pub is_deleted: bool,
    pub version: Version,
    pub event_id: String,
    /// `None` for tombstones.
    pub content_hash: Option<String>,
    /// Converge JSON of the fields (see [`crate::value`]); `None` for tombstones.
    pub data: Option<String>,
    /// One entry per promoted column of the route, in configuration order.
    pub promoted: Vec<Option<PromotedValue>>,
    pub ingested_at: i64,
    pub run_id: String,
    pub code_version: String,
    /// The document's own `update_time` (µs): for a tombstone, the deleted document's
    /// last one when the event carried it. Differs from `version` on rows read from the
    /// source, whose version is their read time.
    pub update_time: Option<Version>,
    /// The document's own `create_time` (µs); `None` when unknown (some tombstones).
    pub create_time: Option<Version>,
}

/// Why a change cannot become a row. Permanent: the event is quarantined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("field `{field}` (column `{column}`): expected {expected}, found {found}; fix the document or the route's promoted column type")]
    SchemaViolation { column: String, field: String, expected: &'static str, found: String },
    #[error("event names document `{event}` but its payload is for `{payload}`")]
    PathMismatch { event: String, payload: String },
    #[error("event dated {version_us} µs since the epoch, {ahead_us} µs after this function's clock (at most {max_us} allowed): a clock is wrong; the row would outrank every repair. Check the source's and the function's clocks, then replay the quarantined event")]
    FromTheFuture { version_us: Version, ahead_us: i64, max_us: i64 },
}

impl ChangeRow {
    /// The row for one change, or `None` when the event carries no state at all (the
    /// Firestore emulator fires such events for deletes of missing documents).
    pub fn from_change(routed: &RoutedPath<'_>, change: &DocumentChange, ctx: &RowContext) -> Result<Option<Self>, RowError> {
        for doc in change.value.iter().chain(change.old_value.iter()) {
            if doc.path != change.document {
                return Err(RowError::PathMismatch { event: change.document.clone(), payload: doc.path.clone() });
            }
        }
        let row = match (&change.value, &change.old_value) {
            (Some(doc), old) => {
                let op = if old.is_some() { Op::Update } else { Op::Create };
                Self::live(routed, op, doc, &change.event_id, ctx)?
            }
            (None, Some(old)) => {
                let mut row = Self::tombstone(routed, &change.document, Op::Delete, delete_version(change.event_time, Some(old.update_time)), &change.event_id, ctx);
                row.update_time = Some(old.update_time.as_micros());
                row.create_time = Some(old.create_time.as_micros());
                row
            }
            (None, None) if is_delete_type(&change.event_type) => {
                Self::tombstone(routed, &change.document, Op::Delete, delete_version(change.event_time, None), &change.event_id, ctx)
            }
            (None, None) => return Ok(None),
        };
        let ahead_us = row.version - ctx.ingested_at.as_micros();
        if ahead_us > MAX_CLOCK_SKEW_MICROS {
            return Err(RowError::FromTheFuture { version_us: row.version, ahead_us, max_us: MAX_CLOCK_SKEW_MICROS });
        }
        Ok(Some(row))
    }

    /// A row carrying a document's state from an event (a create or update), versioned
    /// at the document's `update_time`.
    pub fn live(routed: &RoutedPath<'_>, op: Op, doc: &Document, event_id: &str, ctx: &RowContext) -> Result<Self, RowError> {
        Self::live_at(routed, op, doc, doc.update_time.as_micros(), event_id, ctx)
    }

    /// A row carrying a document's state as read from the source at `read_time` (a
    /// rebuild or repair, `op`), versioned at the read (see [`crate::version`]).
    pub fn source_read(routed: &RoutedPath<'_>, op: Op, doc: &Document, read_time: Timestamp, ctx: &RowContext) -> Result<Self, RowError> {
        debug_assert!(is_source_read(op), "{op:?} is not a source read");
        let event_id = source_read_event_id(op, &doc.path, read_time, false);
        Self::live_at(routed, op, doc, read_time.as_micros(), &event_id, ctx)
    }

    /// A tombstone for a document that a source read at `read_time` proved absent (a
    /// rebuild or repair, `op`), versioned at the read.
    pub fn source_read_tombstone(routed: &RoutedPath<'_>, op: Op, doc_path: &str, read_time: Timestamp, ctx: &RowContext) -> Self {
        debug_assert!(is_source_read(op), "{op:?} is not a source read");
        let event_id = source_read_event_id(op, doc_path, read_time, true);
        Self::tombstone(routed, doc_path, op, read_time.as_micros(), &event_id, ctx)
    }

    fn live_at(routed: &RoutedPath<'_>, op: Op, doc: &Document, version: Version, event_id: &str, ctx: &RowContext) -> Result<Self, RowError> {
        let promoted = promote(&routed.route.promoted, &doc.fields)?;
        Ok(Self {
            table: routed.route.table.clone(),
            tenant: routed.tenant.clone(),
            collection: routed.collection.clone(),
            doc_id: routed.doc_id.clone(),
            doc_path: doc.path.clone(),
            op,
            is_deleted: false,
            version,
            event_id: event_id.to_owned(),
            content_hash: Some(content_hash(&doc.fields)),
            data: Some(fields_to_json_string(&doc.fields)),
            promoted,
            ingested_at: ctx.ingested_at.as_micros(),
            run_id: ctx.run_id.clone(),
            code_version: ctx.code_version.clone(),
            update_time: Some(doc.update_time.as_micros()),
            create_time: Some(doc.create_time.as_micros()),
        })
    }

    /// A tombstone: the document is gone as of `version`.
    pub fn tombstone(routed: &RoutedPath<'_>, doc_path: &str, op: Op, version: Version, event_id: &str, ctx: &RowContext) -> Self {
        Self {
            table: routed.route.table.clone(),
            tenant: routed.tenant.clone(),
            collection: routed.collection.clone(),
            doc_id: routed.doc_id.clone(),
            doc_path: doc_path.to_owned(),
            op,
            is_deleted: true,
            version,
            event_id: event_id.to_owned(),
            content_hash: None,
            data: None,
            promoted: vec![None; routed.route.promoted.len()],
            ingested_at: ctx.ingested_at.as_micros(),
            run_id: ctx.run_id.clone(),
            code_version: ctx.code_version.clone(),
            update_time: None,
            create_time: None,
        }
    }

    /// This row's place in its document's order (the one rule, [`crate::version`]).
    pub fn order(&self) -> RowOrder<'_> {
        RowOrder {
            version: self.version,
            source_read: is_source_read(self.op),
            is_deleted: self.is_deleted,
            content_hash: self.content_hash.as_deref(),
        }
    }

    /// The deterministic id of this row's sync error record.
    pub fn error_id(&self) -> String {
        error_id(&self.table, &self.tenant, &self.doc_id, self.op.action())
    }
}

/// The event id of a row read from the source: a function of what it writes (op,
/// document, read time, live or tombstone), so writing the same read twice stores one
/// row (DuckDB skips the copy; BigQuery's views pick either of two identical rows).
pub fn source_read_event_id(op: Op, doc_path: &str, read_time: Timestamp, tombstone: bool) -> String {
    format!("{}:{}:{}:{doc_path}", op.action(), read_time.as_micros(), if tombstone { "del" } else { "put" })
}

fn is_delete_type(event_type: &str) -> bool {
    event_type.starts_with("google.cloud.firestore.document.v1.deleted")
}

/// `{table}_{tenant}_{doc_id}_{action}`, each part with `%` and `_` percent-encoded
/// (`%25`, `%5F`): the same failure always lands on the same record, and two routes,
/// tenants or documents never share one (`a_b`+`c` and `a`+`b_c` stay apart). Stable
/// across versions: stores key records by it. Records written before the table was
/// part of the id (`{tenant}_{doc_id}_{action}`, unescaped) stay readable; the
/// reconciler finds records by their `doc_path` and resolves them all the same.
pub fn error_id(table: &str, tenant: &str, doc_id: &str, action: &str) -> String {
    let mut id = String::with_capacity(table.len() + tenant.len() + doc_id.len() + action.len() + 8);
    for (i, part) in [table, tenant, doc_id, action].into_iter().enumerate() {
        if i > 0 {
            id.push('_');
        }
        for c in part.chars() {
            match c {
                '%' => id.push_str("%25"),
                '_' => id.push_str("%5F"),
                c => id.push(c),
            }
        }
    }
    id
}

/// The winning row among a document's rows (the latest view's rule), if any.
pub fn winner<'a>(rows: impl IntoIterator<Item = &'a ChangeRow>) -> Option<&'a ChangeRow> {
    rows.into_iter().max_by(|a, b| a.order().cmp(&b.order()))
}

fn promote(columns: &[PromotedColumn], fields: &Fields) -> Result<Vec<Option<PromotedValue>>, RowError> {
    columns.iter().map(|column| promote_one(column, lookup(fields, &column.field))).collect()
}

pub(crate) fn lookup<'f>(fields: &'f Fields, path: &str) -> Option<&'f Value> {
    let mut parts = path.split('.');
    let mut current = fields.get(parts.next()?)?;
    for part in parts {
        match current {
            Value::Map(inner) => current = inner.get(part)?,
            _ => return None,
        }
    }
    Some(current)
}

pub(crate) fn promote_one(column: &PromotedColumn, value: Option<&Value>) -> Result<Option<PromotedValue>, RowError> {
    let Some(value) = value else { return Ok(None) };
    let converted = match (column.column_type, value) {
        (_, Value::Null) => return Ok(None),
        (ColumnType::String, Value::String(s)) => Some(PromotedValue::String(s.clone())),
        (ColumnType::Int64, Value::Integer(i)) => Some(PromotedValue::Int64(*i)),
        (ColumnType::Int64, Value::Double(d)) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(PromotedValue::Int64(*d as i64)),
        (ColumnType::Float64, Value::Double(d)) => Some(PromotedValue::Float64(*d)),
        // Firestore clients write whole numbers as integers even in money fields.
        (ColumnType::Float64, Value::Integer(i)) => Some(PromotedValue::Float64(*i as f64)),
        (ColumnType::Bool, Value::Boolean(b)) => Some(PromotedValue::Bool(*b)),
        (ColumnType::Timestamp, Value::Timestamp(ts)) => Some(PromotedValue::Timestamp(ts.as_micros())),
        (ColumnType::Date, Value::Timestamp(ts)) => Some(PromotedValue::Date(ts.seconds.div_euclid(86_400) as i32)),
        (ColumnType::Date, Value::String(s)) => {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(|d| PromotedValue::Date(days_since_epoch(d)))
        }
        _ => None,
    };
    converted.map(Some).ok_or_else(|| RowError::SchemaViolation {
        column: column.column.clone(),
        field: column.field.clone(),
        expected: column.column_type.name(),
        found: describe(value),
    })
}

fn days_since_epoch(date: chrono::NaiveDate) -> i32 {
    (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch is a date")).num_days() as i32
}

fn describe(value: &Value) -> String {
    let mut text = value.to_json().to_string();
    if text.len() > 60 {
        let cut = (0..=60).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    format!("{} {text}", value.type_name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MirrorConfig;
    use crate::value::fields_from_json;

    fn ctx() -> RowContext {
        RowContext { ingested_at: Timestamp::new(9_999, 0), run_id: "run".into(), code_version: "test".into() }
    }

    fn doc(path: &str, update_secs: i64, json: serde_json::Value) -> Document {
        Document {
            path: path.into(),
            fields: fields_from_json(&json).unwrap(),
            create_time: Timestamp::new(1, 0),
            update_time: Timestamp::new(update_secs, 0),
        }
    }

    fn change(id: &str, value: Option<Document>, old_value: Option<Document>, time: i64) -> DocumentChange {
        DocumentChange {
            event_id: id.into(),
            event_type: "google.cloud.firestore.document.v1.written".into(),
            event_time: Timestamp::new(time, 0),
            document: "orgs/t/records/d".into(),
            value,
            old_value,
            update_mask: vec![],
        }
    }

    #[test]
    fn ops_follow_the_payload() {
        let config = MirrorConfig::default();
        let routed = config.route("orgs/t/records/d").unwrap();
        let a = doc("orgs/t/records/d", 10, serde_json::json!({"amount": 5, "account": "A"}));
        let create = ChangeRow::from_change(&routed, &change("1", Some(a.clone()), None, 10), &ctx()).unwrap().unwrap();
        assert_eq!((create.op, create.version, create.is_deleted), (Op::Create, 10_000_000, false));
        assert_eq!(create.promoted[0], Some(PromotedValue::String("A".into())));
        assert_eq!(create.promoted[4], Some(PromotedValue::Float64(5.0)));
        let update = ChangeRow::from_change(&routed, &change("2", Some(a.clone()), Some(a.clone()), 10), &ctx()).unwrap().unwrap();
        assert_eq!(update.op, Op::Update);
        let delete = ChangeRow::from_change(&routed, &change("3", None, Some(a), 9), &ctx()).unwrap().unwrap();
        assert_eq!((delete.op, delete.version, delete.is_deleted, delete.data.as_deref()), (Op::Delete, 10_000_000, true, None));
        assert_eq!(delete.error_id(), "records_t_d_delete");
        assert_eq!(ChangeRow::from_change(&routed, &change("4", None, None, 9), &ctx()).unwrap(), None);
    }

    #[test]
    fn an_event_dated_past_the_skew_bound_is_refused() {
        let config = MirrorConfig::default();
        let routed = config.route("orgs/t/records/d").unwrap();
        // ctx() reads the clock at 9,999 s.
        let ahead = |secs| doc("orgs/t/records/d", secs, serde_json::json!({}));
        assert!(ChangeRow::from_change(&routed, &change("1", Some(ahead(10_059)), None, 10), &ctx()).is_ok());
        let err = ChangeRow::from_change(&routed, &change("2", Some(ahead(10_060)), None, 10), &ctx()).unwrap_err();
        assert!(matches!(err, RowError::FromTheFuture { ahead_us: 61_000_000, .. }), "{err:?}");
        // A delete's version counts too.
        let late_delete = change("3", None, Some(ahead(5)), 20_000);
        assert!(matches!(ChangeRow::from_change(&routed, &late_delete, &ctx()), Err(RowError::FromTheFuture { .. })));
    }

    #[test]
    fn source_reads_are_versioned_at_their_read_time_and_outrank_events_there() {
        let config = MirrorConfig::default();
        let routed = config.route("orgs/t/records/d").unwrap();
        let d = doc("orgs/t/records/d", 10, serde_json::json!({"amount": 1}));
        let read = Timestamp::new(50, 0);
        let repair = ChangeRow::source_read(&routed, Op::Repair, &d, read, &ctx()).unwrap();
        assert_eq!((repair.version, repair.update_time, repair.op), (50_000_000, Some(10_000_000), Op::Repair));
        assert_eq!(repair.event_id, "repair:50000000:put:orgs/t/records/d");
        let tombstone_event = ChangeRow::tombstone(&routed, "orgs/t/records/d", Op::Delete, 50_000_000, "e", &ctx());
        assert_eq!(winner([&tombstone_event, &repair]), Some(&repair));
        let rebuilt_absent = ChangeRow::source_read_tombstone(&routed, Op::Rebuild, "orgs/t/records/d", read, &ctx());
        assert_eq!((rebuilt_absent.is_deleted, rebuilt_absent.event_id.as_str()), (true, "rebuild:50000000:del:orgs/t/records/d"));
    }

    #[test]
    fn error_ids_keep_routes_tenants_and_documents_apart() {
        assert_eq!(error_id("records", "acme", "r1", "update"), "records_acme_r1_update");
        assert_ne!(error_id("records", "a_b", "c", "update"), error_id("records", "a", "b_c", "update"));
        assert_ne!(error_id("records", "acme", "r1", "update"), error_id("invoices", "acme", "r1", "update"));
        assert_eq!(error_id("daily_metrics", "a%b", "c_d", "delete"), "daily%5Fmetrics_a%25b_c%5Fd_delete");
    }

    #[test]
    fn a_wrong_promoted_type_is_a_schema_violation() {
        let config = MirrorConfig::default();
        let routed = config.route("orgs/t/records/d").unwrap();
        let bad = doc("orgs/t/records/d", 10, serde_json::json!({"amount": "twelve"}));
        let err = ChangeRow::from_change(&routed, &change("1", Some(bad), None, 10), &ctx()).unwrap_err();
        assert_eq!(err.to_string(), "field `amount` (column `amount`): expected float64, found string \"twelve\"; fix the document or the route's promoted column type");
    }

    #[test]
    fn dates_promote_from_timestamps_and_iso_strings() {
        let config = MirrorConfig::default();
        let routed = config.route("orgs/t/records/d").unwrap();
        let d1 = doc("orgs/t/records/d", 10, serde_json::json!({"date": {"$timestamp": "2024-03-01T23:59:59Z"}}));
        let d2 = doc("orgs/t/records/d", 10, serde_json::json!({"date": "2024-03-01"}));
        let r1 = ChangeRow::live(&routed, Op::Create, &d1, "e", &ctx()).unwrap();
        let r2 = ChangeRow::live(&routed, Op::Create, &d2, "e", &ctx()).unwrap();
        assert_eq!(r1.promoted[2], Some(PromotedValue::Date(19_783)));
        assert_eq!(r1.promoted[2], r2.promoted[2]);
    }

    #[test]
    fn a_payload_for_another_document_is_refused() {
        let config = MirrorConfig::default();
        let routed = config.route("orgs/t/records/d").unwrap();
        let other = doc("orgs/t/records/other", 10, serde_json::json!({}));
        assert!(matches!(
            ChangeRow::from_change(&routed, &change("1", Some(other), None, 10), &ctx()),
            Err(RowError::PathMismatch { .. })
        ));
    }
}
