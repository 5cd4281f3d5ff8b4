//! The cloud source store: Firestore behind the core's [`SourceStore`] and
//! [`ErrorLog`] traits, the counterpart of the embedded `converge-sqlite` store and
//! held to the same contract suite.
//!
//! # Layout
//!
//! - [`config`]: project, database, emulator endpoint, collection names, page size.
//! - [`convert`]: Firestore gRPC values and documents ↔ core [`Value`](converge_core::Value)
//!   and [`Document`](converge_core::Document), exact for every type; paths ↔ resource names.
//! - [`source`]: [`FirestoreSource`], the [`SourceStore`]: atomic batches (one `Commit`),
//!   consistent paged scans at one read time (the one paged reader every query here
//!   uses).
//! - `subtree`: scans of a scope at any depth (a nested route's documents of one
//!   tenant): ids listed at wildcard levels, a collection-group query where the orders
//!   agree, every read at one read time, in path order.
//! - `ranges`: what an incremental reconcile reads: documents by change field
//!   (`where updated_at >= since` on each collection of the scope, at one read time),
//!   and `COUNT` aggregations and state scans over `__name__` ranges of one collection.
//! - [`raw`]: the [`RawSource`](converge_core::RawSource): a date range of raw records by
//!   structured query (`date >= from and date <= to`), paged at one read time.
//! - [`error_log`]: the [`ErrorLog`] on the same client: `sync_errors` and `quarantine`
//!   records merged by id with preconditions and an increment transform.
//! - [`opportunities`]: the [`OpportunityStore`](converge_core::OpportunityStore) at
//!   `orgs/{tenant}/opportunities/{id}`: create-or-update by preconditions (first
//!   sighting kept), open ones listed per tenant or by collection-group query.
//! - [`error`]: this crate's errors and their mapping onto the core's error kinds.
//! - [`emulator`]: a harness that starts Google's Firestore emulator on a free port,
//!   hands out stores pointed at it, resets it, registers Eventarc triggers, loads
//!   Security Rules, and kills it (the whole process group) when dropped.
//!
//! # Endpoint and credentials
//!
//! A [`FirestoreConfig`] with an `emulator_host` talks to that emulator with its stub
//! token, per client: nothing reads or sets the process environment, so tests can
//! run many stores (and emulators) in parallel. Without one, the `firestore` crate
//! picks the endpoint: `FIRESTORE_EMULATOR_HOST` when set, else the service with
//! Application Default Credentials.
//!
//! [`SourceStore`]: converge_core::SourceStore
//! [`ErrorLog`]: converge_core::ErrorLog

pub mod config;
pub mod convert;
pub mod emulator;
pub mod error;
pub mod error_log;
pub mod opportunities;
pub mod raw;
mod ranges;
pub mod source;
mod subtree;

pub use config::FirestoreConfig;
pub use emulator::{EmulatorError, EmulatorOptions, FirestoreEmulator};
pub use error::{FirestoreError, BACKEND};
pub use source::FirestoreSource;
