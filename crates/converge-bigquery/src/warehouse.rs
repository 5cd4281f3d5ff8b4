//! [`BigQueryWarehouse`]: the changelog in a BigQuery dataset.
//!
//! - DDL and reads: jobs.query over REST, with named parameters only (`@tenant`,
//!   `@as_of`); table names reach SQL text only after a check against the mirror
//!   configuration.
//! - Live appends: the Storage Write API's default stream, at least once. BigQuery
//!   cannot tell a redelivered event id at append time, so a redelivery is stored
//!   again and the views ignore the copy (the contract in `converge_core::store`).
//! - Atomic appends (rebuilds): a PENDING stream, appended in bounded chunks with
//!   offsets, finalized, then committed with BatchCommitWriteStreams. Until the commit
//!   nothing is visible; an error before it abandons the stream, which BigQuery
//!   discards.
//!
//! Why this file is ~900 lines: it is the one [`Warehouse`] implementation, and every
//! query goes through its `run` (which counts the job's bytes); what the methods share
//! lives beside it (`query`: parameters and rows; `arrow`: row encoding and request
//! sizes; `runs`: run records; `incremental`: an incremental reconcile's reads and
//! verified points; `bytes`: the byte counters; `schema`: DDL).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use google_cloud_bigquery::client::{BigQuery, Write};
use google_cloud_bigquery::query::{CompleteQuery, Row, RowIterator};
use google_cloud_bigquery::write::format::Arrow;
use google_cloud_bigquery::write::{DefaultWriter, PendingWriter};
use google_cloud_bigquery_v2::client::{DatasetService, JobService, TableService};
use google_cloud_bigquery_v2::model::TableFieldSchema;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::RetryPolicyExt;

use converge_core::config::Route;
use converge_core::incremental::{PathRange, VerifiedPoint};
use converge_core::{
    AppendReceipt, ChangeRow, Clock, CompactionPlan, CurrentRefresh, DocState, ErrorKind, MirrorConfig, RefreshFrom, RunOutcome, RunRecord, Scan, StoreError,
    SystemClock, TableCompaction, Timestamp, Warehouse, WarehouseBytes,
};

use crate::arrow::{arrow_rows, arrow_schema, chunks_by_size};
use crate::bytes::JobBytes;
use crate::query::{doc_state, row_error, row_json, QueryParam};
use crate::config::BigQueryConfig;
use crate::error::{from_append, from_commit, from_gax, from_query, from_writer, timed_out, BACKEND};
use crate::schema::{
    add_column, added_columns, as_of_query, catalog_query, changelog_order, column_type_of, columns_query, create_dataset, create_runs, create_statements,
    create_verified_points, fixed_columns, layout_fingerprint, qualified, setup_batch_id, SETUP_KIND, STATE_COLUMNS, VERIFIED_POINTS,
};
use converge_core::schema_change::TableColumn;

/// `INFORMATION_SCHEMA.TABLES` types of what setup creates.
pub(crate) const TABLE: &str = "BASE TABLE";
pub(crate) const VIEW: &str = "VIEW";

/// Rows per chunk of an atomic append: memory stays bounded whatever the stream's length.
const ATOMIC_CHUNK: usize = 4096;

/// The BigQuery warehouse. Cheap to clone; clones share clients and writers.
#[derive(Clone)]
pub struct BigQueryWarehouse {
    inner: Arc<Inner>,
}

struct Inner {
    config: BigQueryConfig,
    query: BigQuery,
    write: Write,
    /// datasets.get: whether the dataset exists (`bigquery.datasets.get`, which the
    /// dataset-level roles hold).
    datasets: DatasetService,
    /// tables.get / tables.patch: a table resource's schema after `ADD COLUMN` (see
    /// [`BigQueryWarehouse::sync_table_schema`]).
    tables: TableService,
    /// jobs.get: a long query's billed bytes, which getQueryResults does not carry
    /// (see `bytes`).
    jobs: JobService,
    /// What this warehouse's query jobs processed and were billed, summed.
    bytes: JobBytes,
    mirror: RwLock<Option<MirrorConfig>>,
    /// One default-stream writer per table, opened on first append: it keeps its
    /// AppendRows connection open between appends.
    writers: tokio::sync::Mutex<HashMap<String, Arc<DefaultWriter<Arrow>>>>,
    /// Each changelog table's column order where it differs from `schema::columns`
    /// (a promoted column added to an existing table comes last), for the writers'
    /// Arrow schema; taken with the configuration.
    orders: RwLock<HashMap<String, Vec<String>>>,
}

impl std::fmt::Debug for BigQueryWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigQueryWarehouse").field("project", &self.inner.config.project).field("dataset", &self.inner.config.dataset).finish()
    }
}

impl BigQueryWarehouse {
    /// Builds the REST and gRPC clients. Connects lazily: the first call reaches BigQuery.
    pub async fn connect(config: BigQueryConfig) -> Result<Self, StoreError> {
        config.validate().map_err(|e| StoreError::permanent(BACKEND, e.to_string()))?;
        let backoff = || {
            ExponentialBackoffBuilder::new()
                .with_initial_delay(Duration::from_millis(100))
                .with_maximum_delay(Duration::from_secs(5))
                .build()
                .expect("constant backoff settings are valid")
        };
        let mut query = BigQuery::builder()
            .with_project_id(&config.project)
            // Bounded by time, not only by attempts: the caller (a sync request) has a
            // deadline of its own, and call_timeout caps the whole call anyway.
            .with_retry_policy(google_cloud_bigquery::query::retry_policy::RetryableErrors.with_time_limit(config.call_timeout))
            .with_backoff_policy(backoff());
        let mut write = Write::builder();
        let mut datasets = DatasetService::builder().with_retry_policy(google_cloud_gax::retry_policy::Aip194Strict.with_time_limit(config.call_timeout)).with_backoff_policy(backoff());
        let mut tables = TableService::builder().with_retry_policy(google_cloud_gax::retry_policy::Aip194Strict.with_time_limit(config.call_timeout)).with_backoff_policy(backoff());
        let mut jobs = JobService::builder().with_retry_policy(google_cloud_gax::retry_policy::Aip194Strict.with_time_limit(config.call_timeout)).with_backoff_policy(backoff());
        if let Some(rest) = &config.rest_endpoint {
            query = query.with_endpoint(rest);
            datasets = datasets.with_endpoint(rest);
            tables = tables.with_endpoint(rest);
            jobs = jobs.with_endpoint(rest);
        }
        if let Some(grpc) = &config.grpc_endpoint {
            write = write.with_endpoint(grpc);
        }
        if config.anonymous {
            query = query.with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
            write = write.with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
            datasets = datasets.with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
            tables = tables.with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
            jobs = jobs.with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
        }
        let query = query.build().await.map_err(|e| {
            StoreError::permanent(BACKEND, format!("cannot build the BigQuery client: {e} (are Application Default Credentials set up?)"))
        })?;
        let write = write.build().await.map_err(|e| {
            StoreError::permanent(BACKEND, format!("cannot build the Storage Write client: {e} (are Application Default Credentials set up?)"))
        })?;
        let datasets = datasets.build().await.map_err(|e| {
            StoreError::permanent(BACKEND, format!("cannot build the BigQuery datasets client: {e} (are Application Default Credentials set up?)"))
        })?;
        let tables = tables.build().await.map_err(|e| {
            StoreError::permanent(BACKEND, format!("cannot build the BigQuery tables client: {e} (are Application Default Credentials set up?)"))
        })?;
        let jobs = jobs.build().await.map_err(|e| {
            StoreError::permanent(BACKEND, format!("cannot build the BigQuery jobs client: {e} (are Application Default Credentials set up?)"))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                query,
                write,
                datasets,
                tables,
                jobs,
                bytes: JobBytes::default(),
                mirror: RwLock::new(None),
                writers: tokio::sync::Mutex::new(HashMap::new()),
                orders: RwLock::new(HashMap::new()),
            }),
        })
    }

    pub fn config(&self) -> &BigQueryConfig {
        &self.inner.config
    }

    /// The Storage Write API client (the metrics tables' staging loads use it too).
    pub(crate) fn write_client(&self) -> &Write {
        &self.inner.write
    }

    /// The REST query client (findings queries build their own requests on it).
    pub(crate) fn query_client(&self) -> &BigQuery {
        &self.inner.query
    }

    fn mirror(&self) -> Result<MirrorConfig, StoreError> {
        self.inner.mirror.read().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| {
            StoreError::permanent(BACKEND, "ensure_tables must run before appends and reads (the warehouse has no table layout yet)")
        })
    }

    /// Takes `config` as the table layout for later calls, with the changelog tables'
    /// column orders `orders`.
    async fn adopt(&self, config: &MirrorConfig, orders: HashMap<String, Vec<String>>) {
        // Writers carry their table's Arrow schema: a new layout needs new writers.
        self.inner.writers.lock().await.clear();
        *self.inner.orders.write().unwrap_or_else(|p| p.into_inner()) = orders;
        *self.inner.mirror.write().unwrap_or_else(|p| p.into_inner()) = Some(config.clone());
    }

    /// `table`'s column order for the writers (empty: `schema::columns`).
    fn order(&self, table: &str) -> Vec<String> {
        self.inner.orders.read().unwrap_or_else(|p| p.into_inner()).get(table).cloned().unwrap_or_default()
    }

    /// Every table's columns in the dataset, in table order (see [`columns_query`]).
    async fn catalog_columns(&self) -> Result<HashMap<String, Vec<TableColumn>>, StoreError> {
        let context = "list the dataset's columns";
        let done = self.run(context, columns_query(&self.inner.config), &[]).await?;
        let mut rows = self.rows(context, done);
        let mut columns: HashMap<String, Vec<TableColumn>> = HashMap::new();
        while let Some(row) = rows.next().await {
            let row = row?;
            let field = |i| row.get::<String>(i).map_err(|e| row_error(context, &e));
            let data_type = field(2)?;
            columns.entry(field(0)?).or_default().push(TableColumn { name: field(1)?, column_type: column_type_of(&data_type), warehouse_type: data_type });
        }
        Ok(columns)
    }

    /// Refuses a promoted column removed from `config` or retyped, in any of a route's
    /// tables (`converge_core::schema_change`); otherwise the changelog tables' column
    /// orders once setup has added what they lack.
    fn compare_promoted(config: &MirrorConfig, catalog: &HashMap<String, Vec<TableColumn>>) -> Result<HashMap<String, Vec<String>>, StoreError> {
        let fixed = fixed_columns();
        let mut orders = HashMap::new();
        for route in &config.routes {
            let t = &route.table;
            for table in [t.clone(), converge_core::retention::current_table(t), converge_core::retention::current_tombstones_table(t)] {
                if let Some(present) = catalog.get(&table) {
                    converge_core::schema_change::compare_promoted(BACKEND, route, &table, &fixed, present)?;
                }
            }
            let present: Vec<String> = catalog.get(t).map(|c| c.iter().map(|c| c.name.clone()).collect()).unwrap_or_default();
            orders.insert(t.clone(), changelog_order(route, &present));
        }
        Ok(orders)
    }

    /// Makes `table`'s resource schema list `added` (column, type), the columns setup's
    /// `ALTER TABLE … ADD COLUMN IF NOT EXISTS` has just added: reads it with tables.get
    /// and, only if a column is missing there, patches the schema with the columns it
    /// lists plus the missing ones, NULLABLE, last.
    ///
    /// On BigQuery the ALTER has already put them in the table resource, so this is one
    /// read and no second metadata update: "To view immediate schema changes, call the
    /// `tables.get` method" (<https://cloud.google.com/bigquery/docs/managing-table-schemas>).
    /// Were one missing, the patch is the page's API way to add an empty column
    /// ("Add an empty column": tables.patch with the `schema` property, every existing
    /// column plus the new NULLABLE ones; tables.patch replaces only the fields the
    /// request carries, <https://cloud.google.com/bigquery/docs/reference/rest/v2/tables/patch>).
    ///
    /// The bqemulator needs it: its `ALTER TABLE … ADD COLUMN` changes the stored table
    /// but not the table resource (tables.get, `INFORMATION_SCHEMA.COLUMNS`) that its
    /// Storage Write API checks appended rows against, so a row with the new column
    /// would be refused ("21 columns but 20 values"); its tables.patch updates the
    /// resource but not the stored table, hence both.
    async fn sync_table_schema(&self, table: &str, added: &[(&str, &str)]) -> Result<(), StoreError> {
        let config = &self.inner.config;
        let get = self
            .inner
            .tables
            .get_table()
            .set_project_id(&config.project)
            .set_dataset_id(&config.dataset)
            .set_table_id(table)
            // BASIC: the schema without storage statistics.
            .set_view(google_cloud_bigquery_v2::model::get_table_request::TableMetadataView::Basic)
            .send();
        let resource = self.bounded(&format!("read the schema of `{table}`"), get, from_gax).await?;
        let mut fields: Vec<TableFieldSchema> = resource.schema.map(|s| s.fields).unwrap_or_default();
        let missing: Vec<TableFieldSchema> = added
            .iter()
            .filter(|(name, _)| !fields.iter().any(|f| f.name.eq_ignore_ascii_case(name)))
            .map(|(name, ty)| TableFieldSchema::new().set_name(*name).set_type(*ty).set_mode("NULLABLE"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        fields.extend(missing);
        let patch = self
            .inner
            .tables
            .patch_table()
            .set_project_id(&config.project)
            .set_dataset_id(&config.dataset)
            .set_table_id(table)
            .set_table(google_cloud_bigquery_v2::model::Table::new().set_schema(google_cloud_bigquery_v2::model::TableSchema::new().set_fields(fields)))
            .send();
        self.bounded(&format!("add the new columns to the schema of `{table}`"), patch, from_gax).await?;
        Ok(())
    }

    /// Whether the dataset exists (datasets.get).
    async fn dataset_exists(&self) -> Result<bool, StoreError> {
        let config = &self.inner.config;
        // METADATA: the dataset's metadata without its access list, which would need
        // `bigquery.datasets.getIamPolicy` as well
        // (<https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets/get>, `datasetView`).
        let get = self
            .inner
            .datasets
            .get_dataset()
            .set_project_id(&config.project)
            .set_dataset_id(&config.dataset)
            .set_dataset_view(google_cloud_bigquery_v2::model::get_dataset_request::DatasetView::Metadata)
            .send();
        match self.bounded("look the dataset up", get, from_gax).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `` dataset `project.dataset` ``, for messages.
    fn dataset_name(&self) -> String {
        format!("dataset `{}.{}`", self.inner.config.project, self.inner.config.dataset)
    }

    /// Checks, reading metadata only (see [`catalog_query`] for the permissions), that
    /// the dataset exists and holds every `(name, type)` wanted (type [`TABLE`] or
    /// [`VIEW`]); otherwise a not-set-up error naming each one missing.
    pub(crate) async fn require(&self, wanted: Vec<(String, &'static str)>) -> Result<(), StoreError> {
        if !self.dataset_exists().await? {
            return Err(StoreError::not_set_up(BACKEND, &self.dataset_name(), &["it does not exist".to_owned()]));
        }
        let done = self.run("list the dataset's tables", catalog_query(&self.inner.config), &[]).await?;
        let mut catalog = HashMap::new();
        let mut rows = self.rows("list the dataset's tables", done);
        while let Some(row) = rows.next().await {
            let row = row?;
            let field = |i| row.get::<String>(i).map_err(|e| row_error("list the dataset's tables", &e));
            catalog.insert(field(0)?, field(1)?);
        }
        let missing: Vec<String> = wanted
            .into_iter()
            .filter(|(name, kind)| catalog.get(name).map(String::as_str) != Some(*kind))
            .map(|(name, kind)| format!("{} `{name}` is missing", if kind == VIEW { "view" } else { "table" }))
            .collect();
        match missing.is_empty() {
            true => Ok(()),
            false => Err(StoreError::not_set_up(BACKEND, &self.dataset_name(), &missing)),
        }
    }

    /// Creates the dataset only if it is missing. `CREATE SCHEMA IF NOT EXISTS` is
    /// checked against `bigquery.datasets.create` on the project even when the dataset
    /// exists (see `FACTS`: dbt-external-tables #354, Airbyte #39330), so a setup run by
    /// someone with only dataset-level roles, on a dataset Terraform made, would fail.
    pub(crate) async fn ensure_dataset(&self) -> Result<(), StoreError> {
        if !self.dataset_exists().await? {
            self.run("create dataset", create_dataset(&self.inner.config), &[]).await?;
        }
        Ok(())
    }

    /// Table names reach SQL text only after this check against the configuration.
    fn route(&self, table: &str) -> Result<Route, StoreError> {
        self.mirror()?
            .table(table)
            .cloned()
            .ok_or_else(|| StoreError::new(ErrorKind::NotFound, BACKEND, format!("no mirrored table named `{table}`; configured tables only")))
    }

    /// Runs one statement to completion, bounded by `call_timeout`.
    pub(crate) async fn run(&self, context: &str, sql: String, params: &[(&str, QueryParam)]) -> Result<CompleteQuery, StoreError> {
        let mut query = self.inner.query.query(sql).set_page_size(self.inner.config.page_size);
        if !params.is_empty() {
            query = query.set_parameter_mode("NAMED").set_query_parameters(params.iter().map(|(name, value)| value.to_parameter(name)));
        }
        if let Some(location) = &self.inner.config.location {
            query = query.set_location(location);
        }
        let timeout = self.inner.config.call_timeout;
        let done = match tokio::time::timeout(timeout, query.until_done()).await {
            Err(_) => return Err(timed_out(context, timeout)),
            Ok(result) => result.map_err(|e| from_query(context, &e))?,
        };
        self.count_job(&done).await;
        Ok(done)
    }

    /// Adds a finished job's processed and billed bytes to the warehouse's counters
    /// (`bytes`: where each figure comes from). Never fails the query it counts: a
    /// failed jobs.get is logged and the processed bytes stand in for the billed.
    pub(crate) async fn count_job(&self, done: &CompleteQuery) {
        let (processed, billed) = crate::bytes::reported(done.metadata());
        let billed = match (billed, &done.metadata().job_reference) {
            (Some(billed), _) => billed,
            (None, _) if processed == 0 => 0,
            (None, None) => processed,
            (None, Some(job)) => {
                let from_job = match self.job_billed_bytes(job).await {
                    Ok(billed) => billed,
                    Err(error) => {
                        tracing::warn!(job = %job.job_id, %error, "cannot read the job's billed bytes; counting its processed bytes as billed");
                        None
                    }
                };
                crate::bytes::billed_or_processed(processed, from_job)
            }
        };
        self.inner.bytes.add(processed, billed);
    }

    /// `statistics.query.totalBytesBilled` of a finished job (jobs.get).
    async fn job_billed_bytes(&self, job: &google_cloud_bigquery_v2::model::JobReference) -> Result<Option<u64>, StoreError> {
        let mut get = self.inner.jobs.get_job().set_project_id(&job.project_id).set_job_id(&job.job_id);
        if let Some(location) = job.location.clone().or_else(|| self.inner.config.location.clone()) {
            get = get.set_location(location);
        }
        let resource = self.bounded("read a job's billed bytes", get.send(), from_gax).await?;
        Ok(resource.statistics.and_then(|s| s.query).and_then(|q| q.total_bytes_billed).map(|b| u64::try_from(b).unwrap_or(0)))
    }

    /// Rows of a finished query, page by page (each page fetched when the previous one
    /// is consumed), each page fetch bounded by `call_timeout`.
    pub(crate) fn rows(&self, context: &'static str, done: CompleteQuery) -> BoxStream<'static, Result<Row, StoreError>> {
        let timeout = self.inner.config.call_timeout;
        let iterator: RowIterator = done.read().set_page_size(self.inner.config.page_size);
        Box::pin(futures::stream::unfold(Some(iterator), move |state| async move {
            let mut iterator = state?;
            match tokio::time::timeout(timeout, iterator.next()).await {
                Err(_) => Some((Err(timed_out(context, timeout)), None)),
                Ok(None) => None,
                Ok(Some(Ok(row))) => Some((Ok(row), Some(iterator))),
                Ok(Some(Err(e))) => Some((Err(row_error(context, &e)), None)),
            }
        }))
    }

    /// Runs a query with named parameters and returns each row as a JSON object:
    /// INT64 / FLOAT64 / BOOL as JSON numbers and booleans, TIMESTAMP as RFC 3339,
    /// everything else as BigQuery's REST rendering. For `converge sql` and reports;
    /// every row is collected, so keep results small.
    pub async fn query_json(&self, sql: &str, params: &[(&str, QueryParam)]) -> Result<Vec<serde_json::Value>, StoreError> {
        Ok(self.query_json_counted(sql, params).await?.0)
    }

    /// [`BigQueryWarehouse::query_json`], with the bytes the query processed (its job
    /// statistics: what on-demand pricing bills).
    pub async fn query_json_counted(&self, sql: &str, params: &[(&str, QueryParam)]) -> Result<(Vec<serde_json::Value>, Option<u64>), StoreError> {
        let done = self.run("query", sql.to_owned(), params).await?;
        let bytes = done.metadata().total_bytes_processed.map(|b| b.max(0) as u64);
        let fields: Vec<TableFieldSchema> = done.metadata().schema.as_ref().map(|s| s.fields.clone()).unwrap_or_default();
        let mut rows = self.rows("query", done);
        let mut out = Vec::new();
        while let Some(row) = rows.next().await {
            out.push(row_json(&row?, &fields)?);
        }
        Ok((out, bytes))
    }

    /// Total rows of a changelog table (every version, tombstones and redelivered
    /// copies included).
    pub async fn changelog_rows(&self, table: &str) -> Result<u64, StoreError> {
        self.route(table)?;
        let sql = format!("SELECT COUNT(*) AS n FROM {}", qualified(&self.inner.config, table));
        self.single_count("count changelog", sql, &[]).await
    }

    pub(crate) async fn single_count(&self, context: &'static str, sql: String, params: &[(&str, QueryParam)]) -> Result<u64, StoreError> {
        let done = self.run(context, sql, params).await?;
        let mut rows = self.rows(context, done);
        let row = rows.next().await.ok_or_else(|| StoreError::permanent(BACKEND, format!("{context}: COUNT(*) returned no row")))??;
        let n: i64 = row.get(0).map_err(|e| row_error(context, &e))?;
        Ok(n as u64)
    }

    async fn default_writer(&self, route: &Route) -> Result<Arc<DefaultWriter<Arrow>>, StoreError> {
        let config = &self.inner.config;
        if config.connection_per_append {
            return self.open_default_writer(route).await.map(Arc::new);
        }
        let mut writers = self.inner.writers.lock().await;
        if let Some(writer) = writers.get(&route.table) {
            return Ok(writer.clone());
        }
        let writer = Arc::new(self.open_default_writer(route).await?);
        writers.insert(route.table.clone(), writer.clone());
        Ok(writer)
    }

    async fn open_default_writer(&self, route: &Route) -> Result<DefaultWriter<Arrow>, StoreError> {
        let config = &self.inner.config;
        let writer: DefaultWriter<Arrow> = self
            .inner
            .write
            .open_default_stream(config.table_resource(&route.table))
            .with_retry_policy(google_cloud_bigquery::write::retry_policy::RetryableErrors.with_time_limit(config.call_timeout))
            .with_attempt_timeout(config.attempt_timeout)
            .build_arrow(arrow_schema(route, &self.order(&route.table)))
            .await
            .map_err(|e| from_writer(&format!("open the default stream of `{}`", route.table), &e))?;
        Ok(writer)
    }

    async fn append_table(&self, route: &Route, rows: &[&ChangeRow]) -> Result<u64, StoreError> {
        let mut writer = self.default_writer(route).await?;
        let context = format!("append to `{}`", route.table);
        let order = self.order(&route.table);
        for (i, chunk) in chunks_by_size(rows).enumerate() {
            if i > 0 && self.inner.config.connection_per_append {
                writer = self.default_writer(route).await?;
            }
            let batch = arrow_rows(route, &order, chunk)?;
            let timeout = self.inner.config.call_timeout;
            match tokio::time::timeout(timeout, writer.append(batch).send()).await {
                Err(_) => return Err(timed_out(&context, timeout)),
                Ok(Err(e)) => return Err(from_append(&context, &e)),
                Ok(Ok(_)) => {}
            }
        }
        Ok(rows.len() as u64)
    }

    pub(crate) async fn bounded<T, E>(&self, context: &str, call: impl std::future::Future<Output = Result<T, E>>, map: impl FnOnce(&str, &E) -> StoreError) -> Result<T, StoreError> {
        let timeout = self.inner.config.call_timeout;
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(timed_out(context, timeout)),
            Ok(result) => result.map_err(|e| map(context, &e)),
        }
    }
}

/// An atomic append in progress on one table: its PENDING stream.
struct Pending {
    table: String,
    route: Route,
    writer: PendingWriter<Arrow>,
    offset: i64,
    /// The oldest `ingested_at` of its rows.
    oldest: i64,
}

impl BigQueryWarehouse {
    /// Opens `table`'s PENDING stream for [`Warehouse::append_atomic`].
    async fn open_pending(&self, mirror: &MirrorConfig, table: &str) -> Result<Pending, StoreError> {
        let route = mirror.table(table).cloned().ok_or_else(|| {
            StoreError::permanent(BACKEND, format!("row for unknown table `{table}`; is the mirror configuration the same everywhere?"))
        })?;
        let writer: PendingWriter<Arrow> = self
            .bounded(
                &format!("create a PENDING stream on `{table}`"),
                self.inner.write.create_stream(self.inner.config.table_resource(table)).build_arrow(arrow_schema(&route, &self.order(table))),
                from_writer,
            )
            .await?;
        Ok(Pending { table: table.to_owned(), route, writer, offset: 0, oldest: i64::MAX })
    }

    /// Appends one table's rows to its PENDING stream; the number appended.
    async fn append_pending(&self, p: &mut Pending, rows: &[&ChangeRow]) -> Result<u64, StoreError> {
        let mut written = 0u64;
        p.oldest = rows.iter().map(|r| r.ingested_at).fold(p.oldest, i64::min);
        for part in chunks_by_size(rows) {
            if p.offset > 0 && self.inner.config.connection_per_append {
                // A new connection to the same stream (see BigQueryConfig).
                let name = p.writer.write_stream().to_owned();
                p.writer = self
                    .bounded(
                        &format!("attach to the PENDING stream of `{}`", p.table),
                        self.inner.write.attach_to_stream(name).build_arrow(arrow_schema(&p.route, &self.order(&p.table))),
                        from_writer,
                    )
                    .await?;
            }
            let batch = arrow_rows(&p.route, &self.order(&p.table), part)?;
            // The offset makes a resent chunk land once (the stream refuses an offset it
            // has already seen).
            let context = format!("append to the PENDING stream of `{}`", p.table);
            self.bounded(&context, p.writer.append(batch).set_offset(p.offset).send(), from_append).await?;
            p.offset += part.len() as i64;
            written += part.len() as u64;
        }
        Ok(written)
    }
}

#[async_trait]
impl Warehouse for BigQueryWarehouse {
    async fn ensure_tables(&self, config: &MirrorConfig) -> Result<(), StoreError> {
        let started_at = SystemClock.now();
        let bq = &self.inner.config;
        self.ensure_dataset().await?;
        // A promoted column removed from the configuration or retyped is refused
        // before any DDL; added ones are added by `create_statements`.
        let catalog = self.catalog_columns().await?;
        let orders = Self::compare_promoted(config, &catalog)?;
        // The columns the tables have already: their `ADD COLUMN` statements are
        // skipped (each would be a metadata update of the table, rate-limited).
        let present: std::collections::HashSet<String> = config
            .routes
            .iter()
            .flat_map(|route| {
                let t = &route.table;
                [t.clone(), converge_core::retention::current_table(t), converge_core::retention::current_tombstones_table(t)]
            })
            .flat_map(|table| {
                let columns = catalog.get(&table).cloned().unwrap_or_default();
                columns.into_iter().map(move |c| add_column(bq, &table, &c.name, &c.warehouse_type))
            })
            .collect();
        self.run("create the runs table", create_runs(bq), &[]).await?;
        self.run("create the verified points table", create_verified_points(bq), &[]).await?;
        for statement in crate::schema::create_table_state(bq) {
            self.run("create the table state", statement, &[]).await?;
        }
        for route in &config.routes {
            for statement in create_statements(bq, route).into_iter().filter(|s| !present.contains(s)) {
                self.run(&format!("create table `{}` and its views", route.table), statement, &[]).await?;
            }
            // The columns just added, per table: each table resource must list them.
            let mut added: Vec<(String, Vec<(&str, &str)>)> = Vec::new();
            for (table, column, ty) in added_columns(route) {
                if present.contains(&add_column(bq, &table, column, ty)) {
                    continue;
                }
                match added.iter_mut().find(|(t, _)| *t == table) {
                    Some((_, columns)) => columns.push((column, ty)),
                    None => added.push((table, vec![(column, ty)])),
                }
            }
            for (table, columns) in added {
                self.sync_table_schema(&table, &columns).await?;
            }
        }
        self.adopt(config, orders).await;
        // The record a function's start looks for (`check_tables`): written last, so
        // it exists only once every statement above has run.
        let fingerprint = layout_fingerprint(bq, config);
        let tables: Vec<&str> = config.routes.iter().map(|route| route.table.as_str()).collect();
        let report = serde_json::json!({ "fingerprint": fingerprint, "tables": tables });
        let scope = format!("{}.{}", bq.project, bq.dataset);
        self.record_run(RunRecord::new(setup_batch_id(&fingerprint), SETUP_KIND, scope, started_at, SystemClock.now(), RunOutcome::Ok, &report)).await
    }

    async fn check_tables(&self, config: &MirrorConfig) -> Result<(), StoreError> {
        let bq = &self.inner.config;
        let mut wanted = vec![(converge_core::RUNS_TABLE.to_owned(), TABLE)];
        wanted.push((converge_core::retention::TABLE_STATE.to_owned(), TABLE));
        wanted.push((crate::schema::WATERMARK_RESETS.to_owned(), TABLE));
        wanted.push((VERIFIED_POINTS.to_owned(), TABLE));
        for route in &config.routes {
            wanted.push((route.table.clone(), TABLE));
            wanted.push((converge_core::retention::current_table(&route.table), TABLE));
            wanted.push((converge_core::retention::current_tombstones_table(&route.table), TABLE));
            wanted.push((format!("{}_latest", route.table), VIEW));
        }
        self.require(wanted).await?;
        // A promoted column removed or retyped: refused, saying what to do (before the
        // fingerprint, which differs then too but says only "run setup").
        let orders = Self::compare_promoted(config, &self.catalog_columns().await?)?;
        // Everything is there; is it what this build and configuration create? The
        // columns, views and table functions are compared by the fingerprint of their
        // DDL, recorded by the last setup.
        let expected = setup_batch_id(&layout_fingerprint(bq, config));
        let sql = format!(
            "SELECT batch_id FROM {} WHERE kind = @kind ORDER BY recorded_at DESC LIMIT 1",
            qualified(bq, converge_core::RUNS_TABLE)
        );
        let done = self.run("read the last setup", sql, &[("kind", QueryParam::String(SETUP_KIND.to_owned()))]).await?;
        let last: Option<String> = match self.rows("read the last setup", done).next().await {
            None => None,
            Some(row) => Some(row?.get(0).map_err(|e| row_error("read the last setup", &e))?),
        };
        match last {
            Some(found) if found == expected => {
                self.adopt(config, orders).await;
                Ok(())
            }
            Some(found) => Err(StoreError::not_set_up(
                BACKEND,
                &self.dataset_name(),
                &[format!("its tables and views were set up by another version or configuration (last setup `{found}`, this one needs `{expected}`)")],
            )),
            None => Err(StoreError::not_set_up(BACKEND, &self.dataset_name(), &[format!("`{}` records no setup", converge_core::RUNS_TABLE)])),
        }
    }

    async fn append(&self, rows: Vec<ChangeRow>) -> Result<AppendReceipt, StoreError> {
        if rows.is_empty() {
            return Ok(AppendReceipt::default());
        }
        let mirror = self.mirror()?;
        let mut by_table: Vec<(&str, Vec<&ChangeRow>)> = Vec::new();
        for row in &rows {
            match by_table.iter_mut().find(|(t, _)| *t == row.table) {
                Some((_, list)) => list.push(row),
                None => by_table.push((row.table.as_str(), vec![row])),
            }
        }
        let mut receipt = AppendReceipt::default();
        for (table, table_rows) in by_table {
            let route = mirror.table(table).ok_or_else(|| {
                StoreError::permanent(BACKEND, format!("row for unknown table `{table}`; is the mirror configuration the same everywhere?"))
            })?;
            // Every row is stored, redeliveries included: the default stream cannot
            // tell them apart, and the views pick one copy (see the module docs).
            receipt.written += self.append_table(route, &table_rows).await?;
        }
        Ok(receipt)
    }

    /// All or nothing per table, and nothing visible until every table's rows are
    /// durable: the rows go to one PENDING stream per table (opened at the table's
    /// first row, appended with offsets, so a resent request lands once); after the
    /// last row every stream is finalized, and only then are they committed, one
    /// `BatchCommitWriteStreams` per table in the order the tables first came. That
    /// call commits the streams of one table only (its request names one parent table,
    /// https://cloud.google.com/bigquery/docs/reference/storage/rpc/google.cloud.bigquery.storage.v1#batchcommitwritestreamsrequest),
    /// so across tables: an error before the commits (the stream's, an append's, a
    /// finalize's) leaves nothing visible; an error in the commits leaves the tables
    /// committed before it visible, each whole, and the others invisible, and says
    /// which. A rebuild's rows are reads of the source, so what is visible is true;
    /// running it again (same batch id) appends what is missing.
    async fn append_atomic(&self, mut rows: BoxStream<'static, Result<ChangeRow, StoreError>>) -> Result<AppendReceipt, StoreError> {
        let mirror = self.mirror()?;
        // In the order the tables first came.
        let mut pending: Vec<Pending> = Vec::new();
        let mut chunk: Vec<ChangeRow> = Vec::with_capacity(ATOMIC_CHUNK);
        let mut written = 0u64;
        // Any early return below leaves every PENDING stream uncommitted: their rows
        // never become visible, and BigQuery discards the streams.
        loop {
            let next = rows.next().await;
            let end = next.is_none();
            if let Some(item) = next {
                chunk.push(item?);
            }
            if chunk.len() == ATOMIC_CHUNK || (end && !chunk.is_empty()) {
                let mut by_table: Vec<(&str, Vec<&ChangeRow>)> = Vec::new();
                for row in &chunk {
                    match by_table.iter_mut().find(|(table, _)| *table == row.table) {
                        Some((_, rows)) => rows.push(row),
                        None => by_table.push((&row.table, vec![row])),
                    }
                }
                for (table, refs) in by_table {
                    let index = match pending.iter().position(|p| p.table == table) {
                        Some(index) => index,
                        None => {
                            pending.push(self.open_pending(&mirror, table).await?);
                            pending.len() - 1
                        }
                    };
                    written += self.append_pending(&mut pending[index], &refs).await?;
                }
                chunk.clear();
            }
            if end {
                break;
            }
        }
        // Before the rows become visible: each current table's next refresh must read
        // from the oldest of them (a spurious reset, if a commit fails, only costs
        // that refresh a longer read).
        for p in &pending {
            self.lower_watermark(&p.table, p.oldest).await?;
        }
        for p in &pending {
            let context = format!("finalize the PENDING stream of `{}`", p.table);
            self.bounded(&context, p.writer.finalize(), from_gax).await?;
        }
        for (done, p) in pending.iter().enumerate() {
            let context = format!("commit the PENDING stream of `{}`", p.table);
            if let Err(error) = self.bounded(&context, p.writer.commit(), from_commit).await {
                if done == 0 {
                    return Err(error);
                }
                let names = |ps: &[Pending]| ps.iter().map(|p| format!("`{}`", p.table)).collect::<Vec<_>>().join(", ");
                return Err(StoreError {
                    message: format!(
                        "{}; this atomic append had committed {} (visible, each whole) but not {} (nothing of them visible): BigQuery commits PENDING streams per table; run it again",
                        error.message,
                        names(&pending[..done]),
                        names(&pending[done..])
                    ),
                    ..error
                });
            }
        }
        Ok(AppendReceipt { written, duplicates: 0 })
    }

    async fn latest_states(&self, table: &str, tenant: &str) -> Result<Scan<DocState>, StoreError> {
        self.route(table)?;
        let sql = format!(
            "SELECT doc_path, {STATE_COLUMNS} FROM {} WHERE tenant = @tenant ORDER BY doc_path",
            qualified(&self.inner.config, &format!("{table}_latest"))
        );
        // Informational: the query reads BigQuery's snapshot as of its start.
        let read_time = SystemClock.now();
        let done = self.run("scan latest", sql, &[("tenant", QueryParam::String(tenant.to_owned()))]).await?;
        let items = self.rows("scan latest", done).map(|row| row.and_then(|r| doc_state(&r)));
        Ok(Scan { read_time, items: Box::pin(items) })
    }

    async fn current_states(&self, table: &str, tenant: &str) -> Result<Scan<DocState>, StoreError> {
        self.route(table)?;
        let sql = format!(
            "SELECT doc_path, {STATE_COLUMNS} FROM {} WHERE tenant = @tenant ORDER BY doc_path",
            qualified(&self.inner.config, &converge_core::retention::current_table(table))
        );
        let read_time = SystemClock.now();
        let done = self.run("scan current", sql, &[("tenant", QueryParam::String(tenant.to_owned()))]).await?;
        let items = self.rows("scan current", done).map(|row| row.and_then(|r| doc_state(&r)));
        Ok(Scan { read_time, items: Box::pin(items) })
    }

    async fn as_of_states(&self, table: &str, tenant: &str, as_of: Timestamp) -> Result<Scan<DocState>, StoreError> {
        self.route(table)?;
        let sql = as_of_query(&self.inner.config, table);
        let params = [("tenant", QueryParam::String(tenant.to_owned())), ("as_of", QueryParam::Timestamp(as_of.as_micros()))];
        let done = self.run("scan as of", sql, &params).await?;
        let items = self.rows("scan as of", done).map(|row| row.and_then(|r| doc_state(&r)));
        Ok(Scan { read_time: as_of, items: Box::pin(items) })
    }

    async fn refresh_current(&self, table: &str, from: RefreshFrom) -> Result<CurrentRefresh, StoreError> {
        let route = self.route(table)?;
        self.refresh_current_table(&route, from).await
    }

    async fn compact(&self, table: &str, plan: CompactionPlan) -> Result<TableCompaction, StoreError> {
        let route = self.route(table)?;
        self.compact_table(&route, plan).await
    }

    async fn tenants(&self, table: &str) -> Result<Vec<String>, StoreError> {
        self.route(table)?;
        let sql = format!("SELECT DISTINCT tenant FROM {} ORDER BY tenant", qualified(&self.inner.config, table));
        let done = self.run("list tenants", sql, &[]).await?;
        let rows: Vec<Result<Row, StoreError>> = self.rows("list tenants", done).collect().await;
        rows.into_iter().map(|row| row?.get::<String>(0).map_err(|e| row_error("list tenants", &e))).collect()
    }

    async fn record_run(&self, run: RunRecord) -> Result<(), StoreError> {
        self.mirror()?;
        self.insert_run(run).await
    }

    async fn runs(&self, kind: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.mirror()?;
        self.read_runs(kind, limit).await
    }

    async fn latest_count(&self, table: &str, tenant: &str) -> Result<u64, StoreError> {
        self.route(table)?;
        let sql = format!(
            "SELECT COUNT(*) AS n FROM {} WHERE tenant = @tenant",
            qualified(&self.inner.config, &format!("{table}_latest"))
        );
        self.single_count("count latest", sql, &[("tenant", QueryParam::String(tenant.to_owned()))]).await
    }

    async fn backfill_promoted(&self, table: &str, column: &str) -> Result<converge_core::schema_change::PromotedBackfill, StoreError> {
        let route = self.route(table)?;
        let promoted = converge_core::schema_change::promoted_column(BACKEND, &route, column)?.clone();
        self.backfill_promoted_column(&route, &promoted).await
    }

    async fn latest_states_of(&self, table: &str, tenant: &str, paths: &[String]) -> Result<Vec<DocState>, StoreError> {
        self.route(table)?;
        self.latest_states_at_paths(table, tenant, paths).await
    }

    async fn latest_states_in(&self, table: &str, tenant: &str, ranges: &[PathRange]) -> Result<Scan<DocState>, StoreError> {
        self.route(table)?;
        self.latest_states_in_ranges(table, tenant, ranges).await
    }

    async fn current_range_counts(&self, table: &str, tenant: &str, ranges: &[PathRange]) -> Result<Vec<u64>, StoreError> {
        self.route(table)?;
        self.current_counts_per_range(table, tenant, ranges).await
    }

    async fn split_range(&self, table: &str, tenant: &str, range: &PathRange, parts: usize) -> Result<Vec<String>, StoreError> {
        self.route(table)?;
        self.split_current_range(table, tenant, range, parts).await
    }

    async fn verified_points(&self, table: &str) -> Result<Vec<VerifiedPoint>, StoreError> {
        self.route(table)?;
        self.read_verified_points(table).await
    }

    async fn record_verified_points(&self, points: Vec<VerifiedPoint>) -> Result<(), StoreError> {
        self.mirror()?;
        self.insert_verified_points(points).await
    }

    fn bytes_processed(&self) -> WarehouseBytes {
        self.inner.bytes.total()
    }
}
