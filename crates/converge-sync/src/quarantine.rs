//! Quarantine records: bad input kept with its raw payload and reason.

use axum::http::HeaderMap;
use converge_core::error_log::QUARANTINE_PAYLOAD_LIMIT;
use converge_core::{QuarantineReason, QuarantineRecord, Timestamp};
use sha2::{Digest, Sha256};

/// What arrived, as far as it could be read.
pub struct Arrival<'a> {
    pub headers: &'a HeaderMap,
    /// The body, or its first bytes when it was too large to read whole.
    pub body: &'a [u8],
    /// The full size of the body (declared, when it was not read).
    pub body_bytes: u64,
}

/// The record for one refused event. The id is derived from the event id and the
/// reason when there is an event id, so a redelivered bad event merges into the same
/// record; otherwise from a hash of what arrived.
pub fn record(
    arrival: &Arrival<'_>,
    reason: QuarantineReason,
    detail: String,
    event_id: Option<String>,
    event_type: Option<String>,
    now: Timestamp,
) -> QuarantineRecord {
    let mut hasher = Sha256::new();
    match &event_id {
        Some(id) => {
            hasher.update(b"event:");
            hasher.update(id.as_bytes());
            hasher.update(b":");
            hasher.update(reason.as_str().as_bytes());
        }
        None => {
            hasher.update(b"body:");
            hasher.update(arrival.body_bytes.to_be_bytes());
            hasher.update(arrival.body);
        }
    }
    let id = format!("q_{}", &hex::encode(hasher.finalize())[..32]);
    let headers: serde_json::Map<String, serde_json::Value> = arrival
        .headers
        .iter()
        // Credentials never go into a record anyone can read.
        .filter(|(name, _)| !matches!(name.as_str(), "authorization" | "x-serverless-authorization" | "cookie"))
        .map(|(name, value)| (name.as_str().to_owned(), serde_json::Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned())))
        .collect();
    let kept = arrival.body.len().min(QUARANTINE_PAYLOAD_LIMIT);
    QuarantineRecord {
        id,
        reason,
        detail,
        event_id,
        event_type,
        content_type: arrival.headers.get(axum::http::header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        headers_json: serde_json::Value::Object(headers).to_string(),
        payload: arrival.body[..kept].to_vec(),
        payload_bytes: arrival.body_bytes,
        received_at: now,
        attempts: 1,
        replays: 0,
        last_replay: None,
    }
}
