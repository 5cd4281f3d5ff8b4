//! Compaction and refresh runs over every mirrored table.

use std::sync::Arc;
use std::time::Instant;

use converge_core::{
    batch_id, Clock, CompactionPlan, CurrentRefresh, ErrorKind, MirrorConfig, PriceTable, RefreshFrom, RunCost, RunOutcome, RunRecord, StoreError,
    TableCompaction, Warehouse,
};
use serde::Serialize;
use tracing::Instrument;

/// The run kinds in `converge_runs`.
pub const COMPACT_KIND: &str = "compact";
pub const REFRESH_KIND: &str = "refresh_current";

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RetentionError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RetentionError::Store(error) => error.kind,
        }
    }
}

/// What a compaction run did: per table, and summed (the CLI's `--json` and the run
/// record carry both).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactRun {
    pub batch_id: String,
    pub outcome: RunOutcome,
    pub retain_days: u32,
    /// Rows superseded at or before it were pruned (RFC 3339).
    pub horizon: String,
    /// Deletes older than it (and alone at the horizon) were pruned (RFC 3339).
    pub tombstone_horizon: String,
    pub rows_before: u64,
    pub rows_after: u64,
    pub superseded_pruned: u64,
    pub tombstones_pruned: u64,
    /// Bytes the warehouse processed, compaction and refresh (BigQuery only).
    pub bytes_processed: Option<u64>,
    pub tables: Vec<TableCompaction>,
    /// The full refresh of each current table that follows.
    pub refreshed: Vec<CurrentRefresh>,
    pub millis: u64,
    /// What it cost: the warehouse bytes of compaction and refresh (BigQuery's bill,
    /// DuckDB's estimate of it); no source reads.
    pub cost: RunCost,
}

/// What a refresh run did, per table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshRun {
    pub batch_id: String,
    pub outcome: RunOutcome,
    pub full: bool,
    pub rows_read: u64,
    pub documents_merged: u64,
    pub bytes_processed: Option<u64>,
    pub tables: Vec<CurrentRefresh>,
    pub millis: u64,
    /// What it cost: the warehouse bytes of the refresh; no source reads.
    pub cost: RunCost,
}

/// Runs compaction and refreshes over a warehouse's mirrored tables.
pub struct Retention {
    warehouse: Arc<dyn Warehouse>,
    config: MirrorConfig,
    clock: Arc<dyn Clock>,
    prices: PriceTable,
}

fn add_bytes(total: &mut Option<u64>, more: Option<u64>) {
    if let Some(more) = more {
        *total = Some(total.unwrap_or(0) + more);
    }
}

impl Retention {
    pub fn new(warehouse: Arc<dyn Warehouse>, config: MirrorConfig, clock: Arc<dyn Clock>) -> Self {
        Self { warehouse, config, clock, prices: PriceTable::default() }
    }

    /// Prices runs' costs with `prices` instead of the list prices.
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// The warehouse bytes since `before`, priced.
    fn cost_since(&self, before: converge_core::WarehouseBytes) -> RunCost {
        let mut cost = RunCost::default();
        cost.warehouse(before, self.warehouse.bytes_processed());
        cost.priced(&self.prices)
    }

    /// Compacts every table to keep `retain_days` of history, then refreshes each
    /// current table in full (compaction may prune the deletes they hold). `key` makes
    /// the run this run (a scheduler tick); the start time otherwise.
    pub async fn compact(&self, retain_days: u32, key: Option<&str>) -> Result<CompactRun, RetentionError> {
        // Every line of the run carries its id and kind (`converge_function::telemetry`).
        let span = tracing::info_span!("run", kind = "compact", run_id = tracing::field::Empty);
        async move {
        let started = Instant::now();
        let started_at = self.clock.now();
        let plan = CompactionPlan::retain_days(started_at, retain_days);
        let key = key.map(str::to_owned).unwrap_or_else(|| started_at.to_rfc3339());
        let mut run = CompactRun {
            batch_id: batch_id(COMPACT_KIND, "*", &key),
            retain_days,
            horizon: plan.horizon.to_rfc3339(),
            tombstone_horizon: plan.tombstone_horizon.to_rfc3339(),
            ..CompactRun::default()
        };
        tracing::Span::current().record("run_id", run.batch_id.as_str());
        let bytes_before = self.warehouse.bytes_processed();
        for route in &self.config.routes {
            let table = self.warehouse.compact(&route.table, plan).await?;
            tracing::info!(
                table = %table.table, rows_before = table.rows_before, rows_after = table.rows_after,
                superseded_pruned = table.superseded_pruned, tombstones_pruned = table.tombstones_pruned, millis = table.millis,
                "table compacted"
            );
            run.rows_before += table.rows_before;
            run.rows_after += table.rows_after;
            run.superseded_pruned += table.superseded_pruned;
            run.tombstones_pruned += table.tombstones_pruned;
            add_bytes(&mut run.bytes_processed, table.bytes_processed);
            run.tables.push(table);
            let refreshed = self.warehouse.refresh_current(&route.table, RefreshFrom::Full).await?;
            add_bytes(&mut run.bytes_processed, refreshed.bytes_processed);
            run.refreshed.push(refreshed);
        }
        run.millis = started.elapsed().as_millis() as u64;
        run.cost = self.cost_since(bytes_before);
        let record = RunRecord::new(run.batch_id.clone(), COMPACT_KIND, "*".into(), started_at, self.clock.now(), run.outcome, &run);
        self.warehouse.record_run(record).await?;
        tracing::info!(batch_id = run.batch_id, rows_before = run.rows_before, rows_after = run.rows_after, millis = run.millis,
            warehouse_bytes = run.cost.warehouse_bytes, estimated_usd = run.cost.estimated_usd, "compaction run finished");
        Ok(run)
        }
        .instrument(span)
        .await
    }

    /// Refreshes every table's current table from its watermark (or in full).
    pub async fn refresh(&self, from: RefreshFrom, key: Option<&str>) -> Result<RefreshRun, RetentionError> {
        // Every line of the run carries its id and kind (`converge_function::telemetry`).
        let span = tracing::info_span!("run", kind = "refresh_current", run_id = tracing::field::Empty);
        async move {
        let started = Instant::now();
        let started_at = self.clock.now();
        let key = key.map(str::to_owned).unwrap_or_else(|| started_at.to_rfc3339());
        let mut run = RefreshRun { batch_id: batch_id(REFRESH_KIND, "*", &key), ..RefreshRun::default() };
        tracing::Span::current().record("run_id", run.batch_id.as_str());
        let bytes_before = self.warehouse.bytes_processed();
        for route in &self.config.routes {
            let table = self.warehouse.refresh_current(&route.table, from).await?;
            run.full |= table.full;
            run.rows_read += table.rows_read;
            run.documents_merged += table.documents_merged;
            add_bytes(&mut run.bytes_processed, table.bytes_processed);
            run.tables.push(table);
        }
        run.millis = started.elapsed().as_millis() as u64;
        run.cost = self.cost_since(bytes_before);
        let record = RunRecord::new(run.batch_id.clone(), REFRESH_KIND, "*".into(), started_at, self.clock.now(), run.outcome, &run);
        self.warehouse.record_run(record).await?;
        tracing::info!(batch_id = run.batch_id, rows_read = run.rows_read, documents_merged = run.documents_merged, millis = run.millis,
            warehouse_bytes = run.cost.warehouse_bytes, estimated_usd = run.cost.estimated_usd, "current tables refreshed");
        Ok(run)
        }
        .instrument(span)
        .await
    }
}
