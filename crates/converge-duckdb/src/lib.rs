//! The embedded warehouse: Converge's changelog tables and views in DuckDB.
//!
//! # Layout
//!
//! - [`schema`]: the DDL of a changelog table, its `_latest` view and `_as_of` macro.
//! - [`warehouse`]: [`DuckWarehouse`], the [`converge_core::Warehouse`] implementation.
//! - `appender`: changelog rows into a DuckDB table (checked, values borrowed from
//!   each row); `runs`: run records in `converge_runs`; `db`: DuckDB errors as core's,
//!   streaming queries, ad-hoc SQL as JSON, feeding a blocking all-or-nothing writer.
//! - `journal`: where an append is durable first (DuckDB's checkpoints would stall
//!   every commit for seconds), and `loader`: the thread that moves journaled
//!   appends into DuckDB, so a checkpoint stalls only it.
//! - [`recent_event_ids`]: a bounded memory of recently appended event ids, so most
//!   redeliveries are skipped without an index lookup.
//! - `backfill`: a promoted column added to the configuration, filled in place from
//!   each older row's `data` (`converge backfill`).
//! - `incremental`: the warehouse's side of an incremental reconcile (states of paths
//!   and ranges, range counts and split points in one scan each, verified points) and
//!   the bytes-processed estimate.
//! - `buckets`: live documents per fine path range of each tenant, kept by every
//!   refresh, so an incremental reconcile's counts and cuts do not scan.
//! - `retention`: the current table's refresh from its watermark and compaction
//!   (`converge_core::retention`'s rules in DuckDB SQL).
//! - [`findings`]: detector queries ([`converge_core::FindingsWarehouse`]), with timeouts.
//! - [`metrics`]: the nightly ETL's tables and their atomic (tenant, date) replace
//!   ([`converge_core::MetricsWarehouse`]).
//!
//! DuckDB allows one writing process per database file, so the embedded setup opens
//! one [`DuckWarehouse`] per process and shares it: one writer connection (appends
//! are group-committed by the caller) and a cloned connection per reader.

mod appender;
mod backfill;
mod buckets;
mod db;
pub mod metrics;
pub mod findings;
mod incremental;
mod journal;
mod loader;
mod runs;
pub mod recent_event_ids;
mod retention;
pub mod schema;
pub mod warehouse;

pub use warehouse::DuckWarehouse;
