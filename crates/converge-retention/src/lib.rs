//! Keeping a changelog for years: compaction and the current tables, as runs.
//!
//! The rules (what a refresh reads, what compaction may prune, the late-event bound)
//! are `converge_core::retention`'s, rendered in SQL by each warehouse; this crate runs
//! them over every mirrored table and records each run in `converge_runs`.
//!
//! # Layout
//!
//! - [`run`]: [`Retention`] — [`Retention::compact`] (kind `compact`: prune by the
//!   horizon, then refresh each current table in full) and [`Retention::refresh`]
//!   (kind `refresh_current`: every table from its watermark, or in full).

pub mod run;

pub use run::{CompactRun, RefreshRun, Retention, RetentionError, COMPACT_KIND, REFRESH_KIND};
