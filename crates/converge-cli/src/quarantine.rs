//! `converge quarantine list` and `converge quarantine replay`: the quarantined events of
//! a data directory's error log, each with its reason and what to do about it
//! (`converge_core::QuarantineReason::what_to_do`); and, after a fix (a route added, a
//! clock set right), the events re-submitted through the sync service in-process
//! (`converge_sync::SyncService::replay`, the path an Eventarc delivery takes), each
//! replay recorded on its record.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine as _;
use converge_backends::EmbeddedBackends;
use converge_core::{MirrorConfig, QuarantineReason, QuarantineRecord, QuarantineReplay, SystemClock, Warehouse};
use converge_sync::{GroupCommitConfig, SyncConfig, SyncService};
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
    /// False once a replay wrote the event (or found nothing to write), until it is
    /// refused again.
    pub open: bool,
    /// Times it was replayed.
    pub replays: u32,
    /// The last replay since it was last refused.
    pub last_replay: Option<Replay>,
}

/// One replay as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    pub replayed_at: String,
    /// `written`, `no_state`, `quarantined`, `error_recorded`, `unrecorded` or
    /// `not_replayable`.
    pub outcome: &'static str,
    pub detail: String,
}

impl From<QuarantineReplay> for Replay {
    fn from(replay: QuarantineReplay) -> Self {
        Self { replayed_at: replay.at.to_rfc3339(), outcome: replay.outcome.as_str(), detail: replay.detail }
    }
}

impl From<QuarantineRecord> for QuarantinedEvent {
    fn from(record: QuarantineRecord) -> Self {
        Self {
            open: record.is_open(),
            replays: record.replays,
            last_replay: record.last_replay.map(Replay::from),
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

/// The `limit` newest quarantined events of the data directory's error log: the open
/// ones, or with `all` those a replay settled too.
pub async fn list(data_dir: &Path, limit: usize, all: bool) -> anyhow::Result<Vec<QuarantinedEvent>> {
    let backends = open(data_dir)?;
    let records = backends.error_log().quarantined(if all { limit } else { usize::MAX }).await?;
    Ok(records.into_iter().filter(|record| all || record.is_open()).take(limit).map(QuarantinedEvent::from).collect())
}

fn open(data_dir: &Path) -> anyhow::Result<EmbeddedBackends> {
    if !EmbeddedBackends::source_path(data_dir).exists() {
        anyhow::bail!("no source store in {}; run `converge demo --data-dir {}` first, or pass the right --data-dir", data_dir.display(), data_dir.display());
    }
    EmbeddedBackends::open(data_dir, Arc::new(SystemClock)).with_context(|| format!("opening {}", data_dir.display()))
}

/// Which quarantined events to replay.
#[derive(Debug, Clone)]
pub enum ReplaySelection {
    /// This record, whatever its state (replaying a written event again writes nothing new).
    Id(String),
    /// Every open record, oldest first; of one reason only when given.
    Open { reason: Option<QuarantineReason> },
}

/// One replayed event as printed.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayedEvent {
    pub id: String,
    /// The reason it was quarantined for.
    pub reason: &'static str,
    pub event_id: Option<String>,
    pub outcome: &'static str,
    pub detail: String,
    /// Whether it still needs someone after this replay.
    pub open: bool,
    /// Times it has been replayed, this one included.
    pub replays: u32,
}

/// Re-submits the selected events through the sync service, in this process, over the
/// data directory's stores with `mirror` (so a route added since is used), and records
/// each replay on its record. `max_body_bytes` is the sync function's body limit.
pub async fn replay(data_dir: &Path, mirror: MirrorConfig, max_body_bytes: usize, selection: ReplaySelection) -> anyhow::Result<Vec<ReplayedEvent>> {
    let backends = open(data_dir)?;
    let errors = backends.error_log();
    let records = match &selection {
        ReplaySelection::Id(id) => match errors.quarantine_record(id).await? {
            Some(record) => vec![record],
            None => anyhow::bail!(
                "no quarantine record {id:?} in {}: expected an id as `converge quarantine list --all --data-dir {}` prints it",
                data_dir.display(),
                data_dir.display()
            ),
        },
        ReplaySelection::Open { reason } => {
            let mut records: Vec<QuarantineRecord> =
                errors.quarantined(usize::MAX).await?.into_iter().filter(|r| r.is_open() && reason.is_none_or(|reason| r.reason == reason)).collect();
            records.reverse();
            records
        }
    };
    if records.is_empty() {
        return Ok(Vec::new());
    }
    backends.warehouse.ensure_tables(&mirror).await?;
    let service = SyncService::start(SyncConfig {
        mirror,
        warehouse: backends.warehouse(),
        errors,
        clock: Arc::new(SystemClock),
        run_id: format!("replay-{}", uuid::Uuid::new_v4()),
        max_body_bytes,
        commit: GroupCommitConfig::default(),
    });
    let mut replayed = Vec::with_capacity(records.len());
    for record in records {
        let replay = service.replay(&record).await.with_context(|| format!("recording the replay of quarantine record {}", record.id))?;
        replayed.push(ReplayedEvent {
            open: !replay.outcome.settles(),
            outcome: replay.outcome.as_str(),
            detail: replay.detail,
            id: record.id,
            reason: record.reason.as_str(),
            event_id: record.event_id,
            replays: record.replays + 1,
        });
    }
    Ok(replayed)
}

/// One line per replayed event, then a count per outcome.
pub fn render_replayed(events: &[ReplayedEvent]) -> String {
    let mut out = String::new();
    if events.is_empty() {
        out.push_str("No quarantined event to replay.\n");
        return out;
    }
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for event in events {
        *counts.entry(event.outcome).or_default() += 1;
        let _ = writeln!(out, "{}  {} -> {}  (event {})\n  {}", event.id, event.reason, event.outcome, event.event_id.as_deref().unwrap_or("without id"), event.detail);
    }
    let summary: Vec<String> = counts.iter().map(|(outcome, n)| format!("{n} {outcome}")).collect();
    let open = events.iter().filter(|e| e.open).count();
    let _ = writeln!(out, "replayed {}: {}; {open} still open", events.len(), summary.join(", "));
    out
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
        if let Some(replay) = &event.last_replay {
            let state = if event.open { "still open" } else { "settled" };
            let _ = writeln!(out, "  replayed {} time(s), last at {}: {} ({state}): {}", event.replays, replay.replayed_at, replay.outcome, replay.detail);
        }
    }
    out
}
