//! Converge's core: the rules that make the analytics copy trustworthy, free of I/O.
//!
//! # Layout
//!
//! - [`config`]: mirror routes (document path pattern → changelog table, promoted columns).
//! - [`value`]: Firestore values and their type-exact JSON form.
//! - [`hash`]: the canonical content hash of a document's fields.
//! - [`version`]: row versions (when a row's state was known to hold, on the source's
//!   clock) and the one ordering rule that picks each document's winner.
//! - [`change`]: a document change → a [`ChangeRow`] or tombstone; error ids.
//! - [`failure`]: sync error and quarantine records.
//! - [`drift`]: comparing source and derived states.
//! - [`path`]: Firestore's rules for ids and paths, shared by every store.
//! - [`store`]: the traits behind which every external system sits.
//! - [`run`]: run records (batch ids, [`RunOutcome`]) every job writes.
//! - [`findings`]: running detector queries on the warehouse ([`FindingsWarehouse`]).
//! - [`opportunity`]: detectors' findings as stored records ([`OpportunityStore`]), their ids and periods.
//! - [`raw`]: reading raw operational records by date (the nightly ETL's input).
//! - [`metrics`]: `daily_entity_metrics`, `entity_map`, and replacing one (tenant, date)
//!   slice atomically (the nightly ETL's output).
//! - [`clock`]: the injected clock.
//! - [`fault`]: fault injection around a real warehouse, for tests and drills.
//! - [`error`]: error kinds shared by every backend.

pub mod change;
pub mod clock;
pub mod config;
pub mod drift;
pub mod error;
pub mod fault;
pub mod failure;
pub mod findings;
pub mod hash;
pub mod opportunity;
pub mod metrics;
pub mod path;
pub mod raw;
pub mod run;
pub mod store;
pub mod value;
pub mod version;

pub use change::{ChangeRow, DocumentChange, Op, PromotedValue, RowContext, RowError};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ColumnType, MirrorConfig, PathPattern, PromotedColumn, Route, RoutedPath};
pub use drift::DriftReport;
pub use error::{ConfigError, ErrorKind, StoreError};
pub use metrics::{EntityMapRow, MetricRow, MetricsWarehouse, ReplaceReceipt, SliceLoad, SliceRow};
pub use raw::RawSource;
pub use failure::{QuarantineReason, QuarantineRecord, SyncErrorRecord};
pub use findings::{FindingRow, FindingsParam, FindingsParamValue, FindingsQuery, FindingsWarehouse, QueryDialect, FINDING_COLUMNS};
pub use opportunity::{opportunity_id, opportunity_period, Opportunity, OpportunityStatus, OpportunityStore, UpsertOutcome};
pub use run::{batch_id, RunOutcome, RunRecord, RUNS_TABLE};
pub use store::{flatten_chunks, AppendReceipt, DocState, ReadAt, DocWrite, ErrorLog, Scan, SourceStore, Warehouse};
pub use value::{Document, Fields, GeoPoint, Timestamp, Value};
pub use version::{RowOrder, Version};

/// The version of Converge that wrote a row (the changelog's `code_version`).
pub const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");
