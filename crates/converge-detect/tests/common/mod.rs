//! Test support: a real `daily_entity_metrics` (an in-memory DuckDB warehouse, its
//! table made and filled through `MetricsWarehouse` by the kit's loader) and compiled
//! detectors run through `FindingsWarehouse`, the runner's own path. The tests here
//! are synchronous; this wraps the async kit in a runtime of its own.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::NaiveDate;
use converge_contract::kit::{self, MetricsLoader};
use converge_core::{FindingRow, KnownEvents, MetricRow, QueryDialect, StoreError};
use converge_detect::{compile, CompiledDetector, DetectorSpec};
use converge_duckdb::DuckWarehouse;

// Not every test file reads the planted dataset.
#[allow(unused_imports)]
pub use converge_contract::kit::planted;

pub struct MetricsDb {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    warehouse: DuckWarehouse,
    loader: MetricsLoader,
}

impl Drop for MetricsDb {
    /// A runtime dropped the ordinary way blocks, which panics when the last owner is
    /// an async test (tests/bigquery.rs).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl MetricsDb {
    pub fn new() -> MetricsDb {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime");
        let warehouse = DuckWarehouse::open_in_memory().expect("in-memory DuckDB");
        let loader = runtime.block_on(MetricsLoader::new(Arc::new(warehouse.clone())));
        MetricsDb { runtime: Some(runtime), warehouse, loader }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.as_ref().expect("a runtime until dropped").block_on(future)
    }

    pub fn insert(&self, rows: &[MetricRow]) {
        self.block_on(self.loader.insert(rows.iter().cloned()));
    }

    /// Adds one value per day for `days` consecutive days ending on `last_day`.
    pub fn add_days(&self, tenant: &str, entity_type: &str, entity_id: &str, metric: &str, last_day: NaiveDate, values_oldest_first: &[f64]) {
        self.block_on(self.loader.add_days(tenant, entity_type, entity_id, metric, last_day, values_oldest_first));
    }

    pub fn run(&self, compiled: &CompiledDetector) -> Result<Vec<FindingRow>, StoreError> {
        assert_eq!(compiled.dialect, QueryDialect::DuckDb);
        self.block_on(kit::fire(&self.warehouse, compiled.clone()))
    }

    /// Compiles for DuckDB and runs; panics on errors (tests of errors call the parts).
    pub fn fire(&self, spec: &DetectorSpec, as_of: NaiveDate, tenant: Option<&str>) -> Vec<FindingRow> {
        self.fire_with(spec, as_of, tenant, &KnownEvents::default())
    }

    /// [`MetricsDb::fire`] with the tenants' known events.
    pub fn fire_with(&self, spec: &DetectorSpec, as_of: NaiveDate, tenant: Option<&str>, known: &KnownEvents) -> Vec<FindingRow> {
        let compiled = compile(spec, QueryDialect::DuckDb, as_of, tenant, known).unwrap_or_else(|e| panic!("{e}"));
        self.run(&compiled).unwrap_or_else(|e| panic!("{}: {e}\n{}", spec.id, compiled.sql))
    }

    /// The entity ids that fire, in order.
    pub fn fired_ids(&self, spec: &DetectorSpec, as_of: NaiveDate, tenant: Option<&str>) -> Vec<String> {
        self.fire(spec, as_of, tenant).into_iter().map(|row| row.entity_id).collect()
    }
}

pub fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("YYYY-MM-DD")
}

pub fn spec(toml_text: &str) -> DetectorSpec {
    DetectorSpec::from_toml(toml_text).unwrap_or_else(|e| panic!("{e}"))
}
