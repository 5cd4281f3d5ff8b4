//! Replaying a quarantined event after a fix (`converge quarantine replay`): its
//! stored headers and body re-submitted through [`SyncService::handle`], the path an
//! Eventarc delivery takes, and what became of it recorded on its record
//! (`ErrorLog::record_replay`).
//!
//! A replay is a redelivery: the event keeps its id, so a replay of an event already
//! written stores no second row (DuckDB skips an event id it stored recently; either
//! way the latest view is a function of the set of rows, ARCHITECTURE.md "The ordering
//! rule"), and a replay older than the document's current state loses to it.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use converge_core::{ErrorKind, QuarantineRecord, QuarantineReplay, ReplayOutcome, StoreError};

use crate::service::{SyncOutcome, SyncService};

impl SyncService {
    /// Re-submits the event `record` holds and records the replay on it. A record that
    /// does not hold the whole event is not re-submitted: its replay is recorded as
    /// `not_replayable`, saying why. Errs only when the replay cannot be recorded (or the
    /// record is gone).
    pub async fn replay(&self, record: &QuarantineRecord) -> Result<QuarantineReplay, StoreError> {
        let (outcome, detail) = match record.replayable().and_then(|()| headers_of(record)) {
            Err(why) => (ReplayOutcome::NotReplayable, format!("not replayable: {why}")),
            Ok(headers) => describe(record, self.handle(&headers, Body::from(record.payload.clone())).await),
        };
        // After the handling: a refusal merged into this record is dated before it.
        let replay = QuarantineReplay { at: self.clock.now(), outcome, detail };
        tracing::info!(run_id = self.run_id(), record_id = record.id, outcome = %replay.outcome, detail = replay.detail, "quarantined event replayed");
        if !self.errors.record_replay(&record.id, replay.clone()).await? {
            return Err(StoreError::new(
                ErrorKind::NotFound,
                "quarantine",
                format!("quarantine record {} was deleted while it was replayed ({}: {}); nothing else changed", record.id, replay.outcome, replay.detail),
            ));
        }
        Ok(replay)
    }
}

/// The request headers as they arrived, with the body's length as it is replayed.
fn headers_of(record: &QuarantineRecord) -> Result<HeaderMap, String> {
    let stored: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&record.headers_json).map_err(|e| format!("its headers are not a JSON object ({e}): {}", record.headers_json))?;
    let mut headers = HeaderMap::new();
    for (name, value) in stored {
        let text = value.as_str().ok_or_else(|| format!("header `{name}` is stored as {value}, not as text"))?;
        let name = HeaderName::try_from(name.as_str()).map_err(|e| format!("header name `{name}` is not valid ({e})"))?;
        let value = HeaderValue::from_str(text).map_err(|e| format!("header `{name}` value {text:?} is not valid ({e})"))?;
        headers.insert(name, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(record.payload.len()));
    Ok(headers)
}

fn describe(record: &QuarantineRecord, outcome: SyncOutcome) -> (ReplayOutcome, String) {
    match outcome {
        SyncOutcome::Written => (ReplayOutcome::Written, "written: the event's row is in the warehouse (a row stored under its event id before stays one)".into()),
        SyncOutcome::NoState => (ReplayOutcome::NoState, "the event carries no document state: nothing to mirror".into()),
        SyncOutcome::Quarantined { record_id, reason, detail } => {
            let which = if record_id == record.id { "this record".to_owned() } else { format!("quarantine record {record_id}") };
            (ReplayOutcome::Quarantined, format!("refused again as {}: {detail} ({which}); {}", reason.as_str(), reason.what_to_do()))
        }
        SyncOutcome::ErrorRecorded { error_id, error } => (
            ReplayOutcome::ErrorRecorded,
            format!("decoded and routed, but the append failed: {error}; recorded as sync_errors/{error_id}: `converge retry-errors` writes the document once the warehouse takes it"),
        ),
        SyncOutcome::Unrecorded { error } => {
            (ReplayOutcome::Unrecorded, format!("neither the row nor a record of its failure could be stored: {error}; replay it again"))
        }
    }
}
