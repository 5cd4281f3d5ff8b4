//! The `converge` command's library: one module per command, so tests can run a
//! command without a subprocess.
//!
//! # Layout
//!
//! - [`dataset`]: the demo's deterministic, realistic records.
//! - [`demo`]: `converge demo`, the whole embedded pipeline end to end.
//! - [`demo_cloud`]: `converge demo --backend cloud`, the same on both emulators.
//! - [`drill`]: `converge drill`, faults injected into the pipeline, then the reconciler.
//! - [`drill_cloud`]: `converge drill --backend cloud`, the same on both emulators.
//! - [`eventarc_front`]: Eventarc's delivery (at least once, retried) in front of the
//!   sync function, for the Firestore emulator, which posts each event once.
//! - [`reconcile`]: `converge reconcile`, one reconciler run on a data directory.
//! - [`sql`]: `converge sql`, a query on the embedded warehouse, one JSON object per row.
//! - [`serve`]: `converge serve`, the sync function and the relay in one process.
//! - [`bench`]: `converge bench sync`, the sync path measured over loopback HTTP.
//! - [`bench_reconcile`]: `converge bench reconcile`, reconciliation beside reladiff.
//! - [`render`]: human-readable output.

pub mod bench;
pub mod bench_reconcile;
pub mod dataset;
pub mod demo;
pub mod demo_cloud;
pub mod drill;
pub mod drill_cloud;
pub mod eventarc_front;
pub mod reconcile;
pub mod render;
pub mod serve;
pub mod sql;
