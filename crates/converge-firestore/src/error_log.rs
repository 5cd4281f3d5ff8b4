//! The error log and the quarantine as Firestore collections, next to the source
//! data (collection names from [`FirestoreConfig`](crate::FirestoreConfig), by
//! default `sync_errors` and `quarantine`).
//!
//! Records hold what the SQLite store's tables hold, one field per column. Times are
//! Firestore timestamps (readable in the console, ordered by the service) plus a
//! `*_nanos` integer with the exact fraction: Firestore keeps timestamps to the
//! microsecond, and a record must read back exactly as it was written.
//!
//! # Merging without a transaction
//!
//! Recording a failure is two single-write commits with preconditions, no
//! read-modify-write and so nothing to retry on contention:
//!
//! 1. *create*: the whole record, on condition that the document does not exist;
//! 2. if it does: *merge*: the latest event, error and time, `resolved = false`, and
//!    `attempts` incremented by a server-side transform, on condition that it exists.
//!
//! Concurrent records of one failure each land exactly once on one document (the
//! service serializes the commits; an increment never loses a count). A record
//! deleted between the two steps sends the loop back to step 1.

use async_trait::async_trait;
use converge_core::{ErrorLog, QuarantineReason, QuarantineRecord, QuarantineReplay, ReplayOutcome, StoreError, SyncErrorRecord, Timestamp, Value};
use firestore::gcloud_sdk::google::firestore::v1 as pb;
use firestore::gcloud_sdk::tonic::Code;
use pb::structured_query::{field_filter, filter::FilterType, CollectionSelector, Direction, FieldFilter, FieldReference, Filter, Order};
use std::collections::HashMap;

use crate::convert::{self, record_doc_id, timestamp_to_proto, value_to_proto};
use crate::error::FirestoreError;
use crate::source::{FirestoreSource, Inner};

/// The fields of a quarantine record's last replay, removed when the event is refused
/// again (a merge naming them without values), so the record is open again.
const LAST_REPLAY_FIELDS: [&str; 4] = ["replayed_at", "replayed_at_nanos", "replay_outcome", "replay_detail"];

/// Rounds of create-then-merge before giving up (only a record deleted and
/// recreated over and over by someone else gets there).
pub(crate) const MAX_MERGE_ROUNDS: u32 = 16;

/// What [`Inner::create_or_merge`] writes into a document that exists already.
pub(crate) struct Merge {
    pub(crate) fields: HashMap<String, pb::Value>,
    /// The fields replaced (a field in the mask but not in `fields` is removed).
    pub(crate) mask: Vec<String>,
    /// A counter incremented by each merge (`attempts`).
    pub(crate) increment: Option<&'static str>,
}

impl Merge {
    /// Merges every field of `fields` and counts the attempt.
    fn counting_attempts(fields: HashMap<String, pb::Value>) -> Self {
        let mut mask: Vec<String> = fields.keys().cloned().collect();
        mask.sort();
        Self { fields, mask, increment: Some("attempts") }
    }
}

/// Which step of [`Inner::create_or_merge`] stored the document.
pub(crate) enum Stored {
    Created,
    Merged,
}

impl Inner {
    fn record_name(&self, collection: &str, id: &str) -> Result<String, FirestoreError> {
        Ok(format!("{}/{collection}/{}", self.paths.documents, record_doc_id(id)?))
    }

    /// Creates the document `name` with `create` (precondition: it does not exist), or
    /// else merges `merge.fields` into it, the fields named by `merge.mask` (precondition:
    /// it exists), incrementing `merge.increment` when named; a document deleted or created
    /// between the two steps sends the loop round again. Used by every record that must
    /// merge into one document however often it is written (sync errors, quarantine,
    /// opportunities).
    pub(crate) async fn create_or_merge(
        &self,
        operation: &'static str,
        id: &str,
        name: String,
        create: HashMap<String, pb::Value>,
        merge: Merge,
    ) -> Result<Stored, FirestoreError> {
        use pb::document_transform::field_transform::TransformType;
        use pb::document_transform::FieldTransform;
        use pb::precondition::ConditionType;
        for _ in 0..MAX_MERGE_ROUNDS {
            let write = pb::Write {
                update_mask: None,
                update_transforms: Vec::new(),
                current_document: Some(pb::Precondition { condition_type: Some(ConditionType::Exists(false)) }),
                operation: Some(pb::write::Operation::Update(document(name.clone(), create.clone()))),
            };
            match self.commit(vec![write]).await {
                Ok(_) => return Ok(Stored::Created),
                Err(e) if matches!(e.code(), Some(Code::AlreadyExists | Code::FailedPrecondition)) => {}
                Err(e) => return Err(e),
            }
            let write = pb::Write {
                update_mask: Some(pb::DocumentMask { field_paths: merge.mask.clone() }),
                update_transforms: merge
                    .increment
                    .map(|field| FieldTransform {
                        field_path: field.into(),
                        transform_type: Some(TransformType::Increment(value_to_proto(&Value::Integer(1)))),
                    })
                    .into_iter()
                    .collect(),
                current_document: Some(pb::Precondition { condition_type: Some(ConditionType::Exists(true)) }),
                operation: Some(pb::write::Operation::Update(document(name.clone(), merge.fields.clone()))),
            };
            match self.commit(vec![write]).await {
                Ok(_) => return Ok(Stored::Merged),
                // Deleted since step 1: create it again.
                Err(e) if matches!(e.code(), Some(Code::NotFound | Code::FailedPrecondition)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(FirestoreError::Contention { operation, id: id.to_owned(), attempts: MAX_MERGE_ROUNDS })
    }

    /// Every document `query` (over a top-level collection) matches.
    pub(crate) async fn query_all(&self, query: pb::StructuredQuery) -> Result<Vec<pb::Document>, FirestoreError> {
        Ok(self.read_with_retry(|| self.run_query(self.paths.documents.clone(), query.clone(), None)).await?.0)
    }
}

pub(crate) fn document(name: String, fields: HashMap<String, pb::Value>) -> pb::Document {
    pb::Document { name, fields, create_time: None, update_time: None }
}

pub(crate) fn string(s: &str) -> pb::Value {
    value_to_proto(&Value::String(s.to_owned()))
}

fn integer(i: i64) -> pb::Value {
    value_to_proto(&Value::Integer(i))
}

fn boolean(b: bool) -> pb::Value {
    value_to_proto(&Value::Boolean(b))
}

/// A time as its two fields: `{name}` (timestamp) and `{name}_nanos` (exact fraction).
pub(crate) fn put_time(fields: &mut HashMap<String, pb::Value>, name: &str, ts: Timestamp) {
    fields.insert(name.to_owned(), pb::Value { value_type: Some(pb::value::ValueType::TimestampValue(timestamp_to_proto(ts))) });
    fields.insert(format!("{name}_nanos"), integer(i64::from(ts.nanos)));
}

fn collection_query(collection: &str) -> pb::StructuredQuery {
    pb::StructuredQuery { from: vec![CollectionSelector { collection_id: collection.to_owned(), all_descendants: false }], ..Default::default() }
}

pub(crate) fn equals(field: &str, value: pb::Value) -> Filter {
    Filter {
        filter_type: Some(FilterType::FieldFilter(FieldFilter {
            field: Some(FieldReference { field_path: field.to_owned() }),
            op: field_filter::Operator::Equal as i32,
            value: Some(value),
        })),
    }
}

/// Reads the fields of a stored record, naming the record and field in errors.
pub(crate) struct RecordReader {
    what: &'static str,
    name: String,
    pub(crate) fields: HashMap<String, pb::Value>,
}

impl RecordReader {
    pub(crate) fn new(what: &'static str, doc: pb::Document) -> Self {
        Self { what, name: doc.name, fields: doc.fields }
    }

    pub(crate) fn corrupt(&self, field: &str, expected: &str) -> FirestoreError {
        let found = match self.fields.get(field).and_then(|v| convert::value_from_proto(v.clone(), field).ok()) {
            Some(value) => value.type_name(),
            None => "nothing",
        };
        FirestoreError::CorruptRecord { what: self.what, detail: format!("`{}` field `{field}`: expected {expected}, found {found}", self.name) }
    }

    pub(crate) fn take(&mut self, field: &str) -> Option<pb::value::ValueType> {
        self.fields.remove(field).and_then(|v| v.value_type)
    }

    pub(crate) fn string(&mut self, field: &str) -> Result<String, FirestoreError> {
        match self.take(field) {
            Some(pb::value::ValueType::StringValue(s)) => Ok(s),
            _ => Err(self.corrupt(field, "a string")),
        }
    }

    pub(crate) fn optional_string(&mut self, field: &str) -> Result<Option<String>, FirestoreError> {
        match self.take(field) {
            Some(pb::value::ValueType::StringValue(s)) => Ok(Some(s)),
            None | Some(pb::value::ValueType::NullValue(_)) => Ok(None),
            Some(_) => Err(self.corrupt(field, "a string or null")),
        }
    }

    fn integer(&mut self, field: &str) -> Result<i64, FirestoreError> {
        match self.take(field) {
            Some(pb::value::ValueType::IntegerValue(i)) => Ok(i),
            _ => Err(self.corrupt(field, "an integer")),
        }
    }

    fn boolean(&mut self, field: &str) -> Result<bool, FirestoreError> {
        match self.take(field) {
            Some(pb::value::ValueType::BooleanValue(b)) => Ok(b),
            _ => Err(self.corrupt(field, "a boolean")),
        }
    }

    fn bytes(&mut self, field: &str) -> Result<Vec<u8>, FirestoreError> {
        match self.take(field) {
            Some(pb::value::ValueType::BytesValue(b)) => Ok(b),
            _ => Err(self.corrupt(field, "bytes")),
        }
    }

    fn attempts(&mut self) -> Result<u32, FirestoreError> {
        let n = self.integer("attempts")?;
        u32::try_from(n).map_err(|_| self.corrupt("attempts", "a count that fits in 32 bits"))
    }

    pub(crate) fn time(&mut self, field: &str) -> Result<Timestamp, FirestoreError> {
        let seconds = match self.take(field) {
            Some(pb::value::ValueType::TimestampValue(ts)) => convert::timestamp_from_proto(&ts),
            _ => return Err(self.corrupt(field, "a timestamp")),
        };
        let nanos_field = format!("{field}_nanos");
        let nanos = match self.take(&nanos_field) {
            Some(pb::value::ValueType::IntegerValue(n)) if (0..1_000_000_000).contains(&n) => n as i32,
            // Written by someone else: the timestamp's own fraction.
            None => seconds.nanos,
            Some(_) => return Err(self.corrupt(&nanos_field, "nanoseconds 0..1e9")),
        };
        Ok(Timestamp::new(seconds.seconds, nanos))
    }
}

fn sync_error_from_doc(doc: pb::Document) -> Result<SyncErrorRecord, FirestoreError> {
    let mut r = RecordReader::new("sync error record", doc);
    Ok(SyncErrorRecord {
        id: r.string("id")?,
        tenant: r.string("tenant")?,
        doc_id: r.string("doc_id")?,
        doc_path: r.string("doc_path")?,
        action: r.string("action")?,
        event_id: r.string("event_id")?,
        error: r.string("error")?,
        attempts: r.attempts()?,
        first_seen: r.time("first_seen")?,
        last_seen: r.time("last_seen")?,
        resolved: r.boolean("resolved")?,
    })
}

fn quarantine_from_doc(doc: pb::Document) -> Result<QuarantineRecord, FirestoreError> {
    let mut r = RecordReader::new("quarantine record", doc);
    let reason_text = r.string("reason")?;
    let reason = QuarantineReason::parse(&reason_text).ok_or_else(|| FirestoreError::CorruptRecord {
        what: "quarantine record",
        detail: format!("`{}` field `reason`: expected one of the quarantine reasons, found `{reason_text}`", r.name),
    })?;
    Ok(QuarantineRecord {
        id: r.string("id")?,
        reason,
        detail: r.string("detail")?,
        event_id: r.optional_string("event_id")?,
        event_type: r.optional_string("event_type")?,
        content_type: r.optional_string("content_type")?,
        headers_json: r.string("headers_json")?,
        payload: r.bytes("payload")?,
        payload_bytes: u64::try_from(r.integer("payload_bytes")?).unwrap_or(0),
        received_at: r.time("received_at")?,
        attempts: r.attempts()?,
        replays: replays(&mut r)?,
        last_replay: last_replay(&mut r)?,
    })
}

/// `replays`; absent on records written before replays existed.
fn replays(r: &mut RecordReader) -> Result<u32, FirestoreError> {
    match r.take("replays") {
        None => Ok(0),
        Some(pb::value::ValueType::IntegerValue(n)) => u32::try_from(n).map_err(|_| r.corrupt("replays", "a count that fits in 32 bits")),
        Some(_) => Err(r.corrupt("replays", "an integer")),
    }
}

fn last_replay(r: &mut RecordReader) -> Result<Option<QuarantineReplay>, FirestoreError> {
    if !r.fields.contains_key("replayed_at") {
        return Ok(None);
    }
    let at = r.time("replayed_at")?;
    let text = r.string("replay_outcome")?;
    let outcome = ReplayOutcome::parse(&text).ok_or_else(|| FirestoreError::CorruptRecord {
        what: "quarantine record",
        detail: format!("`{}` field `replay_outcome`: expected one of the replay outcomes, found `{text}`", r.name),
    })?;
    let detail = r.optional_string("replay_detail")?.unwrap_or_default();
    Ok(Some(QuarantineReplay { at, outcome, detail }))
}

fn optional_string(value: &Option<String>) -> pb::Value {
    match value {
        Some(s) => string(s),
        None => value_to_proto(&Value::Null),
    }
}

#[async_trait]
impl ErrorLog for FirestoreSource {
    async fn record_sync_error(&self, record: SyncErrorRecord) -> Result<(), StoreError> {
        let inner = &self.inner;
        let name = inner.record_name(&inner.config.sync_errors_collection, &record.id)?;
        // On a repeat: one more attempt, the latest error and event, still the first
        // first_seen, and open again even if it had been resolved.
        let mut merge = HashMap::new();
        merge.insert("event_id".to_owned(), string(&record.event_id));
        merge.insert("error".to_owned(), string(&record.error));
        put_time(&mut merge, "last_seen", record.last_seen);
        merge.insert("resolved".to_owned(), boolean(false));
        let mut create = merge.clone();
        create.insert("id".to_owned(), string(&record.id));
        create.insert("tenant".to_owned(), string(&record.tenant));
        create.insert("doc_id".to_owned(), string(&record.doc_id));
        create.insert("doc_path".to_owned(), string(&record.doc_path));
        create.insert("action".to_owned(), string(&record.action));
        create.insert("attempts".to_owned(), integer(i64::from(record.attempts.max(1))));
        put_time(&mut create, "first_seen", record.first_seen);
        inner.create_or_merge("record_sync_error", &record.id, name, create, Merge::counting_attempts(merge)).await?;
        Ok(())
    }

    async fn open_sync_errors(&self, tenant: Option<&str>) -> Result<Vec<SyncErrorRecord>, StoreError> {
        let inner = &self.inner;
        let collection = &inner.config.sync_errors_collection;
        let mut query = collection_query(collection);
        let open = equals("resolved", boolean(false));
        // Equality filters only: served by Firestore's single-field indexes, no
        // composite index to deploy.
        query.r#where = Some(match tenant {
            None => open,
            Some(tenant) => Filter {
                filter_type: Some(FilterType::CompositeFilter(pb::structured_query::CompositeFilter {
                    op: pb::structured_query::composite_filter::Operator::And as i32,
                    filters: vec![open, equals("tenant", string(tenant))],
                })),
            },
        });
        let docs = inner.query_all(query).await?;
        let mut records = docs.into_iter().map(sync_error_from_doc).collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    async fn resolve_sync_error(&self, id: &str) -> Result<bool, StoreError> {
        use pb::precondition::ConditionType;
        let inner = &self.inner;
        let name = inner.record_name(&inner.config.sync_errors_collection, id)?;
        for _ in 0..MAX_MERGE_ROUNDS {
            let Some(doc) = inner.read_with_retry(|| inner.get_by_name(name.clone())).await? else { return Ok(false) };
            let open = matches!(doc.fields.get("resolved").and_then(|v| v.value_type.as_ref()), Some(pb::value::ValueType::BooleanValue(false)));
            if !open {
                return Ok(false);
            }
            let Some(update_time) = doc.update_time else {
                return Err(FirestoreError::MissingInResponse { operation: "GetDocument", what: "update_time" }.into());
            };
            // Only if nobody wrote it since we read it open.
            let write = pb::Write {
                update_mask: Some(pb::DocumentMask { field_paths: vec!["resolved".into()] }),
                update_transforms: Vec::new(),
                current_document: Some(pb::Precondition { condition_type: Some(ConditionType::UpdateTime(update_time)) }),
                operation: Some(pb::write::Operation::Update(document(name.clone(), HashMap::from([("resolved".to_owned(), boolean(true))])))),
            };
            match inner.commit(vec![write]).await {
                Ok(_) => return Ok(true),
                Err(e) if matches!(e.code(), Some(Code::FailedPrecondition | Code::NotFound | Code::Aborted)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(FirestoreError::Contention { operation: "resolve_sync_error", id: id.to_owned(), attempts: MAX_MERGE_ROUNDS }.into())
    }

    async fn quarantine(&self, record: QuarantineRecord) -> Result<(), StoreError> {
        let inner = &self.inner;
        let name = inner.record_name(&inner.config.quarantine_collection, &record.id)?;
        // Same id = same event refused again: count the attempt and keep the latest
        // explanation and arrival; optional facts only replace known ones.
        let mut merge = HashMap::new();
        merge.insert("reason".to_owned(), string(record.reason.as_str()));
        merge.insert("detail".to_owned(), string(&record.detail));
        merge.insert("headers_json".to_owned(), string(&record.headers_json));
        merge.insert("payload".to_owned(), value_to_proto(&Value::Bytes(record.payload.clone())));
        merge.insert("payload_bytes".to_owned(), integer(i64::try_from(record.payload_bytes).unwrap_or(i64::MAX)));
        put_time(&mut merge, "received_at", record.received_at);
        let mut create = merge.clone();
        for (field, value) in [("event_id", &record.event_id), ("event_type", &record.event_type), ("content_type", &record.content_type)] {
            if value.is_some() {
                merge.insert(field.to_owned(), optional_string(value));
            }
            create.insert(field.to_owned(), optional_string(value));
        }
        create.insert("id".to_owned(), string(&record.id));
        create.insert("attempts".to_owned(), integer(i64::from(record.attempts.max(1))));
        create.insert("replays".to_owned(), integer(0));
        // Refused again: the last replay's fields go (the count of replays stays).
        let mut merge = Merge::counting_attempts(merge);
        merge.mask.extend(LAST_REPLAY_FIELDS.map(str::to_owned));
        merge.mask.sort();
        inner.create_or_merge("quarantine", &record.id, name, create, merge).await?;
        Ok(())
    }

    async fn quarantine_record(&self, id: &str) -> Result<Option<QuarantineRecord>, StoreError> {
        let inner = &self.inner;
        let name = inner.record_name(&inner.config.quarantine_collection, id)?;
        match inner.read_with_retry(|| inner.get_by_name(name.clone())).await? {
            Some(doc) => Ok(Some(quarantine_from_doc(doc)?)),
            None => Ok(None),
        }
    }

    async fn record_replay(&self, id: &str, replay: QuarantineReplay) -> Result<bool, StoreError> {
        use pb::document_transform::field_transform::TransformType;
        use pb::document_transform::FieldTransform;
        use pb::precondition::ConditionType;
        let inner = &self.inner;
        let name = inner.record_name(&inner.config.quarantine_collection, id)?;
        let mut fields = HashMap::new();
        put_time(&mut fields, "replayed_at", replay.at);
        fields.insert("replay_outcome".to_owned(), string(replay.outcome.as_str()));
        fields.insert("replay_detail".to_owned(), string(&replay.detail));
        // One write, on condition that the record exists: the last replay set and the
        // count incremented by a server-side transform (concurrent replays each count).
        let write = pb::Write {
            update_mask: Some(pb::DocumentMask { field_paths: LAST_REPLAY_FIELDS.map(str::to_owned).to_vec() }),
            update_transforms: vec![FieldTransform {
                field_path: "replays".into(),
                transform_type: Some(TransformType::Increment(value_to_proto(&Value::Integer(1)))),
            }],
            current_document: Some(pb::Precondition { condition_type: Some(ConditionType::Exists(true)) }),
            operation: Some(pb::write::Operation::Update(document(name, fields))),
        };
        match inner.commit(vec![write]).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.code(), Some(Code::NotFound | Code::FailedPrecondition)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let collection = &inner.config.quarantine_collection;
        let mut query = collection_query(collection);
        query.order_by =
            vec![Order { field: Some(FieldReference { field_path: "received_at".into() }), direction: Direction::Descending as i32 }];
        query.limit = Some(i32::try_from(limit).unwrap_or(i32::MAX));
        let docs = inner.query_all(query).await?;
        let mut records = docs.into_iter().map(quarantine_from_doc).collect::<Result<Vec<_>, _>>()?;
        // Firestore orders by the microsecond; the exact time, then the id, as SQLite.
        records.sort_by(|a, b| b.received_at.cmp(&a.received_at).then_with(|| a.id.cmp(&b.id)));
        Ok(records)
    }
}
