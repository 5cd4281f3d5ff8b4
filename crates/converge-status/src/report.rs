//! [`StatusReport`]: what the page shows, read from the stores the pipeline already
//! writes — the source's counts, the current tables' counts, the run records
//! (reconcile, refresh, sync minutes, ETL, detectors, rebuilds, compactions), the
//! error log, the quarantine and the open opportunities. Nothing here writes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use converge_backends::Backends;
use converge_core::{Clock, ErrorLog, MirrorConfig, OpportunityStore, PathRange, RunRecord, SourceStore, StoreError, Timestamp, Warehouse};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;

/// Reconcile runs the drift chart spans, newest last.
pub const RECONCILE_HISTORY: usize = 30;
/// Sync minutes the throughput and lag charts span (an hour).
pub const SYNC_MINUTES: usize = 60;
/// Rows shown per list (errors, quarantine, opportunities); the page says how many more.
pub const SHOWN: usize = 20;
/// Runs shown per kind in the run history.
pub const RUNS_PER_KIND: usize = 5;
/// The run kinds of the history table, in the order a night runs them.
pub const HISTORY_KINDS: [&str; 5] = ["etl", "detectors", "rebuild", "compact", "retry_errors"];
/// The run kind of one minute of the sync's throughput and lag (`converge_sync::minutes`).
pub const SYNC_MINUTE_KIND: &str = "sync_minute";
/// The run kind of a refresh of the current tables.
pub const REFRESH_KIND: &str = "refresh_current";
/// Counts per tenant and route asked at once (each is a query on either side).
const COUNTS_AT_ONCE: usize = 8;

/// Where the page reads from, and how a person runs a command against this deployment.
#[derive(Clone)]
pub struct StatusSources {
    pub config: MirrorConfig,
    pub source: Arc<dyn SourceStore>,
    pub warehouse: Arc<dyn Warehouse>,
    pub errors: Arc<dyn ErrorLog>,
    pub opportunities: Arc<dyn OpportunityStore>,
    pub clock: Arc<dyn Clock>,
    pub commands: Commands,
}

impl StatusSources {
    /// The page over `backends`' stores (embedded or cloud), for the routes of `config`.
    pub fn new(backends: &Backends, config: MirrorConfig, clock: Arc<dyn Clock>, commands: Commands) -> Self {
        Self {
            config,
            source: backends.source.clone(),
            warehouse: backends.warehouse.clone(),
            errors: backends.errors.clone(),
            opportunities: backends.opportunities.clone(),
            clock,
            commands,
        }
    }
}

/// How the commands the page suggests are spelled.
#[derive(Debug, Clone)]
pub enum Commands {
    /// The embedded setup: `converge … --data-dir DIR`.
    Embedded { data_dir: String },
    /// Google Cloud: the Scheduler jobs `deploy/deploy.sh` creates, run by hand.
    Cloud,
}

impl Commands {
    /// Repairs drift and resolves the sync errors it explains.
    pub fn reconcile(&self) -> String {
        match self {
            Commands::Embedded { data_dir } => format!("converge reconcile --data-dir {data_dir}"),
            Commands::Cloud => "gcloud scheduler jobs run converge-reconcile-full --location REGION".to_owned(),
        }
    }

    /// Replays one quarantined event once its cause is fixed.
    pub fn replay(&self, id: &str) -> String {
        match self {
            Commands::Embedded { data_dir } => format!("converge quarantine replay --data-dir {data_dir} --id {id}"),
            // The record (Firestore collection `quarantine`) holds the whole body: fix
            // the cause, then deliver it again to the sync function.
            Commands::Cloud => format!("fix the cause, then POST the body of Firestore document quarantine/{id} to the on-write sync function"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub generated_at: String,
    /// Server time spent collecting.
    pub millis: u64,
    /// Every tenant's copy equal to its source, as far as the counts and the last
    /// reconcile tell.
    pub equal: bool,
    pub tenants: Vec<TenantStatus>,
    /// The recent reconcile runs, oldest first (the drift chart).
    pub reconciles: Vec<ReconcileSummary>,
    pub sync: SyncStatus,
    pub freshness: Vec<TableFreshness>,
    pub sync_errors: Listing<SyncErrorRow>,
    pub quarantine: Listing<QuarantineRow>,
    pub runs: Vec<RunSummary>,
    pub opportunities: Listing<OpportunityRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantStatus {
    pub tenant: String,
    /// Documents in the source, every route.
    pub source_docs: u64,
    /// Live rows in the current tables, every route.
    pub current_rows: u64,
    /// The counts agree and the last reconcile left nothing unrepaired.
    pub equal: bool,
    pub routes: Vec<RouteStatus>,
    pub last_reconcile: Option<ReconcileSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub table: String,
    pub source_docs: u64,
    pub current_rows: u64,
}

/// One reconcile run, over every table (or one tenant's share of it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileSummary {
    pub at: String,
    pub batch_id: String,
    pub scope: String,
    pub mode: String,
    pub outcome: String,
    pub missing: u64,
    pub different: u64,
    pub orphan: u64,
    pub known: u64,
    pub silent: u64,
    pub repaired: u64,
    /// Source documents read, as billed (`RunCost::source_reads`).
    pub source_reads: u64,
    /// The run's price; a tenant's share is not priced on its own (warehouse bytes are
    /// the run's), so a tenant's summary has 0 here.
    pub estimated_usd: f64,
}

impl ReconcileSummary {
    pub fn findings(&self) -> u64 {
        self.missing + self.different + self.orphan
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStatus {
    /// One per recorded minute of the last hour, oldest first.
    pub minutes: Vec<SyncMinute>,
    pub events_last_hour: u64,
    /// The largest of the minutes' median lags, source commit → durable.
    pub lag_ms_p50: u64,
    pub lag_ms_max: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncMinute {
    pub minute: String,
    pub events: u64,
    pub lag_ms_p50: u64,
    pub lag_ms_max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableFreshness {
    pub table: String,
    /// When the current table was last refreshed, and how long ago.
    pub refreshed_at: String,
    pub age_seconds: i64,
    pub current_rows: u64,
}

/// The first [`SHOWN`] of a list and how many there are.
#[derive(Debug, Clone, Serialize)]
pub struct Listing<T> {
    pub total: usize,
    pub shown: Vec<T>,
    /// What deals with them.
    pub command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncErrorRow {
    pub tenant: String,
    pub doc_path: String,
    pub action: String,
    pub error: String,
    pub attempts: u32,
    pub last_seen: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRow {
    pub id: String,
    pub reason: String,
    pub detail: String,
    pub received_at: String,
    pub command: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpportunityRow {
    pub tenant: String,
    pub detector: String,
    pub title: String,
    pub entity: String,
    pub message: String,
    pub last_seen: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub kind: String,
    pub batch_id: String,
    pub scope: String,
    pub finished_at: String,
    pub outcome: String,
    pub seconds: f64,
    pub estimated_usd: f64,
}

/// Reads everything the page shows.
pub async fn collect(sources: &StatusSources) -> Result<StatusReport, StoreError> {
    let started = Instant::now();
    let now = sources.clock.now();
    let reconcile_runs = sources.warehouse.runs("reconcile", RECONCILE_HISTORY).await?;

    let tenants = tenants(sources).await?;
    // Every (tenant, route) pair's counts at once, a few at a time.
    let pairs: Vec<_> = tenants.iter().flat_map(|tenant| sources.config.routes.iter().map(move |route| route_counts(sources, route, tenant))).collect();
    let mut counted: Vec<RouteStatus> = futures::stream::iter(pairs).buffered(COUNTS_AT_ONCE).try_collect().await?;
    let mut statuses = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let routes: Vec<RouteStatus> = counted.drain(..sources.config.routes.len()).collect();
        let last_reconcile = reconcile_runs.iter().find_map(|run| tenant_share(run, &tenant));
        let (source_docs, current_rows) = (routes.iter().map(|r| r.source_docs).sum(), routes.iter().map(|r| r.current_rows).sum());
        let repaired_all = last_reconcile.as_ref().is_none_or(|r| r.findings() == r.repaired);
        statuses.push(TenantStatus { equal: source_docs == current_rows && repaired_all, tenant, source_docs, current_rows, routes, last_reconcile });
    }

    let counts_millis = started.elapsed().as_millis() as u64;
    let mut reconciles: Vec<ReconcileSummary> = reconcile_runs.iter().map(|run| summary(run, run.report["tenants"].as_array().map(Vec::as_slice).unwrap_or(&[]))).collect();
    reconciles.reverse();

    let sync = sync_status(&sources.warehouse.runs(SYNC_MINUTE_KIND, SYNC_MINUTES).await?, now);
    let freshness = freshness(&sources.warehouse.runs(REFRESH_KIND, 1).await?, now);

    let open = sources.errors.open_sync_errors(None).await?;
    let sync_errors = Listing {
        total: open.len(),
        shown: open
            .iter()
            .take(SHOWN)
            .map(|e| SyncErrorRow {
                tenant: e.tenant.clone(),
                doc_path: e.doc_path.clone(),
                action: e.action.clone(),
                error: e.error.clone(),
                attempts: e.attempts,
                last_seen: e.last_seen.to_rfc3339(),
            })
            .collect(),
        command: sources.commands.reconcile(),
    };
    let quarantined = sources.errors.quarantined(SHOWN + 1).await?;
    let quarantine = Listing {
        total: quarantined.len(),
        shown: quarantined
            .iter()
            .take(SHOWN)
            .map(|q| QuarantineRow {
                id: q.id.clone(),
                reason: q.reason.as_str().to_owned(),
                detail: q.detail.clone(),
                received_at: q.received_at.to_rfc3339(),
                command: sources.commands.replay(&q.id),
            })
            .collect(),
        command: sources.commands.replay("ID"),
    };

    let mut runs = Vec::new();
    for kind in HISTORY_KINDS {
        for run in sources.warehouse.runs(kind, RUNS_PER_KIND).await? {
            runs.push(run_summary(&run));
        }
    }
    runs.sort_by(|a, b| b.finished_at.cmp(&a.finished_at));

    let open_opportunities = sources.opportunities.open_opportunities(None).await?;
    let opportunities = Listing {
        total: open_opportunities.len(),
        shown: open_opportunities
            .iter()
            .take(SHOWN)
            .map(|o| OpportunityRow {
                tenant: o.tenant.clone(),
                detector: o.detector.clone(),
                title: o.title.clone(),
                entity: format!("{} {}", o.entity_type, o.entity_id),
                message: o.message.clone(),
                last_seen: o.last_seen.to_rfc3339(),
            })
            .collect(),
        command: String::new(),
    };

    tracing::debug!(counts_millis, millis = started.elapsed().as_millis() as u64, "status collected");
    Ok(StatusReport {
        generated_at: now.to_rfc3339(),
        millis: started.elapsed().as_millis() as u64,
        equal: statuses.iter().all(|t| t.equal),
        tenants: statuses,
        reconciles,
        sync,
        freshness,
        sync_errors,
        quarantine,
        runs,
        opportunities,
    })
}

/// Every tenant of every route, in the source or the warehouse, ascending.
async fn tenants(sources: &StatusSources) -> Result<Vec<String>, StoreError> {
    let mut all = BTreeSet::new();
    for route in &sources.config.routes {
        all.extend(sources.source.list_tenants(&route.pattern).await?);
        all.extend(sources.warehouse.tenants(&route.table).await?);
    }
    Ok(all.into_iter().collect())
}

async fn route_counts(sources: &StatusSources, route: &converge_core::Route, tenant: &str) -> Result<RouteStatus, StoreError> {
    let scope = route
        .pattern
        .tenant_scope(tenant)
        .map_err(|problem| StoreError::new(converge_core::ErrorKind::InvalidInput, "status", format!("tenant {tenant:?}: {problem}")))?;
    let all = [PathRange::all()];
    let (source_docs, current_rows) = futures::try_join!(sources.source.count_range(&scope, &all[0]), sources.warehouse.current_range_counts(&route.table, tenant, &all))?;
    Ok(RouteStatus { table: route.table.clone(), source_docs, current_rows: current_rows.first().copied().unwrap_or(0) })
}

fn number(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// A reconcile run's totals over `entries` (its per tenant and table reports).
fn summary(run: &RunRecord, entries: &[Value]) -> ReconcileSummary {
    let mut out = ReconcileSummary {
        at: run.finished_at.to_rfc3339(),
        batch_id: run.batch_id.clone(),
        scope: run.scope.clone(),
        mode: run.report["mode"].as_str().unwrap_or("full").to_owned(),
        outcome: run.outcome.as_str().to_owned(),
        estimated_usd: run.report["cost"]["estimated_usd"].as_f64().unwrap_or(0.0),
        ..ReconcileSummary::default()
    };
    for entry in entries {
        out.missing += number(&entry["missing"]);
        out.different += number(&entry["different"]);
        out.orphan += number(&entry["orphan"]);
        out.known += number(&entry["known"]);
        out.silent += number(&entry["silent"]);
        out.repaired += number(&entry["repaired"]);
        out.source_reads += number(&entry["cost"]["source_reads"]);
    }
    out
}

/// `tenant`'s share of a reconcile run, if the run covered it.
fn tenant_share(run: &RunRecord, tenant: &str) -> Option<ReconcileSummary> {
    let entries: Vec<Value> = run.report["tenants"].as_array()?.iter().filter(|t| t["tenant"].as_str() == Some(tenant)).cloned().collect();
    if entries.is_empty() {
        return None;
    }
    let mut share = summary(run, &entries);
    share.estimated_usd = 0.0;
    Some(share)
}

fn sync_status(minutes: &[RunRecord], now: Timestamp) -> SyncStatus {
    let hour_ago = now.as_micros() - 3_600_000_000;
    let mut out = SyncStatus::default();
    for run in minutes.iter().rev().filter(|run| run.finished_at.as_micros() >= hour_ago) {
        let minute = SyncMinute {
            minute: run.started_at.to_rfc3339(),
            events: number(&run.report["events"]),
            lag_ms_p50: number(&run.report["lag_ms_p50"]),
            lag_ms_max: number(&run.report["lag_ms_max"]),
        };
        out.events_last_hour += minute.events;
        out.lag_ms_p50 = out.lag_ms_p50.max(minute.lag_ms_p50);
        out.lag_ms_max = out.lag_ms_max.max(minute.lag_ms_max);
        out.minutes.push(minute);
    }
    out
}

fn freshness(refreshes: &[RunRecord], now: Timestamp) -> Vec<TableFreshness> {
    let Some(run) = refreshes.first() else { return Vec::new() };
    run.report["tables"]
        .as_array()
        .map(|tables| {
            tables
                .iter()
                .map(|t| TableFreshness {
                    table: t["table"].as_str().unwrap_or_default().to_owned(),
                    refreshed_at: run.finished_at.to_rfc3339(),
                    age_seconds: (now.as_micros() - run.finished_at.as_micros()) / 1_000_000,
                    current_rows: number(&t["current_rows"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn run_summary(run: &RunRecord) -> RunSummary {
    RunSummary {
        kind: run.kind.clone(),
        batch_id: run.batch_id.clone(),
        scope: run.scope.clone(),
        finished_at: run.finished_at.to_rfc3339(),
        outcome: run.outcome.as_str().to_owned(),
        seconds: (run.finished_at.as_micros() - run.started_at.as_micros()) as f64 / 1e6,
        estimated_usd: run.report["cost"]["estimated_usd"].as_f64().unwrap_or(0.0),
    }
}
