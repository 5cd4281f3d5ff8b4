//! `converge demo`: the whole embedded pipeline on loopback, end to end.
//!
//! 1. Fresh SQLite source and DuckDB warehouse in the data directory.
//! 2. The on-write sync function served on `127.0.0.1:0` (real HTTP) and the relay
//!    delivering the source's outbox to it as Eventarc CloudEvents.
//! 3. A realistic dataset loaded through the source store, then live traffic: edits,
//!    re-categorized old records, deletes, create-then-delete within a second, bursts.
//!    Three routes are mirrored ([`mirror_config`]): the bookkeeping records (table
//!    `records`), invoices beside them, and tasks nested under projects
//!    (`orgs/{tenant}/projects/{project}/tasks/{doc}`, table `tasks`).
//! 4. Wait for the relay to drain; compare every tenant's source with its latest view
//!    document by document; run the report from DuckDB and time it.
//! 5. The operational half: 90 days of raw GA4/ads/email exports for every tenant (the
//!    large one at a real account's scale) with planted patterns, the nightly ETL over
//!    every day, the shipped detector pack as of the last day; the opportunities found
//!    must be exactly the planted ones ([`crate::planted_patterns`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use converge_backends::EmbeddedBackends;
use converge_core::{drift, ColumnType, Clock, DocState, DocWrite, DriftReport, MirrorConfig, PathPattern, PromotedColumn, Route, SourceStore, SystemClock, Timestamp, Value, Warehouse};
use converge_relay::{Relay, RelayConfig, RunningRelay};
use converge_sync::{GroupCommitConfig, SyncConfig, SyncService};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::bookkeeping_records::{self, Rng};
use crate::planted_patterns::{self, DetectorsSummary, EtlSummary, FindingKey, OpsBars, OpsPlan};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub data_dir: PathBuf,
    /// Size of the large tenant.
    pub records: u64,
    /// Draw progress bars (on stderr).
    pub progress: bool,
    /// Scale of the large tenant's raw operational data: 1.0 is a real account's
    /// ~6,090 raw rows a day (~176,000 a month); the small tenants get a fraction.
    pub ops_scale: f64,
}

impl DemoOptions {
    /// The operational data's tenants and scales: the demo's tenants, the large one at
    /// `ops_scale`, the others at a tenth, a twentieth and a fiftieth of it.
    pub fn ops_plan(&self) -> OpsPlan {
        let tenants = tenants(self.records)
            .into_iter()
            .zip([1.0, 0.1, 0.05, 0.02])
            .map(|((tenant, _, _), share)| (tenant.to_owned(), self.ops_scale * share))
            .collect();
        OpsPlan { tenants, planted_tenant: "acme".into(), first_day: OPS_FIRST_DAY, days: 90 }
    }
}

/// The operational data's first day: fixed, so every run of the demo plants and finds
/// the same patterns on the same weekdays.
const OPS_FIRST_DAY: chrono::NaiveDate = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).expect("a valid date");

/// One opportunity the detectors opened, as the demo prints it.
#[derive(Debug, Clone, Serialize)]
pub struct OpportunityLine {
    pub severity: String,
    pub detector: String,
    pub tenant: String,
    pub entity_type: String,
    pub entity_id: String,
    pub message: String,
    /// Whether it is one of the planted patterns.
    pub planted: bool,
}

/// The operational half of the demo: raw data seeded, the ETL, the detectors.
#[derive(Debug, Clone, Serialize)]
pub struct OpsDemoSummary {
    pub raw_rows: u64,
    pub seed_millis: u64,
    pub first_day: String,
    pub as_of: String,
    /// Planted findings the detectors missed (must be empty).
    pub missed: Vec<FindingKey>,
    pub opportunities: Vec<OpportunityLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantSummary {
    pub tenant: String,
    pub source_docs: u64,
    pub latest_rows: u64,
    pub missing: usize,
    pub different: usize,
    pub orphan: usize,
}

/// One route's documents, source against latest view, over every tenant.
#[derive(Debug, Clone, Serialize)]
pub struct RouteSummary {
    pub table: String,
    pub pattern: String,
    pub source_docs: u64,
    pub latest_rows: u64,
    /// Missing, different and orphan documents together (must be 0).
    pub drift: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    pub tenant: String,
    pub label: String,
    pub rows: usize,
    /// The median of five runs on the latest view (`records_latest`), which picks every
    /// document's winner at each read.
    pub millis: f64,
    /// The median of five runs of the same report on the current table
    /// (`records_current`), the latest view materialized.
    pub current_millis: f64,
    /// The two gave the same rows.
    pub current_equals_latest: bool,
    /// Bytes each processed (BigQuery's job statistics; the embedded warehouse does not
    /// report them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_processed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_bytes_processed: Option<u64>,
    /// The first rows of the report.
    pub sample: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LiveTraffic {
    pub edits: u64,
    pub recategorized_old_records: u64,
    pub deletes: u64,
    pub created_then_deleted: u64,
    pub burst_creates: u64,
}

impl LiveTraffic {
    /// Document writes issued (each fires one trigger on Firestore).
    pub fn writes(&self) -> u64 {
        self.edits + self.recategorized_old_records + self.deletes + 2 * self.created_then_deleted + self.burst_creates
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    pub data_dir: String,
    /// The records route, per tenant.
    pub tenants: Vec<TenantSummary>,
    /// Every route of [`mirror_config`], over every tenant.
    pub routes: Vec<RouteSummary>,
    /// Documents loaded on every route.
    pub documents_loaded: u64,
    pub load_millis: u64,
    pub live: LiveTraffic,
    pub events_delivered: u64,
    pub events_rejected: u64,
    pub delivery_retries: u64,
    pub rows_written: u64,
    pub changelog_rows: u64,
    pub quarantined: u64,
    pub open_sync_errors: u64,
    pub drain_millis: u64,
    pub derived_equals_source: bool,
    /// What a full reconcile run found at the end (0: nothing to repair), recorded as the
    /// schedule's would be, so the status page has a last reconcile (embedded demo only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile_findings: Option<u64>,
    pub report: ReportSummary,
    /// The nightly ETL over the seeded days (embedded demo only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etl: Option<EtlSummary>,
    /// The detector pass as of the last seeded day (embedded demo only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detectors: Option<DetectorsSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<OpsDemoSummary>,
    pub total_millis: u64,
}

/// The demo's tenants: one large, three small.
pub(crate) fn tenants(records: u64) -> Vec<(&'static str, u64, u64)> {
    vec![("acme", records, 1), ("globex", 5_000, 2), ("initech", 2_000, 3), ("umbrella", 500, 4)]
}

pub(crate) const LOAD_BATCH: usize = 2_000;

pub async fn run(options: DemoOptions) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let data_dir = &options.data_dir;
    reset_data_dir(data_dir)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = mirror_config();
    // The configuration the data directory was made with, where every command on it
    // (`converge reconcile`, `compact`, `serve`, …) finds it (converge_cli::mirror_for).
    std::fs::write(data_dir.join(MIRROR_FILE), config.to_toml()).with_context(|| format!("writing {}", data_dir.join(MIRROR_FILE).display()))?;
    // Only mirrored paths get change events: the raw operational collections are read
    // by the ETL, not mirrored (as the Eventarc trigger's pattern in the cloud).
    let backends = EmbeddedBackends::open_for(data_dir, clock.clone(), &config).context("opening the embedded stores")?;
    backends.warehouse.ensure_tables(&config).await?;

    // The sync function, served over real HTTP on loopback.
    let run_id = format!("demo-{}", uuid::Uuid::new_v4());
    let service = Arc::new(SyncService::start(SyncConfig {
        mirror: config.clone(),
        warehouse: backends.warehouse(),
        errors: backends.error_log(),
        clock: clock.clone(),
        run_id: run_id.clone(),
        max_body_bytes: converge_function::settings::DEFAULT_MAX_BODY_BYTES,
        commit: GroupCommitConfig::default(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(converge_function::serve(listener, converge_sync::app(service.clone()), async {
        let _ = server_stopped.await;
    }));
    tracing::info!(run_id, %address, "sync function listening");

    // The relay: source outbox → CloudEvents → the sync function.
    // Wider than the default: the sync function commits whatever arrives together, so
    // more requests in flight mean larger group commits.
    let relay_config = RelayConfig { max_in_flight: 256, batch_size: 4096, ..RelayConfig::default() };
    let relay = Arc::new(Relay::new(Arc::new(backends.source.clone()), &format!("http://{address}/"), relay_config)?);
    let running_relay = RunningRelay::spawn(relay.clone());

    let bars = Bars::new(options.progress);
    let delivered_ticker = tokio::spawn({
        let relay = relay.clone();
        let bar = bars.delivered.clone();
        async move {
            loop {
                bar.set_position(relay.stats().delivered);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // Load the dataset through the source store, as an app would write it.
    let now = clock.now();
    let load_started = Instant::now();
    let all = tenants(options.records);
    let total_docs = documents_loaded(&all);
    bars.loaded.set_length(total_docs);
    bars.delivered.set_length(total_docs);
    let pattern = &config.routes[0].pattern;
    load_dataset(&backends.source, pattern, &all, LOAD_BATCH, now, &bars).await?;
    load_other_routes(&backends.source, &config, &all, now, &bars).await?;
    let load_millis = load_started.elapsed().as_millis() as u64;
    bars.loaded.finish();

    // Live traffic while the relay is still catching up.
    let live = live_traffic(&backends.source, pattern, options.records, now, &bars).await?;

    // Wait for every event to be acknowledged.
    let drain_started = Instant::now();
    let expected_events = backends.source.outbox_stats().await?;
    bars.delivered.set_length(expected_events.pending + expected_events.delivered + expected_events.rejected);
    wait_for_outbox(&backends.source, Duration::from_secs(600)).await?;
    let drain_millis = drain_started.elapsed().as_millis() as u64;
    let relay_stats = running_relay.stop().await?;
    delivered_ticker.abort();
    bars.delivered.set_position(relay_stats.delivered);
    bars.delivered.finish();
    let _ = stop_server.send(());
    server.await??;

    // Derived == source, document by document.
    let tenant_names: Vec<&str> = all.iter().map(|(tenant, _, _)| *tenant).collect();
    let tenant_summaries = compare_tenants(&backends.source, &backends.warehouse, &config.routes[0], &tenant_names).await?;
    let routes = compare_routes(&backends.source, &backends.warehouse, &config, &tenant_names).await?;
    let derived_equals_source = tenant_summaries.iter().all(|t| t.missing + t.different + t.orphan == 0 && t.source_docs == t.latest_rows)
        && routes.iter().all(|r| r.drift == 0 && r.source_docs == r.latest_rows);

    // The current tables, refreshed from the changelog (the first refresh reads it
    // all), must equal the latest views.
    let retention = converge_retention::Retention::new(backends.warehouse(), config.clone(), clock.clone());
    let refresh = retention.refresh(converge_core::RefreshFrom::Watermark, None).await?;
    let current_equals_latest = current_equals_latest(&backends.warehouse, &config, &tenant_names).await?;
    let derived_equals_source = derived_equals_source && current_equals_latest;
    tracing::info!(rows_read = refresh.rows_read, documents = refresh.documents_merged, millis = refresh.millis, current_equals_latest, "current tables refreshed");

    // The reconciler as the schedule runs it, recorded (the status page's last
    // reconcile): after the comparisons above it must find nothing.
    let reconciler = converge_reconcile::Reconciler::new(backends.source_store(), backends.error_log(), backends.warehouse(), config.clone(), clock.clone());
    let reconcile_findings = reconciler.run(None, false).await.map_err(|e| anyhow::anyhow!("the demo's reconcile run: {e}"))?.findings();
    let derived_equals_source = derived_equals_source && reconcile_findings == 0;

    let report = run_report(&backends, all[0].0).await?;

    // The operational half: raw data, the ETL, the detectors.
    let plan = options.ops_plan();
    let ops = planted_patterns::run(&backends, clock.clone(), &plan, &ops_bars(options.progress)).await?;
    let expected: std::collections::BTreeSet<FindingKey> = planted_patterns::expected_findings(&plan.planted_tenant).into_iter().collect();
    let opportunities = ops
        .detect_run
        .findings
        .iter()
        .map(|f| OpportunityLine {
            severity: f.severity.clone(),
            detector: f.detector.clone(),
            tenant: f.tenant.clone(),
            entity_type: f.entity_type.clone(),
            entity_id: f.entity_id.clone(),
            message: f.message.clone(),
            planted: expected.contains(&planted_patterns::key(f)),
        })
        .collect();
    let counters = service.counters();
    let outbox = backends.source.outbox_stats().await?;
    use converge_core::ErrorLog;
    Ok(DemoSummary {
        data_dir: data_dir.display().to_string(),
        tenants: tenant_summaries,
        routes,
        documents_loaded: total_docs,
        load_millis,
        live,
        events_delivered: outbox.delivered,
        events_rejected: outbox.rejected,
        delivery_retries: relay_stats.failed_attempts,
        rows_written: service.committer().stats().written.load(std::sync::atomic::Ordering::Relaxed),
        changelog_rows: changelog_rows(&backends, &config).await?,
        quarantined: counters.quarantined.load(std::sync::atomic::Ordering::Relaxed),
        open_sync_errors: backends.source.open_sync_errors(None).await?.len() as u64,
        drain_millis,
        derived_equals_source,
        reconcile_findings: Some(reconcile_findings),
        report,
        etl: Some(ops.etl),
        detectors: Some(ops.detectors),
        ops: Some(OpsDemoSummary {
            raw_rows: ops.raw_rows,
            seed_millis: ops.seed_millis,
            first_day: plan.first_day.to_string(),
            as_of: plan.last_day().to_string(),
            missed: ops.missed,
            opportunities,
        }),
        total_millis: started.elapsed().as_millis() as u64,
    })
}

/// Bars for the raw rows seeded and the ETL's (tenant, day) slices.
fn ops_bars(visible: bool) -> OpsBars {
    let bars = BarSet::new(visible);
    OpsBars { seeded: bars.bar("raw rows seeded"), etl: bars.bar("etl slices") }
}

/// Writes every tenant's records through the source store, `batch` per commit, as an
/// app would.
pub(crate) async fn load_dataset(
    source: &dyn SourceStore,
    pattern: &converge_core::PathPattern,
    tenants: &[(&str, u64, u64)],
    batch: usize,
    now: Timestamp,
    bars: &Bars,
) -> anyhow::Result<()> {
    for (tenant, count, seed) in tenants {
        let mut writes = Vec::with_capacity(batch);
        for index in 0..*count {
            let path = pattern.document_path(tenant, &bookkeeping_records::doc_id(index)).expect("demo route has a plain pattern");
            writes.push(DocWrite::Set { path, fields: bookkeeping_records::record(*seed, index, now) });
            if writes.len() == batch || index + 1 == *count {
                let n = writes.len() as u64;
                source.apply(crate::bookkeeping_records::stamped(std::mem::take(&mut writes))).await.context("loading the dataset")?;
                bars.loaded.inc(n);
            }
        }
    }
    Ok(())
}

/// The demo's mirror configuration: the bookkeeping records (the default route, table
/// `records`, which the report reads), invoices beside them under each tenant, and
/// tasks nested under projects, whose documents above them (`orgs/acme`,
/// `orgs/acme/projects/p`) are never written.
/// The file in a data directory that holds the mirror configuration it was made with.
pub const MIRROR_FILE: &str = "mirror.toml";

pub fn mirror_config() -> MirrorConfig {
    let mut routes = MirrorConfig::default().routes;
    let column = |name: &str, column_type| PromotedColumn { column: name.into(), field: name.into(), column_type };
    routes.push(Route {
        pattern: PathPattern::parse("orgs/{tenant}/invoices/{doc}").expect("a valid pattern"),
        table: "invoices".into(),
        promoted: vec![column("amount", ColumnType::Float64)],
        change_field: Some(converge_core::config::DEFAULT_CHANGE_FIELD.into()),
    });
    routes.push(Route {
        pattern: PathPattern::parse("orgs/{tenant}/projects/{project}/tasks/{doc}").expect("a valid pattern"),
        table: "tasks".into(),
        promoted: vec![column("done", ColumnType::Bool)],
        change_field: Some(converge_core::config::DEFAULT_CHANGE_FIELD.into()),
    });
    MirrorConfig::new(routes).expect("the demo's configuration is valid")
}

/// The projects the demo's tasks are spread over: `p-1` and `p.x` sort before `p` as
/// whole paths (`…/p-1/tasks/…` < `…/p/tasks/…`) but after it in Firestore's
/// segment-by-segment order, which the scans must reconcile.
const PROJECTS: [&str; 4] = ["p", "p-1", "p.x", "q"];

/// Invoices and tasks written for a tenant of `records` bookkeeping records.
pub fn other_route_documents(records: u64) -> (u64, u64) {
    ((records / 20).max(4), (records / 10).max(8))
}

/// Documents the demo loads on every route for `tenants`.
pub(crate) fn documents_loaded(tenants: &[(&str, u64, u64)]) -> u64 {
    tenants.iter().map(|(_, n, _)| n + other_route_documents(*n).0 + other_route_documents(*n).1).sum()
}

/// Writes every tenant's invoices and tasks (the routes after the first of
/// [`mirror_config`]) through the source store, within Firestore's 500 writes a commit.
pub(crate) async fn load_other_routes(source: &dyn SourceStore, config: &MirrorConfig, tenants: &[(&str, u64, u64)], now: Timestamp, bars: &Bars) -> anyhow::Result<()> {
    let (invoice_route, task_route) = (&config.routes[1].pattern, &config.routes[2].pattern);
    for (tenant, count, seed) in tenants {
        let (invoices, tasks) = other_route_documents(*count);
        let mut writes = Vec::new();
        for i in 0..invoices {
            let path = invoice_route.document_path(tenant, &format!("inv{i:06}")).expect("a plain pattern");
            let mut fields = bookkeeping_records::record(*seed, i, now);
            fields.insert("invoice".into(), Value::Integer(i as i64));
            writes.push(DocWrite::Set { path, fields });
        }
        for i in 0..tasks {
            let project = PROJECTS[(i % PROJECTS.len() as u64) as usize];
            let path = task_route.document_path_with(tenant, &[project], &format!("task{i:06}")).expect("one wildcard");
            let fields = converge_core::Fields::from([
                ("done".to_owned(), Value::Boolean(i % 3 == 0)),
                ("title".to_owned(), Value::String(format!("task {i} of {project}"))),
            ]);
            writes.push(DocWrite::Set { path, fields });
        }
        for chunk in writes.chunks(500) {
            source.apply(crate::bookkeeping_records::stamped(chunk.to_vec())).await.context("loading invoices and tasks")?;
            bars.loaded.inc(chunk.len() as u64);
        }
    }
    Ok(())
}

/// Rows in every changelog table of `config`.
pub(crate) async fn changelog_rows(backends: &EmbeddedBackends, config: &MirrorConfig) -> anyhow::Result<u64> {
    let mut rows = 0;
    for route in &config.routes {
        rows += backends.warehouse.changelog_rows(&route.table).await?;
    }
    Ok(rows)
}

/// Every route's source compared with its latest view, document by document, over
/// `tenants`.
pub(crate) async fn compare_routes(source: &dyn SourceStore, warehouse: &dyn Warehouse, config: &MirrorConfig, tenants: &[&str]) -> anyhow::Result<Vec<RouteSummary>> {
    let mut summaries = Vec::new();
    for route in &config.routes {
        let mut summary = RouteSummary { table: route.table.clone(), pattern: route.pattern.as_str().into(), source_docs: 0, latest_rows: 0, drift: 0 };
        for tenant in compare_tenants(source, warehouse, route, tenants).await? {
            summary.source_docs += tenant.source_docs;
            summary.latest_rows += tenant.latest_rows;
            summary.drift += (tenant.missing + tenant.different + tenant.orphan) as u64;
        }
        summaries.push(summary);
    }
    Ok(summaries)
}

/// Each tenant's source compared with its latest view, document by document.
pub(crate) async fn compare_tenants(
    source: &dyn SourceStore,
    warehouse: &dyn Warehouse,
    route: &converge_core::Route,
    tenants: &[&str],
) -> anyhow::Result<Vec<TenantSummary>> {
    let mut summaries = Vec::new();
    for tenant in tenants {
        let report: DriftReport = drift::compare_tenant(source, warehouse, route, tenant).await?;
        if !report.is_clean() {
            tracing::error!(tenant, missing = ?report.missing.iter().take(5).collect::<Vec<_>>(), different = ?report.different.iter().take(5).collect::<Vec<_>>(), orphan = ?report.orphan.iter().take(5).collect::<Vec<_>>(), "derived differs from source");
        }
        summaries.push(TenantSummary {
            tenant: tenant.to_string(),
            source_docs: report.source_docs,
            latest_rows: warehouse.latest_count(&route.table, tenant).await?,
            missing: report.missing.len(),
            different: report.different.len(),
            orphan: report.orphan.len(),
        });
    }
    Ok(summaries)
}

/// The demo owns `source.sqlite` and `warehouse.duckdb` in its data directory and
/// starts them afresh; nothing else in the directory is touched.
pub(crate) fn reset_data_dir(data_dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    for entry in std::fs::read_dir(data_dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("source.sqlite") || name.starts_with("warehouse.duckdb") {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Live changes to the large tenant, through any source store. Batches stay within
/// Firestore's 500 writes per commit.
pub(crate) async fn live_traffic(
    source: &dyn SourceStore,
    pattern: &converge_core::PathPattern,
    records: u64,
    now: Timestamp,
    bars: &Bars,
) -> anyhow::Result<LiveTraffic> {
    let tenant = "acme";
    let seed = 1;
    let path = |id: &str| pattern.document_path(tenant, id).expect("plain pattern");
    let mut rng = Rng::new(0xC0FFEE);
    let mut live = LiveTraffic::default();
    let scale = (records / 60).max(50);
    bars.live.set_length(scale * 2 + scale / 5 + 3 * (scale * 3 / 2) + (scale / 25) * 2);

    // Disjoint index ranges, so each kind of change touches its own records.
    let third = records / 3;
    // Edits: amounts corrected on recent and old records alike.
    for chunk in (0..scale).collect::<Vec<_>>().chunks(250) {
        // One write per document per batch: a batch has one commit time.
        let indices: std::collections::BTreeSet<u64> = chunk.iter().map(|_| rng.below(third)).collect();
        let writes: Vec<DocWrite> = indices
            .into_iter()
            .map(|index| {
                let mut fields = bookkeeping_records::record(seed, index, now);
                fields.insert("amount".into(), Value::Double((rng.below(900_000) as f64 + 100.0) / 100.0));
                DocWrite::Set { path: path(&bookkeeping_records::doc_id(index)), fields }
            })
            .collect();
        live.edits += writes.len() as u64;
        source.apply(crate::bookkeeping_records::stamped(writes)).await?;
        bars.live.inc(chunk.len() as u64);
    }
    // Records months old whose category changes: the report's past months move.
    let mut recategorized = 0;
    let mut index = third;
    while recategorized < scale && index < 2 * third {
        let mut fields = bookkeeping_records::record(seed, index, now);
        if bookkeeping_records::is_older_than(&fields, now, 90) {
            let current = fields.get("label").cloned();
            let relabel = bookkeeping_records::LABELS.iter().find(|l| Some(Value::String((**l).into())) != current).expect("several labels");
            fields.insert("label".into(), Value::String((*relabel).into()));
            source.apply(crate::bookkeeping_records::stamped(vec![DocWrite::Set { path: path(&bookkeeping_records::doc_id(index)), fields }])).await?;
            recategorized += 1;
            bars.live.inc(1);
        }
        index += 1;
    }
    live.recategorized_old_records = recategorized;
    // Deletes.
    let deletes = scale / 5;
    let writes: Vec<DocWrite> = (0..deletes).map(|i| DocWrite::Delete { path: path(&bookkeeping_records::doc_id(2 * third + i)) }).collect();
    for chunk in writes.chunks(500) {
        source.apply(crate::bookkeeping_records::stamped(chunk.to_vec())).await?;
    }
    live.deletes = deletes;
    bars.live.inc(deletes);
    // Create-then-delete within a second: two events whose order must not matter.
    for i in 0..scale / 25 {
        let id = format!("tmp{i:05}");
        source.apply(crate::bookkeeping_records::stamped(vec![DocWrite::Set { path: path(&id), fields: bookkeeping_records::record(seed, records + i, now) }])).await?;
        source.apply(crate::bookkeeping_records::stamped(vec![DocWrite::Delete { path: path(&id) }])).await?;
        live.created_then_deleted += 1;
        bars.live.inc(2);
    }
    // Bursts of new records, as from an import in the app.
    for burst in 0..3u64 {
        let size = scale * 3 / 2;
        let writes: Vec<DocWrite> = (0..size)
            .map(|i| DocWrite::Set { path: path(&format!("b{burst}-{i:06}")), fields: bookkeeping_records::record(seed, records * 2 + burst * size + i, now) })
            .collect();
        for chunk in writes.chunks(500) {
            source.apply(crate::bookkeeping_records::stamped(chunk.to_vec())).await?;
        }
        live.burst_creates += size;
        bars.live.inc(size);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bars.live.finish();
    Ok(live)
}

/// Waits until a running relay has emptied the source's outbox (no event pending), or
/// fails after `timeout` naming what is left. (`Relay::drain` delivers by itself; this
/// only watches the relay already running.) Also the end-to-end tests' wait.
pub async fn wait_for_outbox(source: &converge_sqlite::SqliteStore, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = source.outbox_stats().await?;
        if stats.pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} events still pending after {timeout:?} ({stats:?}); is the sync function answering? see the log", stats.pending);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The report: the large tenant by account × fund × month, for one label.
pub const REPORT_SQL: &str = "SELECT account, fund, strftime(date, '%Y-%m') AS month, count(*) AS records, round(sum(amount), 2) AS total
FROM records_latest
WHERE tenant = ? AND label = ?
GROUP BY ALL
ORDER BY account, fund, month";

/// The report on the latest view and on the current table, each run five times (the
/// median is what a person waits for; the first run also warms DuckDB's caches).
async fn run_report(backends: &EmbeddedBackends, tenant: &str) -> anyhow::Result<ReportSummary> {
    let label = bookkeeping_records::REPORT_LABEL;
    let args = || vec![tenant.to_owned(), label.to_owned()];
    let current_sql = REPORT_SQL.replace("FROM records_latest", "FROM records_current");
    let mut times = (Vec::new(), Vec::new());
    let (mut rows, mut current_rows) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let started = Instant::now();
        rows = backends.warehouse.query_json_with(REPORT_SQL, args()).await?;
        times.0.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        current_rows = backends.warehouse.query_json_with(&current_sql, args()).await?;
        times.1.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        (values[values.len() / 2] * 10.0).round() / 10.0
    };
    Ok(ReportSummary {
        tenant: tenant.into(),
        label: label.into(),
        rows: rows.len(),
        millis: median(times.0),
        current_millis: median(times.1),
        current_equals_latest: rows == current_rows,
        bytes_processed: None,
        current_bytes_processed: None,
        sample: rows.into_iter().take(5).collect(),
    })
}

/// Whether every route's current table holds what its latest view shows, tenant by
/// tenant, state by state.
pub(crate) async fn current_equals_latest(warehouse: &dyn Warehouse, config: &MirrorConfig, tenants: &[&str]) -> anyhow::Result<bool> {
    use futures::TryStreamExt;
    for route in &config.routes {
        for tenant in tenants {
            let latest: Vec<DocState> = warehouse.latest_states(&route.table, tenant).await?.items.try_collect().await?;
            let current: Vec<DocState> = warehouse.current_states(&route.table, tenant).await?.items.try_collect().await?;
            if latest != current {
                tracing::error!(table = %route.table, tenant, latest = latest.len(), current = current.len(), "the current table differs from the latest view");
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[derive(Clone)]
pub(crate) struct Bars {
    pub(crate) loaded: ProgressBar,
    pub(crate) live: ProgressBar,
    pub(crate) delivered: ProgressBar,
}

impl Bars {
    pub(crate) fn new(visible: bool) -> Self {
        let bars = BarSet::new(visible);
        Self { loaded: bars.bar("source writes"), live: bars.bar("live changes"), delivered: bars.bar("events delivered") }
    }
}

/// Progress bars drawn together on stderr in the demo's style (hidden when not visible).
struct BarSet {
    multi: MultiProgress,
    style: ProgressStyle,
}

impl BarSet {
    fn new(visible: bool) -> Self {
        let multi = MultiProgress::with_draw_target(if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
        let style = ProgressStyle::with_template("{prefix:>18} [{bar:40}] {pos:>8}/{len:8} {per_sec:>12} {elapsed_precise}")
            .expect("valid template")
            .progress_chars("=> ");
        Self { multi, style }
    }

    fn bar(&self, prefix: &'static str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(self.style.clone());
        bar.set_prefix(prefix);
        bar
    }
}
