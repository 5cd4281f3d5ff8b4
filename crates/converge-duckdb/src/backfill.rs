//! `converge backfill` on DuckDB: a promoted column added to the configuration, filled
//! in the rows written before it (`Warehouse::backfill_promoted`).
//!
//! In place, from each row's own `data`, rather than by appending REPAIR rows read
//! from the source: the column is derived from `data` by the route's field path and
//! type (`converge_core::schema_change::promoted_from_data`, the extraction a new row
//! gets), so filling it changes no row's state, version, content hash or winner, and
//! every stored version gets it (as-of queries included), where REPAIR rows would
//! carry it only from their read time on and re-read every document. Rows whose
//! field is absent stay NULL, as a new row's would; a field of another type (an event
//! of it would have been quarantined) stays NULL and is counted and named.

use converge_core::config::{PromotedColumn, Route};
use converge_core::schema_change::PromotedBackfill;
use converge_core::{PromotedValue, StoreError};
use duckdb::{params, Connection};

use crate::appender::promoted_cell;
use crate::db::db_error;

/// Rows read, derived and updated at a time: memory stays bounded.
const CHUNK: i64 = 50_000;
const STAGING: &str = "_converge_backfill";

/// Fills `column` of `route`'s changelog and current tables, in one transaction on
/// `connection` (all or nothing).
pub(crate) fn backfill(connection: &mut Connection, route: &Route, column: &PromotedColumn) -> Result<PromotedBackfill, StoreError> {
    let mut report = PromotedBackfill::new(&route.table, &column.column);
    let transaction = connection.transaction().map_err(|e| db_error("begin backfill", e))?;
    let c = &column.column;
    transaction
        .execute_batch(&format!("CREATE OR REPLACE TEMP TABLE {STAGING} (row_id BIGINT NOT NULL, value {})", crate::schema::sql_type(column.column_type)))
        .map_err(|e| db_error("create the backfill's staging table", e))?;
    let t = &route.table;
    for table in [t.clone(), converge_core::retention::current_table(t), converge_core::retention::current_tombstones_table(t)] {
        let last: Option<i64> = transaction
            .query_row(&format!("SELECT max(rowid) FROM {table}"), [], |row| row.get(0))
            .map_err(|e| db_error(&format!("read `{table}`"), e))?;
        let mut start = 0;
        while start <= last.unwrap_or(-1) {
            let mut values: Vec<(i64, PromotedValue)> = Vec::new();
            {
                let sql = format!("SELECT rowid, doc_path, data FROM {table} WHERE rowid >= ? AND rowid < ? AND {c} IS NULL AND data IS NOT NULL");
                let mut statement = transaction.prepare(&sql).map_err(|e| db_error(&format!("read `{table}`"), e))?;
                let mut rows = statement.query(params![start, start + CHUNK]).map_err(|e| db_error(&format!("read `{table}`"), e))?;
                while let Some(row) = rows.next().map_err(|e| db_error(&format!("read `{table}`"), e))? {
                    let (row_id, doc_path, data): (i64, String, String) = (
                        row.get(0).map_err(|e| db_error("read a row", e))?,
                        row.get(1).map_err(|e| db_error("read a row", e))?,
                        row.get(2).map_err(|e| db_error("read a row", e))?,
                    );
                    if let Some(value) = report.derive(column, &doc_path, &data) {
                        values.push((row_id, value));
                    }
                }
            }
            if !values.is_empty() {
                let mut appender = transaction.appender(STAGING).map_err(|e| db_error("stage backfilled values", e))?;
                for (row_id, value) in &values {
                    appender
                        .append_row(params![row_id, promoted_cell(&Some(value.clone()))])
                        .map_err(|e| db_error("stage backfilled values", e))?;
                }
                appender.flush().map_err(|e| db_error("stage backfilled values", e))?;
                drop(appender);
                let filled = transaction
                    .execute(&format!("UPDATE {table} SET {c} = s.value FROM {STAGING} AS s WHERE {table}.rowid = s.row_id"), [])
                    .map_err(|e| db_error(&format!("fill `{table}.{c}`"), e))?;
                report.filled += filled as u64;
                transaction.execute(&format!("DELETE FROM {STAGING}"), []).map_err(|e| db_error("empty the staging table", e))?;
            }
            start += CHUNK;
        }
    }
    transaction.execute_batch(&format!("DROP TABLE {STAGING}")).map_err(|e| db_error("drop the staging table", e))?;
    transaction.commit().map_err(|e| db_error("commit backfill", e))?;
    Ok(report)
}
