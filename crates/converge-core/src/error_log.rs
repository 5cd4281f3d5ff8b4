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

    /// Stores a quarantine record, merging by id (attempts incremented).
    async fn quarantine(&self, record: QuarantineRecord) -> Result<(), StoreError>;

    /// The most recent quarantine records, newest first.
    async fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError>;
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
    fn every_reason_reads_back_from_its_text() {
        for reason in QuarantineReason::ALL {
            assert_eq!(QuarantineReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(QuarantineReason::parse("nonsense"), None);
    }
}
