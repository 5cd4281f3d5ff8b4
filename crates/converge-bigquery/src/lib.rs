//! The cloud warehouse: Converge's append-only changelog in BigQuery.
//!
//! Queries and DDL go over BigQuery's REST API (jobs.query with named parameters);
//! rows go over the Storage Write API (gRPC) as Arrow IPC record batches, the only row
//! format the official `google-cloud-bigquery` client exposes. Same columns, same
//! `<table>_latest` rule and the same as-of form as the embedded DuckDB warehouse
//! (`converge-duckdb`), so both pass one contract suite.
//!
//! # Layout
//!
//! - [`config`]: project, dataset, endpoints, timeouts (explicit values; the emulator
//!   harness and, later, the CLI fill them in).
//! - [`schema`]: DDL of the dataset, each changelog table (partitioned by ingestion
//!   day, clustered by tenant and document path), its latest view and as-of table
//!   function.
//! - [`arrow`]: changelog rows → Arrow schema and record batches → Arrow IPC bytes,
//!   in requests under the Storage Write API's size limit.
//! - [`error`]: BigQuery failures → [`converge_core::StoreError`] kinds
//!   (retryable vs permanent), with messages that say what to do.
//! - [`warehouse`]: [`BigQueryWarehouse`], the [`converge_core::Warehouse`]
//!   implementation, and `query_json` for reports.
//! - `query`: [`QueryParam`], typed named parameters, and result rows read back;
//!   `runs`: run records in `converge_runs`.
//! - `incremental`: what an incremental reconcile reads (latest states of given paths
//!   or of a path range, live counts per range and split points from the current
//!   table) and its verified points in `converge_verified_points`.
//! - `bytes`: the bytes every query job processed and was billed, summed per
//!   warehouse ([`converge_core::Warehouse::bytes_processed`]).
//! - `backfill`: `converge backfill`, a promoted column filled in place from each
//!   row's `data` (values derived in Rust, written back by content hash).
//! - `retention`: the current table's refresh from its watermark and compaction by
//!   partition (`converge_core::retention`'s rules in BigQuery scripts).
//! - [`findings`]: detector queries ([`converge_core::FindingsWarehouse`]): typed named
//!   parameters, a per-query deadline, rows streamed page by page.
//! - [`metrics`]: the nightly ETL's tables and their atomic (tenant, date) replace
//!   ([`converge_core::MetricsWarehouse`]): staged through the Storage Write API, swapped
//!   in by one multi-statement transaction.
//! - [`emulator`]: [`BigQueryEmulator`], a local `bqemulator` process on loopback
//!   ports for tests and the CLI; killed when dropped.

pub mod arrow;
mod backfill;
mod bytes;
pub mod config;
pub mod emulator;
pub mod error;
pub mod findings;
mod incremental;
pub mod metrics;
mod query;
mod retention;
mod runs;
pub mod schema;
pub mod warehouse;

pub use config::{BigQueryConfig, ConfigError};
pub use emulator::{BigQueryEmulator, EmulatorError};
pub use query::QueryParam;
pub use warehouse::BigQueryWarehouse;
