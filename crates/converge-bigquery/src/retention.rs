//! The current table's refresh and compaction on BigQuery (the rules are
//! `converge_core::retention`'s; DuckDB's are `crates/converge-duckdb/src/retention.rs`).
//!
//! A refresh is one script: the changelog rows ingested since the watermark (minus the
//! overlap) into a temporary table, ranked with the current rows of the same
//! documents, swapped into `<table>_current` and its tombstones in one multi-statement
//! transaction. The filter on `ingested_at`, the partitioning column, prunes every
//! partition before the watermark's day; the current tables are clustered by (tenant,
//! doc_path).
//!
//! Compaction reads only partitions that can hold rows at or before the horizon
//! (`ingested_at` before the horizon plus the late-event bound: no row dated at or
//! before the horizon can be ingested later), so partitions after it are never
//! scanned, and deletes only rows ingested more than [`DML_SETTLE_MICROS`] ago.

use std::time::Instant;

use converge_core::config::Route;
use converge_core::retention::{
    current_table, current_tombstones_table, CompactionPlan, CurrentRefresh, RefreshFrom, TableCompaction, LATE_EVENT_BOUND_MICROS, REFRESH_OVERLAP_MICROS,
    TABLE_STATE,
};
use converge_core::StoreError;
use futures::StreamExt;

use crate::query::{row_error, QueryParam};
use crate::schema::{columns, qualified, WATERMARK_RESETS};
use crate::warehouse::BigQueryWarehouse;

/// How long after its append a row is left alone by compaction's DML. BigQuery
/// refuses `UPDATE`/`DELETE`/`MERGE` over rows streamed in the last 30 minutes through
/// `tabledata.insertAll`, and documents that streamed data can take up to 90 minutes to
/// settle; rows appended through the Storage Write API may be modified sooner
/// (<https://cloud.google.com/bigquery/docs/data-manipulation-language>, "Limitations").
/// Compaction waits the longest of these: leaving a recent superseded row costs
/// nothing but its storage until the next run.
pub const DML_SETTLE_MICROS: i64 = 90 * 60 * 1_000_000;

/// The earliest TIMESTAMP BigQuery accepts, for "every row".
const BEGINNING: i64 = -62_135_596_800_000_000;

/// `converge_core::version`'s rule as a window ordering (as in the latest view).
fn rank_order() -> String {
    format!("version DESC, op IN ({}) DESC, is_deleted DESC, content_hash DESC NULLS LAST", converge_core::version::source_read_ops_sql())
}

/// The route's columns, by name, for statements that must not depend on column order
/// (a promoted column added later sits at the end of an old table).
fn column_names(route: &Route) -> String {
    columns(route).iter().map(|(name, _, _)| *name).collect::<Vec<_>>().join(", ")
}

async fn first_row_i64s(
    warehouse: &BigQueryWarehouse,
    context: &'static str,
    sql: String,
    params: &[(&str, QueryParam)],
    n: usize,
) -> Result<(Vec<Option<i64>>, Option<u64>), StoreError> {
    let done = warehouse.run(context, sql, params).await?;
    let bytes = done.metadata().total_bytes_processed.as_ref().map(|b| (*b).max(0) as u64);
    let mut rows = warehouse.rows(context, done);
    let row = rows.next().await.ok_or_else(|| StoreError::permanent(crate::error::BACKEND, format!("{context}: no result row")))??;
    let values = (0..n).map(|i| row.get::<Option<i64>>(i).map_err(|e| row_error(context, &e))).collect::<Result<Vec<_>, _>>()?;
    Ok((values, bytes))
}

/// Where a refresh of `table` reads from (`None`: every row).
async fn refresh_start(warehouse: &BigQueryWarehouse, table: &str) -> Result<Option<i64>, StoreError> {
    let config = warehouse.config();
    let sql = format!(
        "SELECT (SELECT UNIX_MICROS(MAX(current_watermark)) FROM {state} WHERE table_name = @table), \
                (SELECT UNIX_MICROS(MIN(lowered_to)) FROM {resets} WHERE table_name = @table)",
        state = qualified(config, TABLE_STATE),
        resets = qualified(config, WATERMARK_RESETS),
    );
    let (values, _) = first_row_i64s(warehouse, "read the current table's watermark", sql, &[("table", QueryParam::String(table.to_owned()))], 2).await?;
    Ok(values[0].map(|watermark| match values[1] {
        Some(lowered) => lowered.min(watermark - REFRESH_OVERLAP_MICROS),
        None => watermark - REFRESH_OVERLAP_MICROS,
    }))
}

impl BigQueryWarehouse {
    /// [`converge_core::Warehouse::refresh_current`] of `route`'s table (see the module docs).
    pub(crate) async fn refresh_current_table(&self, route: &Route, from: RefreshFrom) -> Result<CurrentRefresh, StoreError> {
        let warehouse = self;
        let started = Instant::now();
        let config = warehouse.config();
        let t = &route.table;
        let start = match from {
            RefreshFrom::Full => None,
            RefreshFrom::Watermark | RefreshFrom::Started => refresh_start(warehouse, t).await?,
        };
        if from == RefreshFrom::Started && start.is_none() {
            return Ok(CurrentRefresh { table: t.clone(), ..CurrentRefresh::default() });
        }
        let (changelog, current, tombstones) = (qualified(config, t), qualified(config, &current_table(t)), qualified(config, &current_tombstones_table(t)));
        let (state, resets) = (qualified(config, TABLE_STATE), qualified(config, WATERMARK_RESETS));
        let cols = column_names(route);
        let order = rank_order();
        // A full refresh empties the current tables first: a document whose every row
        // was pruned has no winner left.
        // Temporary tables end with the script on BigQuery; the emulator keeps them in the
        // dataset, so they are named per table, replaced if left over, and dropped.
        let (rows, winners) = (format!("converge_refresh_rows_{t}"), format!("converge_refresh_winners_{t}"));
        let (empty, candidates) = match start {
            None => (format!("DELETE FROM {current} WHERE TRUE;\nDELETE FROM {tombstones} WHERE TRUE;\n"), format!("SELECT * FROM {rows}")),
            Some(_) => (
                String::new(),
                format!(
                    "SELECT * FROM {rows} \
                 UNION ALL SELECT {cols} FROM {current} WHERE doc_path IN (SELECT doc_path FROM {rows}) \
                 UNION ALL SELECT {cols} FROM {tombstones} WHERE doc_path IN (SELECT doc_path FROM {rows})"
                ),
            ),
        };
        // Values are spliced as literals: the emulator binds no query parameters inside a
        // script. Each is a number or a validated identifier (converge_core::config).
        let since = start.unwrap_or(BEGINNING);
        let script = format!(
        "DECLARE rows_read INT64;\n\
         DECLARE merged INT64;\n\
         CREATE OR REPLACE TEMP TABLE {rows} AS SELECT {cols} FROM {changelog} WHERE ingested_at >= TIMESTAMP_MICROS({since});\n\
         CREATE OR REPLACE TEMP TABLE {winners} AS SELECT * EXCEPT (_converge_rank) FROM (\n\
           SELECT *, ROW_NUMBER() OVER (PARTITION BY tenant, doc_path ORDER BY {order}) AS _converge_rank FROM ({candidates})\n\
         ) WHERE _converge_rank = 1;\n\
         BEGIN TRANSACTION;\n\
         {empty}\
         DELETE FROM {current} WHERE doc_path IN (SELECT doc_path FROM {winners});\n\
         DELETE FROM {tombstones} WHERE doc_path IN (SELECT doc_path FROM {winners});\n\
         INSERT INTO {current} ({cols}) SELECT {cols} FROM {winners} WHERE NOT is_deleted;\n\
         INSERT INTO {tombstones} ({cols}) SELECT {cols} FROM {winners} WHERE is_deleted;\n\
         DELETE FROM {resets} WHERE table_name = '{t}';\n\
         MERGE {state} AS s USING (SELECT '{t}' AS table_name, (SELECT MAX(ingested_at) FROM {rows}) AS newest) AS n \
           ON s.table_name = n.table_name \
           WHEN MATCHED THEN UPDATE SET current_watermark = GREATEST(COALESCE(s.current_watermark, n.newest), COALESCE(n.newest, s.current_watermark)), refreshed_at = CURRENT_TIMESTAMP() \
           WHEN NOT MATCHED THEN INSERT (table_name, current_watermark, refreshed_at) VALUES (n.table_name, n.newest, CURRENT_TIMESTAMP());\n\
         COMMIT TRANSACTION;\n\
         SET rows_read = (SELECT COUNT(*) FROM {rows});\n\
         SET merged = (SELECT COUNT(*) FROM {winners});\n\
         DROP TABLE {rows};\n\
         DROP TABLE {winners};\n\
         SELECT rows_read, merged, (SELECT COUNT(*) FROM {current}), \
                (SELECT UNIX_MICROS(MAX(current_watermark)) FROM {state} WHERE table_name = '{t}');"
    );
        let (values, bytes) = first_row_i64s(warehouse, "refresh the current table", script, &[], 4).await?;
        Ok(CurrentRefresh {
            table: t.clone(),
            full: start.is_none(),
            rows_read: values[0].unwrap_or(0) as u64,
            documents_merged: values[1].unwrap_or(0) as u64,
            current_rows: values[2].unwrap_or(0) as u64,
            watermark_micros: values[3],
            bytes_processed: bytes,
            millis: started.elapsed().as_millis() as u64,
        })
    }

    /// [`converge_core::Warehouse::compact`] of `route`'s table (see the module docs).
    pub(crate) async fn compact_table(&self, route: &Route, plan: CompactionPlan) -> Result<TableCompaction, StoreError> {
        let warehouse = self;
        let started = Instant::now();
        let config = warehouse.config();
        let t = &route.table;
        let changelog = qualified(config, t);
        let state = qualified(config, TABLE_STATE);
        let order = rank_order();
        // A row's identity for "is it its document's winner": identical copies of the
        // winner (redeliveries) share it and are kept together.
        let key = "CONCAT(doc_path, '|', CAST(UNIX_MICROS(version) AS STRING), '|', op, '|', CAST(is_deleted AS STRING), '|', IFNULL(content_hash, ''))";
        // Values are spliced as literals: the emulator binds no query parameters inside a
        // script. Each is a number or a validated identifier (converge_core::config).
        let now = plan.now.as_micros();
        let (horizon, tombstone_horizon) = (plan.horizon.as_micros(), plan.tombstone_horizon.as_micros());
        let scan_to = horizon.saturating_add(LATE_EVENT_BOUND_MICROS).min(now);
        let settled = now - DML_SETTLE_MICROS;
        let scan = format!("version <= TIMESTAMP_MICROS({horizon}) AND ingested_at < TIMESTAMP_MICROS({scan_to})");
        let script = format!(
        "DECLARE rows_before INT64 DEFAULT (SELECT COUNT(*) FROM {changelog});\n\
         DECLARE after_superseded INT64;\n\
         DECLARE rows_after INT64;\n\
         BEGIN TRANSACTION;\n\
         DELETE FROM {changelog} WHERE {scan} AND ingested_at < TIMESTAMP_MICROS({settled}) AND {key} NOT IN (\n\
           SELECT k FROM (SELECT {key} AS k, ROW_NUMBER() OVER (PARTITION BY doc_path ORDER BY {order}) AS r FROM {changelog} WHERE {scan}) WHERE r = 1);\n\
         SET after_superseded = (SELECT COUNT(*) FROM {changelog});\n\
         DELETE FROM {changelog} WHERE is_deleted AND version < TIMESTAMP_MICROS({tombstone_horizon}) AND ingested_at < TIMESTAMP_MICROS({scan_to}) AND ingested_at < TIMESTAMP_MICROS({settled}) AND doc_path IN (\n\
           SELECT doc_path FROM {changelog} WHERE {scan} GROUP BY doc_path HAVING COUNT(DISTINCT {key}) = 1);\n\
         SET rows_after = (SELECT COUNT(*) FROM {changelog});\n\
         MERGE {state} AS s USING (SELECT '{t}' AS table_name, TIMESTAMP_MICROS({horizon}) AS horizon) AS n ON s.table_name = n.table_name \
           WHEN MATCHED THEN UPDATE SET compacted_before = GREATEST(COALESCE(s.compacted_before, n.horizon), n.horizon) \
           WHEN NOT MATCHED THEN INSERT (table_name, compacted_before) VALUES (n.table_name, n.horizon);\n\
         COMMIT TRANSACTION;\n\
         SELECT rows_before, after_superseded, rows_after;"
    );
        let (values, bytes) = first_row_i64s(warehouse, "compact the changelog", script, &[], 3).await?;
        // Counted inside the transaction (the emulator has no @@row_count): rows appended
        // meanwhile are not in its snapshot.
        let [rows_before, after_superseded, rows_after] = [0, 1, 2].map(|i| values[i].unwrap_or(0) as u64);
        Ok(TableCompaction {
            table: t.clone(),
            rows_before,
            rows_after,
            superseded_pruned: rows_before.saturating_sub(after_superseded),
            tombstones_pruned: after_superseded.saturating_sub(rows_after),
            bytes_processed: bytes,
            millis: started.elapsed().as_millis() as u64,
        })
    }

    /// Records that rows of `table` stamped from `oldest` (microseconds) on are about to
    /// become visible although the watermark may have passed them: the next refresh reads
    /// from there.
    pub(crate) async fn lower_watermark(&self, table: &str, oldest: i64) -> Result<(), StoreError> {
        let warehouse = self;
        let sql = format!("INSERT INTO {} (table_name, lowered_to) VALUES (@table, @oldest)", qualified(warehouse.config(), WATERMARK_RESETS));
        let params = [("table", QueryParam::String(table.to_owned())), ("oldest", QueryParam::Timestamp(oldest))];
        warehouse.run("lower the current table's watermark", sql, &params).await.map(|_| ())
    }
}
