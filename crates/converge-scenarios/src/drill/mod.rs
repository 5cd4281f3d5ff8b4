//! `converge drill`: the embedded pipeline run with faults injected, then the
//! reconciler, and what it found set against what was injected.
//!
//! Phases (each fault is counted exactly where it is injected):
//!
//! 1. **Traffic with no-drift faults**: the demo's dataset and live traffic go through
//!    the relay and the sync function while the drill makes the next appends fail
//!    transiently (503, redelivered), kills the relay mid-batch twice (a new relay
//!    takes over: at least once), and kills the sync function in the middle of a group
//!    commit (after the append committed, before any of its events is answered: the
//!    server's runtime is dropped and a new server takes its port; the redelivered
//!    events are skipped as duplicates).
//! 2. **Reordering and duplicates**: with the relay stopped, documents get two changes
//!    each (create then update, or create then delete); the drill delivers their
//!    events itself, newest first, then the newest again.
//! 3. **Losses**: documents chosen up front (seeded), in every tenant, each given one
//!    lost change of one kind — a create (→ missing), an update (→ different), a
//!    delete (→ orphan) — and one class:
//!    - *known*: the warehouse refuses the row for good, so the sync function records
//!      `sync_errors/{tenant}_{doc}_{action}` and acknowledges (202). These are sent
//!      while nothing else is in flight, so no other event shares their failed appends;
//!    - *silent*: the [`FaultyWarehouse`] in front of the real one acknowledges the row
//!      without writing it — a write path that reports success for rows it never
//!      persisted (as a streaming insert whose per-row errors go unread would), the
//!      hole in error capture the reconciler exists to find.
//!
//!    Nothing else ever writes these documents, so nothing heals them before the
//!    reconciler runs.
//! 4. **Wrong rows** ([`Corruption`]): with the traffic settled, the drill appends
//!    rows straight into the warehouse, as a buggy writer or an older code version
//!    would, in two tenants of their own whose documents went through the pipeline
//!    like any other:
//!    - *wrong content at the same version*: for correctly mirrored documents, an
//!      event row at the document's own version (its `update_time`) with other
//!      fields, whose content hash sorts above the genuine row's, so the latest view
//!      shows it (→ different);
//!    - *wrong tombstone*: for live documents, a delete event dated just after the
//!      document's last write, never in the future (→ missing);
//!    - *mass orphans*: in the second tenant, live rows for more documents than the
//!      [`OrphanGuard`](converge_reconcile::OrphanGuard) lets one run tombstone (more than 10% of its documents, and
//!      more than 10), documents the source never had.
//! 5. **Reconcile** ([`reconcile_phase`]): the repairing run with the default guard,
//!    which must repair everything and refuse the mass orphans (outcome `refused`,
//!    their tenant listed with its orphan count, none of them tombstoned); the same
//!    run again with the guard lifted (the same key, so the same batch: its record
//!    replaces the refusal's), which must tombstone those orphans and find nothing
//!    else; another run, which must find nothing; then source and latest view
//!    compared document by document per tenant (which must agree).
//! 6. **Incremental reconcile** ([`incremental`]): in a tenant of its own, written in
//!    phase 3 with a change field an hour old, drift after phase 5's verified runs:
//!    lost updates, creates and deletes among documents written since (beside as many
//!    the warehouse is told of), phantom rows and stray tombstones among untouched ones;
//!    one incremental run over the tenant must find exactly those, reading a fraction
//!    of its documents, and leave it equal to its source.
//!
//! The same drill runs on the cloud adapters against both emulators
//! ([`crate::drill_cloud`]); it shares the loss plan, the reordering, the sync
//! process, the wrong rows and the reconcile phase defined here, so both backends are
//! judged by the same counts.
//!
//! Files: this one runs the phases in order (options, [`run`], the traffic's waits and
//! kills, the out-of-order delivery); [`summary`] holds what a drill reports and its
//! verdict; one file per phase's plan: [`reordering`] (2), [`losses`] (3),
//! [`wrong_rows`] (4), [`reconcile_phase`] (5), [`incremental`] (6); [`sync_server`]
//! runs the sync function so that it can be killed. The phase files import only [`summary`] and each other,
//! never this one, so there is no import circle.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use converge_backends::EmbeddedBackends;
use converge_core::faulty_warehouse::FaultyWarehouse;
use converge_core::{Clock, ErrorKind, SourceStore, SystemClock, Warehouse};
use converge_relay::{Relay, RelayConfig, RunningRelay};
use converge_sqlite::SqliteStore;
use converge_sync::SyncService;

use crate::demo::{self, Bars};

mod incremental;
mod losses;
mod reconcile_phase;
mod reordering;
mod summary;
mod sync_server;
mod wrong_rows;

pub use summary::{mismatches, DriftCounts, DrillSummary, IncrementalCounts, IncrementalSection, NoDriftFaults};
pub(crate) use incremental::{incremental_phase, IncrementalPlan, INCREMENTAL_TENANT};
pub(crate) use losses::{Class, LossPlan};
pub(crate) use reconcile_phase::reconcile_phase;
pub(crate) use reordering::{reorder_count, reorder_writes, OutOfOrder};
pub(crate) use sync_server::{wait_for, DrillServer};
pub(crate) use wrong_rows::Corruption;

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub data_dir: PathBuf,
    /// Size of the large tenant.
    pub records: u64,
    /// Draw progress bars (on stderr).
    pub progress: bool,
}

/// The relay's pace in the drill: quick retries, so faults cost little time.
fn relay_config() -> RelayConfig {
    RelayConfig {
        max_in_flight: 128,
        batch_size: 2048,
        poll_interval: Duration::from_millis(50),
        request_timeout: Duration::from_secs(10),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(250),
    }
}

/// Appends failed transiently during the traffic.
pub(crate) const TRANSIENT_FAILURES: usize = 3;
/// When the transient failures are armed, and when the sync process is killed: percent
/// of the dataset's events delivered.
const TRANSIENT_FAILURES_AT: u64 = 10;
pub(crate) const SYNC_KILL_AT: u64 = 60;
const RELAY_KILLS_AT: [u64; 2] = [30, 45];
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

pub async fn run(options: DrillOptions) -> anyhow::Result<DrillSummary> {
    let started = Instant::now();
    let data_dir = &options.data_dir;
    demo::reset_data_dir(data_dir)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Several routes, one nested (demo::mirror_config); the faults land on the first.
    let config = demo::mirror_config();
    let backends = EmbeddedBackends::open(data_dir, clock.clone()).context("opening the embedded stores")?;
    backends.warehouse.ensure_tables(&config).await?;
    let source = backends.source.clone();
    let route = config.routes[0].clone();
    let pattern = route.pattern.clone();
    let all = demo::tenants(options.records);
    let tenant_names: Vec<&str> = all.iter().map(|(t, _, _)| *t).collect();

    // The losses, chosen up front, the wrong rows and the incremental phase's drift.
    let plan = LossPlan::new(&tenant_names, &pattern, LossPlan::per_cell_for(options.records));
    let corruption = Corruption::new(LossPlan::per_cell_for(options.records));
    let incremental = IncrementalPlan::new();

    // sync function → FaultyWarehouse (transient and known failures, silent losses, the
    // stall after a commit) → DuckDB
    let faulty = Arc::new(FaultyWarehouse::new(backends.warehouse()));
    plan.lose_silent_rows(&faulty);
    let mut server = DrillServer::start(faulty.clone(), backends.error_log(), &config, None).await?;
    let addr = server.addr;
    let url = format!("http://{addr}/");
    // Every relay, killed or not, for its count of failed attempts.
    let mut relays = Vec::new();
    let mut spawn_relay = || -> anyhow::Result<RunningRelay> {
        let relay = Arc::new(Relay::new(Arc::new(source.clone()), &url, relay_config())?);
        relays.push(relay.clone());
        Ok(RunningRelay::spawn(relay))
    };
    let mut relay = spawn_relay()?;
    let mut faults = NoDriftFaults::default();
    let bars = Bars::new(options.progress);

    // 1. Traffic, with transient failures, relay kills and a sync kill along the way.
    let now = clock.now();
    let total_docs = demo::documents_loaded(&all);
    bars.loaded.set_length(total_docs);
    bars.delivered.set_length(total_docs);
    let traffic = tokio::spawn({
        let source = source.clone();
        let pattern = pattern.clone();
        let all: Vec<(&'static str, u64, u64)> = all.clone();
        let bars = bars.clone();
        let records = options.records;
        let config = config.clone();
        async move {
            demo::load_dataset(&source, &pattern, &all, demo::LOAD_BATCH, now, &bars).await?;
            demo::load_other_routes(&source, &config, &all, now, &bars).await?;
            bars.loaded.finish();
            demo::live_traffic(&source, &pattern, records, now, &bars).await
        }
    });
    let at = |percent: u64| total_docs * percent / 100;
    wait_delivered(&source, at(TRANSIENT_FAILURES_AT), &bars).await?;
    faulty.fail_next_appends(TRANSIENT_FAILURES, ErrorKind::Retryable);
    for percent in RELAY_KILLS_AT {
        wait_delivered(&source, at(percent), &bars).await?;
        // Mid-batch: the server has answered requests of a pass whose outcomes the
        // relay has not recorded yet (it records them when the pass ends).
        let answered = kill_mid_pass(&source, &server.service).await?;
        let _ = relay.kill().await;
        faults.answered_in_killed_batches.push(answered);
        faults.relay_kills += 1;
        faults.pending_at_relay_kills.push(source.pending_count().await?);
        relay = spawn_relay()?;
    }
    wait_delivered(&source, at(SYNC_KILL_AT), &bars).await?;
    let skipped_before_kill = server.kill_mid_group_commit(&faulty).await?;
    faults.sync_kills += 1;
    server = DrillServer::start(faulty.clone(), backends.error_log(), &config, Some(addr)).await?;
    let _live = traffic.await.context("traffic task")??;
    let outbox = source.outbox_stats().await?;
    bars.delivered.set_length(outbox.pending + outbox.delivered + outbox.rejected);
    wait_delivered(&source, u64::MAX, &bars).await?;
    faults.transient_failures = faulty.injected();
    if faulty.remaining() != 0 {
        bail!("{} transient failures were never used", faulty.remaining());
    }

    // 2. Reordering and duplicates, delivered by the drill itself.
    let _ = relay.stop().await;
    let (reordered, duplicates) = deliver_out_of_order(&source, &pattern, &url, options.records).await?;
    faults.reordered = reordered;
    faults.duplicates = duplicates;
    relay = spawn_relay()?;

    // 3. Losses: the documents that lose a change exist first (their creates land),
    // and so do the documents the wrong rows will be written for, and the incremental
    // phase's tenant.
    for chunk in plan.setup_writes(now).into_iter().chain(corruption.setup_writes(&pattern, now)).collect::<Vec<_>>().chunks(500) {
        source.apply(crate::bookkeeping_records::stamped(chunk.to_vec())).await?;
    }
    incremental.write_tenant(&source, &config).await?;
    wait_delivered(&source, u64::MAX, &bars).await?;
    // Known losses, alone in flight: the warehouse refuses their rows for good.
    plan.refuse_known_rows(&faulty);
    for chunk in plan.lossy_writes(Class::Known, now).chunks(500) {
        source.apply(crate::bookkeeping_records::stamped(chunk.to_vec())).await?;
    }
    wait_delivered(&source, u64::MAX, &bars).await?;
    // Silent losses: acknowledged, never written.
    for chunk in plan.lossy_writes(Class::Silent, now).chunks(500) {
        source.apply(crate::bookkeeping_records::stamped(chunk.to_vec())).await?;
    }
    wait_delivered(&source, u64::MAX, &bars).await?;
    let _ = relay.stop().await;
    bars.delivered.finish();
    faults.redeliveries_skipped = skipped_before_kill + server.service.committer().stats().duplicates.load(Ordering::Relaxed);
    faults.delivery_retries = relays.iter().map(|relay| relay.stats().failed_attempts).sum();
    server.stop().await?;
    plan.check_silent_losses(faulty.lost())?;

    // 4. Wrong rows, straight into the warehouse.
    corruption.inject(&source, backends.warehouse().as_ref(), &config, clock.now()).await?;

    // 5. Reconcile: the repairing run, again with the guard lifted, and another run;
    // then source and latest view, document by document.
    let reconciled =
        reconcile_phase(backends.source_store(), backends.error_log(), backends.warehouse(), &config, clock.clone(), &tenant_names, &corruption).await?;

    // 6. The incremental reconcile. The relay is stopped: the phase's writes stay in
    // the outbox, never delivered, so the warehouse hears only of those the drill tells it.
    let incremental = incremental_phase(backends.source_store(), backends.error_log(), backends.warehouse(), &config, clock, &incremental).await?;
    Ok(DrillSummary::new(
        "embedded",
        data_dir.display().to_string(),
        options.records,
        source.outbox_stats().await?.delivered,
        corruption.injected(plan.injected()),
        faults,
        reconciled,
        incremental,
        started,
    ))
}

/// Waits until `target` events are delivered (`u64::MAX`: until none is pending).
async fn wait_delivered(source: &SqliteStore, target: u64, bars: &Bars) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let stats = source.outbox_stats().await?;
        bars.delivered.set_position(stats.delivered);
        if stats.rejected > 0 {
            bail!("{} events were rejected (quarantined); the drill sends none that should be", stats.rejected);
        }
        if (target == u64::MAX && stats.pending == 0) || (target != u64::MAX && stats.delivered >= target) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} events still pending after {DRAIN_TIMEOUT:?}; see the log", stats.pending);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the sync function has received some requests since the outbox last
/// recorded outcomes, with no outcome recorded meanwhile; returns how many.
async fn kill_mid_pass(source: &SqliteStore, service: &SyncService) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let received = || service.counters().received.load(Ordering::SeqCst);
    let (mut delivered, mut since) = (source.outbox_stats().await?.delivered, received());
    loop {
        let now_delivered = source.outbox_stats().await?.delivered;
        if now_delivered != delivered {
            (delivered, since) = (now_delivered, received());
        } else if received() >= since + 50 {
            return Ok(received() - since);
        }
        if Instant::now() > deadline {
            bail!("the relay never had a batch in flight to be killed in");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Phase 2: with the relay stopped, the reordering documents get their two changes;
/// the drill sends their events out of order ([`OutOfOrder`]) and marks them
/// delivered. Returns (reordered, duplicates).
async fn deliver_out_of_order(source: &SqliteStore, pattern: &converge_core::PathPattern, url: &str, records: u64) -> anyhow::Result<(u64, u64)> {
    let n = reorder_count(records);
    let [first, second] = reorder_writes(pattern, n, SystemClock.now());
    source.apply(crate::bookkeeping_records::stamped(first)).await?;
    source.apply(crate::bookkeeping_records::stamped(second)).await?;
    let events = source.pending_batch(4 * n as usize, SystemClock.now()).await?;
    if events.len() as u64 != 2 * n {
        bail!("expected {} pending events for the reordering phase, found {}", 2 * n, events.len());
    }
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
    let send = |event: &converge_sqlite::OutboxEvent| {
        let request = client.post(url).headers(converge_events::binary_headers(&event.meta, source.event_source())).body(event.data.clone());
        async move {
            let response = request.send().await?;
            if !response.status().is_success() {
                bail!("the sync function answered {} to a reordered event: {}", response.status(), response.text().await.unwrap_or_default());
            }
            anyhow::Ok(())
        }
    };
    let order = OutOfOrder::of(&events, |event| event.meta.document.as_str());
    for index in &order.sends {
        send(&events[*index]).await?;
    }
    source.mark_delivered(&events.iter().map(|e| e.seq).collect::<Vec<_>>()).await?;
    Ok((order.reordered, order.duplicates))
}
