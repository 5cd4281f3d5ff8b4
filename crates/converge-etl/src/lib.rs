//! The nightly ETL: raw operational collections (GA4, ads and email exports that an
//! app lands in Firestore) rolled up, per tenant and day, into `daily_entity_metrics`
//! and `entity_map` — the tables the detectors read.
//!
//! # Layout
//!
//! - [`collections`]: the raw collections, their fields and schema contract, and how
//!   their measures map to the metric vocabulary.
//! - [`canonical`]: canonical entity ids (page path, slugs, `source/medium`, …).
//! - [`validate`]: one raw document → a valid record, or what is wrong with it.
//! - [`slice`]: one (tenant, date) slice being rolled up in memory.
//! - [`checks`]: the quality checks that fail a slice (rows in vs the trailing median,
//!   duplicate natural keys, empty entity ids).
//! - [`run`]: [`EtlRunner`] — the pass over tenants and dates, the throughput cap,
//!   progress, run records, errors.
//!
//! Each (tenant, date) is a slice: read from the raw collections by date, validated
//! (violators quarantined with the reason, never fixed), rolled up, checked, then
//! replaced atomically in the warehouse ([`converge_core::MetricsWarehouse`]), and
//! recorded in `converge_runs` under `batch_id("etl", tenant, date)`. A slice that
//! fails a check is not loaded: the old slice stays, and the run record says why.
//! Running the same date again gives the same end state.

pub mod canonical;
pub mod checks;
pub mod collections;
pub mod run;
pub mod slice;
pub mod validate;

pub use checks::{CheckPolicy, CheckResult};
pub use collections::{RawCollection, RAW_COLLECTIONS, TENANT_ROOT};
pub use run::{EtlBackends, EtlError, EtlProgress, EtlRequest, EtlRun, EtlRunner, SliceReport, Watermark, DEFAULT_LATE_DAYS};
