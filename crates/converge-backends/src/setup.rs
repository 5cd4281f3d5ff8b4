//! `converge setup`: the one step that creates the warehouse's tables and views.
//!
//! In the cloud, DDL runs here and in Terraform, never at a function's start (see
//! [`crate::TablesAtStart::Check`]): the operator runs it with their own credentials
//! (`make deploy` does, before deploying the functions), after every upgrade and
//! every change of the mirror configuration. It is idempotent: tables are created only
//! if missing, columns added only if missing, views and table functions replaced with
//! the same text, and the dataset created only when it does not exist. Last, it runs
//! the very checks a function's start runs, so a setup that succeeds is one every
//! function will start on.

use std::time::Instant;

use converge_core::{MirrorConfig, StoreError};

use crate::{Backends, Tables, TablesAtStart};

/// What a setup did, for `converge setup --json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetupReport {
    /// `embedded` or `cloud`.
    pub backend: &'static str,
    /// The changelog tables of the configuration's routes (each with its `_latest`
    /// view and `_as_of` function), beside the runs table.
    pub tables: Vec<String>,
    /// `daily_entity_metrics`, `entity_map`, `etl_loads` (and, on BigQuery, the ETL's
    /// two staging tables).
    pub metrics_tables: bool,
    /// Whether the functions' start-up checks passed afterwards (always, when this
    /// returns `Ok`).
    pub checked: bool,
    pub millis: u64,
}

/// Creates every table and view `mirror` needs, then checks them as a function's
/// start would.
pub async fn run(backends: &Backends, mirror: &MirrorConfig) -> Result<SetupReport, StoreError> {
    let started = Instant::now();
    backends.warehouse.ensure_tables(mirror).await?;
    backends.metrics.ensure_metrics_tables().await?;
    let checking = Backends { tables_at_start: TablesAtStart::Check, ..backends.clone() };
    checking.open_tables(mirror, Tables::ChangelogAndMetrics).await?;
    tracing::info!(backend = backends.kind, tables = mirror.routes.len(), "setup done");
    Ok(SetupReport {
        backend: backends.kind,
        tables: mirror.routes.iter().map(|route| route.table.clone()).collect(),
        metrics_tables: true,
        checked: true,
        millis: started.elapsed().as_millis() as u64,
    })
}
