//! [`MetricsWarehouse`] on DuckDB: `daily_entity_metrics`, `entity_map` and
//! `etl_loads`, each (tenant, date) slice replaced in one transaction (DELETE, then
//! the new rows through appenders, then COMMIT). DuckDB's MVCC shows readers the old
//! slice until the commit, and a transaction that does not commit leaves nothing.

use async_trait::async_trait;
use chrono::NaiveDate;
use converge_core::business_metrics::{check_slice_row, ENTITY_MAP_TABLE, LOADS_TABLE, METRICS_TABLE};
use converge_core::{EntityMapRow, MetricRow, MetricsWarehouse, ReplaceReceipt, SliceLoad, SliceRow, StoreError, Timestamp};
use duckdb::types::{TimeUnit, Value as DuckValue};
use duckdb::{params, Connection};
use futures::stream::BoxStream;

use crate::db::{db_error, feed_blocking_writer, join_error, WriterChunk, BACKEND};
use crate::warehouse::DuckWarehouse;

/// The tables `CREATE_METRICS_TABLES` creates.
const METRICS_TABLES: [&str; 3] = [METRICS_TABLE, ENTITY_MAP_TABLE, LOADS_TABLE];

/// The detector compiler reads `daily_entity_metrics` unqualified with exactly these
/// columns (`converge_detect::compile`).
pub const CREATE_METRICS_TABLES: &str = "
CREATE TABLE IF NOT EXISTS daily_entity_metrics (
    date        DATE    NOT NULL,
    tenant      VARCHAR NOT NULL,
    entity_type VARCHAR NOT NULL,
    entity_id   VARCHAR NOT NULL,
    metric      VARCHAR NOT NULL,
    value       DOUBLE  NOT NULL
);
CREATE TABLE IF NOT EXISTS entity_map (
    date        DATE    NOT NULL,
    tenant      VARCHAR NOT NULL,
    entity_type VARCHAR NOT NULL,
    raw_id      VARCHAR NOT NULL,
    entity_id   VARCHAR NOT NULL,
    raw_records BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS etl_loads (
    date      DATE      NOT NULL,
    tenant    VARCHAR   NOT NULL,
    batch_id  VARCHAR   NOT NULL,
    rows_in   BIGINT    NOT NULL,
    rows_out  BIGINT    NOT NULL,
    loaded_at TIMESTAMP NOT NULL
);
";

fn days_since_epoch(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date")).num_days() as i32
}

fn parse_day(text: &str) -> Result<NaiveDate, StoreError> {
    converge_core::raw_source::parse_date(text)
        .ok_or_else(|| StoreError::permanent(BACKEND, format!("DATE column read back as {text:?}: expected YYYY-MM-DD")))
}

impl DuckWarehouse {
    fn replace_blocking(
        mut connection: Connection,
        load: SliceLoad,
        mut chunks: tokio::sync::mpsc::Receiver<WriterChunk<SliceRow>>,
    ) -> Result<ReplaceReceipt, StoreError> {
        let transaction = connection.transaction().map_err(|e| db_error("begin slice replace", e))?;
        let date = load.date.to_string();
        for table in [METRICS_TABLE, ENTITY_MAP_TABLE, LOADS_TABLE] {
            transaction
                .execute(&format!("DELETE FROM {table} WHERE tenant = ? AND date = CAST(? AS DATE)"), params![load.tenant, date])
                .map_err(|e| db_error("delete the old slice", e))?;
        }
        let mut receipt = ReplaceReceipt::default();
        {
            let mut metrics = transaction.appender(METRICS_TABLE).map_err(|e| db_error("open appender", e))?;
            let mut entities = transaction.appender(ENTITY_MAP_TABLE).map_err(|e| db_error("open appender", e))?;
            let day = DuckValue::Date32(days_since_epoch(load.date));
            loop {
                match chunks.blocking_recv() {
                    Some(WriterChunk::Rows(rows)) => {
                        for row in rows {
                            check_slice_row(BACKEND, &load, &row)?;
                            match row {
                                SliceRow::Metric(m) => {
                                    metrics
                                        .append_row(params![day.clone(), m.tenant, m.entity_type, m.entity_id, m.metric, m.value])
                                        .map_err(|e| db_error("append metric", e))?;
                                    receipt.metrics_written += 1;
                                }
                                SliceRow::Entity(e) => {
                                    entities
                                        .append_row(params![day.clone(), e.tenant, e.entity_type, e.raw_id, e.entity_id, e.raw_records as i64])
                                        .map_err(|e| db_error("append entity map row", e))?;
                                    receipt.entities_written += 1;
                                }
                            }
                        }
                    }
                    Some(WriterChunk::Commit) => break,
                    // Dropping the transaction rolls it back: the old slice stays.
                    None => return Err(StoreError::retryable(BACKEND, "slice replace abandoned before commit; the old slice is unchanged")),
                }
            }
            metrics.flush().map_err(|e| db_error("flush metrics", e))?;
            entities.flush().map_err(|e| db_error("flush entity map", e))?;
        }
        transaction
            .execute(
                "INSERT INTO etl_loads VALUES (CAST(? AS DATE), ?, ?, ?, ?, ?)",
                params![
                    date,
                    load.tenant,
                    load.batch_id,
                    load.rows_in as i64,
                    load.rows_out as i64,
                    DuckValue::Timestamp(TimeUnit::Microsecond, load.loaded_at.as_micros())
                ],
            )
            .map_err(|e| db_error("record the load", e))?;
        transaction.commit().map_err(|e| db_error("commit slice replace", e))?;
        Ok(receipt)
    }
}

#[async_trait]
impl MetricsWarehouse for DuckWarehouse {
    async fn ensure_metrics_tables(&self) -> Result<(), StoreError> {
        let connection = self.reader()?;
        tokio::task::spawn_blocking(move || connection.execute_batch(CREATE_METRICS_TABLES).map_err(|e| db_error("create the metrics tables", e)))
            .await
            .map_err(join_error)?
    }

    async fn check_metrics_tables(&self) -> Result<(), StoreError> {
        let connection = self.reader()?;
        tokio::task::spawn_blocking(move || {
            let error = |e| db_error("read the catalog", e);
            let mut statement = connection.prepare("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").map_err(error)?;
            let present = statement
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(error)?
                .collect::<Result<std::collections::HashSet<String>, _>>()
                .map_err(error)?;
            let missing: Vec<String> =
                METRICS_TABLES.iter().filter(|name| !present.contains(**name)).map(|name| format!("table `{name}`")).collect();
            match missing.is_empty() {
                true => Ok(()),
                false => Err(StoreError::not_set_up(BACKEND, "the DuckDB warehouse", &missing)),
            }
        })
        .await
        .map_err(join_error)?
    }

    async fn replace_slice(&self, load: SliceLoad, rows: BoxStream<'static, Result<SliceRow, StoreError>>) -> Result<ReplaceReceipt, StoreError> {
        let connection = self.reader()?;
        feed_blocking_writer(rows, move |chunks| Self::replace_blocking(connection, load, chunks)).await
    }

    async fn slice_metrics(&self, tenant: &str, date: NaiveDate) -> Result<Vec<MetricRow>, StoreError> {
        let connection = self.reader()?;
        let (tenant, day) = (tenant.to_owned(), date.to_string());
        tokio::task::spawn_blocking(move || {
            let mut statement = connection
                .prepare(
                    "SELECT entity_type, entity_id, metric, value FROM daily_entity_metrics \
                     WHERE tenant = ? AND date = CAST(? AS DATE) ORDER BY entity_type, entity_id, metric",
                )
                .map_err(|e| db_error("read slice metrics", e))?;
            let rows = statement
                .query_map(params![tenant, day], |row| {
                    Ok(MetricRow { date, tenant: tenant.clone(), entity_type: row.get(0)?, entity_id: row.get(1)?, metric: row.get(2)?, value: row.get(3)? })
                })
                .map_err(|e| db_error("read slice metrics", e))?;
            rows.map(|row| row.map_err(|e| db_error("read slice metrics", e))).collect()
        })
        .await
        .map_err(join_error)?
    }

    async fn slice_entity_map(&self, tenant: &str, date: NaiveDate) -> Result<Vec<EntityMapRow>, StoreError> {
        let connection = self.reader()?;
        let (tenant, day) = (tenant.to_owned(), date.to_string());
        tokio::task::spawn_blocking(move || {
            let mut statement = connection
                .prepare(
                    "SELECT entity_type, raw_id, entity_id, raw_records FROM entity_map \
                     WHERE tenant = ? AND date = CAST(? AS DATE) ORDER BY entity_type, raw_id",
                )
                .map_err(|e| db_error("read slice entity map", e))?;
            let rows = statement
                .query_map(params![tenant, day], |row| {
                    Ok(EntityMapRow {
                        date,
                        tenant: tenant.clone(),
                        entity_type: row.get(0)?,
                        raw_id: row.get(1)?,
                        entity_id: row.get(2)?,
                        raw_records: row.get::<_, i64>(3)? as u64,
                    })
                })
                .map_err(|e| db_error("read slice entity map", e))?;
            rows.map(|row| row.map_err(|e| db_error("read slice entity map", e))).collect()
        })
        .await
        .map_err(join_error)?
    }

    async fn loads_before(&self, tenant: &str, before: NaiveDate, limit: usize) -> Result<Vec<SliceLoad>, StoreError> {
        let connection = self.reader()?;
        let (tenant, day) = (tenant.to_owned(), before.to_string());
        tokio::task::spawn_blocking(move || {
            let mut statement = connection
                .prepare(
                    "SELECT CAST(date AS VARCHAR), batch_id, rows_in, rows_out, epoch_us(loaded_at) FROM etl_loads \
                     WHERE tenant = ? AND date < CAST(? AS DATE) ORDER BY date DESC LIMIT ?",
                )
                .map_err(|e| db_error("read loads", e))?;
            let rows = statement
                .query_map(params![tenant, day, limit as i64], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, i64>(3)?, row.get::<_, i64>(4)?))
                })
                .map_err(|e| db_error("read loads", e))?;
            let mut loads = Vec::new();
            for row in rows {
                let (date, batch_id, rows_in, rows_out, loaded_at) = row.map_err(|e| db_error("read loads", e))?;
                loads.push(SliceLoad {
                    tenant: tenant.clone(),
                    date: parse_day(&date)?,
                    batch_id,
                    rows_in: rows_in as u64,
                    rows_out: rows_out as u64,
                    loaded_at: Timestamp::from_micros(loaded_at),
                });
            }
            Ok(loads)
        })
        .await
        .map_err(join_error)?
    }
}
