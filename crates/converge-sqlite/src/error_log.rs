//! The error log and the quarantine, in the same database as the source data.
//!
//! Both merge by id in a single upsert statement, so two concurrent records of
//! the same failure cannot create two rows or lose an attempt.
//!
//! A quarantine record's replays (`converge quarantine replay`) are columns added to
//! the table by [`ensure_schema`] (older databases gain them at open): `replays`, and
//! the last replay's time, outcome and detail, NULL until there is one.

use async_trait::async_trait;
use converge_core::{ErrorLog, QuarantineReason, QuarantineRecord, QuarantineReplay, ReplayOutcome, StoreError, SyncErrorRecord, Timestamp};
use rusqlite::{params, Connection, Row};

use crate::error::SqliteError;
use crate::SqliteStore;

const SYNC_ERROR_COLUMNS: &str =
    "id, tenant, doc_id, doc_path, action, event_id, error, attempts, first_seen_s, first_seen_ns, last_seen_s, last_seen_ns, resolved";

const QUARANTINE_COLUMNS: &str = "id, reason, detail, event_id, event_type, content_type, headers_json, payload, payload_bytes, \
     received_at_s, received_at_ns, attempts";

/// What [`quarantine_from_row`] reads: the stored columns, then the replay columns.
const QUARANTINE_READ_COLUMNS: &str = "id, reason, detail, event_id, event_type, content_type, headers_json, payload, payload_bytes, \
     received_at_s, received_at_ns, attempts, replays, replayed_at_s, replayed_at_ns, replay_outcome, replay_detail";

/// The replay columns of `quarantine`, added when missing (not versioned: older
/// databases gain them too).
const REPLAY_COLUMNS: [(&str, &str); 5] = [
    ("replays", "INTEGER NOT NULL DEFAULT 0"),
    ("replayed_at_s", "INTEGER"),
    ("replayed_at_ns", "INTEGER"),
    ("replay_outcome", "TEXT"),
    ("replay_detail", "TEXT"),
];

pub(crate) fn ensure_schema(conn: &Connection) -> Result<(), SqliteError> {
    crate::schema::add_missing_columns(conn, "quarantine", &REPLAY_COLUMNS)
}

#[async_trait]
impl ErrorLog for SqliteStore {
    async fn record_sync_error(&self, record: SyncErrorRecord) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            let writer = inner.writer();
            // On a repeat: one more attempt, the latest error and event, still the
            // first first_seen, and open again even if it had been resolved.
            let mut stmt = writer.conn.prepare_cached(&format!(
                "INSERT INTO sync_errors ({SYNC_ERROR_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0) \
                 ON CONFLICT (id) DO UPDATE SET \
                     attempts = attempts + 1, event_id = excluded.event_id, error = excluded.error, \
                     last_seen_s = excluded.last_seen_s, last_seen_ns = excluded.last_seen_ns, resolved = 0"
            ))?;
            stmt.execute(params![
                record.id,
                record.tenant,
                record.doc_id,
                record.doc_path,
                record.action,
                record.event_id,
                record.error,
                record.attempts.max(1),
                record.first_seen.seconds,
                record.first_seen.nanos,
                record.last_seen.seconds,
                record.last_seen.nanos,
            ])?;
            Ok(())
        })
        .await
    }

    async fn open_sync_errors(&self, tenant: Option<&str>) -> Result<Vec<SyncErrorRecord>, StoreError> {
        let tenant = tenant.map(str::to_owned);
        self.blocking(move |inner| {
            inner.with_reader(|conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {SYNC_ERROR_COLUMNS} FROM sync_errors WHERE resolved = 0 AND (?1 IS NULL OR tenant = ?1) ORDER BY id"
                ))?;
                let rows = stmt.query_map([tenant], sync_error_from_row)?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
        })
        .await
    }

    async fn quarantine(&self, record: QuarantineRecord) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            let writer = inner.writer();
            // Same id = same event refused again: count the attempt and keep the
            // latest explanation and arrival; refused since its last replay, it is open
            // again (the count of replays stays).
            let mut stmt = writer.conn.prepare_cached(&format!(
                "INSERT INTO quarantine ({QUARANTINE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                 ON CONFLICT (id) DO UPDATE SET \
                     attempts = attempts + 1, reason = excluded.reason, detail = excluded.detail, \
                     event_id = coalesce(excluded.event_id, event_id), event_type = coalesce(excluded.event_type, event_type), \
                     content_type = coalesce(excluded.content_type, content_type), headers_json = excluded.headers_json, \
                     payload = excluded.payload, payload_bytes = excluded.payload_bytes, \
                     received_at_s = excluded.received_at_s, received_at_ns = excluded.received_at_ns, \
                     replayed_at_s = NULL, replayed_at_ns = NULL, replay_outcome = NULL, replay_detail = NULL"
            ))?;
            stmt.execute(params![
                record.id,
                record.reason.as_str(),
                record.detail,
                record.event_id,
                record.event_type,
                record.content_type,
                record.headers_json,
                record.payload,
                i64::try_from(record.payload_bytes).unwrap_or(i64::MAX),
                record.received_at.seconds,
                record.received_at.nanos,
                record.attempts.max(1),
            ])?;
            Ok(())
        })
        .await
    }

    async fn quarantined(&self, limit: usize) -> Result<Vec<QuarantineRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.blocking(move |inner| {
            inner.with_reader(|conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {QUARANTINE_READ_COLUMNS} FROM quarantine ORDER BY received_at_s DESC, received_at_ns DESC, id LIMIT ?1"
                ))?;
                let mut rows = stmt.query([limit])?;
                let mut records = Vec::new();
                while let Some(row) = rows.next()? {
                    records.push(quarantine_from_row(row)?);
                }
                Ok(records)
            })
        })
        .await
    }

    async fn quarantine_record(&self, id: &str) -> Result<Option<QuarantineRecord>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            inner.with_reader(|conn| {
                let mut stmt = conn.prepare_cached(&format!("SELECT {QUARANTINE_READ_COLUMNS} FROM quarantine WHERE id = ?1"))?;
                let mut rows = stmt.query([id])?;
                match rows.next()? {
                    Some(row) => Ok(Some(quarantine_from_row(row)?)),
                    None => Ok(None),
                }
            })
        })
        .await
    }

    async fn record_replay(&self, id: &str, replay: QuarantineReplay) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            let writer = inner.writer();
            let changed = writer.conn.execute(
                "UPDATE quarantine SET replays = replays + 1, replayed_at_s = ?2, replayed_at_ns = ?3, replay_outcome = ?4, replay_detail = ?5 \
                 WHERE id = ?1",
                params![id, replay.at.seconds, replay.at.nanos, replay.outcome.as_str(), replay.detail],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    async fn resolve_sync_error(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            let writer = inner.writer();
            let changed = writer.conn.execute("UPDATE sync_errors SET resolved = 1 WHERE id = ?1 AND resolved = 0", [id])?;
            Ok(changed > 0)
        })
        .await
    }
}

fn sync_error_from_row(row: &Row<'_>) -> rusqlite::Result<SyncErrorRecord> {
    Ok(SyncErrorRecord {
        id: row.get(0)?,
        tenant: row.get(1)?,
        doc_id: row.get(2)?,
        doc_path: row.get(3)?,
        action: row.get(4)?,
        event_id: row.get(5)?,
        error: row.get(6)?,
        attempts: row.get(7)?,
        first_seen: Timestamp::new(row.get(8)?, row.get(9)?),
        last_seen: Timestamp::new(row.get(10)?, row.get(11)?),
        resolved: row.get(12)?,
    })
}

fn quarantine_from_row(row: &Row<'_>) -> Result<QuarantineRecord, SqliteError> {
    let reason: String = row.get(1)?;
    Ok(QuarantineRecord {
        id: row.get(0)?,
        reason: QuarantineReason::parse(&reason).ok_or(SqliteError::CorruptRow { what: "quarantine reason", value: reason })?,
        detail: row.get(2)?,
        event_id: row.get(3)?,
        event_type: row.get(4)?,
        content_type: row.get(5)?,
        headers_json: row.get(6)?,
        payload: row.get(7)?,
        payload_bytes: crate::outbox::non_negative(row.get(8)?),
        received_at: Timestamp::new(row.get(9)?, row.get(10)?),
        attempts: row.get(11)?,
        replays: row.get(12)?,
        last_replay: replay_from_row(row)?,
    })
}

fn replay_from_row(row: &Row<'_>) -> Result<Option<QuarantineReplay>, SqliteError> {
    let (seconds, nanos, outcome, detail): (Option<i64>, Option<i32>, Option<String>, Option<String>) = (row.get(13)?, row.get(14)?, row.get(15)?, row.get(16)?);
    let (Some(seconds), Some(nanos), Some(outcome)) = (seconds, nanos, outcome) else { return Ok(None) };
    let outcome = ReplayOutcome::parse(&outcome).ok_or(SqliteError::CorruptRow { what: "quarantine replay outcome", value: outcome })?;
    Ok(Some(QuarantineReplay { at: Timestamp::new(seconds, nanos), outcome, detail: detail.unwrap_or_default() }))
}

