//! `converge backfill` on BigQuery: a promoted column added to the configuration,
//! filled in the rows written before it (`Warehouse::backfill_promoted`), as DuckDB's
//! (`crates/converge-duckdb/src/backfill.rs`) does and with the same report.
//!
//! In place, from each row's own `data`: the value is derived in Rust by
//! `converge_core::schema_change::promoted_from_data`, the extraction and typing a new
//! row gets, not by a SQL JSON extraction, which would have to re-implement Converge
//! JSON's tags (`$int`, `$timestamp`, `$map`…) and the typing rules and could drift
//! from them. The rows without a value are read grouped by `content_hash` (equal
//! hashes, equal fields, so equal values: one derivation per distinct content), and
//! the values go back by one `UPDATE … SET c = CASE content_hash WHEN @h THEN @v …
//! END WHERE c IS NULL AND content_hash IN (…)` per chunk, with typed named
//! parameters (a single statement, which the emulator binds parameters in). Each
//! chunk reads only `content_hash`, `c` and `ingested_at` of the table, not `data`.
//! No row's state, version, hash or winner changes. Each UPDATE commits on its own
//! (BigQuery DML statements are implicit transactions): a backfill that stops half
//! way has filled some rows correctly, and running it again fills the rest.
//!
//! DML may not modify rows recently streamed through the Storage Write API ("Rows that
//! were recently written using the BigQuery Storage Write API can't be modified with
//! … `UPDATE` … The recent writes are those that occurred within the last 30
//! minutes", <https://cloud.google.com/bigquery/docs/data-manipulation-language>,
//! "Limitations"; older versions of the page allowed it in Preview), so in the
//! changelog only rows ingested more than `retention::DML_SETTLE_MICROS` ago are
//! filled, as compaction does; the others are counted as `too_recent`. The current
//! tables are written by DML only, so every row of theirs is filled.

use futures::StreamExt;

use converge_core::config::{PromotedColumn, Route};
use converge_core::schema_change::PromotedBackfill;
use converge_core::{Clock, PromotedValue, StoreError, SystemClock};

use crate::query::{row_error, QueryParam};
use crate::retention::DML_SETTLE_MICROS;
use crate::schema::qualified;
use crate::warehouse::BigQueryWarehouse;

/// Distinct contents per UPDATE: two parameters each, far below BigQuery's 10,000
/// query parameters, and a statement text of a few tens of kilobytes.
const CHUNK: usize = 500;

impl BigQueryWarehouse {
    /// Fills `column` of `route`'s changelog and current tables.
    pub(crate) async fn backfill_promoted_column(&self, route: &Route, column: &PromotedColumn) -> Result<PromotedBackfill, StoreError> {
        let warehouse = self;
        let mut report = PromotedBackfill::new(&route.table, &column.column);
        let config = warehouse.config();
        let c = &column.column;
        let settled = SystemClock.now().as_micros() - DML_SETTLE_MICROS;
        let t = &route.table;
        let tables = [
            (t.clone(), true),
            (converge_core::retention::current_table(t), false),
            (converge_core::retention::current_tombstones_table(t), false),
        ];
        for (table, streamed) in tables {
            let name = qualified(config, &table);
            // Names are the validated configuration's; the one value spliced is a number.
            let modifiable = match streamed {
                true => format!(" AND ingested_at < TIMESTAMP_MICROS({settled})"),
                false => String::new(),
            };
            if streamed {
                let sql = format!("SELECT COUNT(*) AS n FROM {name} WHERE {c} IS NULL AND data IS NOT NULL AND ingested_at >= TIMESTAMP_MICROS({settled})");
                report.too_recent += warehouse.single_count("count the rows too recent to backfill", sql, &[]).await?;
            }
            let context = "read the rows to backfill";
            let sql = format!(
                "SELECT content_hash, ANY_VALUE(doc_path) AS doc_path, ANY_VALUE(data) AS data, COUNT(*) AS n FROM {name} \
                 WHERE {c} IS NULL AND data IS NOT NULL AND content_hash IS NOT NULL{modifiable} GROUP BY content_hash ORDER BY content_hash"
            );
            let done = warehouse.run(context, sql, &[]).await?;
            let mut rows = warehouse.rows(context, done);
            let mut values: Vec<(String, PromotedValue, u64)> = Vec::new();
            while let Some(row) = rows.next().await {
                let row = row?;
                let hash: String = row.get(0).map_err(|e| row_error(context, &e))?;
                let doc_path: String = row.get(1).map_err(|e| row_error(context, &e))?;
                let data: String = row.get(2).map_err(|e| row_error(context, &e))?;
                let n = row.get::<i64>(3).map_err(|e| row_error(context, &e))?.max(1) as u64;
                let (absent, refused) = (report.absent, report.refused);
                match report.derive(column, &doc_path, &data) {
                    Some(value) => values.push((hash, value, n)),
                    // `derive` counted one row of the group; the others are the same.
                    None if report.absent > absent => report.absent += n - 1,
                    None if report.refused > refused => report.refused += n - 1,
                    None => {}
                }
                if values.len() == CHUNK {
                    report.filled += fill(warehouse, &name, c, &modifiable, &values).await?;
                    values.clear();
                }
            }
            if !values.is_empty() {
                report.filled += fill(warehouse, &name, c, &modifiable, &values).await?;
            }
        }
        Ok(report)
    }
}

/// One UPDATE of `table`'s column `c` from (content hash, value, rows read): the rows
/// it changed (the job's `numDmlAffectedRows`, else the rows read).
async fn fill(warehouse: &BigQueryWarehouse, table: &str, c: &str, modifiable: &str, values: &[(String, PromotedValue, u64)]) -> Result<u64, StoreError> {
    let mut params: Vec<(String, QueryParam)> = Vec::with_capacity(values.len() * 2);
    let mut cases = String::new();
    let mut hashes = Vec::with_capacity(values.len());
    for (i, (hash, value, _)) in values.iter().enumerate() {
        let (param, expression) = value_param(value, &format!("v{i}"));
        params.push((format!("h{i}"), QueryParam::String(hash.clone())));
        params.push((format!("v{i}"), param));
        cases.push_str(&format!(" WHEN @h{i} THEN {expression}"));
        hashes.push(format!("@h{i}"));
    }
    let sql = format!("UPDATE {table} SET {c} = CASE content_hash{cases} END WHERE {c} IS NULL AND content_hash IN ({}){modifiable}", hashes.join(", "));
    let params: Vec<(&str, QueryParam)> = params.iter().map(|(name, value)| (name.as_str(), value.clone())).collect();
    let done = warehouse.run(&format!("fill {table}.{c}"), sql, &params).await?;
    let read: u64 = values.iter().map(|(_, _, n)| n).sum();
    Ok(done.metadata().num_dml_affected_rows.map_or(read, |n| n.max(0) as u64))
}

/// A value as a parameter, and the SQL expression of parameter `name` in the
/// column's type (a DATE travels as its `YYYY-MM-DD` text).
fn value_param(value: &PromotedValue, name: &str) -> (QueryParam, String) {
    let plain = format!("@{name}");
    match value {
        PromotedValue::String(s) => (QueryParam::String(s.clone()), plain),
        PromotedValue::Int64(i) => (QueryParam::Int64(*i), plain),
        PromotedValue::Float64(f) => (QueryParam::Float64(*f), plain),
        PromotedValue::Bool(b) => (QueryParam::Bool(*b), plain),
        PromotedValue::Timestamp(us) => (QueryParam::Timestamp(*us), plain),
        PromotedValue::Date(days) => {
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date");
            let date = epoch + chrono::Duration::days(i64::from(*days));
            (QueryParam::String(date.format("%Y-%m-%d").to_string()), format!("CAST(@{name} AS DATE)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_travel_as_text_cast_to_date() {
        let (param, expression) = value_param(&PromotedValue::Date(19_783), "v3");
        assert_eq!(param, QueryParam::String("2024-03-01".into()));
        assert_eq!(expression, "CAST(@v3 AS DATE)");
        assert_eq!(value_param(&PromotedValue::Int64(7), "v0"), (QueryParam::Int64(7), "@v0".to_owned()));
    }
}
