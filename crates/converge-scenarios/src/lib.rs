//! Whole-pipeline scenarios and the data they write: what `converge demo` and
//! `converge drill` run (on the embedded stores or on both emulators), kept out of the
//! CLI so that its commands only parse, call and print, and so that `tests/` runs the
//! same scenarios without a subprocess. `converge bench` reuses the generators.
//!
//! # Layout
//!
//! - [`bookkeeping_records`]: the mirrored documents every scenario writes —
//!   deterministic, realistic bookkeeping records —, the seeded [`bookkeeping_records::Rng`],
//!   and [`bookkeeping_records::stamped`]: writes as the app makes them (the change field set).
//! - [`raw_exports`]: raw operational data (GA4, ads, email exports) at a real account's
//!   scale, deterministic, with hooks for planted patterns.
//! - [`planted_patterns`]: the demo's planted patterns in that data, the findings they
//!   must produce, and the seed → ETL → detectors pass that checks them.
//! - [`embedded_etl`]: the nightly-ETL runner on a data directory's embedded stores.
//! - [`demo`]: `converge demo`, the whole embedded pipeline end to end.
//! - [`demo_cloud`]: `converge demo --backend cloud`, the same on both emulators.
//! - [`drill`]: `converge drill`, faults injected into the pipeline, then the
//!   reconciler (one file per phase under `drill/`).
//! - [`drill_cloud`]: `converge drill --backend cloud`, the same on both emulators.
//! - [`eventarc_delivery`]: Eventarc's delivery (at least once, retried) in front of the
//!   sync function, for the Firestore emulator, which posts each event once.

pub mod bookkeeping_records;
pub mod demo;
pub mod demo_cloud;
pub mod drill;
pub mod drill_cloud;
pub mod embedded_etl;
pub mod eventarc_delivery;
pub mod planted_patterns;
pub mod raw_exports;
