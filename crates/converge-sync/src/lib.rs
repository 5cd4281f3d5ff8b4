//! The on-write sync function: one Firestore document change in, one versioned
//! changelog row out.
//!
//! # Layout
//!
//! - [`service`]: [`SyncService::handle`], the whole decision for one event: decode,
//!   route, build the row, commit it or record why not. Returns a [`SyncOutcome`].
//!   [`SyncService::start`] takes a [`SyncConfig`].
//! - [`group_commit`]: concurrent events share one warehouse append.
//! - [`minutes`]: throughput and lag (source commit → durable) per minute, logged and
//!   recorded as `sync_minute` runs for the status page and the alerts.
//! - [`quarantine`]: building the quarantine record of bad input.
//! - [`replay`]: [`SyncService::replay`], a quarantined event re-submitted through
//!   [`SyncService::handle`] after a fix, the replay recorded on its record.
//! - [`routes`]: [`app`], the axum router (`POST /`, `GET /healthz`) that maps an
//!   outcome to an answer (its status chosen in `converge_function::answer`), and nothing
//!   else.
//!
//! The answer is 2xx only once the row, or the record of its failure, is durable.

pub mod group_commit;
pub mod minutes;
pub mod quarantine;
pub mod replay;
pub mod routes;
pub mod service;

pub use group_commit::{GroupCommitConfig, GroupCommitter};
pub use routes::{app, emulator_route};
pub use service::{SyncConfig, SyncOutcome, SyncService};
