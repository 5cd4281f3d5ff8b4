//! The test kit: what the detector tests and the backends' contract runs share, kept
//! here once instead of copied into each `tests/` directory.
//!
//! - [`planted`]: the 90-day planted `daily_entity_metrics` and the findings it must
//!   produce.
//! - [`MetricsLoader`]: metrics rows into any [`MetricsWarehouse`] the way the nightly
//!   ETL loads them (one atomic replace per (tenant, date) slice), so a test's table
//!   is the real one, made by the backend, on DuckDB and on BigQuery alike.
//! - [`fire`]: a compiled detector run through [`FindingsWarehouse`], the runner's own
//!   path (parameters bound by the backend, the result columns checked).
//! - [`values_agree`]: how close two backends' numbers must be.
//! - `backends` (features `sqlite`, `firestore`): a fresh SQLite source and the
//!   Firestore emulator for tests, for suites that need a source beside a warehouse.

pub mod planted;

#[cfg(any(feature = "sqlite", feature = "firestore"))]
pub mod backends;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use converge_core::{FindingRow, FindingsWarehouse, MetricRow, MetricsWarehouse, SliceLoad, SliceRow, StoreError, Timestamp};
use converge_detect::CompiledDetector;
use futures::stream::{self, StreamExt, TryStreamExt};

/// A warehouse that loads metrics and runs findings queries over them: DuckDB and
/// BigQuery both are.
pub trait MetricsAndFindings: MetricsWarehouse + FindingsWarehouse {}
impl<T: MetricsWarehouse + FindingsWarehouse + ?Sized> MetricsAndFindings for T {}

/// Loads metrics rows slice by slice through [`MetricsWarehouse::replace_slice`].
/// It remembers what it loaded, so rows added later to a slice already loaded are
/// merged with its earlier rows (a replace swaps the whole slice).
pub struct MetricsLoader {
    warehouse: Arc<dyn MetricsWarehouse>,
    slices: Mutex<BTreeMap<(String, NaiveDate), Vec<MetricRow>>>,
}

impl MetricsLoader {
    /// Ensures the metrics tables, so even an empty loader leaves a table to query.
    pub async fn new(warehouse: Arc<dyn MetricsWarehouse>) -> MetricsLoader {
        warehouse.ensure_metrics_tables().await.expect("create the metrics tables");
        MetricsLoader { warehouse, slices: Mutex::new(BTreeMap::new()) }
    }

    /// Adds `rows` and replaces every slice they touch, a few at a time.
    pub async fn insert(&self, rows: impl IntoIterator<Item = MetricRow>) {
        let touched: Vec<((String, NaiveDate), Vec<MetricRow>)> = {
            let mut slices = self.slices.lock().expect("loader lock");
            let mut keys = BTreeSet::new();
            for row in rows {
                let key = (row.tenant.clone(), row.date);
                slices.entry(key.clone()).or_default().push(row);
                keys.insert(key);
            }
            keys.into_iter().map(|key| (key.clone(), slices[&key].clone())).collect()
        };
        stream::iter(touched)
            .map(|((tenant, date), rows)| async move {
                let load = SliceLoad {
                    batch_id: converge_core::batch_id("etl", &tenant, &date.to_string()),
                    tenant,
                    date,
                    rows_in: rows.len() as u64,
                    rows_out: rows.len() as u64,
                    loaded_at: Timestamp::from_micros(1_743_465_600_000_000),
                };
                self.warehouse.replace_slice(load, stream::iter(rows.into_iter().map(|r| Ok(SliceRow::Metric(r)))).boxed()).await
            })
            .buffer_unordered(4)
            .try_collect::<Vec<_>>()
            .await
            .expect("load metrics through MetricsWarehouse::replace_slice");
    }

    /// Adds one value per day for consecutive days ending on `last_day`.
    pub async fn add_days(&self, tenant: &str, entity_type: &str, entity_id: &str, metric: &str, last_day: NaiveDate, values_oldest_first: &[f64]) {
        self.insert(days(tenant, entity_type, entity_id, metric, last_day, values_oldest_first)).await;
    }
}

/// One row per value, for consecutive days ending on `last_day`.
pub fn days(tenant: &str, entity_type: &str, entity_id: &str, metric: &str, last_day: NaiveDate, values_oldest_first: &[f64]) -> Vec<MetricRow> {
    let count = values_oldest_first.len() as u64;
    values_oldest_first
        .iter()
        .enumerate()
        .map(|(i, value)| MetricRow {
            date: last_day - chrono::Days::new(count - 1 - i as u64),
            tenant: tenant.to_owned(),
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
            metric: metric.to_owned(),
            value: *value,
        })
        .collect()
}

/// Runs `compiled` on `warehouse` as the detector runner does and collects its rows.
pub async fn fire(warehouse: &dyn FindingsWarehouse, compiled: CompiledDetector) -> Result<Vec<FindingRow>, StoreError> {
    assert_eq!(compiled.dialect, warehouse.dialect(), "{}: compiled for the warehouse's dialect", compiled.detector_id);
    warehouse.query_findings(compiled.into_query(Duration::from_secs(60))).await?.try_collect().await
}

/// Two backends' values agree: both NULL, or equal within 1e-9 relative (DuckDB and
/// BigQuery sum floating-point numbers in different orders).
pub fn values_agree(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
        _ => false,
    }
}
