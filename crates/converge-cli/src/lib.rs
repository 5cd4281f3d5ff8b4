//! The `converge` command's library: one module per command, so tests can run a
//! command without a subprocess.
//!
//! # Layout
//!
//! - [`dataset`]: the demo's deterministic, realistic records.
//! - [`demo`]: `converge demo`, the whole embedded pipeline end to end.
//! - [`demo_cloud`]: `converge demo --backend cloud`, the same on both emulators.
//! - [`detectors`]: `converge detectors list`, the shipped detector pack.
//! - [`detect`]: `converge detect`, one detector pass on a data directory.
//! - [`drill`]: `converge drill`, faults injected into the pipeline, then the reconciler.
//! - [`drill_cloud`]: `converge drill --backend cloud`, the same on both emulators.
//! - [`eventarc_front`]: Eventarc's delivery (at least once, retried) in front of the
//!   sync function, for the Firestore emulator, which posts each event once.
//! - [`rebuild`]: `converge rebuild` / `converge import`, one tenant through the rebuild
//!   function on loopback, with a local ID token.
//! - [`reconcile`]: `converge reconcile`, one reconciler run on a data directory.
//! - [`setup`]: `converge setup`, the warehouse's tables and views created (the cloud's
//!   functions only check them at start).
//! - [`sql`]: `converge sql`, a query on the embedded warehouse, one JSON object per row.
//! - [`serve`]: `converge serve`, the sync function and the relay in one process.
//! - [`bench`]: `converge bench sync`, the sync path measured over loopback HTTP.
//! - [`bench_reconcile`]: `converge bench reconcile`, reconciliation beside reladiff.
//! - [`bench_rebuild`]: `converge bench rebuild`, rebuild throughput and memory.
//! - [`bench_etl`]: `converge bench etl`, the nightly ETL of one day and of 90 days.
//! - [`etl`]: `converge etl`, one nightly-ETL pass on a data directory.
//! - [`ops_dataset`]: raw operational data (GA4, ads, email exports) at a real
//!   account's scale, deterministic, with hooks for planted patterns.
//! - [`ops_planted`]: the demo's planted patterns in that data, the findings they
//!   must produce, and the seed → ETL → detectors pass that checks them.
//! - [`bench_detect`]: `converge bench detect`, the whole pack over 90 days of metrics.
//! - [`render`]: human-readable output.

pub mod bench;
pub mod bench_detect;
pub mod bench_etl;
pub mod bench_rebuild;
pub mod bench_reconcile;
pub mod dataset;
pub mod etl;
pub mod ops_dataset;
pub mod ops_planted;
pub mod demo;
pub mod demo_cloud;
pub mod detect;
pub mod detectors;
pub mod drill;
pub mod drill_cloud;
pub mod eventarc_front;
pub mod rebuild;
pub mod reconcile;
pub mod render;
pub mod serve;
pub mod setup;
pub mod sql;
