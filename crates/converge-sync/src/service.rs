//! [`SyncService`]: the whole decision for one event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use base64::Engine as _;
use axum::http::{header, HeaderMap};
use converge_core::{
    ChangeRow, Clock, ErrorLog, MirrorConfig, QuarantineReason, RowContext, RowError, StoreError, SyncErrorRecord, Warehouse,
};
use http_body_util::BodyExt;

use crate::group_commit::{GroupCommitConfig, GroupCommitter};
use crate::quarantine::{self, Arrival};

/// What became of one event. The router maps each to one HTTP status.
#[derive(Debug, Clone)]
pub enum SyncOutcome {
    /// The row is durable in the warehouse (or was already: a redelivery).
    Written,
    /// The event carries no document state (the Firestore emulator sends these for a
    /// delete of a missing document): nothing to mirror.
    NoState,
    /// Bad input, kept in quarantine; redelivering it cannot help.
    Quarantined { record_id: String, reason: QuarantineReason, detail: String },
    /// The append failed and the failure is recorded in `sync_errors/{error_id}`.
    /// A retryable failure asks for redelivery; a permanent one is acknowledged and
    /// left to the reconciler, which sees the record.
    ErrorRecorded { error_id: String, error: StoreError },
    /// Neither the row nor a record of the failure could be stored: ask for redelivery.
    Unrecorded { error: StoreError },
}

/// Counters since start, for logs, the demo and benchmarks.
#[derive(Debug, Default)]
pub struct SyncCounters {
    pub received: AtomicU64,
    pub written: AtomicU64,
    pub no_state: AtomicU64,
    pub quarantined: AtomicU64,
    pub errors_recorded: AtomicU64,
    pub unrecorded: AtomicU64,
}

pub struct SyncService {
    config: Arc<MirrorConfig>,
    committer: GroupCommitter,
    pub(crate) errors: Arc<dyn ErrorLog>,
    pub(crate) clock: Arc<dyn Clock>,
    code_version: String,
    /// This process's run id: on every log line and, extended per append, every row.
    run_id: String,
    max_body_bytes: usize,
    counters: SyncCounters,
    /// This minute's throughput and lag (`crate::minutes`), written each minute by the
    /// recorder [`SyncService::start`] spawns.
    minutes: Arc<crate::minutes::SyncMinutes>,
    recorder: tokio::task::JoinHandle<()>,
}

impl Drop for SyncService {
    fn drop(&mut self) {
        self.recorder.abort();
    }
}

/// What a [`SyncService`] is built from (see [`SyncService::start`]).
pub struct SyncConfig {
    /// Which documents are mirrored to which table, with which promoted columns.
    pub mirror: MirrorConfig,
    pub warehouse: Arc<dyn Warehouse>,
    /// Where failure and quarantine records go: next to the source data, so a failing
    /// warehouse cannot swallow the record of its own failure.
    pub errors: Arc<dyn ErrorLog>,
    pub clock: Arc<dyn Clock>,
    /// This process's run id: on every log line and, extended per append, every row.
    pub run_id: String,
    /// Largest event body read; a larger one is quarantined as `oversized`.
    pub max_body_bytes: usize,
    pub commit: GroupCommitConfig,
}

impl SyncService {
    /// Builds the service and starts its group-commit writer on the current runtime.
    pub fn start(config: SyncConfig) -> Self {
        let SyncConfig { mirror, warehouse, errors, clock, run_id, max_body_bytes, commit } = config;
        let minutes = Arc::new(crate::minutes::SyncMinutes::default());
        let recorder = crate::minutes::spawn_recorder(minutes.clone(), warehouse.clone(), clock.clone(), run_id.clone());
        Self {
            config: Arc::new(mirror),
            committer: GroupCommitter::start(warehouse, commit, run_id.clone()),
            minutes,
            recorder,
            run_id,
            errors,
            clock,
            code_version: converge_core::CODE_VERSION.to_owned(),
            max_body_bytes,
            counters: SyncCounters::default(),
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn counters(&self) -> &SyncCounters {
        &self.counters
    }

    pub fn committer(&self) -> &GroupCommitter {
        &self.committer
    }

    /// Reads the body (refusing more than the limit) and handles the event.
    pub async fn handle(&self, headers: &HeaderMap, body: Body) -> SyncOutcome {
        match self.read_body(headers, body).await {
            Ok(bytes) => self.handle_bytes(headers, bytes).await,
            Err(outcome) => outcome,
        }
    }

    /// Handles a delivery from the Firestore emulator's Eventarc trigger support,
    /// which differs from real Eventarc in one way that matters here: its
    /// `application/protobuf` body is the base64 text of `DocumentEventData`, not the
    /// raw bytes. (Its other quirks, whole-second `ce-time`, empty `update_mask` and
    /// events without any document, are within what the Eventarc route accepts.)
    /// Only the separate local route calls this; the Eventarc route stays strict.
    pub async fn handle_emulator_delivery(&self, headers: &HeaderMap, body: Body) -> SyncOutcome {
        let text = match self.read_body(headers, body).await {
            Ok(bytes) => bytes,
            Err(outcome) => return outcome,
        };
        let trimmed: Vec<u8> = text.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        match base64::engine::general_purpose::STANDARD.decode(&trimmed) {
            Ok(raw) => self.handle_bytes(headers, raw).await,
            Err(error) => {
                let arrival = Arrival { headers, body: &text, body_bytes: text.len() as u64 };
                let detail = format!(
                    "the emulator route expects the base64 text of a DocumentEventData protobuf, as the Firestore emulator sends it; \
                     this body is not base64 ({error}); real Eventarc deliveries go to POST /"
                );
                let event_id = header_text(headers, "ce-id");
                let event_type = header_text(headers, "ce-type");
                self.quarantine(&arrival, QuarantineReason::Malformed, detail, event_id, event_type).await
            }
        }
    }

    /// The body, read up to the size limit; an oversized or broken body has already
    /// been answered (quarantined, or left for redelivery).
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, SyncOutcome> {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if let Some(size) = declared.filter(|size| *size > self.max_body_bytes as u64) {
            // Not read at all: the record keeps the headers and the declared size.
            let arrival = Arrival { headers, body: &[], body_bytes: size };
            return Err(self.quarantine(&arrival, QuarantineReason::Oversized, self.oversized_detail(size), None, None).await);
        }
        match read_limited(body, self.max_body_bytes).await {
            Ok(bytes) => Ok(bytes),
            Err(ReadError::TooLarge { prefix, read }) => {
                let arrival = Arrival { headers, body: &prefix, body_bytes: read };
                Err(self.quarantine(&arrival, QuarantineReason::Oversized, self.oversized_detail(read), None, None).await)
            }
            Err(ReadError::Broken(error)) => {
                // The sender hung up mid-body: nothing arrived to quarantine, and the
                // platform will redeliver.
                Err(SyncOutcome::Unrecorded { error: StoreError::retryable("http", format!("request body could not be read: {error}")) })
            }
        }
    }

    fn oversized_detail(&self, size: u64) -> String {
        format!(
            "request body of {size} bytes exceeds the limit of {} bytes (setting {}); a Firestore event is at most a few MiB",
            self.max_body_bytes,
            converge_function_env_max_body()
        )
    }

    /// Handles an event whose body has been read.
    pub async fn handle_bytes(&self, headers: &HeaderMap, body: Vec<u8>) -> SyncOutcome {
        let change = match converge_events::decode(headers, &body) {
            Ok(change) => change,
            Err(error) => {
                let arrival = Arrival { headers, body: &body, body_bytes: body.len() as u64 };
                let reason = error.reason();
                return self.quarantine(&arrival, reason, error.to_string(), error.event_id, error.event_type).await;
            }
        };
        let Some(routed) = self.config.route(&change.document) else {
            let patterns: Vec<&str> = self.config.routes.iter().map(|r| r.pattern.as_str()).collect();
            let detail = format!(
                "document `{}` matches no route (configured patterns: {}); add a [[route]] to the mirror configuration or narrow the Eventarc trigger",
                change.document,
                patterns.join(", ")
            );
            let arrival = Arrival { headers, body: &body, body_bytes: body.len() as u64 };
            return self.quarantine(&arrival, QuarantineReason::Unroutable, detail, Some(change.event_id), Some(change.event_type)).await;
        };
        let context = RowContext { ingested_at: self.clock.now(), run_id: String::new(), code_version: self.code_version.clone() };
        let row = match ChangeRow::from_change(&routed, &change, &context) {
            Ok(Some(row)) => row,
            Ok(None) => {
                self.counters.no_state.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(run_id = self.run_id, event_id = change.event_id, document = change.document, "event without document state; nothing to mirror");
                return SyncOutcome::NoState;
            }
            Err(error) => {
                let reason = match error {
                    RowError::SchemaViolation { .. } => QuarantineReason::SchemaViolation,
                    RowError::PathMismatch { .. } => QuarantineReason::Malformed,
                    RowError::FromTheFuture { .. } => QuarantineReason::FromTheFuture,
                };
                let arrival = Arrival { headers, body: &body, body_bytes: body.len() as u64 };
                return self.quarantine(&arrival, reason, error.to_string(), Some(change.event_id), Some(change.event_type)).await;
            }
        };
        let op = row.op;
        let committed_at = row.version;
        // Made again only if its group commit must be split (see `GroupCommitter::commit`).
        let again = || match ChangeRow::from_change(&routed, &change, &context) {
            Ok(Some(row)) => Ok(row),
            _ => Err(StoreError::permanent("sync", "the change no longer makes the row it made a moment ago")),
        };
        match self.committer.commit(row, again).await {
            Ok(()) => {
                self.counters.written.fetch_add(1, Ordering::Relaxed);
                let lag_micros = self.clock.now().as_micros().saturating_sub(committed_at).max(0);
                self.minutes.written((lag_micros / 1000) as u64);
                SyncOutcome::Written
            }
            Err(error) => {
                // Built only on failure: the common path allocates none of it.
                let failed = converge_core::error_log::FailedWrite {
                    table: &routed.route.table,
                    tenant: &routed.tenant,
                    doc_id: &routed.doc_id,
                    doc_path: &change.document,
                    op,
                    event_id: &change.event_id,
                };
                let record = failed.record(&error, 1, context.ingested_at);
                self.record_failure(record, error).await
            }
        }
    }

    async fn record_failure(&self, record: SyncErrorRecord, error: StoreError) -> SyncOutcome {
        let error_id = record.id.clone();
        match self.errors.record_sync_error(record).await {
            Ok(()) => {
                self.counters.errors_recorded.fetch_add(1, Ordering::Relaxed);
                self.minutes.error();
                tracing::warn!(run_id = self.run_id, error_id, %error, retryable = error.is_retryable(), "sync failed; error recorded");
                SyncOutcome::ErrorRecorded { error_id, error }
            }
            Err(record_error) => {
                self.counters.unrecorded.fetch_add(1, Ordering::Relaxed);
                tracing::error!(run_id = self.run_id, error_id, %error, %record_error, "sync failed and its error record could not be stored");
                SyncOutcome::Unrecorded { error }
            }
        }
    }

    async fn quarantine(
        &self,
        arrival: &Arrival<'_>,
        reason: QuarantineReason,
        detail: String,
        event_id: Option<String>,
        event_type: Option<String>,
    ) -> SyncOutcome {
        let record = quarantine::record(arrival, reason, detail.clone(), event_id, event_type, self.clock.now());
        let record_id = record.id.clone();
        match self.errors.quarantine(record).await {
            Ok(()) => {
                self.counters.quarantined.fetch_add(1, Ordering::Relaxed);
                self.minutes.quarantined();
                tracing::warn!(run_id = self.run_id, record_id, reason = reason.as_str(), detail, "event quarantined");
                SyncOutcome::Quarantined { record_id, reason, detail }
            }
            Err(error) => {
                // Nothing may be lost: without its record the event must come back.
                self.counters.unrecorded.fetch_add(1, Ordering::Relaxed);
                tracing::error!(run_id = self.run_id, %error, reason = reason.as_str(), detail, "quarantine record could not be stored");
                SyncOutcome::Unrecorded { error }
            }
        }
    }
}

fn converge_function_env_max_body() -> &'static str {
    converge_function::env::MAX_BODY_BYTES
}

enum ReadError {
    TooLarge { prefix: Vec<u8>, read: u64 },
    Broken(axum::Error),
}

/// Reads at most `limit` bytes. Past the limit it stops reading and keeps what it has
/// (for the quarantine record) instead of buffering an arbitrarily large body.
async fn read_limited(mut body: Body, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut buffer = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                let read = (buffer.len() + data.len()) as u64;
                buffer.extend_from_slice(&data[..data.len().min(converge_core::error_log::QUARANTINE_PAYLOAD_LIMIT.saturating_sub(buffer.len()))]);
                buffer.truncate(converge_core::error_log::QUARANTINE_PAYLOAD_LIMIT);
                return Err(ReadError::TooLarge { prefix: buffer, read });
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}
