//! The error log: failures are data. The records a failed sync (`sync_errors`) or a
//! bad event (`quarantine`) leaves behind, how they are made ([`FailedWrite`]), and the
//! [`ErrorLog`] that stores them next to the source.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::change::{error_id, ChangeRow};
use crate::version::Op;
use crate::error::StoreError;
use crate::value::Timestamp;

/// `sync_errors/{table}_{tenant}_{doc_id}_{action}`: a change that could not be written.
/// Recording the same failure again merges into the same record and increments
/// `attempts`; it never creates a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncErrorRecord {
    pub id: String,
    pub tenant: String,
    pub doc_id: String,
    pub doc_path: String,
    pub action: String,
    /// The last event that failed.
    pub event_id: String,
    /// The last error, as text.
    pub error: String,
    pub attempts: u32,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub resolved: bool,
}

/// The change a failed write was for: what names its `sync_errors` record. The one
/// place a record is made, for the sync function's failed events and the reconciler's
/// failed repairs alike.
#[derive(Debug, Clone, Copy)]
pub struct FailedWrite<'a> {
    pub table: &'a str,
    pub tenant: &'a str,
    pub doc_id: &'a str,
    pub doc_path: &'a str,
    pub op: Op,
    pub event_id: &'a str,
}

impl<'a> FailedWrite<'a> {
    /// The failed write of `row`.
    pub fn of_row(row: &'a ChangeRow) -> Self {
        Self { table: &row.table, tenant: &row.tenant, doc_id: &row.doc_id, doc_path: &row.doc_path, op: row.op, event_id: &row.event_id }
    }

    /// Its open record after `attempts` attempts, the last failing with `error` at
    /// `at`. Stores merge it into an existing record of the same id.
    pub fn record(&self, error: &impl std::fmt::Display, attempts: u32, at: Timestamp) -> SyncErrorRecord {
        SyncErrorRecord {
            id: error_id(self.table, self.tenant, self.doc_id, self.op.action()),
            tenant: self.tenant.to_owned(),
            doc_id: self.doc_id.to_owned(),
            doc_path: self.doc_path.to_owned(),
            action: self.op.action().to_owned(),
            event_id: self.event_id.to_owned(),
            error: error.to_string(),
            attempts,
            first_seen: at,
            last_seen: at,
            resolved: false,
        }
    }
}

/// Why an event was quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineReason {
    /// Not a CloudEvent, or a CloudEvent whose data cannot be decoded.
    Malformed,
    /// A content type Converge does not read.
    UnsupportedContentType,
    /// Not a Firestore document event.
    UnknownEventType,
    /// A document path that no route matches.
    Unroutable,
    /// A promoted field of the wrong type.
    SchemaViolation,
    /// A body over the size limit.
    Oversized,
    /// Dated further past the function's clock than the skew bound
    /// (`converge_core::version::MAX_CLOCK_SKEW_MICROS`): a wrong clock.
    FromTheFuture,
}

impl QuarantineReason {
    pub const ALL: [QuarantineReason; 7] = [
        QuarantineReason::Malformed,
        QuarantineReason::UnsupportedContentType,
        QuarantineReason::UnknownEventType,
        QuarantineReason::Unroutable,
        QuarantineReason::SchemaViolation,
        QuarantineReason::Oversized,
        QuarantineReason::FromTheFuture,
    ];

    /// The reason named by [`Self::as_str`]'s text, as stores keep it.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineReason::Malformed => "malformed",
            QuarantineReason::UnsupportedContentType => "unsupported_content_type",
            QuarantineReason::UnknownEventType => "unknown_event_type",
            QuarantineReason::Unroutable => "unroutable",
            QuarantineReason::SchemaViolation => "schema_violation",
            QuarantineReason::Oversized => "oversized",
            QuarantineReason::FromTheFuture => "from_the_future",
        }
    }

    /// What a person can do about an event quarantined for this reason. The document
    /// itself is still in the source: where it can be mirrored, the next reconcile (or
    /// `converge retry-errors` for recorded failures) writes its current state.
    pub fn what_to_do(self) -> &'static str {
        match self {
            QuarantineReason::Malformed => {
                "The body is not a Firestore document event Converge can decode (see the detail): check the Eventarc trigger's event type and data format (application/protobuf) and anything between it and the function. The document is still in the source; the next reconcile mirrors it."
            }
            QuarantineReason::UnsupportedContentType => {
                "Eventarc sends Firestore events as application/protobuf (application/json is read too): check the trigger and any proxy in between. The next reconcile mirrors the document."
            }
            QuarantineReason::UnknownEventType => {
                "Only google.cloud.firestore.document.v1 events are read: narrow the trigger's event filter to those. Nothing was lost."
            }
            QuarantineReason::Unroutable => {
                "No route of the mirror configuration matches the document's path: if it should be mirrored, add a route (CONVERGE_CONFIG) and run `converge setup`, then `converge reconcile`; if not, narrow the trigger's path pattern."
            }
            QuarantineReason::SchemaViolation => {
                "A promoted field has a type its column does not take: fix the document in the source, or the column's type in the mirror configuration; the next reconcile mirrors it once it fits."
            }
            QuarantineReason::Oversized => {
                "The body is over the function's size limit: the document is read from the source instead by the next reconcile (`converge reconcile`)."
            }
            QuarantineReason::FromTheFuture => {
                "The event is dated over a minute past the function's clock: a clock is wrong (the sender's or the function's host). Check time synchronisation; the next reconcile mirrors the document's current state."
            }
        }
    }
}

/// Bad input kept with its raw payload and the reason it was refused. Keyed by the
/// event id when there is one (a redelivery lands on the same record) and otherwise
/// by a hash of what arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    pub id: String,
    pub reason: QuarantineReason,
    /// The full explanation given to the sender.
    pub detail: String,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    /// The request headers, as JSON object text.
    pub headers_json: String,
    /// The body as received, up to [`QUARANTINE_PAYLOAD_LIMIT`] bytes.
    pub payload: Vec<u8>,
    /// The full size of the body (declared size for bodies too large to read).
    pub payload_bytes: u64,
    pub received_at: Timestamp,
    pub attempts: u32,
    /// Times the event was replayed (`converge quarantine replay`); never reset.
    pub replays: u32,
    /// The last replay since the event was last refused: a fresh refusal (a redelivery,
    /// or a replay quarantined again into this record) clears it.
    pub last_replay: Option<QuarantineReplay>,
}

/// What became of one replay of a quarantined event, re-submitted through the sync
/// service as Eventarc would deliver it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayOutcome {
    /// The row is in the warehouse (or was already: a replay is a redelivery).
    Written,
    /// The event carries no document state: nothing to mirror.
    NoState,
    /// Refused again; the detail names the reason and the quarantine record.
    Quarantined,
    /// The append failed and a `sync_errors` record says so: the error log's retry
    /// (`converge retry-errors`) or the next reconcile writes the document.
    ErrorRecorded,
    /// Neither the row nor a record of its failure could be stored: replay it again.
    Unrecorded,
    /// The record does not hold the whole event (see [`QuarantineRecord::replayable`]).
    NotReplayable,
}

impl ReplayOutcome {
    pub const ALL: [ReplayOutcome; 6] = [
        ReplayOutcome::Written,
        ReplayOutcome::NoState,
        ReplayOutcome::Quarantined,
        ReplayOutcome::ErrorRecorded,
        ReplayOutcome::Unrecorded,
        ReplayOutcome::NotReplayable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReplayOutcome::Written => "written",
            ReplayOutcome::NoState => "no_state",
            ReplayOutcome::Quarantined => "quarantined",
            ReplayOutcome::ErrorRecorded => "error_recorded",
            ReplayOutcome::Unrecorded => "unrecorded",
            ReplayOutcome::NotReplayable => "not_replayable",
        }
    }

    /// The outcome named by [`Self::as_str`]'s text, as stores keep it.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|outcome| outcome.as_str() == text)
    }

    /// Whether the event needs nothing more: it was written, or there was nothing to write.
    pub fn settles(self) -> bool {
        matches!(self, ReplayOutcome::Written | ReplayOutcome::NoState)
    }
}

impl std::fmt::Display for ReplayOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One replay of a quarantined event, as recorded on its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineReplay {
    pub at: Timestamp,
    pub outcome: ReplayOutcome,
    /// What happened, in words: the new reason and record, the error record, or why the
    /// event could not be replayed.
    pub detail: String,
}

/// The `event_type` of a raw record the ETL quarantined (not an event: a document the
/// ETL read; the next ETL run reads it again).
pub const RAW_RECORD_TYPE: &str = "converge.etl.raw_record";

impl QuarantineRecord {
    /// Whether the record still needs someone: never replayed since it was last
    /// refused, or its last replay did not settle it.
    pub fn is_open(&self) -> bool {
        self.last_replay.as_ref().is_none_or(|replay| !replay.outcome.settles())
    }

    /// Whether the record holds the whole event, so that it can be re-submitted as it
    /// arrived; otherwise why not and what to do instead.
    pub fn replayable(&self) -> Result<(), String> {
        if self.event_type.as_deref() == Some(RAW_RECORD_TYPE) {
            return Err("not an event but a raw record the ETL refused: fix the document in the source; the next ETL run reads it again".into());
        }
        if self.reason == QuarantineReason::Oversized {
            return Err(format!(
                "the body ({} bytes) was over the function's size limit and was not read whole: the document is read from the source instead by `converge reconcile`",
                self.payload_bytes
            ));
        }
        if self.payload.len() as u64 != self.payload_bytes {
            return Err(format!(
                "the body was {} bytes and the record keeps only its first {} (the limit is {QUARANTINE_PAYLOAD_LIMIT}): the document is read from the source instead by `converge reconcile`",
                self.payload_bytes,
                self.payload.len()
            ));
        }
        if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&self.headers_json).is_err() {
            return Err(format!("its headers are not a JSON object of the request's headers: {}", self.headers_json));
        }
        Ok(())
    }
}

/// How much of a bad body a quarantine record keeps. The record always holds the
/// full size; a larger body is kept only in part (Firestore documents hold 1 MiB).
pub const QUARANTINE_PAYLOAD_LIMIT: usize = 256 * 1024;


/// Where failures are recorded: next to the source data, so that a failing warehouse
/// cannot also swallow the record of its failure.
#[async_trait]
pub trait ErrorLog: Send + Sync + 'static {
    /// Creates or merges `sync_errors/{id}`: attempts incremented, last error kept,
    /// `resolved` cleared.
    async fn record_sync_error(&self, record: SyncErrorRecord) -> Result<(), StoreError>;

    /// Open (unresolved) sync errors, optionally of one tenant.
    async fn open_sync_errors(&self, tenant: Option<&str>) -> Result<Vec<SyncErrorRecord>, StoreError>;

    /// Marks `sync_errors/{id}` resolved (its change finally landed, or a repair made
    /// it so). Returns whether it was open.
    async fn resolve_sync_error(&self, id: &str) -> Result<bool, StoreError>;

    /// Stores a quarantine record, merging by id (attempts incremented, `last_replay`
    /// cleared: a fresh refusal reopens a settled record; `replays` kept).
    async fn quarantine(&self, record: QuarantineRecord) -> Result<(), StoreError>;

    /// The most recent quarantine records, newest first.
    async fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError>;

    /// The quarantine record `id`, if there is one.
    async fn quarantine_record(&self, id: &str) -> Result<Option<QuarantineRecord>, StoreError>;

    /// Records a replay of `quarantine/{id}`: `last_replay` set, `replays` incremented,
    /// nothing else changed. Returns whether the record exists.
    async fn record_replay(&self, id: &str, replay: QuarantineReplay) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quarantine_reason_says_what_to_do() {
        let hints: std::collections::BTreeSet<&str> = QuarantineReason::ALL.into_iter().map(QuarantineReason::what_to_do).collect();
        assert_eq!(hints.len(), QuarantineReason::ALL.len(), "one distinct hint per reason");
        assert!(hints.iter().all(|hint| hint.len() > 40), "{hints:?}");
    }

    #[test]
    fn every_replay_outcome_reads_back_from_its_text_and_only_a_write_or_no_state_settles() {
        for outcome in ReplayOutcome::ALL {
            assert_eq!(ReplayOutcome::parse(outcome.as_str()), Some(outcome));
            assert_eq!(outcome.settles(), matches!(outcome, ReplayOutcome::Written | ReplayOutcome::NoState));
        }
        assert_eq!(ReplayOutcome::parse("nonsense"), None);
    }

    fn record(reason: QuarantineReason, payload: usize, payload_bytes: u64) -> QuarantineRecord {
        QuarantineRecord {
            id: "q".into(),
            reason,
            detail: String::new(),
            event_id: Some("e".into()),
            event_type: Some("google.cloud.firestore.document.v1.written".into()),
            content_type: Some("application/protobuf".into()),
            headers_json: r#"{"ce-id":"e"}"#.into(),
            payload: vec![1; payload],
            payload_bytes,
            received_at: Timestamp::new(1, 0),
            attempts: 1,
            replays: 0,
            last_replay: None,
        }
    }

    #[test]
    fn only_a_record_holding_the_whole_event_is_replayable_and_the_refusal_says_why() {
        assert_eq!(record(QuarantineReason::Unroutable, 10, 10).replayable(), Ok(()));
        let truncated = record(QuarantineReason::Malformed, QUARANTINE_PAYLOAD_LIMIT, 300 * 1024).replayable().unwrap_err();
        assert!(truncated.contains("307200 bytes") && truncated.contains("first 262144"), "{truncated}");
        assert!(record(QuarantineReason::Oversized, 10, 10).replayable().unwrap_err().contains("size limit"));
        let raw = QuarantineRecord { event_type: Some(RAW_RECORD_TYPE.into()), ..record(QuarantineReason::SchemaViolation, 2, 2) };
        assert!(raw.replayable().unwrap_err().contains("ETL"));
        let headers = QuarantineRecord { headers_json: "[]".into(), ..record(QuarantineReason::Unroutable, 2, 2) };
        assert!(headers.replayable().unwrap_err().contains("headers"));
    }

    #[test]
    fn a_record_is_open_until_a_replay_settles_it() {
        let mut record = record(QuarantineReason::Unroutable, 2, 2);
        assert!(record.is_open());
        for (outcome, open) in [(ReplayOutcome::Quarantined, true), (ReplayOutcome::ErrorRecorded, true), (ReplayOutcome::Written, false), (ReplayOutcome::NoState, false)] {
            record.last_replay = Some(QuarantineReplay { at: Timestamp::new(2, 0), outcome, detail: String::new() });
            assert_eq!(record.is_open(), open, "{outcome}");
        }
    }

    #[test]
    fn every_reason_reads_back_from_its_text() {
        for reason in QuarantineReason::ALL {
            assert_eq!(QuarantineReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(QuarantineReason::parse("nonsense"), None);
    }
}
