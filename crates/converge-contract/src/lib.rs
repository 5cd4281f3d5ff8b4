//! The contract suites: what every implementation of a core trait must do, written
//! once and run against each backend (SQLite and DuckDB in-process, Firestore and
//! BigQuery on their emulators).
//!
//! # Layout
//!
//! - [`warehouse`]: [`warehouse_contract`] for [`converge_core::Warehouse`], and
//!   [`promoted_backfill_contract`] (`converge backfill`).
//! - [`source`]: [`source_store_contract`] for [`converge_core::SourceStore`].
//! - [`error_log`]: [`error_log_contract`] for [`converge_core::ErrorLog`].
//! - [`raw`]: [`raw_source_contract`] for [`converge_core::RawSource`].
//! - [`metrics`]: [`metrics_warehouse_contract`] for [`converge_core::MetricsWarehouse`].
//! - [`opportunities`]: [`opportunity_store_contract`] for [`converge_core::OpportunityStore`].
//! - [`findings`]: [`findings_warehouse_contract`] for [`converge_core::FindingsWarehouse`]
//!   (with [`converge_core::MetricsWarehouse`] loading what it queries).
//! - [`convergence`]: [`convergence_property`], a warehouse's latest view checked against
//!   the core's ordering rule, and one reconcile run converging from any warehouse state.
//! - [`kit`]: what the suites, the backends' test files and the detector tests share:
//!   the planted metrics, loading metrics through the ETL's path, running a compiled
//!   detector through the runner's path, fresh sources (features `sqlite`, `firestore`).
//!
//! Each suite takes a factory that yields a fresh, empty backend per case, runs every
//! case in turn and panics with the case's name on the first broken promise. A
//! backend's test file is then a few lines:
//!
//! ```ignore
//! #[tokio::test]
//! async fn duckdb_passes_the_warehouse_contract() {
//!     converge_contract::warehouse_contract(|| async { Arc::new(DuckWarehouse::open_in_memory().unwrap()) as _ }).await;
//! }
//! ```
//!
//! The suites assert what the real services promise. Where an emulator differs, the
//! backend's own test documents the gap; the suite is never loosened for it.

pub mod convergence;
pub mod error_log;
pub mod findings;
pub mod kit;
pub mod metrics;
pub mod raw;
pub mod opportunities;
pub mod source;
pub mod warehouse;

pub use convergence::convergence_property;
pub use error_log::error_log_contract;
pub use findings::findings_warehouse_contract;
pub use metrics::metrics_warehouse_contract;
pub use raw::raw_source_contract;
pub use opportunities::opportunity_store_contract;
pub use source::{source_store_contract, SourceContract};
pub use warehouse::{promoted_backfill_contract, warehouse_contract};

use std::future::Future;

/// Runs one named case, so a failure names the promise that broke.
pub(crate) async fn case<Fut: Future<Output = ()>>(suite: &str, name: &str, body: Fut) {
    eprintln!("{suite} contract: {name}");
    body.await;
}
