//! Opens the backends a function or the CLI runs on, from its [`Settings`]. Every
//! binary builds its context here, once, at start.
//!
//! # Layout
//!
//! - [`embedded`]: SQLite source and DuckDB warehouse in one data directory (feature
//!   `embedded`).
//! - [`cloud`]: Firestore source and BigQuery warehouse, or their emulators (feature
//!   `cloud`).
//! - [`Backends`]: whichever of the two the settings select, behind the core traits.

#[cfg(feature = "cloud")]
pub mod cloud;
#[cfg(feature = "embedded")]
pub mod embedded;

use std::sync::Arc;

use converge_core::{Clock, ErrorLog, FindingsWarehouse, MetricsWarehouse, OpportunityStore, RawSource, SourceStore, StoreError, Warehouse};
use converge_http::{Backend, Settings};

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
}

impl Backends {
    /// Opens what `settings` select. A backend this binary was built without is a
    /// clear error naming the setting, not a silent fallback.
    pub async fn open(settings: &Settings, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        match &settings.backend {
            Backend::Embedded => open_embedded(settings, clock),
            Backend::Cloud(cloud) => open_cloud(cloud).await,
        }
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
        format!("{} is `embedded` (or unset), but this binary was built for the cloud only; set {}=cloud", converge_http::env::BACKEND, converge_http::env::BACKEND),
    ))
}

#[cfg(feature = "cloud")]
async fn open_cloud(settings: &converge_http::CloudSettings) -> Result<Backends, StoreError> {
    Ok(CloudBackends::open(settings).await?.backends())
}

#[cfg(not(feature = "cloud"))]
async fn open_cloud(_: &converge_http::CloudSettings) -> Result<Backends, StoreError> {
    Err(StoreError::permanent(
        "settings",
        format!("{}=cloud, but this binary was built without the cloud backends (cargo feature `cloud`)", converge_http::env::BACKEND),
    ))
}
