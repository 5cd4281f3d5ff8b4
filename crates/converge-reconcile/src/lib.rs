//! The reconciler: the process that lets the rest of the pipeline be imperfect.
//!
//! It walks each tenant's source documents and the warehouse's latest view side by
//! side, comparing (document path, version, content hash) — never whole documents,
//! except to repair one — and classifies every difference:
//!
//! - **missing**: in the source, not in the latest view (a dropped write);
//! - **different**: in both, another version or content (a partial or failed edit);
//! - **orphan**: in the latest view, gone from the source (a lost delete);
//!
//! each as **known** (an open `sync_errors` record names the document) or **silent**
//! (none does: a hole in error capture, logged at error level with the documents).
//!
//! Repairs are appended rows like any other: REPAIR rows versioned at the read time of
//! the source read they come from (the documents re-read at one read time; tombstones
//! at the scan's snapshot read time), so they outrank every row stored before the read
//! and a write that lands during the run still wins (ARCHITECTURE.md, "The ordering
//! rule"). A tenant whose orphans exceed the [`OrphanGuard`]'s share is reported, not
//! tombstoned, and the run is recorded as `refused`. Repaired errors are resolved; a repair that
//! keeps failing is recorded in the error log with its attempts and last error.
//!
//! # Layout
//!
//! - [`run`]: [`Reconciler`], one run over one tenant or all, and its [`ReconcileRun`] report.
//! - `incremental`: what an incremental run finds (`--mode incremental`): the
//!   documents written since a tenant's verified point, then `count()` per path range
//!   bisected down to leaves read from both sides (`converge_core::incremental`).
//! - [`retry`]: the error log's own retry ([`Reconciler::retry_errors`]): only the
//!   documents open `sync_errors` records name, re-read and appended; [`RetryRun`].

mod incremental;
pub mod retry;
pub mod run;

// The merge itself is core's (`converge_core::drift`): the reconciler, the rebuild and
// the demo's strict comparison judge documents by the one rule.
pub use converge_core::drift::{Difference, DifferenceKind, OrphanGuard};
pub use run::{ReconcileError, ReconcileRun, Reconciler, RefusedTenant, RunOptions, TenantReconcile};
pub use retry::{RetryOptions, RetryRun, RETRY_KIND};
