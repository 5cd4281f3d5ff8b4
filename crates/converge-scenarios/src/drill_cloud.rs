//! `converge drill --backend cloud`: the fault drill on the cloud adapters, Firestore
//! and BigQuery each on its emulator on loopback, judged by the same counts as the
//! embedded drill ([`crate::drill`]), whose loss plan, reordering, sync process, wrong
//! rows and reconcile phase it uses.
//!
//! The pipeline: the Firestore emulator's Eventarc trigger support → the
//! [`EventarcFront`] (Eventarc's delivery: at least once, concurrent, unordered,
//! redelivered after a 5xx or a broken connection; the emulator alone posts each event
//! once and never retries) → the sync function on its local emulator route, run as a
//! process of its own (its runtime, and Firestore and BigQuery clients opened on it)
//! → [`FaultyWarehouse`] → the BigQuery emulator. The error log is Firestore's
//! `sync_errors` collection.
//!
//! Phases, each fault counted where it is injected:
//!
//! 1. **Traffic with no-drift faults**: the cloud demo's dataset and the live traffic
//!    written into Firestore; the first appends fail transiently (503: the front
//!    redelivers), and as the live traffic starts the sync process is killed between
//!    a group commit and its answers (its runtime and clients dropped where they
//!    stand; a new process opens clients of its own and takes the port; the front
//!    redelivers the unanswered events, which BigQuery stores again and its views
//!    count once).
//!    No relay is killed: there is none on this backend, Firestore's own trigger
//!    emits each change, so `relay_kills` is 0.
//! 2. **Reordering and duplicates**: the front holds the events of documents given two
//!    changes each; the drill then sends each document's newer change, its older one,
//!    and the newer again.
//! 3. **Losses**: the embedded drill's plan. Known: the warehouse refuses the row for
//!    good, so the sync function records `sync_errors/{tenant}_{doc}_{action}` in
//!    Firestore and acknowledges (202). Silent: acknowledged, never written.
//! 4. **Wrong rows**: the embedded drill's ([`crate::drill::Corruption`]), appended to
//!    BigQuery directly: wrong content at a document's own version, wrong tombstones,
//!    and mass orphans in a tenant of their own.
//! 5. **Reconcile** on Firestore and BigQuery ([`crate::drill::reconcile_phase`]): the
//!    repairing run (which must refuse the mass orphans), the same run with the guard
//!    lifted, another run, then source and latest view compared document by document.
//! 6. **Incremental reconcile** ([`crate::drill::incremental_phase`]): the embedded
//!    drill's, on Firestore and BigQuery. Its tenant is written in phase 3 through the
//!    pipeline; its drift's events are held by the front and never delivered (the sync
//!    process is stopped by then), so the warehouse hears only of what the drill tells it.
//!
//! The emulators are slow next to the embedded stores (each reconciler query is a
//! BigQuery job), so this runs at a smaller size than the embedded drill.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use converge_backends::CloudBackends;
use converge_core::faulty_warehouse::FaultyWarehouse;
use converge_core::{Clock, DocWrite, ErrorKind, MirrorConfig, SourceStore, SystemClock, Warehouse};
use converge_function::CloudSettings;

use crate::demo::{self, Bars};
use crate::demo_cloud::{self, Emulators};
use crate::drill::{
    incremental_phase, reconcile_phase, reorder_count, reorder_writes, wait_for, Class, Corruption, DrillServer, DrillSummary, IncrementalPlan,
    LossPlan, NoDriftFaults, OutOfOrder, DRAIN_TIMEOUT, INCREMENTAL_TENANT, SYNC_KILL_AT, TRANSIENT_FAILURES,
};
use crate::eventarc_delivery::{EventarcFront, FrontConfig};

#[derive(Debug, Clone)]
pub struct CloudDrillOptions {
    /// Size of the large tenant; the others scale with it.
    pub records: u64,
    /// Draw progress bars (on stderr).
    pub progress: bool,
}

pub async fn run(options: CloudDrillOptions) -> anyhow::Result<DrillSummary> {
    let started = Instant::now();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Several routes, one nested (demo::mirror_config); the faults land on the first.
    let config = demo::mirror_config();
    let route = config.routes[0].clone();
    let pattern = route.pattern.clone();
    let all = demo_cloud::tenants(options.records);
    let tenant_names: Vec<&str> = all.iter().map(|(t, _, _)| *t).collect();

    // The losses, chosen up front, the wrong rows and the incremental phase's drift.
    let plan = LossPlan::new(&tenant_names, &pattern, LossPlan::per_cell_for(options.records));
    let corruption = Corruption::new(LossPlan::per_cell_for(options.records));
    let incremental = IncrementalPlan::new();

    // Addresses in the order they are needed: the sync function's port (the front
    // delivers to it), the front's (the Firestore emulator posts to it), then the
    // emulators (the sync function's clients talk to them).
    let sync_listener = converge_function::bind_retrying(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let sync_addr = sync_listener.local_addr()?;
    let front = EventarcFront::start(sync_addr, FrontConfig::default()).await?;
    let emulators = Emulators::start(front.addr()).await?;
    let backends = CloudBackends::open(&emulators.settings).await?;
    backends.warehouse.ensure_tables(&config).await?;
    let source = backends.source.clone();
    for route in &config.routes {
        emulators.register_trigger(route).await?;
    }
    let (mut server, mut faulty) = start_sync_process(&emulators.settings, &config, &plan, sync_listener).await?;
    tracing::info!(front = %front.addr(), sync = %sync_addr, emulators = emulators.describe(), "cloud drill running on the emulators");
    let mut faults = NoDriftFaults::default();
    let bars = Bars::new(options.progress);

    // 1. Traffic, with transient failures and a sync kill along the way. The
    // pipeline drains faster than the traffic is written here, so each fault is armed
    // where more traffic is certain to follow: the warehouse is unavailable as the
    // dataset starts to arrive (every failed event comes back, so the failures are
    // used up), and the kill is armed just as the live traffic starts.
    let now = clock.now();
    let total_docs = demo::documents_loaded(&all);
    bars.loaded.set_length(total_docs);
    bars.delivered.set_length(total_docs);
    faulty.fail_next_appends(TRANSIENT_FAILURES, ErrorKind::Retryable);
    demo::load_dataset(&source, &pattern, &all, demo_cloud::LOAD_BATCH, now, &bars).await?;
    demo::load_other_routes(&source, &config, &all, now, &bars).await?;
    bars.loaded.finish();
    // Used up before the kill: the next process writes through a FaultyWarehouse of
    // its own.
    wait_for("the transient failures to be used", Duration::from_secs(120), || faulty.remaining() == 0).await?;
    faults.transient_failures = faulty.injected();
    wait_delivered(&front, total_docs * SYNC_KILL_AT / 100, &bars).await?;
    let traffic = tokio::spawn({
        let source = source.clone();
        let pattern = pattern.clone();
        let bars = bars.clone();
        let records = options.records;
        async move { demo::live_traffic(&source, &pattern, records, now, &bars).await }
    });
    // Armed before the live traffic's first write can have been delivered.
    faults.redeliveries_skipped += server.kill_mid_group_commit(&faulty).await?;
    faults.sync_kills += 1;
    let listener = converge_function::bind_retrying(sync_addr).await?;
    (server, faulty) = start_sync_process(&emulators.settings, &config, &plan, listener).await?;
    let live = traffic.await.context("traffic task")??;
    let mut expected = total_docs + live.writes();
    bars.delivered.set_length(expected);
    settle(&front, expected, &bars).await?;

    // 2. Reordering and duplicates: the front holds both changes of each document,
    // then the drill sends them out of order.
    let n = reorder_count(options.records);
    let [first, second] = reorder_writes(&pattern, n, clock.now());
    let reordering: HashSet<String> = first.iter().map(|write| written_path(write).to_owned()).collect();
    front.hold_where(move |document| reordering.contains(document));
    source.apply(crate::bookkeeping_records::stamped(first)).await?;
    // Both commits' events held before any is sent, the creates first.
    wait_for("the reordering documents' creates to be held", DRAIN_TIMEOUT, || front.stats().held == n).await?;
    source.apply(crate::bookkeeping_records::stamped(second)).await?;
    wait_for("the reordering documents' second changes to be held", DRAIN_TIMEOUT, || front.stats().held == 2 * n).await?;
    let held = front.take_held();
    let order = OutOfOrder::of(&held, |delivery| delivery.document.as_str());
    for index in &order.sends {
        front.deliver(&held[*index]).await?;
    }
    faults.reordered = order.reordered;
    faults.duplicates = order.duplicates;
    expected += 2 * n;
    bars.delivered.set_length(expected);

    // 3. Losses: the documents that lose a change exist first (their creates land),
    // and so do the documents the wrong rows will be written for, and the incremental
    // phase's tenant.
    expected += apply(&source, plan.setup_writes(now).into_iter().chain(corruption.setup_writes(&pattern, now)).collect()).await?;
    expected += incremental.write_tenant(&source, &config).await?;
    settle(&front, expected, &bars).await?;
    // Known losses: the warehouse refuses their rows for good.
    plan.refuse_known_rows(&faulty);
    expected += apply(&source, plan.lossy_writes(Class::Known, now)).await?;
    settle(&front, expected, &bars).await?;
    // Silent losses: acknowledged, never written.
    expected += apply(&source, plan.lossy_writes(Class::Silent, now)).await?;
    let stats = settle(&front, expected, &bars).await?;
    bars.delivered.finish();
    faults.redeliveries_skipped += server.service.committer().stats().duplicates.load(std::sync::atomic::Ordering::Relaxed);
    faults.delivery_retries = stats.retries;
    server.stop().await?;
    plan.check_silent_losses(faulty.lost())?;

    // 4. Wrong rows, straight into BigQuery.
    let stores = backends.backends();
    corruption.inject(stores.source.as_ref(), stores.warehouse.as_ref(), &config, clock.now()).await?;

    // 5. Reconcile: the repairing run, again with the guard lifted, and another run;
    // then source and latest view, document by document.
    let reconciled =
        reconcile_phase(stores.source.clone(), stores.errors.clone(), stores.warehouse.clone(), &config, clock.clone(), &tenant_names, &corruption).await?;

    // 6. The incremental reconcile. The emulator still posts every change to the
    // front: the phase's are held there, never delivered (the warehouse is not told).
    let scope = pattern.tenant_scope(INCREMENTAL_TENANT).map_err(|problem| anyhow::anyhow!("tenant {INCREMENTAL_TENANT:?}: {problem}"))?;
    front.hold_where(move |document| scope.matches(document));
    let incremental = incremental_phase(stores.source, stores.errors, stores.warehouse, &config, clock.clone(), &incremental).await?;
    front.stop().await?;
    let injected = corruption.injected(plan.injected());
    let summary = DrillSummary::new("cloud", emulators.describe(), options.records, stats.accepted, injected, faults, reconciled, incremental, started);
    // Dropping the emulators stops them (and their child processes).
    drop(emulators);
    Ok(summary)
}

/// One sync process: a runtime of its own with Firestore and BigQuery clients opened
/// on it, so that a kill takes their connections with it as a process's death does,
/// writing through a [`FaultyWarehouse`] that loses the plan's silent rows.
async fn start_sync_process(
    settings: &CloudSettings,
    config: &MirrorConfig,
    plan: &LossPlan,
    listener: std::net::TcpListener,
) -> anyhow::Result<(DrillServer, Arc<FaultyWarehouse>)> {
    let runtime = DrillServer::runtime()?;
    let (settings, mirror) = (settings.clone(), config.clone());
    let backends = runtime
        .spawn(async move {
            let backends = CloudBackends::open(&settings).await?;
            // As the function does at start: the tables exist, and the warehouse
            // knows the routes it writes.
            backends.warehouse.ensure_tables(&mirror).await?;
            anyhow::Ok(backends)
        })
        .await
        .context("opening the sync process's clients")??;
    let faulty = Arc::new(FaultyWarehouse::new(Arc::new(backends.warehouse.clone())));
    plan.lose_silent_rows(&faulty);
    let server = DrillServer::start_on(runtime, listener, faulty.clone(), Arc::new(backends.source), config, true).await?;
    Ok((server, faulty))
}

/// Writes `writes` in Firestore-sized commits; returns how many events they emit.
async fn apply(source: &dyn SourceStore, writes: Vec<DocWrite>) -> anyhow::Result<u64> {
    for chunk in writes.chunks(demo_cloud::LOAD_BATCH) {
        source.apply(crate::bookkeeping_records::stamped(chunk.to_vec())).await?;
    }
    Ok(writes.len() as u64)
}

fn written_path(write: &DocWrite) -> &str {
    match write {
        DocWrite::Set { path, .. } | DocWrite::Delete { path } => path,
    }
}

/// Waits until the function has acknowledged `target` deliveries.
async fn wait_delivered(front: &EventarcFront, target: u64, bars: &Bars) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let stats = front.check()?;
        bars.delivered.set_position(stats.delivered);
        if stats.delivered >= target {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} of {target} deliveries acknowledged after {DRAIN_TIMEOUT:?}; see the log", stats.delivered);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the emulator has posted `expected` events and every one is delivered.
async fn settle(front: &EventarcFront, expected: u64, bars: &Bars) -> anyhow::Result<crate::eventarc_delivery::FrontStats> {
    let stats = front.settle(expected, DRAIN_TIMEOUT).await?;
    bars.delivered.set_position(stats.accepted);
    Ok(stats)
}
