//! `converge demo --backend cloud`: the same scenario as the embedded demo, on the
//! cloud adapters, against both emulators on loopback.
//!
//! 1. The BigQuery emulator (`bqemulator`) and Google's Firestore emulator start on
//!    free ports; the Firestore emulator's Eventarc trigger support is pointed at the
//!    sync function, served here on `127.0.0.1:0`.
//! 2. A trigger for `google.cloud.firestore.document.v1.written` on the mirror route's
//!    pattern is registered, exactly as Eventarc would be configured.
//! 3. The dataset and the live traffic are written into the Firestore emulator, which
//!    delivers each change to the sync function (the local emulator route: base64
//!    bodies), whose rows land in the BigQuery emulator.
//! 4. Once every write's delivery has arrived, each tenant's Firestore documents are
//!    compared with BigQuery's latest view, and the report runs on BigQuery.
//!
//! The emulator dispatches one event at a time and never retries, so this is a
//! smaller dataset than the embedded demo, and a lost delivery shows up as drift
//! (which the reconciler, not this demo, exists to repair).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use converge_backends::CloudBackends;
use converge_bigquery::{BigQueryEmulator, QueryParam};
use converge_core::{Clock, ErrorLog, Route, SourceStore, SystemClock, Warehouse};
use converge_firestore::emulator::WRITTEN_EVENT_TYPE;
use converge_firestore::{EmulatorOptions, FirestoreEmulator};
use converge_function::CloudSettings;
use converge_sync::{GroupCommitConfig, SyncConfig, SyncService};

use crate::bookkeeping_records;
use crate::demo::{compare_tenants, live_traffic, load_dataset, Bars, DemoSummary, ReportSummary};

/// The trigger id registered on the Firestore emulator.
const TRIGGER_ID: &str = "converge-records-written";
const PROJECT: &str = "converge-demo";
const DATASET: &str = "converge";
/// Firestore commits at most 500 writes at once.
pub(crate) const LOAD_BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct CloudDemoOptions {
    /// Size of the large tenant; the others scale with it.
    pub records: u64,
    pub progress: bool,
}

/// The cloud demo's tenants: the same four, scaled to the emulators' pace.
pub(crate) fn tenants(records: u64) -> Vec<(&'static str, u64, u64)> {
    vec![("acme", records, 1), ("globex", (records / 6).max(1), 2), ("initech", (records / 15).max(1), 3), ("umbrella", (records / 60).max(1), 4)]
}

pub async fn run(options: CloudDemoOptions) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = crate::demo::mirror_config();
    let route = &config.routes[0];

    // The sync function's socket first: the Firestore emulator needs its address.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let emulators = Emulators::start(address).await?;
    let backends = CloudBackends::open(&emulators.settings).await?;
    let source: &dyn SourceStore = &backends.source;
    backends.warehouse.ensure_tables(&config).await?;

    let run_id = format!("demo-cloud-{}", uuid::Uuid::new_v4());
    let service = Arc::new(SyncService::start(SyncConfig {
        mirror: config.clone(),
        warehouse: Arc::new(backends.warehouse.clone()),
        errors: Arc::new(backends.source.clone()),
        clock: clock.clone(),
        run_id: run_id.clone(),
        max_body_bytes: converge_function::settings::DEFAULT_MAX_BODY_BYTES,
        commit: GroupCommitConfig::default(),
    }));
    let app = converge_sync::app(service.clone()).merge(converge_sync::emulator_route(service.clone()));
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(converge_function::serve(listener, app, async {
        let _ = server_stopped.await;
    }));
    for route in &config.routes {
        emulators.register_trigger(route).await?;
    }
    tracing::info!(run_id, %address, emulators = emulators.describe(), "cloud demo running on the emulators");

    let bars = Bars::new(options.progress);
    let received = || service.counters().received.load(Ordering::Relaxed);
    let delivered_ticker = tokio::spawn({
        let service = service.clone();
        let bar = bars.delivered.clone();
        async move {
            loop {
                bar.set_position(service.counters().received.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // The dataset, written as an app would.
    let now = clock.now();
    let load_started = Instant::now();
    let all = tenants(options.records);
    let total_docs = crate::demo::documents_loaded(&all);
    bars.loaded.set_length(total_docs);
    bars.delivered.set_length(total_docs);
    load_dataset(source, &route.pattern, &all, LOAD_BATCH, now, &bars).await.context("writing into the Firestore emulator")?;
    crate::demo::load_other_routes(source, &config, &all, now, &bars).await.context("writing into the Firestore emulator")?;
    let load_millis = load_started.elapsed().as_millis() as u64;
    bars.loaded.finish();
    let live = live_traffic(source, &route.pattern, options.records, now, &bars).await?;

    // Every write fires one delivery; the emulator sends them one at a time.
    let drain_started = Instant::now();
    let expected = total_docs + live.writes();
    bars.delivered.set_length(expected);
    wait_for_deliveries(&received, expected, Duration::from_secs(900)).await?;
    let drain_millis = drain_started.elapsed().as_millis() as u64;
    delivered_ticker.abort();
    bars.delivered.set_position(received());
    bars.delivered.finish();

    let tenant_names: Vec<&str> = all.iter().map(|(tenant, _, _)| *tenant).collect();
    let tenant_summaries = compare_tenants(source, &backends.warehouse, route, &tenant_names).await?;
    let routes = crate::demo::compare_routes(source, &backends.warehouse, &config, &tenant_names).await?;
    let derived_equals_source = tenant_summaries.iter().all(|t| t.missing + t.different + t.orphan == 0 && t.source_docs == t.latest_rows)
        && routes.iter().all(|r| r.drift == 0 && r.source_docs == r.latest_rows);
    // The current tables, refreshed from the changelog, must equal the latest views.
    let retention = converge_retention::Retention::new(Arc::new(backends.warehouse.clone()), config.clone(), Arc::new(SystemClock));
    retention.refresh(converge_core::RefreshFrom::Watermark, None).await?;
    let current_equals_latest = crate::demo::current_equals_latest(&backends.warehouse, &config, &tenant_names).await?;
    let derived_equals_source = derived_equals_source && current_equals_latest;
    let report = run_report(&backends, all[0].0).await?;

    let counters = service.counters();
    let summary = DemoSummary {
        data_dir: emulators.describe(),
        tenants: tenant_summaries,
        routes,
        documents_loaded: total_docs,
        load_millis,
        live,
        events_delivered: received(),
        events_rejected: counters.quarantined.load(Ordering::Relaxed),
        delivery_retries: 0,
        rows_written: service.committer().stats().written.load(Ordering::Relaxed),
        changelog_rows: {
            let mut rows = 0;
            for route in &config.routes {
                rows += backends.warehouse.changelog_rows(&route.table).await?;
            }
            rows
        },
        quarantined: counters.quarantined.load(Ordering::Relaxed),
        open_sync_errors: backends.source.open_sync_errors(None).await?.len() as u64,
        drain_millis,
        derived_equals_source,
        reconcile_findings: None,
        report,
        // The operational half (raw data, ETL, detectors) runs in the embedded demo.
        etl: None,
        detectors: None,
        ops: None,
        total_millis: started.elapsed().as_millis() as u64,
    };
    let _ = stop_server.send(());
    server.await??;
    // Dropping the emulators stops them (and their child processes).
    drop(emulators);
    Ok(summary)
}

/// Both emulators on free loopback ports, the Firestore one posting its trigger
/// events to `functions_emulator`; dropping this stops them.
pub(crate) struct Emulators {
    bigquery: BigQueryEmulator,
    firestore: FirestoreEmulator,
    /// The cloud backends' settings, pointed at both.
    pub(crate) settings: CloudSettings,
}

impl Emulators {
    pub(crate) async fn start(functions_emulator: std::net::SocketAddr) -> anyhow::Result<Self> {
        let bigquery = BigQueryEmulator::start().await.context("starting the BigQuery emulator (installed by `make bqemulator`)")?;
        let firestore = FirestoreEmulator::start(EmulatorOptions {
            project_id: PROJECT.into(),
            functions_emulator: Some(functions_emulator.to_string()),
            ..EmulatorOptions::default()
        })
        .await
        .context("starting the Firestore emulator")?;
        let settings = CloudSettings {
            project: PROJECT.into(),
            firestore_database: "(default)".into(),
            firestore_emulator_host: Some(firestore.host_port()),
            bigquery_dataset: DATASET.into(),
            bigquery_location: None,
            bigquery_emulator: Some((bigquery.rest_url(), bigquery.grpc_url())),
        };
        Ok(Self { bigquery, firestore, settings })
    }

    /// A trigger for every write to `route`'s documents, exactly as Eventarc would be
    /// configured.
    pub(crate) async fn register_trigger(&self, route: &Route) -> anyhow::Result<()> {
        self.firestore
            .register_eventarc_trigger(&format!("{TRIGGER_ID}-{}", route.table), WRITTEN_EVENT_TYPE, route.pattern.as_str())
            .await
            .context("registering the Eventarc trigger on the Firestore emulator")
    }

    /// Where the stores are, for the summary.
    pub(crate) fn describe(&self) -> String {
        format!("firestore emulator {} (project {PROJECT}), bigquery emulator {} (dataset {DATASET})", self.firestore.host_port(), self.bigquery.rest_url())
    }
}

/// Waits until `expected` deliveries have arrived and then until none arrives for a
/// moment (a delivery the emulator lost never comes: the drift check reports it).
async fn wait_for_deliveries(received: &impl Fn() -> u64, expected: u64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let quiet_for = Duration::from_secs(2);
    let (mut last, mut last_change) = (received(), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = received();
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        if now >= expected && last_change.elapsed() >= quiet_for {
            return Ok(());
        }
        if now < expected && last_change.elapsed() >= Duration::from_secs(30) {
            tracing::warn!(received = now, expected, "the Firestore emulator stopped delivering; comparing what arrived");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{now} of {expected} deliveries after {timeout:?}; see the Firestore emulator's log");
        }
    }
}

/// The same report as the embedded demo's, in BigQuery's dialect with named
/// parameters, on the latest view and on the current table, with the bytes each
/// processed (what BigQuery bills).
async fn run_report(backends: &CloudBackends, tenant: &str) -> anyhow::Result<ReportSummary> {
    let label = bookkeeping_records::REPORT_LABEL;
    let params = [("tenant", QueryParam::String(tenant.into())), ("label", QueryParam::String(label.into()))];
    let mut runs = Vec::new();
    for table in ["records_latest", "records_current"] {
        let from = converge_bigquery::schema::qualified(backends.warehouse.config(), table);
        let sql = format!(
            "SELECT account, fund, FORMAT_DATE('%Y-%m', date) AS month, COUNT(*) AS records, ROUND(SUM(amount), 2) AS total \
             FROM {from} WHERE tenant = @tenant AND label = @label GROUP BY account, fund, month ORDER BY account, fund, month"
        );
        let started = Instant::now();
        let (rows, bytes) = backends.warehouse.query_json_counted(&sql, &params).await?;
        runs.push((rows, ((started.elapsed().as_secs_f64() * 1000.0) * 10.0).round() / 10.0, bytes));
    }
    let (current_rows, current_millis, current_bytes) = runs.pop().expect("two runs");
    let (rows, millis, bytes) = runs.pop().expect("two runs");
    Ok(ReportSummary {
        tenant: tenant.into(),
        label: label.into(),
        rows: rows.len(),
        millis,
        current_millis,
        current_equals_latest: rows == current_rows,
        bytes_processed: bytes,
        current_bytes_processed: current_bytes,
        sample: rows.into_iter().take(5).collect(),
    })
}
