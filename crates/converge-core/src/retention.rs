//! Keeping a changelog for years: the physical current table and compaction.
//!
//! # The current table
//!
//! `<table>_current` holds each document's winner by the ordering rule
//! ([`crate::version`]) when that winner is live; `<table>_current_tombstones` holds the
//! winners that are deletes (kept so that a later refresh can rank a stale event
//! against the delete that beat it, without reading the changelog's history). Together
//! they are the latest view materialized: after every refresh, `<table>_current` equals
//! `<table>_latest` row for row (the contract's property test holds both warehouses to
//! it).
//!
//! A refresh is incremental: it reads the changelog rows ingested since the table's
//! *watermark* (the greatest `ingested_at` merged so far) minus [`REFRESH_OVERLAP`], ranks
//! them with the current and tombstone rows of the same documents, and replaces those
//! documents' rows, in one transaction. Rows are stamped `ingested_at` before they are
//! appended, so a row can become visible after a later-stamped one: the overlap covers
//! the sync path's delay, and whatever can append rows stamped earlier than that (an
//! atomic append streaming for minutes, the DuckDB journal replayed after a crash)
//! lowers the watermark to its own oldest row in the same commit. Merging a row twice
//! is harmless: the ranking is a pure function of the set of rows.
//!
//! # Compaction
//!
//! [`CompactionPlan`]: rows superseded at or before the horizon are pruned, so every
//! document keeps its state as of the horizon and every row after it; as-of answers at
//! or after the horizon and the latest view are unchanged. A delete that wins as of the
//! horizon is pruned too, but only when it is the document's last row at or before the
//! horizon and older than [`LATE_EVENT_BOUND_MICROS`], the longest an event can still
//! arrive: a late event older than a pruned delete could otherwise resurrect the
//! document. As-of queries before the horizon fail with a message saying the state then
//! is incomplete, instead of answering wrongly.

use crate::value::Timestamp;

const MICROS_PER_MINUTE: i64 = 60_000_000;
const MICROS_PER_DAY: i64 = 24 * 60 * MICROS_PER_MINUTE;

/// The table that holds the latest live state of each document of `table`.
pub fn current_table(table: &str) -> String {
    format!("{table}_current")
}

/// The table that holds the documents of `table` whose winner is a delete.
pub fn current_tombstones_table(table: &str) -> String {
    format!("{table}_current_tombstones")
}

/// The small table, one row per changelog table, that holds its current table's
/// watermark and its compaction horizon.
pub const TABLE_STATE: &str = "converge_table_state";

/// How far before the watermark a refresh reads again: longer than the sync path can
/// take between stamping a row's `ingested_at` and the row's append becoming visible
/// (a group commit's retries are bounded by seconds; BigQuery's default stream makes a
/// row visible when the append returns).
pub const REFRESH_OVERLAP_MICROS: i64 = 15 * MICROS_PER_MINUTE;

/// Where a refresh starts reading the changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshFrom {
    /// From the table's watermark minus the overlap (a full refresh when the table has
    /// none yet).
    Watermark,
    /// Every row: the current tables are rebuilt from the whole changelog (after
    /// compaction, or on demand).
    Full,
    /// From the watermark when the table has one; nothing when it was never refreshed.
    /// What a run refreshes with after its own appends: its refresh is never a read of
    /// the whole changelog (the first, full refresh is the schedule's).
    Started,
}

/// What one refresh of one table's current table did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CurrentRefresh {
    pub table: String,
    /// Whether the whole changelog was read (no watermark yet, or asked for).
    pub full: bool,
    /// Changelog rows read (ingested since the watermark minus the overlap).
    pub rows_read: u64,
    /// Documents whose current row was re-ranked.
    pub documents_merged: u64,
    /// Rows of `<table>_current` after the refresh.
    pub current_rows: u64,
    /// The watermark after the refresh (microseconds since the epoch), if any row was
    /// ever merged.
    pub watermark_micros: Option<i64>,
    /// Bytes the warehouse processed (BigQuery's job statistics; the embedded warehouse
    /// does not report it).
    pub bytes_processed: Option<u64>,
    pub millis: u64,
}

/// The longest after its commit that a document change can still reach the sync
/// function: Eventarc keeps an unacknowledged event for its Pub/Sub subscription's
/// message retention, 24 hours by default and at most 7 days
/// (<https://cloud.google.com/eventarc/docs/retry-events>, "How retries work"; Pub/Sub
/// caps retention at 7 days), plus a day's margin. Taken at the maximum so that no
/// retention setting can bring back a pruned delete.
pub const LATE_EVENT_BOUND_MICROS: i64 = 8 * MICROS_PER_DAY;

/// What one compaction run prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPlan {
    /// Rows superseded at or before it are pruned; as-of answers before it fail.
    pub horizon: Timestamp,
    /// A delete that wins as of the horizon is pruned only when older than this: the
    /// earlier of the horizon and now minus [`LATE_EVENT_BOUND_MICROS`].
    pub tombstone_horizon: Timestamp,
    /// When the plan was made (the run's clock).
    pub now: Timestamp,
}

impl CompactionPlan {
    /// Keep `retain_days` of history before `now`.
    pub fn retain_days(now: Timestamp, retain_days: u32) -> Self {
        let horizon = now.as_micros() - i64::from(retain_days) * MICROS_PER_DAY;
        let tombstone_horizon = horizon.min(now.as_micros() - LATE_EVENT_BOUND_MICROS);
        Self { horizon: Timestamp::from_micros(horizon), tombstone_horizon: Timestamp::from_micros(tombstone_horizon), now }
    }
}

/// What compaction did to one changelog table.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableCompaction {
    pub table: String,
    pub rows_before: u64,
    pub rows_after: u64,
    /// Rows superseded at or before the horizon, pruned.
    pub superseded_pruned: u64,
    /// Deletes pruned (each was its document's last row at or before the horizon and
    /// older than the late-event bound).
    pub tombstones_pruned: u64,
    /// Bytes the warehouse processed (BigQuery's job statistics).
    pub bytes_processed: Option<u64>,
    pub millis: u64,
}

/// The message an as-of query before the compaction horizon fails with (both
/// warehouses raise it from SQL).
pub fn incomplete_as_of_message(table: &str) -> String {
    format!(
        "as-of state of `{table}` before its compaction horizon is incomplete: rows superseded before the horizon were pruned \
         (see converge_table_state.compacted_before); ask for an instant at or after it"
    )
}

/// Refreshes the current tables of `tables` after a run appended rows to them (a
/// reconcile's repairs, a rebuild, the error log's retry), so reports read the repair
/// at once; the documents merged. A caller logs a failure and goes on: the rows are in
/// the changelog, stamped after the watermark, and the next scheduled refresh takes
/// them.
pub async fn refresh_after_run<'t>(warehouse: &dyn crate::Warehouse, tables: impl IntoIterator<Item = &'t str>) -> Result<u64, crate::StoreError> {
    let mut merged = 0;
    for table in tables {
        merged += warehouse.refresh_current(table, RefreshFrom::Started).await?.documents_merged;
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tombstone_horizon_is_never_later_than_the_late_event_bound() {
        let now = Timestamp::from_micros(100 * MICROS_PER_DAY);
        let plan = CompactionPlan::retain_days(now, 30);
        assert_eq!(plan.horizon.as_micros(), 70 * MICROS_PER_DAY);
        assert_eq!(plan.tombstone_horizon, plan.horizon);
        let plan = CompactionPlan::retain_days(now, 0);
        assert_eq!(plan.horizon, now);
        assert_eq!(plan.tombstone_horizon.as_micros(), 92 * MICROS_PER_DAY);
    }
}
