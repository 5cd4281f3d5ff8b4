//! The detector runner: one pass of the detector pack over the warehouse, its findings
//! written back as opportunities next to the source data, recorded as one run.
//!
//! # Layout
//!
//! - [`request`]: [`DetectRequest`] (run date, tenants, detectors) and [`RunnerOptions`]
//!   (concurrency limit, per-query timeout).
//! - [`runner`]: [`DetectorRunner`]: compile each detector for the warehouse's
//!   dialect, run them in parallel (bounded), upsert findings as opportunities, resolve
//!   the ones that stopped firing, record the run.
//! - [`report`]: [`DetectRun`], the run's report (also the run record's `report`), and
//!   the [`Finding`]s of a pass.
//! - [`error`]: [`DetectError`] and its core `ErrorKind` (invalid input, retryable,
//!   permanent).
//!
//! # What a pass promises
//!
//! - Re-running the same request changes nothing but `last_seen` of each firing
//!   opportunity: ids are a function of (detector, tenant, entity, period), values of
//!   the data, and the batch id of (scope, run date).
//! - A detector that fails (bad SQL, timeout, backend error) is recorded with its error
//!   and does not stop the others; its opportunities are left as they are, since a
//!   failure says nothing about whether they still hold.
//! - An open opportunity of a detector that ran successfully for its tenant and did
//!   not find it again is resolved, unless a later run date found it (a backfill of
//!   an old date does not resolve what newer runs found).

pub mod error;
pub mod report;
pub mod request;
pub mod runner;

pub use error::DetectError;
pub use report::{DetectRun, DetectorFailure, DetectorStats, OpportunityCounts};
pub use request::{DetectRequest, RunnerOptions};
pub use runner::DetectorRunner;

/// The run kind in `converge_runs`.
pub const RUN_KIND: &str = "detectors";
