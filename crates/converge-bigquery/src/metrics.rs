//! [`MetricsWarehouse`] on BigQuery: `daily_entity_metrics`, `entity_map` and
//! `etl_loads`, partitioned by `date` and clustered by tenant (and entity type), each
//! (tenant, date) slice replaced by ONE multi-statement transaction.
//!
//! How a replace goes:
//! 1. The slice's rows are staged under a fresh load id through the Storage Write API
//!    (one PENDING stream per staging table, appended with offsets — exactly once —
//!    then committed). Staged rows are invisible to readers of the real tables; an
//!    error here leaves nothing but staged rows no script will ever name (the staging
//!    tables' partitions expire after two days).
//! 2. One script, `BEGIN TRANSACTION; DELETE … ; INSERT … SELECT FROM staging WHERE
//!    load_id = …; (three tables) COMMIT TRANSACTION;`. BigQuery commits it at one
//!    snapshot or not at all: readers see the old slice or the new, never a mix.
//!
//! Why a script and not one MERGE: the slice spans three tables, and a MERGE changes
//! one; three MERGEs would let a reader see new metrics with the old entity map.
//! Verified on bqemulator: a script whose INSERT fails after its DELETE leaves the
//! old rows (see this crate's metrics tests). The emulator does not pass query
//! parameters into scripts, so the script carries no input text at all: the load
//! id and batch id are hex we generated, the date is formatted from a `NaiveDate`,
//! the tenant travels hex-encoded (`FROM_HEX`), counts and times are integers.

use async_trait::async_trait;
use chrono::NaiveDate;
use converge_core::business_metrics::{check_slice_row, ENTITY_MAP_TABLE, LOADS_TABLE, METRICS_TABLE};
use converge_core::{EntityMapRow, MetricRow, MetricsWarehouse, ReplaceReceipt, SliceLoad, SliceRow, StoreError, Timestamp};
use futures::stream::{BoxStream, StreamExt};
use google_cloud_bigquery::model::{ArrowRecordBatch, ArrowSchema};
use google_cloud_bigquery::query::Row;
use google_cloud_bigquery::write::format::Arrow;
use google_cloud_bigquery::write::PendingWriter;

use std::sync::Arc;

use arrow_array::builder::{Date32Builder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::arrow::{ipc_batch, ipc_schema};
use crate::error::{from_append, from_commit, from_gax, from_writer, BACKEND};
use crate::schema::qualified;
use crate::query::{row_error, QueryParam};
use crate::warehouse::BigQueryWarehouse;

pub const STAGING_METRICS_TABLE: &str = "etl_staging_metrics";
pub const STAGING_ENTITY_MAP_TABLE: &str = "etl_staging_entity_map";
/// Rows per Arrow batch sent to a staging stream (well under the 10 MB request cap).
const STAGE_CHUNK: usize = 8192;

/// The DDL of the five tables (the three the detectors and the ETL read, and two
/// staging tables), `CREATE … IF NOT EXISTS`.
pub fn create_metrics_tables(config: &crate::BigQueryConfig) -> Vec<String> {
    let t = |name| qualified(config, name);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {} (date DATE NOT NULL, tenant STRING NOT NULL, entity_type STRING NOT NULL, \
             entity_id STRING NOT NULL, metric STRING NOT NULL, value FLOAT64 NOT NULL) \
             PARTITION BY date CLUSTER BY tenant, entity_type \
             OPTIONS (description = \"Converge nightly ETL: one daily sum per tenant, entity, metric and day\")",
            t(METRICS_TABLE)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (date DATE NOT NULL, tenant STRING NOT NULL, entity_type STRING NOT NULL, \
             raw_id STRING NOT NULL, entity_id STRING NOT NULL, raw_records INT64 NOT NULL) \
             PARTITION BY date CLUSTER BY tenant, entity_type \
             OPTIONS (description = \"Converge nightly ETL: raw identifiers as exported, per day, and their canonical entity ids\")",
            t(ENTITY_MAP_TABLE)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (date DATE NOT NULL, tenant STRING NOT NULL, batch_id STRING NOT NULL, \
             rows_in INT64 NOT NULL, rows_out INT64 NOT NULL, loaded_at TIMESTAMP NOT NULL) \
             PARTITION BY date CLUSTER BY tenant \
             OPTIONS (description = \"Converge nightly ETL: the committed load of each (tenant, date)\")",
            t(LOADS_TABLE)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (load_id STRING NOT NULL, staged_at TIMESTAMP NOT NULL, date DATE NOT NULL, \
             tenant STRING NOT NULL, entity_type STRING NOT NULL, entity_id STRING NOT NULL, metric STRING NOT NULL, value FLOAT64 NOT NULL) \
             PARTITION BY DATE(staged_at) CLUSTER BY load_id \
             OPTIONS (partition_expiration_days = 2, description = \"Converge nightly ETL: staged slices, read once by their replace\")",
            t(STAGING_METRICS_TABLE)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (load_id STRING NOT NULL, staged_at TIMESTAMP NOT NULL, date DATE NOT NULL, \
             tenant STRING NOT NULL, entity_type STRING NOT NULL, raw_id STRING NOT NULL, entity_id STRING NOT NULL, raw_records INT64 NOT NULL) \
             PARTITION BY DATE(staged_at) CLUSTER BY load_id \
             OPTIONS (partition_expiration_days = 2, description = \"Converge nightly ETL: staged entity maps, read once by their replace\")",
            t(STAGING_ENTITY_MAP_TABLE)
        ),
    ]
}

/// The replace script of one slice (see the module docs for why nothing in it is
/// input text).
pub fn replace_script(config: &crate::BigQueryConfig, load: &SliceLoad, load_id: &str) -> String {
    debug_assert!(load_id.bytes().all(|b| b.is_ascii_hexdigit()));
    let t = |name| qualified(config, name);
    let date = format!("DATE '{}'", load.date.format("%Y-%m-%d"));
    let tenant = format!("SAFE_CONVERT_BYTES_TO_STRING(FROM_HEX('{}'))", hex::encode(load.tenant.as_bytes()));
    let batch = format!("SAFE_CONVERT_BYTES_TO_STRING(FROM_HEX('{}'))", hex::encode(load.batch_id.as_bytes()));
    format!(
        "BEGIN TRANSACTION;\n\
         DELETE FROM {metrics} WHERE tenant = {tenant} AND date = {date};\n\
         INSERT INTO {metrics} (date, tenant, entity_type, entity_id, metric, value) \
           SELECT date, tenant, entity_type, entity_id, metric, value FROM {staged_metrics} WHERE load_id = '{load_id}';\n\
         DELETE FROM {entities} WHERE tenant = {tenant} AND date = {date};\n\
         INSERT INTO {entities} (date, tenant, entity_type, raw_id, entity_id, raw_records) \
           SELECT date, tenant, entity_type, raw_id, entity_id, raw_records FROM {staged_entities} WHERE load_id = '{load_id}';\n\
         DELETE FROM {loads} WHERE tenant = {tenant} AND date = {date};\n\
         INSERT INTO {loads} (date, tenant, batch_id, rows_in, rows_out, loaded_at) \
           VALUES ({date}, {tenant}, {batch}, {rows_in}, {rows_out}, TIMESTAMP_MICROS({loaded_at}));\n\
         COMMIT TRANSACTION;",
        metrics = t(METRICS_TABLE),
        entities = t(ENTITY_MAP_TABLE),
        loads = t(LOADS_TABLE),
        staged_metrics = t(STAGING_METRICS_TABLE),
        staged_entities = t(STAGING_ENTITY_MAP_TABLE),
        rows_in = load.rows_in as i64,
        rows_out = load.rows_out as i64,
        loaded_at = load.loaded_at.as_micros(),
    )
}

fn days_since_epoch(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date")).num_days() as i32
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn staging_schema(entities: bool) -> SchemaRef {
    let mut fields = vec![
        text("load_id"),
        Field::new("staged_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("date", DataType::Date32, false),
        text("tenant"),
        text("entity_type"),
    ];
    if entities {
        fields.extend([text("raw_id"), text("entity_id"), Field::new("raw_records", DataType::Int64, false)]);
    } else {
        fields.extend([text("entity_id"), text("metric"), Field::new("value", DataType::Float64, false)]);
    }
    Arc::new(Schema::new(fields))
}

/// One staging table's PENDING stream and the rows it has taken.
struct Stage {
    table: &'static str,
    schema: SchemaRef,
    writer: Option<PendingWriter<Arrow>>,
    offset: i64,
    metrics: Vec<MetricRow>,
    entities: Vec<EntityMapRow>,
}

impl Stage {
    fn new(table: &'static str, entities: bool) -> Self {
        Self { table, schema: staging_schema(entities), writer: None, offset: 0, metrics: Vec::new(), entities: Vec::new() }
    }

    fn pending(&self) -> usize {
        self.metrics.len() + self.entities.len()
    }

    fn batch(&mut self, load_id: &str, staged_at: i64) -> Result<RecordBatch, StoreError> {
        let n = self.pending();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(8);
        let strings = |values: &mut dyn Iterator<Item = &str>| {
            let mut builder = StringBuilder::with_capacity(n, n * 16);
            for value in values {
                builder.append_value(value);
            }
            Arc::new(builder.finish()) as ArrayRef
        };
        columns.push(strings(&mut std::iter::repeat_n(load_id, n)));
        let mut staged = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut dates = Date32Builder::with_capacity(n);
        for _ in 0..n {
            staged.append_value(staged_at);
        }
        if !self.metrics.is_empty() {
            for row in &self.metrics {
                dates.append_value(days_since_epoch(row.date));
            }
            columns.push(Arc::new(staged.finish()));
            columns.push(Arc::new(dates.finish()));
            columns.push(strings(&mut self.metrics.iter().map(|r| r.tenant.as_str())));
            columns.push(strings(&mut self.metrics.iter().map(|r| r.entity_type.as_str())));
            columns.push(strings(&mut self.metrics.iter().map(|r| r.entity_id.as_str())));
            columns.push(strings(&mut self.metrics.iter().map(|r| r.metric.as_str())));
            let mut values = Float64Builder::with_capacity(n);
            for row in &self.metrics {
                values.append_value(row.value);
            }
            columns.push(Arc::new(values.finish()));
        } else {
            for row in &self.entities {
                dates.append_value(days_since_epoch(row.date));
            }
            columns.push(Arc::new(staged.finish()));
            columns.push(Arc::new(dates.finish()));
            columns.push(strings(&mut self.entities.iter().map(|r| r.tenant.as_str())));
            columns.push(strings(&mut self.entities.iter().map(|r| r.entity_type.as_str())));
            columns.push(strings(&mut self.entities.iter().map(|r| r.raw_id.as_str())));
            columns.push(strings(&mut self.entities.iter().map(|r| r.entity_id.as_str())));
            let mut counts = Int64Builder::with_capacity(n);
            for row in &self.entities {
                counts.append_value(row.raw_records as i64);
            }
            columns.push(Arc::new(counts.finish()));
        }
        self.metrics.clear();
        self.entities.clear();
        RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| StoreError::permanent(BACKEND, format!("staging batch for `{}`: {e}", self.table)))
    }
}

impl BigQueryWarehouse {
    /// Sends `stage`'s buffered rows to its PENDING stream (created on first use).
    async fn flush_stage(&self, stage: &mut Stage, load_id: &str, staged_at: i64) -> Result<(), StoreError> {
        if stage.pending() == 0 {
            return Ok(());
        }
        let config = self.config();
        if stage.writer.is_none() {
            let schema = ArrowSchema::new().set_serialized_schema(ipc_schema(&stage.schema));
            let writer = self
                .bounded(
                    &format!("create a PENDING stream on `{}`", stage.table),
                    self.write_client().create_stream(config.table_resource(stage.table)).build_arrow(schema),
                    from_writer,
                )
                .await?;
            stage.writer = Some(writer);
        }
        let rows = stage.pending() as i64;
        let batch = stage.batch(load_id, staged_at)?;
        let bytes = ipc_batch(&batch).map_err(|e| StoreError::permanent(BACKEND, format!("Arrow IPC encoding failed: {e}")))?;
        let writer = stage.writer.as_ref().expect("created above");
        let context = format!("stage rows in `{}`", stage.table);
        // The offset makes a resent batch land once.
        self.bounded(&context, writer.append(ArrowRecordBatch::new().set_serialized_record_batch(bytes)).set_offset(stage.offset).send(), from_append)
            .await?;
        stage.offset += rows;
        Ok(())
    }

    async fn commit_stage(&self, stage: Stage) -> Result<(), StoreError> {
        let Some(writer) = stage.writer else { return Ok(()) };
        self.bounded(&format!("finalize the staging stream of `{}`", stage.table), writer.finalize(), from_gax).await?;
        self.bounded(&format!("commit the staging stream of `{}`", stage.table), writer.commit(), from_commit).await?;
        Ok(())
    }

    async fn collect_rows<T>(&self, context: &'static str, sql: String, tenant: &str, date: NaiveDate, map: fn(&Row) -> Result<T, google_cloud_bigquery::error::RowError>) -> Result<Vec<T>, StoreError> {
        let params = [("tenant", QueryParam::String(tenant.to_owned())), ("date", QueryParam::String(date.to_string()))];
        let done = self.run(context, sql, &params).await?;
        let rows: Vec<Result<Row, StoreError>> = self.rows(context, done).collect().await;
        rows.into_iter().map(|row| map(&row?).map_err(|e| row_error(context, &e))).collect()
    }
}

#[async_trait]
impl MetricsWarehouse for BigQueryWarehouse {
    async fn ensure_metrics_tables(&self) -> Result<(), StoreError> {
        self.ensure_dataset().await?;
        for statement in create_metrics_tables(self.config()) {
            self.run("create the metrics tables", statement, &[]).await?;
        }
        Ok(())
    }

    async fn check_metrics_tables(&self) -> Result<(), StoreError> {
        let tables = [METRICS_TABLE, ENTITY_MAP_TABLE, LOADS_TABLE, STAGING_METRICS_TABLE, STAGING_ENTITY_MAP_TABLE];
        self.require(tables.into_iter().map(|name| (name.to_owned(), crate::warehouse::TABLE)).collect()).await
    }

    async fn replace_slice(&self, load: SliceLoad, mut rows: BoxStream<'static, Result<SliceRow, StoreError>>) -> Result<ReplaceReceipt, StoreError> {
        let load_id = uuid::Uuid::new_v4().simple().to_string();
        let staged_at = converge_core::Clock::now(&converge_core::SystemClock).as_micros();
        let mut metrics = Stage::new(STAGING_METRICS_TABLE, false);
        let mut entities = Stage::new(STAGING_ENTITY_MAP_TABLE, true);
        let mut receipt = ReplaceReceipt::default();
        // An error anywhere before the script leaves only staged rows under a load id
        // nothing will read: the slice is unchanged.
        while let Some(row) = rows.next().await {
            let row = row?;
            check_slice_row(BACKEND, &load, &row)?;
            match row {
                SliceRow::Metric(m) => {
                    metrics.metrics.push(m);
                    receipt.metrics_written += 1;
                    if metrics.pending() == STAGE_CHUNK {
                        self.flush_stage(&mut metrics, &load_id, staged_at).await?;
                    }
                }
                SliceRow::Entity(e) => {
                    entities.entities.push(e);
                    receipt.entities_written += 1;
                    if entities.pending() == STAGE_CHUNK {
                        self.flush_stage(&mut entities, &load_id, staged_at).await?;
                    }
                }
            }
        }
        self.flush_stage(&mut metrics, &load_id, staged_at).await?;
        self.flush_stage(&mut entities, &load_id, staged_at).await?;
        self.commit_stage(metrics).await?;
        self.commit_stage(entities).await?;
        self.run("replace the slice", replace_script(self.config(), &load, &load_id), &[]).await?;
        Ok(receipt)
    }

    async fn slice_metrics(&self, tenant: &str, date: NaiveDate) -> Result<Vec<MetricRow>, StoreError> {
        let sql = format!(
            "SELECT entity_type, entity_id, metric, value FROM {} WHERE tenant = @tenant AND date = CAST(@date AS DATE) \
             ORDER BY entity_type, entity_id, metric",
            qualified(self.config(), METRICS_TABLE)
        );
        let rows = self
            .collect_rows("read slice metrics", sql, tenant, date, |row| Ok((row.get::<String>(0)?, row.get::<String>(1)?, row.get::<String>(2)?, row.get::<f64>(3)?)))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(entity_type, entity_id, metric, value)| MetricRow { date, tenant: tenant.to_owned(), entity_type, entity_id, metric, value })
            .collect())
    }

    async fn slice_entity_map(&self, tenant: &str, date: NaiveDate) -> Result<Vec<EntityMapRow>, StoreError> {
        let sql = format!(
            "SELECT entity_type, raw_id, entity_id, raw_records FROM {} WHERE tenant = @tenant AND date = CAST(@date AS DATE) \
             ORDER BY entity_type, raw_id",
            qualified(self.config(), ENTITY_MAP_TABLE)
        );
        let rows = self
            .collect_rows("read slice entity map", sql, tenant, date, |row| Ok((row.get::<String>(0)?, row.get::<String>(1)?, row.get::<String>(2)?, row.get::<i64>(3)?)))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(entity_type, raw_id, entity_id, raw_records)| EntityMapRow { date, tenant: tenant.to_owned(), entity_type, raw_id, entity_id, raw_records: raw_records as u64 })
            .collect())
    }

    async fn loads_before(&self, tenant: &str, before: NaiveDate, limit: usize) -> Result<Vec<SliceLoad>, StoreError> {
        // `limit` is a number from code, never input text.
        let sql = format!(
            "SELECT CAST(date AS STRING), batch_id, rows_in, rows_out, UNIX_MICROS(loaded_at) FROM {} \
             WHERE tenant = @tenant AND date < CAST(@date AS DATE) ORDER BY date DESC LIMIT {limit}",
            qualified(self.config(), LOADS_TABLE)
        );
        let rows = self
            .collect_rows("read loads", sql, tenant, before, |row| {
                Ok((row.get::<String>(0)?, row.get::<String>(1)?, row.get::<i64>(2)?, row.get::<i64>(3)?, row.get::<i64>(4)?))
            })
            .await?;
        rows.into_iter()
            .map(|(date, batch_id, rows_in, rows_out, loaded_at)| {
                Ok(SliceLoad {
                    tenant: tenant.to_owned(),
                    date: converge_core::raw_source::parse_date(&date)
                        .ok_or_else(|| StoreError::permanent(BACKEND, format!("etl_loads date read back as {date:?}: expected YYYY-MM-DD")))?,
                    batch_id,
                    rows_in: rows_in as u64,
                    rows_out: rows_out as u64,
                    loaded_at: Timestamp::from_micros(loaded_at),
                })
            })
            .collect()
    }
}
