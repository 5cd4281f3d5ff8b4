//! Converge's core: the rules that make the analytics copy trustworthy, free of I/O.
//!
//! # Layout
//!
//! - [`config`]: mirror routes (document path pattern → changelog table, promoted columns).
//! - [`value`]: Firestore values and their type-exact JSON form.
//! - [`hash`]: the canonical content hash of a document's fields.
//! - [`version`]: a row's [`Op`], row versions (when a row's state was known to hold, on the source's
//!   clock) and the one ordering rule that picks each document's winner.
//! - [`change`]: a document change → a [`ChangeRow`] or tombstone; error ids.
//! - [`drift`]: comparing source and derived states (the one merge, with its read-time
//!   guard; the orphan guard).
//! - [`path`]: Firestore's rules for ids and paths, shared by every store.
//! - [`store`]: the source store and the warehouse ([`SourceStore`], [`Warehouse`]).
//! - [`error_log`]: sync error and quarantine records, and the [`ErrorLog`] that keeps
//!   them next to the source.
//! - [`incremental`]: what an incremental reconcile reads (a route's change field,
//!   `count()` over path ranges, verified points) and what only a full one can see.
//! - [`cost`]: a run's cost (billed source reads, warehouse bytes) and the price table.
//! - [`run`]: run records (batch ids, [`RunOutcome`]) every job writes.
//! - [`schema_change`]: a route's promoted columns against a table's: what setup adds,
//!   what start refuses, a backfilled value from a row's `data`.
//! - [`retention`]: the physical current table (`<table>_current`, refreshed from a
//!   watermark) and compaction with a retention horizon.
//! - [`raw_source`]: reading raw operational records by date (the nightly ETL's input,
//!   [`RawSource`]).
//! - [`business_metrics`]: `daily_entity_metrics`, `entity_map`, and replacing one
//!   (tenant, date) slice atomically (the nightly ETL's output, [`MetricsWarehouse`]).
//! - [`findings`]: running detector queries on the warehouse ([`FindingsWarehouse`]).
//! - [`known_events`]: days a tenant declares unlike the others (holidays, outages),
//!   which the ETL's volume check and the detectors leave out.
//! - [`opportunity`]: detectors' findings as stored records ([`OpportunityStore`]), their ids and periods.
//! - [`clock`]: the injected clock.
//! - [`error`]: the errors Converge's code returns; one [`ErrorKind`] (retryable or
//!   permanent, and which) shared by every backend.
//! - [`faulty_warehouse`]: a test double — fault injection around a real warehouse, for
//!   tests and the fault drill; never a stand-in for one.

pub mod business_metrics;
pub mod change;
pub mod clock;
pub mod config;
pub mod cost;
pub mod drift;
pub mod error;
pub mod error_log;
pub mod faulty_warehouse;
pub mod findings;
pub mod hash;
pub mod incremental;
pub mod known_events;
pub mod opportunity;
pub mod path;
pub mod raw_source;
pub mod retention;
pub mod run;
pub mod schema_change;
pub mod store;
pub mod value;
pub mod version;

pub use change::{ChangeRow, DocumentChange, PromotedValue, RowContext, RowError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cost::{PriceTable, RunCost, WarehouseBytes};
pub use incremental::{PathRange, ReconcileMode, VerifiedPoint};
pub use known_events::{load_known_events, KnownEvent, KnownEvents};
pub use config::{ColumnType, MirrorConfig, PathPattern, PromotedColumn, Route, RoutedPath, ScopeSegment, SourceScope};
pub use drift::DriftReport;
pub use error::{ConfigError, ErrorKind, StoreError};
pub use business_metrics::{EntityMapRow, MetricRow, MetricsWarehouse, ReplaceReceipt, SliceLoad, SliceRow};
pub use raw_source::RawSource;
pub use error_log::{ErrorLog, QuarantineReason, QuarantineRecord, QuarantineReplay, ReplayOutcome, SyncErrorRecord};
pub use findings::{FindingRow, FindingsParam, FindingsParamValue, FindingsQuery, FindingsWarehouse, QueryDialect, FINDING_COLUMNS};
pub use opportunity::{opportunity_id, opportunity_period, Evidence, Opportunity, OpportunityStatus, OpportunityStore, UpsertOutcome};
pub use retention::{CompactionPlan, CurrentRefresh, RefreshFrom, TableCompaction};
pub use run::{batch_id, RunOutcome, RunRecord, RUNS_TABLE};
pub use store::{flatten_chunks, AppendReceipt, DocState, ReadAt, DocWrite, Scan, SourceStore, Warehouse};
pub use value::{Document, Fields, GeoPoint, Timestamp, Value};
pub use version::{Op, RowOrder, Version};

/// The version of Converge that wrote a row (the changelog's `code_version`).
pub const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");
