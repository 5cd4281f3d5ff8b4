//! The `converge` command's library: one module per command (argument values in,
//! a library called, a summary out), so tests can run a command without a
//! subprocess. The scenarios `converge demo` and `converge drill` run live in
//! `converge-scenarios`; this crate only calls and prints them.
//!
//! # Layout
//!
//! - [`compact`]: `converge compact` and `converge refresh-current`: compaction with a
//!   retention horizon, and the current tables refreshed, on a data directory.
//! - [`detectors`]: `converge detectors list`, the shipped detector pack.
//! - [`detect`]: `converge detect`, one detector pass on a data directory.
//! - [`etl`]: `converge etl`, one nightly-ETL pass on a data directory.
//! - [`rebuild`]: `converge rebuild` / `converge import`, one tenant through the rebuild
//!   function on loopback, with a local ID token.
//! - [`reconcile`]: `converge reconcile` and `converge retry-errors`, one reconciler run
//!   or one pass of the error log's retry on a data directory.
//! - [`quarantine`]: `converge quarantine list`, quarantined events and what to do.
//! - [`setup`]: `converge setup`, the warehouse's tables and views created (the cloud's
//!   functions only check them at start).
//! - [`sql`]: `converge sql`, a query on the embedded warehouse, one JSON object per row.
//! - [`serve`]: `converge serve`, the sync function and the relay in one process.
//! - [`bench`]: `converge bench …`, the benchmarks, with one shared measuring module
//!   (its own layout in `bench/mod.rs`).
//! - [`render`]: human-readable output (demo, drill, reconcile, rebuild).

pub mod bench;
pub mod compact;
pub mod detect;
pub mod detectors;
pub mod etl;
pub mod quarantine;
pub mod rebuild;
pub mod reconcile;
pub mod render;
pub mod serve;
pub mod setup;
pub mod sql;
