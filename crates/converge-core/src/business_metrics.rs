//! The nightly ETL's output: `daily_entity_metrics`, `entity_map` and the load log,
//! and the warehouse trait that replaces one (tenant, date) slice of them atomically.
//!
//! Tables (the same columns in DuckDB and BigQuery):
//!
//! | table | columns | one row per |
//! |---|---|---|
//! | `daily_entity_metrics` | `date, tenant, entity_type, entity_id, metric, value` | entity, metric and day (a daily sum; see `converge_detect::vocabulary`) |
//! | `entity_map` | `date, tenant, entity_type, raw_id, entity_id, raw_records` | raw identifier as seen in the exports that day → its canonical entity id |
//! | `etl_loads` | `date, tenant, batch_id, rows_in, rows_out, loaded_at` | committed slice: what the trailing-median check compares against |
//!
//! A slice is all three for one (tenant, date). It is replaced as a whole: readers
//! see the old slice or the new one, never a mix, and replacing it with the same
//! rows again leaves the same end state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use futures::stream::BoxStream;

use crate::error::StoreError;
use crate::value::Timestamp;

pub const METRICS_TABLE: &str = "daily_entity_metrics";
pub const ENTITY_MAP_TABLE: &str = "entity_map";
pub const LOADS_TABLE: &str = "etl_loads";

/// One `daily_entity_metrics` row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricRow {
    pub date: NaiveDate,
    pub tenant: String,
    pub entity_type: String,
    pub entity_id: String,
    pub metric: String,
    pub value: f64,
}

/// One `entity_map` row: a raw identifier as an export spelled it, and the canonical
/// entity id it was counted under that day.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct EntityMapRow {
    pub date: NaiveDate,
    pub tenant: String,
    pub entity_type: String,
    pub raw_id: String,
    pub entity_id: String,
    /// Raw records that carried this raw id that day.
    pub raw_records: u64,
}

/// One row of a slice, in the stream handed to [`MetricsWarehouse::replace_slice`].
#[derive(Debug, Clone, PartialEq)]
pub enum SliceRow {
    Metric(MetricRow),
    Entity(EntityMapRow),
}

/// The `etl_loads` row of a slice: which load it is and how big.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SliceLoad {
    pub tenant: String,
    pub date: NaiveDate,
    pub batch_id: String,
    /// Valid raw records read for the day (quarantined ones excluded).
    pub rows_in: u64,
    /// `daily_entity_metrics` rows written.
    pub rows_out: u64,
    pub loaded_at: Timestamp,
}

/// What a replace did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplaceReceipt {
    pub metrics_written: u64,
    pub entities_written: u64,
}

/// The warehouse side of the ETL: DuckDB embedded, BigQuery in the cloud.
#[async_trait]
pub trait MetricsWarehouse: Send + Sync + 'static {
    /// Creates `daily_entity_metrics`, `entity_map` and `etl_loads` if missing.
    async fn ensure_metrics_tables(&self) -> Result<(), StoreError>;

    /// Checks, changing nothing, that the tables `ensure_metrics_tables` creates exist
    /// (`ErrorKind::NotFound` naming every missing one): a cloud function's start.
    async fn check_metrics_tables(&self) -> Result<(), StoreError>;

    /// Replaces the (`load.tenant`, `load.date`) slice of all three tables with
    /// `rows` and `load`, atomically: until this returns `Ok` readers see the old
    /// slice; afterwards the new one. An error from the stream or the backend leaves
    /// the old slice as it was. Every row must belong to the slice (`InvalidInput`
    /// otherwise, nothing changed).
    async fn replace_slice(&self, load: SliceLoad, rows: BoxStream<'static, Result<SliceRow, StoreError>>) -> Result<ReplaceReceipt, StoreError>;

    /// The slice's metric rows, ordered by (entity_type, entity_id, metric).
    async fn slice_metrics(&self, tenant: &str, date: NaiveDate) -> Result<Vec<MetricRow>, StoreError>;

    /// The slice's entity map, ordered by (entity_type, raw_id).
    async fn slice_entity_map(&self, tenant: &str, date: NaiveDate) -> Result<Vec<EntityMapRow>, StoreError>;

    /// The committed loads of `tenant` dated strictly before `before`, newest first,
    /// at most `limit`: the history the rows-in check compares a new slice against.
    async fn loads_before(&self, tenant: &str, before: NaiveDate, limit: usize) -> Result<Vec<SliceLoad>, StoreError>;
}

/// Checks that a row belongs to the slice being replaced (backends call it on every
/// row, so a bug in a caller cannot overwrite another tenant's data).
pub fn check_slice_row(backend: &'static str, load: &SliceLoad, row: &SliceRow) -> Result<(), StoreError> {
    let (tenant, date) = match row {
        SliceRow::Metric(m) => (&m.tenant, m.date),
        SliceRow::Entity(e) => (&e.tenant, e.date),
    };
    if *tenant != load.tenant || date != load.date {
        return Err(StoreError::new(
            crate::error::ErrorKind::InvalidInput,
            backend,
            format!("a row of ({tenant}, {date}) in the replace of slice ({}, {}): expected every row to belong to the slice", load.tenant, load.date),
        ));
    }
    if let SliceRow::Metric(m) = row {
        if !m.value.is_finite() {
            return Err(StoreError::new(
                crate::error::ErrorKind::InvalidInput,
                backend,
                format!("metric {}.{} of {} is {}: expected a finite number", m.entity_type, m.metric, m.entity_id, m.value),
            ));
        }
    }
    Ok(())
}

/// Fault injection around a real [`MetricsWarehouse`], in the style of
/// [`crate::faulty_warehouse::FaultyWarehouse`]: the next replace's row stream ends in an error
/// after `n` rows, as when the ETL process dies mid-write. It wraps a real
/// implementation; it never stands in for one.
pub struct FaultyMetricsWarehouse {
    inner: Arc<dyn MetricsWarehouse>,
    /// Rows after which the next replace is interrupted (`u64::MAX`: never).
    interrupt_after: AtomicU64,
    injected: AtomicU64,
}

impl FaultyMetricsWarehouse {
    pub fn new(inner: Arc<dyn MetricsWarehouse>) -> Self {
        Self { inner, interrupt_after: AtomicU64::new(u64::MAX), injected: AtomicU64::new(0) }
    }

    /// The next replace's stream fails (retryable) after `rows` rows, once.
    pub fn interrupt_next_replace_after(&self, rows: u64) {
        self.interrupt_after.store(rows, Ordering::SeqCst);
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl MetricsWarehouse for FaultyMetricsWarehouse {
    async fn ensure_metrics_tables(&self) -> Result<(), StoreError> {
        self.inner.ensure_metrics_tables().await
    }

    async fn check_metrics_tables(&self) -> Result<(), StoreError> {
        self.inner.check_metrics_tables().await
    }

    async fn replace_slice(&self, load: SliceLoad, rows: BoxStream<'static, Result<SliceRow, StoreError>>) -> Result<ReplaceReceipt, StoreError> {
        use futures::StreamExt;
        let after = self.interrupt_after.swap(u64::MAX, Ordering::SeqCst);
        if after == u64::MAX {
            return self.inner.replace_slice(load, rows).await;
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        let interrupted = rows.take(after as usize).chain(futures::stream::once(async move {
            Err(StoreError::retryable("fault", format!("injected: the slice's rows ended after {after} rows")))
        }));
        self.inner.replace_slice(load, interrupted.boxed()).await
    }

    async fn slice_metrics(&self, tenant: &str, date: NaiveDate) -> Result<Vec<MetricRow>, StoreError> {
        self.inner.slice_metrics(tenant, date).await
    }

    async fn slice_entity_map(&self, tenant: &str, date: NaiveDate) -> Result<Vec<EntityMapRow>, StoreError> {
        self.inner.slice_entity_map(tenant, date).await
    }

    async fn loads_before(&self, tenant: &str, before: NaiveDate, limit: usize) -> Result<Vec<SliceLoad>, StoreError> {
        self.inner.loads_before(tenant, before, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load() -> SliceLoad {
        SliceLoad {
            tenant: "acme".into(),
            date: NaiveDate::from_ymd_opt(2025, 1, 2).unwrap(),
            batch_id: "b".into(),
            rows_in: 1,
            rows_out: 1,
            loaded_at: Timestamp::new(0, 0),
        }
    }

    fn metric(tenant: &str, day: u32, value: f64) -> SliceRow {
        SliceRow::Metric(MetricRow {
            date: NaiveDate::from_ymd_opt(2025, 1, day).unwrap(),
            tenant: tenant.into(),
            entity_type: "page".into(),
            entity_id: "/".into(),
            metric: "sessions".into(),
            value,
        })
    }

    #[test]
    fn rows_outside_the_slice_or_not_finite_are_refused() {
        assert!(check_slice_row("t", &load(), &metric("acme", 2, 1.0)).is_ok());
        for row in [metric("other", 2, 1.0), metric("acme", 3, 1.0), metric("acme", 2, f64::NAN)] {
            let error = check_slice_row("t", &load(), &row).unwrap_err();
            assert_eq!(error.kind, crate::error::ErrorKind::InvalidInput, "{row:?}");
        }
    }
}
