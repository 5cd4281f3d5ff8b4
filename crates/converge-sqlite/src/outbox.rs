//! The outbox as the relay sees it: pending events, and the outcome of each
//! delivery attempt.
//!
//! An event leaves `pending` only through an outcome recorded here, and only once:
//! every update is guarded by `status = 'pending'`, so a late or repeated outcome
//! (a relay stopped and restarted mid-batch) never marks an event twice.

use converge_core::{StoreError, Timestamp};
use converge_events::EventMeta;
use rusqlite::{params, Connection};

use crate::error::SqliteError;
use crate::{Inner, SqliteStore};

/// How much of a delivery error the outbox keeps per event.
const LAST_ERROR_LIMIT: usize = 4 * 1024;

/// One pending event, ready to send.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// Position in the outbox (commit order).
    pub seq: i64,
    pub meta: EventMeta,
    /// The CloudEvent body: protobuf `DocumentEventData`.
    pub data: Vec<u8>,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver accepted the event (2xx).
    Delivered { seq: i64 },
    /// The receiver refused it for good (4xx): it quarantined the event, so
    /// resending cannot help. The row is kept, with the error.
    Rejected { seq: i64, error: String },
    /// A transient failure: try again at `next_attempt`.
    Failed { seq: i64, error: String, next_attempt: Timestamp },
}

impl DeliveryOutcome {
    pub fn seq(&self) -> i64 {
        match self {
            DeliveryOutcome::Delivered { seq } | DeliveryOutcome::Rejected { seq, .. } | DeliveryOutcome::Failed { seq, .. } => *seq,
        }
    }
}

/// Counts over the whole outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub pending: u64,
    pub delivered: u64,
    pub rejected: u64,
    /// Delivery attempts over all events.
    pub attempts: u64,
}

impl SqliteStore {
    /// Up to `limit` pending events due at `now`, in commit order.
    pub async fn pending_batch(&self, limit: usize, now: Timestamp) -> Result<Vec<OutboxEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.blocking(move |inner| inner.with_reader(|conn| pending_batch(conn, limit, now.as_micros()))).await
    }

    /// Records the outcomes of a batch of attempts in one transaction. Returns how
    /// many events it changed: outcomes for events no longer pending are ignored.
    pub async fn record_outcomes(&self, outcomes: Vec<DeliveryOutcome>) -> Result<u64, StoreError> {
        if outcomes.is_empty() {
            return Ok(0);
        }
        self.blocking(move |inner| inner.record_outcomes(&outcomes)).await
    }

    pub async fn mark_delivered(&self, seqs: &[i64]) -> Result<u64, StoreError> {
        self.record_outcomes(seqs.iter().map(|&seq| DeliveryOutcome::Delivered { seq }).collect()).await
    }

    pub async fn mark_rejected(&self, seq: i64, error: &str) -> Result<u64, StoreError> {
        self.record_outcomes(vec![DeliveryOutcome::Rejected { seq, error: error.to_owned() }]).await
    }

    pub async fn mark_failed(&self, seq: i64, error: &str, next_attempt: Timestamp) -> Result<u64, StoreError> {
        self.record_outcomes(vec![DeliveryOutcome::Failed { seq, error: error.to_owned(), next_attempt }]).await
    }

    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.blocking(|inner| {
            inner.with_reader(|conn| {
                let mut stmt = conn.prepare_cached("SELECT status, count(*), coalesce(sum(attempts), 0) FROM outbox GROUP BY status")?;
                let mut rows = stmt.query([])?;
                let mut stats = OutboxStats::default();
                while let Some(row) = rows.next()? {
                    let status: String = row.get(0)?;
                    let count = non_negative(row.get(1)?);
                    stats.attempts += non_negative(row.get(2)?);
                    match status.as_str() {
                        "pending" => stats.pending = count,
                        "delivered" => stats.delivered = count,
                        "rejected" => stats.rejected = count,
                        other => return Err(SqliteError::CorruptRow { what: "outbox status", value: other.to_owned() }),
                    }
                }
                Ok(stats)
            })
        })
        .await
    }

    /// Events still to deliver, due or not.
    pub async fn pending_count(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| {
            inner.with_reader(|conn| {
                let mut stmt = conn.prepare_cached("SELECT count(*) FROM outbox WHERE status = 'pending'")?;
                Ok(non_negative(stmt.query_row([], |row| row.get(0))?))
            })
        })
        .await
    }

    /// When the earliest pending event is due, if any is pending.
    pub async fn next_pending_attempt(&self) -> Result<Option<Timestamp>, StoreError> {
        self.blocking(|inner| {
            inner.with_reader(|conn| {
                let mut stmt = conn.prepare_cached("SELECT min(next_attempt_us) FROM outbox WHERE status = 'pending'")?;
                let next: Option<i64> = stmt.query_row([], |row| row.get(0))?;
                Ok(next.map(Timestamp::from_micros))
            })
        })
        .await
    }

    /// Deletes delivered events delivered before `delivered_before`; returns how
    /// many. Pending and rejected events are never pruned.
    pub async fn prune_delivered(&self, delivered_before: Timestamp) -> Result<u64, StoreError> {
        self.blocking(move |inner| {
            let writer = inner.writer();
            let deleted = writer
                .conn
                .execute("DELETE FROM outbox WHERE status = 'delivered' AND delivered_us < ?1", [delivered_before.as_micros()])?;
            Ok(deleted as u64)
        })
        .await
    }
}

impl Inner {
    fn record_outcomes(&self, outcomes: &[DeliveryOutcome]) -> Result<u64, SqliteError> {
        let now_us = self.clock.now().as_micros();
        let mut guard = self.writer();
        let tx = guard.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut changed = 0u64;
        {
            let mut delivered = tx.prepare_cached(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_us = ?2, last_error = NULL \
                 WHERE seq = ?1 AND status = 'pending'",
            )?;
            let mut rejected = tx.prepare_cached(
                "UPDATE outbox SET status = 'rejected', attempts = attempts + 1, last_error = ?2 WHERE seq = ?1 AND status = 'pending'",
            )?;
            let mut failed = tx.prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_us = ?3 WHERE seq = ?1 AND status = 'pending'",
            )?;
            for outcome in outcomes {
                changed += match outcome {
                    DeliveryOutcome::Delivered { seq } => delivered.execute(params![seq, now_us])?,
                    DeliveryOutcome::Rejected { seq, error } => rejected.execute(params![seq, truncate(error)])?,
                    DeliveryOutcome::Failed { seq, error, next_attempt } => {
                        failed.execute(params![seq, truncate(error), next_attempt.as_micros()])?
                    }
                } as u64;
            }
        }
        tx.commit()?;
        Ok(changed)
    }
}

fn pending_batch(conn: &Connection, limit: i64, now_us: i64) -> Result<Vec<OutboxEvent>, SqliteError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, event_id, event_type, event_time_us, document, data, attempts FROM outbox \
         WHERE status = 'pending' AND next_attempt_us <= ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_us, limit], |row| {
        Ok(OutboxEvent {
            seq: row.get(0)?,
            meta: EventMeta {
                id: row.get(1)?,
                event_type: row.get(2)?,
                time: Timestamp::from_micros(row.get(3)?),
                document: row.get(4)?,
            },
            data: row.get(5)?,
            attempts: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// SQLite integers are signed; counts never are.
pub(crate) fn non_negative(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn truncate(error: &str) -> &str {
    if error.len() <= LAST_ERROR_LIMIT {
        return error;
    }
    let cut = (0..=LAST_ERROR_LIMIT).rev().find(|i| error.is_char_boundary(*i)).unwrap_or(0);
    &error[..cut]
}
