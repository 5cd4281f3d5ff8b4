//! Rebuild: re-derive one tenant's changelog rows from the source in one atomic
//! append, so readers see the old state or the rebuilt one, never a mix. The same
//! path onboards a tenant that already has data (an initial import), with a
//! throughput cap so a backfill cannot starve live sync.
//!
//! # Layout
//!
//! - [`merge`]: the source's documents against the warehouse's latest states, both in
//!   path order, streamed: a REBUILD row per document, a tombstone per derived
//!   document the source no longer has.
//! - [`spool`]: the warehouse's latest states, read to the end into a temporary file
//!   before anything is appended, then streamed back from it.
//! - [`throttle`]: the documents-per-second cap.
//! - [`run`]: [`Rebuilder`] — one run per tenant at a time, its progress, its report
//!   and its run record.
//!
//! Versions follow ARCHITECTURE.md: rebuilt rows and tombstones carry the read time
//! of the source snapshot they come from (the document's own `update_time` is in its
//! own column), so a live write that lands during the rebuild commits later and wins.

pub mod merge;
pub mod run;
pub mod spool;
pub mod throttle;

pub use run::{RebuildError, RebuildProgress, RebuildRequest, RebuildRun, Rebuilder, TableRebuild};
pub use throttle::Throttle;
