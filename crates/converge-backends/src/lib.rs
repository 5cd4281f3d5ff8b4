//! Opens the backends a function or the CLI runs on, from its [`Settings`]. Every
//! binary builds its context here, once, at start.
//!
//! # Layout
//!
//! - [`embedded`]: SQLite source and DuckDB warehouse in one data directory (feature
//!   `embedded`).
//! - [`cloud`]: Firestore source and BigQuery warehouse, or their emulators (feature
//!   `cloud`).
//! - [`Backends`]: whichever of the two the settings select, behind the core traits,
//!   and what a function does with their tables at start ([`Backends::open_tables`]).
//! - [`setup`]: `converge setup`, the one step that creates tables and views.

#[cfg(feature = "cloud")]
pub mod cloud;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod setup;

use std::sync::Arc;

use converge_core::{Clock, ErrorKind, ErrorLog, FindingsWarehouse, MetricsWarehouse, MirrorConfig, OpportunityStore, RawSource, SourceStore, StoreError, Warehouse};
use converge_function::{Backend, Settings};

#[cfg(feature = "cloud")]
pub use cloud::CloudBackends;
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedBackends;

/// The opened backends, behind the traits every library function takes.
#[derive(Clone)]
pub struct Backends {
    pub source: Arc<dyn SourceStore>,
    pub errors: Arc<dyn ErrorLog>,
    pub warehouse: Arc<dyn Warehouse>,
    /// The source store again, read by date (the nightly ETL's input).
    pub raw: Arc<dyn RawSource>,
    /// The warehouse again: `daily_entity_metrics` and `entity_map` (the ETL's output).
    pub metrics: Arc<dyn MetricsWarehouse>,
    /// The warehouse again: the detectors' queries over the metrics.
    pub findings: Arc<dyn FindingsWarehouse>,
    /// The source store again: the detectors' opportunities, where the app reads them.
    pub opportunities: Arc<dyn OpportunityStore>,
    /// `embedded` or `cloud`, for logs.
    pub kind: &'static str,
    /// What a function's start does with the warehouse's tables.
    pub tables_at_start: TablesAtStart,
}

/// What a function's start does with the warehouse's tables and views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TablesAtStart {
    /// Creates what is missing: the embedded default, where a laptop has no separate
    /// setup step (`make demo` just runs).
    Create,
    /// Checks that they exist and changes nothing: the cloud. DDL belongs to Terraform
    /// and `converge setup --backend cloud`: `CREATE SCHEMA IF NOT EXISTS` needs
    /// `bigquery.datasets.create` on the project even when the dataset exists, which no
    /// function's service account holds (infra/iam.tf), and replacing views at every
    /// cold start runs into BigQuery's limit on metadata updates per table
    /// (<https://cloud.google.com/bigquery/quotas#standard_tables>, "Maximum rate of
    /// table metadata update operations per table") when many instances start at once.
    Check,
}

/// Which of the warehouse's tables a function works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    /// The changelog tables of every route, their views, and the runs table.
    Changelog,
    /// Those, and the nightly ETL's `daily_entity_metrics`, `entity_map`, `etl_loads`.
    ChangelogAndMetrics,
}

/// How to create what a start-up check found missing; the check's error ends with it.
pub const SETUP_HINT: &str = "create them with `converge setup --backend cloud` (`make deploy` runs it) with the same GOOGLE_CLOUD_PROJECT, \
                              CONVERGE_BIGQUERY_DATASET and CONVERGE_CONFIG as this function";

impl Backends {
    /// Opens what `settings` select. A backend this binary was built without is a
    /// clear error naming the setting, not a silent fallback.
    pub async fn open(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        match &settings.backend {
            Backend::Embedded => open_embedded(settings, clock),
            Backend::Cloud(cloud) => open_cloud(cloud).await,
        }
    }

    /// At a function's start, readies the `tables` it works on for `mirror`, as
    /// [`TablesAtStart`] says for this backend. A cloud warehouse that is not set up
    /// is a `NotFound` error naming every missing object and [`SETUP_HINT`]: the
    /// function exits instead of serving on a layout it cannot use.
    pub async fn open_tables(&self, mirror: &MirrorConfig, tables: Tables) -> Result<(), StoreError> {
        let metrics = tables == Tables::ChangelogAndMetrics;
        let result = match self.tables_at_start {
            TablesAtStart::Create => {
                self.warehouse.ensure_tables(mirror).await?;
                if metrics {
                    self.metrics.ensure_metrics_tables().await?;
                }
                return Ok(());
            }
            TablesAtStart::Check => match self.warehouse.check_tables(mirror).await {
                Ok(()) if metrics => self.metrics.check_metrics_tables().await,
                other => other,
            },
        };
        result.map_err(|e| match e.kind {
            ErrorKind::NotFound => StoreError::new(e.kind, e.backend, format!("{}; {SETUP_HINT}", e.message)),
            _ => e,
        })
    }
}

#[cfg(feature = "embedded")]
fn open_embedded(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Backends, StoreError> {
    Ok(EmbeddedBackends::open_for(&settings.data_dir, clock, &settings.mirror)?.backends())
}

#[cfg(not(feature = "embedded"))]
fn open_embedded(_: &Settings, _: Arc<dyn Clock>) -> Result<Backends, StoreError> {
    Err(StoreError::permanent(
        "settings",
        format!("{} is `embedded` (or unset), but this binary was built for the cloud only; set {}=cloud", converge_function::env::BACKEND, converge_function::env::BACKEND),
    ))
}

#[cfg(feature = "cloud")]
async fn open_cloud(settings: &converge_function::CloudSettings) -> Result<Backends, StoreError> {
    Ok(CloudBackends::open(settings).await?.backends())
}

#[cfg(not(feature = "cloud"))]
async fn open_cloud(_: &converge_function::CloudSettings) -> Result<Backends, StoreError> {
    Err(StoreError::permanent(
        "settings",
        format!("{}=cloud, but this binary was built without the cloud backends (cargo feature `cloud`)", converge_function::env::BACKEND),
    ))
}
