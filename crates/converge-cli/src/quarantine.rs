//! `converge quarantine list`: the newest quarantined events of a data directory's
//! error log, each with its reason and what to do about it
//! (`converge_core::QuarantineReason::what_to_do`).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine as _;
use converge_backends::EmbeddedBackends;
use converge_core::{QuarantineRecord, SystemClock};
use serde::Serialize;

/// One quarantined event as printed: the stored record, its payload as base64, and
/// what to do about its reason.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantinedEvent {
    pub id: String,
    pub reason: &'static str,
    pub what_to_do: &'static str,
    pub detail: String,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    pub received_at: String,
    pub attempts: u32,
    /// The full size of the body; `payload_base64` holds at most its first 256 KiB.
    pub payload_bytes: u64,
    pub payload_base64: String,
    /// The request headers, as received.
    pub headers: serde_json::Value,
}

impl From<QuarantineRecord> for QuarantinedEvent {
    fn from(record: QuarantineRecord) -> Self {
        Self {
            id: record.id,
            reason: record.reason.as_str(),
            what_to_do: record.reason.what_to_do(),
            detail: record.detail,
            event_id: record.event_id,
            event_type: record.event_type,
            content_type: record.content_type,
            received_at: record.received_at.to_rfc3339(),
            attempts: record.attempts,
            payload_bytes: record.payload_bytes,
            payload_base64: base64::engine::general_purpose::STANDARD.encode(&record.payload),
            headers: serde_json::from_str(&record.headers_json).unwrap_or(serde_json::Value::String(record.headers_json)),
        }
    }
}

/// The `limit` newest quarantined events of the data directory's error log.
pub async fn list(data_dir: &Path, limit: usize) -> anyhow::Result<Vec<QuarantinedEvent>> {
    if !EmbeddedBackends::source_path(data_dir).exists() {
        anyhow::bail!("no source store in {}; run `converge demo --data-dir {}` first, or pass the right --data-dir", data_dir.display(), data_dir.display());
    }
    let backends = EmbeddedBackends::open(data_dir, Arc::new(SystemClock)).with_context(|| format!("opening {}", data_dir.display()))?;
    let records = backends.error_log().quarantined(limit).await?;
    Ok(records.into_iter().map(QuarantinedEvent::from).collect())
}

/// One block per event, newest first.
pub fn render(events: &[QuarantinedEvent]) -> String {
    let mut out = String::new();
    if events.is_empty() {
        out.push_str("No quarantined events.\n");
        return out;
    }
    for event in events {
        let _ = writeln!(
            out,
            "{}  {}  {}  (event {}, {} bytes, {} attempt(s))\n  {}\n  what to do: {}",
            event.received_at,
            event.reason,
            event.id,
            event.event_id.as_deref().unwrap_or("without id"),
            event.payload_bytes,
            event.attempts,
            event.detail,
            event.what_to_do
        );
    }
    out
}
