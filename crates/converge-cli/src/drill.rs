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
//!      [`OrphanGuard`] lets one run tombstone (more than 10% of its documents, and
//!      more than 10), documents the source never had.
//! 5. **Reconcile** ([`reconcile_phase`]): the repairing run with the default guard,
//!    which must repair everything and refuse the mass orphans (outcome `refused`,
//!    their tenant listed with its orphan count, none of them tombstoned); the same
//!    run again with the guard lifted (the same key, so the same batch: its record
//!    replaces the refusal's), which must tombstone those orphans and find nothing
//!    else; another run, which must find nothing; then source and latest view
//!    compared document by document per tenant (which must agree).
//!
//! The same drill runs on the cloud adapters against both emulators
//! ([`crate::drill_cloud`]); it shares the loss plan, the reordering, the sync
//! process, the wrong rows and the reconcile phase defined here, so both backends are
//! judged by the same counts.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use converge_backends::EmbeddedBackends;
use converge_core::fault::FaultyWarehouse;
use converge_core::hash::content_hash;
use converge_core::{
    ChangeRow, Clock, DocWrite, Document, ErrorKind, ErrorLog, Fields, MirrorConfig, Op, RowContext, SourceStore, SystemClock, Timestamp, Value, Warehouse,
};
use converge_reconcile::{OrphanGuard, Reconciler, RunOptions};
use converge_relay::{Relay, RelayConfig, RunningRelay};
use converge_sqlite::SqliteStore;
use converge_sync::{GroupCommitConfig, SyncService};
use serde::Serialize;

use crate::dataset::{self, Rng};
use crate::demo::{self, Bars};

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub data_dir: PathBuf,
    /// Size of the large tenant.
    pub records: u64,
    /// Draw progress bars (on stderr).
    pub progress: bool,
}

/// Drift by kind and by class; the same shape for what was injected and what was found.
///
/// `missing`, `different` and `orphan` are the lost changes, and `known` and `silent`
/// their classes (known + silent = missing + different + orphan). The wrong rows are
/// kinds of their own, counted from the reconciler's report of their tenants: a wrong
/// row is silent by nature (no delivery failed, so no error record names it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DriftCounts {
    pub missing: u64,
    pub different: u64,
    pub orphan: u64,
    pub known: u64,
    pub silent: u64,
    /// Documents whose latest row is a wrong event row at their own version (found as
    /// different).
    pub wrong_content_same_version: u64,
    /// Live documents hidden by a wrong tombstone (found as missing).
    pub wrong_tombstone: u64,
    /// Tenants given more orphans than the guard lets one run tombstone; found when the
    /// repairing run refused that tenant, with its orphan count, and tombstoned none.
    pub mass_orphan_refused: u64,
}

/// Faults that must cause no drift, as injected.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NoDriftFaults {
    /// Events delivered again after they had been stored.
    pub duplicates: u64,
    /// Events delivered after a later change of the same document.
    pub reordered: u64,
    /// Appends failed transiently (each answered 503 to every event in it).
    pub transient_failures: u64,
    /// Sync processes killed between a group commit and its answers.
    pub sync_kills: u64,
    /// Relays killed mid-batch (always 0 on the cloud backend, which has no relay:
    /// Firestore's own trigger emits each change).
    pub relay_kills: u64,
    /// Events pending in the outbox when each relay was killed.
    pub pending_at_relay_kills: Vec<u64>,
    /// Requests the sync function had answered in the batch each relay was killed in
    /// (delivered, but not yet recorded in the outbox: sent again by the next relay).
    pub answered_in_killed_batches: Vec<u64>,
    /// Rows the warehouse skipped because their event was already stored (duplicates,
    /// and events of the killed group commit delivered again). Always 0 on BigQuery,
    /// which stores such a row again and whose views pick one of the copies.
    pub redeliveries_skipped: u64,
    /// Deliveries sent again after a 5xx answer or a broken connection: the relays'
    /// failed attempts, or on the cloud backend the Eventarc front's retries.
    pub delivery_retries: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillSummary {
    /// `embedded` (SQLite + DuckDB) or `cloud` (Firestore + BigQuery on their emulators).
    pub backend: String,
    /// Where the stores were: a data directory, or the emulators' addresses.
    pub data_dir: String,
    pub records: u64,
    pub events_delivered: u64,
    pub injected: DriftCounts,
    pub found: DriftCounts,
    pub no_drift_faults: NoDriftFaults,
    /// Lost changes the repairing run repaired (the drill's tenants).
    pub repaired: u64,
    /// Documents of the wrong rows' tenants repaired: by the repairing run, and the
    /// mass orphans tombstoned by its run again with the guard lifted.
    pub wrong_rows_repaired: u64,
    pub errors_resolved: u64,
    /// Differences between source and latest view, all tenants, after the repairing run
    /// and its run with the guard lifted.
    pub drift_after_repair: u64,
    /// What the reconciler found after the repairing run: the run with the guard
    /// lifted (besides the refused orphans it was run for), and another run after it.
    pub second_run_findings: u64,
    /// `sync_errors` records still open after the runs (the transient failures' are
    /// closed once their document is seen converged, the known losses' once repaired).
    pub open_sync_errors: u64,
    /// found == injected, no drift after repair, and a quiet second run.
    pub passed: bool,
    pub total_millis: u64,
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
    let config = MirrorConfig::default();
    let backends = EmbeddedBackends::open(data_dir, clock.clone()).context("opening the embedded stores")?;
    backends.warehouse.ensure_tables(&config).await?;
    let source = backends.source.clone();
    let route = config.routes[0].clone();
    let pattern = route.pattern.clone();
    let all = demo::tenants(options.records);
    let tenant_names: Vec<&str> = all.iter().map(|(t, _, _)| *t).collect();

    // The losses, chosen up front, and the wrong rows.
    let plan = LossPlan::new(&tenant_names, &pattern, LossPlan::per_cell_for(options.records));
    let corruption = Corruption::new(LossPlan::per_cell_for(options.records));

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
    let total_docs: u64 = all.iter().map(|(_, n, _)| n).sum();
    bars.loaded.set_length(total_docs);
    bars.delivered.set_length(total_docs);
    let traffic = tokio::spawn({
        let source = source.clone();
        let pattern = pattern.clone();
        let all: Vec<(&'static str, u64, u64)> = all.clone();
        let bars = bars.clone();
        let records = options.records;
        async move {
            demo::load_dataset(&source, &pattern, &all, demo::LOAD_BATCH, now, &bars).await?;
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
    // and so do the documents the wrong rows will be written for.
    for chunk in plan.setup_writes(now).into_iter().chain(corruption.setup_writes(&pattern, now)).collect::<Vec<_>>().chunks(500) {
        source.apply(chunk.to_vec()).await?;
    }
    wait_delivered(&source, u64::MAX, &bars).await?;
    // Known losses, alone in flight: the warehouse refuses their rows for good.
    plan.refuse_known_rows(&faulty);
    for chunk in plan.lossy_writes(Class::Known, now).chunks(500) {
        source.apply(chunk.to_vec()).await?;
    }
    wait_delivered(&source, u64::MAX, &bars).await?;
    // Silent losses: acknowledged, never written.
    for chunk in plan.lossy_writes(Class::Silent, now).chunks(500) {
        source.apply(chunk.to_vec()).await?;
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
        reconcile_phase(backends.source_store(), backends.error_log(), backends.warehouse(), &config, clock, &tenant_names, &corruption).await?;
    Ok(DrillSummary::new(
        "embedded",
        data_dir.display().to_string(),
        options.records,
        source.outbox_stats().await?.delivered,
        corruption.injected(plan.injected()),
        faults,
        reconciled,
        started,
    ))
}

/// What the reconcile phase found and left behind.
pub(crate) struct Reconciled {
    found: DriftCounts,
    repaired: u64,
    wrong_rows_repaired: u64,
    errors_resolved: u64,
    drift_after_repair: u64,
    second_run_findings: u64,
    open_sync_errors: u64,
}

/// The last phase, on any backend:
///
/// 1. the repairing run, with the default [`OrphanGuard`]: its findings are what the
///    drill found. It must repair everything but the mass orphans, which it must
///    refuse: outcome `refused`, their tenant (alone) listed with their count, and
///    that tenant's latest count unchanged;
/// 2. the same run again with the guard lifted, as an operator overrides a refusal
///    after checking it: the same key, so the same batch (its record replaces the
///    refused one in [`Warehouse::runs`]). It must tombstone the mass orphans and find
///    nothing else;
/// 3. another run, which must find nothing;
/// 4. every tenant's source compared with its latest view document by document, which
///    must agree.
pub(crate) async fn reconcile_phase(
    source: Arc<dyn SourceStore>,
    errors: Arc<dyn ErrorLog>,
    warehouse: Arc<dyn Warehouse>,
    config: &MirrorConfig,
    clock: Arc<dyn Clock>,
    tenants: &[&str],
    corruption: &Corruption,
) -> anyhow::Result<Reconciled> {
    let table = config.routes[0].table.clone();
    let reconciler = Reconciler::new(source.clone(), errors.clone(), warehouse.clone(), config.clone(), clock.clone());
    let before_refusal = warehouse.latest_count(&table, MASS_ORPHAN_TENANT).await?;
    let key = clock.now().to_rfc3339();
    let first = reconciler.run_with(RunOptions { key: Some(key.clone()), ..RunOptions::default() }).await.context("the repairing reconciler run")?;
    let after_refusal = warehouse.latest_count(&table, MASS_ORPHAN_TENANT).await?;
    let lifted = OrphanGuard { max_share: 1.0, ..OrphanGuard::default() };
    let overridden = reconciler
        .run_with(RunOptions { key: Some(key), orphan_guard: Some(lifted), ..RunOptions::default() })
        .await
        .context("the repairing run again, with the orphan guard lifted")?;
    let second = reconciler.run(None, false).await.context("the second reconciler run")?;

    let mut found = DriftCounts::default();
    let (mut repaired, mut wrong_rows_repaired) = (0, 0);
    for t in &first.tenants {
        match t.tenant.as_str() {
            WRONG_ROWS_TENANT => {
                found.wrong_content_same_version += t.different;
                found.wrong_tombstone += t.missing;
                // None injected: any is a mismatch.
                found.orphan += t.orphan;
                wrong_rows_repaired += t.repaired;
            }
            MASS_ORPHAN_TENANT => {
                // Its orphans are the refusal's, judged below; nothing else injected.
                found.missing += t.missing;
                found.different += t.different;
                wrong_rows_repaired += t.repaired;
            }
            _ => {
                found.missing += t.missing;
                found.different += t.different;
                found.orphan += t.orphan;
                found.known += t.known;
                found.silent += t.silent;
                repaired += t.repaired;
            }
        }
    }
    let refusal = first.refused.iter().map(|r| (r.tenant.as_str(), r.orphans)).collect::<Vec<_>>();
    let refused_as_injected = first.outcome == "refused" && refusal == [(MASS_ORPHAN_TENANT, MASS_ORPHANS)] && after_refusal == before_refusal;
    if !refused_as_injected {
        tracing::error!(
            outcome = first.outcome, ?refusal, before_refusal, after_refusal,
            "the repairing run did not refuse exactly the mass orphans, leaving them in place"
        );
    }
    found.mass_orphan_refused = u64::from(refused_as_injected);
    // The override is for the refused orphans; anything else it finds, the repairing
    // run left behind.
    let mut after_repair = overridden.findings();
    for t in overridden.tenants.iter().filter(|t| t.tenant == MASS_ORPHAN_TENANT) {
        after_repair -= t.orphan;
        wrong_rows_repaired += t.repaired;
    }

    let all_tenants: Vec<&str> = tenants.iter().copied().chain(corruption.tenants()).collect();
    let compared = demo::compare_tenants(source.as_ref(), warehouse.as_ref(), &config.routes[0], &all_tenants).await?;
    Ok(Reconciled {
        found,
        repaired,
        wrong_rows_repaired,
        errors_resolved: first.errors_resolved + overridden.errors_resolved,
        drift_after_repair: compared.iter().map(|t| (t.missing + t.different + t.orphan) as u64).sum(),
        second_run_findings: after_repair + second.findings(),
        open_sync_errors: errors.open_sync_errors(None).await?.len() as u64,
    })
}

impl DrillSummary {
    /// The verdict: found == injected, no drift after repair, and a quiet second run.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backend: &str,
        data_dir: String,
        records: u64,
        events_delivered: u64,
        injected: DriftCounts,
        no_drift_faults: NoDriftFaults,
        reconciled: Reconciled,
        started: Instant,
    ) -> Self {
        let passed = reconciled.found == injected && reconciled.drift_after_repair == 0 && reconciled.second_run_findings == 0;
        Self {
            backend: backend.into(),
            data_dir,
            records,
            events_delivered,
            injected,
            found: reconciled.found,
            no_drift_faults,
            repaired: reconciled.repaired,
            wrong_rows_repaired: reconciled.wrong_rows_repaired,
            errors_resolved: reconciled.errors_resolved,
            drift_after_repair: reconciled.drift_after_repair,
            second_run_findings: reconciled.second_run_findings,
            open_sync_errors: reconciled.open_sync_errors,
            passed,
            total_millis: started.elapsed().as_millis() as u64,
        }
    }
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

pub(crate) async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Phase 2: with the relay stopped, the reordering documents get their two changes;
/// the drill sends their events out of order ([`OutOfOrder`]) and marks them
/// delivered. Returns (reordered, duplicates).
async fn deliver_out_of_order(source: &SqliteStore, pattern: &converge_core::PathPattern, url: &str, records: u64) -> anyhow::Result<(u64, u64)> {
    let n = reorder_count(records);
    let [first, second] = reorder_writes(pattern, n, SystemClock.now());
    source.apply(first).await?;
    source.apply(second).await?;
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

/// How many documents phase 2 changes twice.
pub(crate) fn reorder_count(records: u64) -> u64 {
    (records / 400).clamp(20, 200)
}

/// Phase 2's writes: `n` documents of the large tenant that nothing else touches,
/// created in one commit, then in a second commit updated (even) or deleted (odd).
pub(crate) fn reorder_writes(pattern: &converge_core::PathPattern, n: u64, now: converge_core::Timestamp) -> [Vec<DocWrite>; 2] {
    let path = |i: u64| pattern.document_path("acme", &format!("reorder-{i:04}")).expect("plain pattern");
    let first = (0..n).map(|i| DocWrite::Set { path: path(i), fields: dataset::record(9, i, now) }).collect();
    let second = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let mut fields = dataset::record(9, i, now);
                fields.insert("amount".into(), Value::Double(1.5 + i as f64));
                DocWrite::Set { path: path(i), fields }
            } else {
                DocWrite::Delete { path: path(i) }
            }
        })
        .collect();
    [first, second]
}

/// The order phase 2 sends the events of documents changed twice in: all of them
/// newest first, so each document's older change arrives after its newer one
/// (reordered), then each document's newest change again (a duplicate).
pub(crate) struct OutOfOrder {
    /// Indices into the events, in sending order.
    pub(crate) sends: Vec<usize>,
    pub(crate) reordered: u64,
    pub(crate) duplicates: u64,
}

impl OutOfOrder {
    /// `events` in commit order; `document` names the document an event changes.
    pub(crate) fn of<E>(events: &[E], document: impl Fn(&E) -> &str) -> Self {
        let mut sends: Vec<usize> = (0..events.len()).rev().collect();
        let mut seen = HashSet::new();
        let mut newest = Vec::new();
        let mut reordered = 0;
        for &index in &sends {
            if seen.insert(document(&events[index])) {
                newest.push(index);
            } else {
                reordered += 1;
            }
        }
        newest.reverse();
        let duplicates = newest.len() as u64;
        sends.extend(newest);
        Self { sends, reordered, duplicates }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Missing,
    Different,
    Orphan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Known,
    Silent,
}

/// One document that loses one change.
struct Loss {
    path: String,
    kind: Kind,
    class: Class,
    seed: u64,
}

impl Loss {
    /// The op of the lost row.
    fn op(&self) -> Op {
        match self.kind {
            Kind::Missing => Op::Create,
            Kind::Different => Op::Update,
            Kind::Orphan => Op::Delete,
        }
    }
}

/// The documents that lose a change: `per_cell` for every kind × class, spread over
/// the tenants by a seeded generator, each with an id of its own that no other
/// traffic touches.
pub(crate) struct LossPlan {
    losses: Vec<Loss>,
    per_cell: u64,
}

impl LossPlan {
    /// Losses per kind × class for a drill of `records`: at least three.
    pub(crate) fn per_cell_for(records: u64) -> u64 {
        (records / 2_000).max(3)
    }

    pub(crate) fn new(tenants: &[&str], pattern: &converge_core::PathPattern, per_cell: u64) -> Self {
        let mut rng = Rng::new(0xD811);
        let mut losses = Vec::new();
        for kind in [Kind::Missing, Kind::Different, Kind::Orphan] {
            for class in [Class::Known, Class::Silent] {
                for i in 0..per_cell {
                    let tenant = *rng.pick(tenants);
                    let id = format!("drill-{kind:?}-{class:?}-{i:04}").to_lowercase();
                    let path = pattern.document_path(tenant, &id).expect("plain pattern");
                    losses.push(Loss { path, kind, class, seed: 3_000_000 + losses.len() as u64 });
                }
            }
        }
        Self { losses, per_cell }
    }

    fn rows(&self, class: Class) -> HashSet<(String, Op)> {
        self.losses.iter().filter(|l| l.class == class).map(|l| (l.path.clone(), l.op())).collect()
    }

    /// From now on `faulty` acknowledges the silent losses' rows without storing them.
    pub(crate) fn lose_silent_rows(&self, faulty: &FaultyWarehouse) {
        let silent = self.rows(Class::Silent);
        faulty.lose_rows_where(move |row| silent.contains(&(row.doc_path.clone(), row.op)));
    }

    /// From now on `faulty` refuses the known losses' rows for good, so the sync
    /// function records each in `sync_errors` and acknowledges it.
    pub(crate) fn refuse_known_rows(&self, faulty: &FaultyWarehouse) {
        let known = self.rows(Class::Known);
        faulty.fail_rows_where(move |row| known.contains(&(row.doc_path.clone(), row.op)), ErrorKind::Permanent);
    }

    /// Every silent loss must have reached the warehouse and been dropped there (a
    /// redelivery may drop one again, so more is fine).
    pub(crate) fn check_silent_losses(&self, lost: u64) -> anyhow::Result<()> {
        if lost < self.per_cell * 3 {
            bail!("the warehouse lost {lost} rows silently; {} silent losses were planned", self.per_cell * 3);
        }
        Ok(())
    }

    /// The creates that must land before an update or a delete can be lost.
    pub(crate) fn setup_writes(&self, now: converge_core::Timestamp) -> Vec<DocWrite> {
        self.losses
            .iter()
            .filter(|l| l.kind != Kind::Missing)
            .map(|l| DocWrite::Set { path: l.path.clone(), fields: dataset::record(7, l.seed, now) })
            .collect()
    }

    /// The changes that are lost, of one class.
    pub(crate) fn lossy_writes(&self, class: Class, now: converge_core::Timestamp) -> Vec<DocWrite> {
        self.losses
            .iter()
            .filter(|l| l.class == class)
            .map(|l| match l.kind {
                Kind::Missing => DocWrite::Set { path: l.path.clone(), fields: dataset::record(7, l.seed, now) },
                Kind::Different => {
                    let mut fields = dataset::record(7, l.seed, now);
                    fields.insert("amount".into(), Value::Double(0.25));
                    DocWrite::Set { path: l.path.clone(), fields }
                }
                Kind::Orphan => DocWrite::Delete { path: l.path.clone() },
            })
            .collect()
    }

    pub(crate) fn injected(&self) -> DriftCounts {
        let count = |f: &dyn Fn(&Loss) -> bool| self.losses.iter().filter(|l| f(l)).count() as u64;
        DriftCounts {
            missing: count(&|l| l.kind == Kind::Missing),
            different: count(&|l| l.kind == Kind::Different),
            orphan: count(&|l| l.kind == Kind::Orphan),
            known: count(&|l| l.class == Class::Known),
            silent: count(&|l| l.class == Class::Silent),
            ..DriftCounts::default()
        }
    }
}

/// The tenant whose correctly mirrored documents get wrong rows.
pub(crate) const WRONG_ROWS_TENANT: &str = "hooli";
/// The tenant given rows for documents the source never had, too many for one run to
/// tombstone.
pub(crate) const MASS_ORPHAN_TENANT: &str = "cyberdyne";
/// The mass-orphan tenant's documents in the source, and the orphans given to it: more
/// than 10 and more than 10% of its documents in the warehouse (20 of 60), so the
/// default [`OrphanGuard`] refuses them.
const MASS_ORPHAN_DOCS: u64 = 40;
const MASS_ORPHANS: u64 = 20;
/// The code version the wrong rows claim: an older writer's.
const WRONG_ROWS_CODE_VERSION: &str = "0.0.1-older";
/// How far after a document's last write its wrong tombstone is dated (µs), at most.
const WRONG_TOMBSTONE_AFTER_US: i64 = 1_000;

/// Phase 4: rows written straight into the warehouse, in two tenants of their own
/// whose documents first go through the pipeline like any other. Each wrong row is an
/// event row (its own unique event id: DuckDB skips an id it has stored), so a source
/// read outranks it (the ordering rule, `converge_core::version`).
pub(crate) struct Corruption {
    /// Documents given wrong content, and as many given a wrong tombstone.
    per_kind: u64,
}

impl Corruption {
    pub(crate) fn new(per_kind: u64) -> Self {
        Self { per_kind }
    }

    pub(crate) fn tenants(&self) -> [&'static str; 2] {
        [WRONG_ROWS_TENANT, MASS_ORPHAN_TENANT]
    }

    /// Documents of the wrong-rows tenant: the wrong content's first, then the wrong
    /// tombstones', then some left alone.
    fn wrong_rows_docs(&self) -> u64 {
        2 * self.per_kind + 20
    }

    /// Both tenants' documents, written to the source before the wrong rows.
    pub(crate) fn setup_writes(&self, pattern: &converge_core::PathPattern, now: Timestamp) -> Vec<DocWrite> {
        let write = |tenant: &str, seed: u64, index: u64| DocWrite::Set {
            path: pattern.document_path(tenant, &dataset::doc_id(index)).expect("plain pattern"),
            fields: dataset::record(seed, index, now),
        };
        (0..self.wrong_rows_docs()).map(|i| write(WRONG_ROWS_TENANT, 5, i)).chain((0..MASS_ORPHAN_DOCS).map(|i| write(MASS_ORPHAN_TENANT, 6, i))).collect()
    }

    /// Appends the wrong rows, once every document of [`Self::setup_writes`] is
    /// mirrored.
    pub(crate) async fn inject(&self, source: &dyn SourceStore, warehouse: &dyn Warehouse, config: &MirrorConfig, now: Timestamp) -> anyhow::Result<()> {
        let pattern = &config.routes[0].pattern;
        let ctx = RowContext { ingested_at: now, run_id: "drill-wrong-rows".into(), code_version: WRONG_ROWS_CODE_VERSION.into() };
        let event_id = |kind: &str| format!("drill-{kind}-{}", uuid::Uuid::new_v4());
        let mut rows = Vec::new();
        for index in 0..2 * self.per_kind {
            let path = pattern.document_path(WRONG_ROWS_TENANT, &dataset::doc_id(index)).expect("plain pattern");
            let doc = source.get(&path).await?.with_context(|| format!("{path} is not in the source"))?;
            let routed = config.route(&path).with_context(|| format!("{path} is not mirrored"))?;
            if index < self.per_kind {
                // At the genuine row's version; above it in the order by content hash.
                let wrong = Document { fields: content_sorting_above(&doc.fields), ..doc.clone() };
                rows.push(ChangeRow::live(&routed, Op::Update, &wrong, &event_id("wrong-content"), &ctx)?);
            } else {
                // After the last write, never after now.
                let last_write = doc.update_time.as_micros();
                let version = (last_write + WRONG_TOMBSTONE_AFTER_US).min(now.as_micros()).max(last_write);
                let mut row = ChangeRow::tombstone(&routed, &path, Op::Delete, version, &event_id("wrong-tombstone"), &ctx);
                // What a delete event carries: the deleted document's own times.
                row.update_time = Some(last_write);
                row.create_time = Some(doc.create_time.as_micros());
                rows.push(row);
            }
        }
        // Documents the source never had, written a second ago.
        let written = Timestamp::from_micros(now.as_micros() - 1_000_000);
        for index in 0..MASS_ORPHANS {
            let path = pattern.document_path(MASS_ORPHAN_TENANT, &format!("ghost-{index:04}")).expect("plain pattern");
            let routed = config.route(&path).with_context(|| format!("{path} is not mirrored"))?;
            let doc = Document { path: path.clone(), fields: dataset::record(6, 1_000_000 + index, now), create_time: written, update_time: written };
            rows.push(ChangeRow::live(&routed, Op::Create, &doc, &event_id("orphan"), &ctx)?);
        }
        let expected = rows.len() as u64;
        let receipt = warehouse.append(rows).await.context("appending the wrong rows")?;
        if receipt.written != expected {
            bail!("the warehouse stored {} of the {expected} wrong rows ({} skipped as duplicates)", receipt.written, receipt.duplicates);
        }
        Ok(())
    }

    /// `base` (the loss plan's) with the wrong rows added.
    pub(crate) fn injected(&self, base: DriftCounts) -> DriftCounts {
        DriftCounts { wrong_content_same_version: self.per_kind, wrong_tombstone: self.per_kind, mass_orphan_refused: 1, ..base }
    }
}

/// Other fields than `fields`, whose content hash sorts above theirs: a wrong row at the
/// genuine row's version wins the latest view by the hash alone.
fn content_sorting_above(fields: &Fields) -> Fields {
    let genuine = content_hash(fields);
    (1..)
        .map(|k: u32| {
            let mut other = fields.clone();
            other.insert("amount".into(), Value::Double(f64::from(k) / 100.0));
            other
        })
        .find(|other| content_hash(other) > genuine)
        .expect("some amount hashes above")
}

/// The sync function on a runtime of its own, so that a crash ends it the way a
/// process dies: every task (listener, connections, the group-commit writer, and the
/// connections of clients opened on that runtime) at once.
pub(crate) struct DrillServer {
    pub(crate) addr: SocketAddr,
    pub(crate) service: Arc<SyncService>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DrillServer {
    /// The runtime a sync process runs on: build its clients on it (see
    /// [`Self::start_on`]) and they die with it.
    pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("drill-sync").enable_all().build()?)
    }

    /// The sync function on `addr` (a free port when `None`), on a runtime of its own,
    /// writing through stores that outlive it (the embedded ones).
    async fn start(warehouse: Arc<dyn Warehouse>, errors: Arc<dyn ErrorLog>, config: &MirrorConfig, addr: Option<SocketAddr>) -> anyhow::Result<Self> {
        let listener = converge_http::bind_retrying(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
        Self::start_on(Self::runtime()?, listener, warehouse, errors, config, false).await
    }

    /// The sync function on `runtime`, serving `listener` (bound beforehand, so its
    /// address can be handed out before the stores are open); with `emulator_route`
    /// it also serves the Firestore emulator's delivery path.
    pub(crate) async fn start_on(
        runtime: tokio::runtime::Runtime,
        listener: std::net::TcpListener,
        warehouse: Arc<dyn Warehouse>,
        errors: Arc<dyn ErrorLog>,
        config: &MirrorConfig,
        emulator_route: bool,
    ) -> anyhow::Result<Self> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let service = {
            let _entered = runtime.enter();
            Arc::new(SyncService::start(
                config.clone(),
                warehouse,
                errors,
                Arc::new(SystemClock),
                format!("drill-{}", uuid::Uuid::new_v4()),
                converge_http::settings::DEFAULT_MAX_BODY_BYTES,
                GroupCommitConfig::default(),
            ))
        };
        let mut app = converge_sync::app(service.clone());
        if emulator_route {
            app = app.merge(converge_sync::emulator_route(service.clone()));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            converge_http::serve(listener, app, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Self { addr, service, stop: Some(stop), task: Some(task), runtime: Some(runtime) })
    }

    /// Arms `faulty` (the warehouse this server writes through) to stall after its next
    /// commit, waits until an append has committed and stalled, and kills the server
    /// there: the events of that group commit are stored but never answered, so they
    /// come back. Returns the rows the warehouse had skipped as already stored until
    /// then (the new server's committer counts from zero).
    pub(crate) async fn kill_mid_group_commit(self, faulty: &FaultyWarehouse) -> anyhow::Result<u64> {
        faulty.stall_after_next_commit();
        wait_for("the sync function to stall after a commit", Duration::from_secs(120), || faulty.stalled()).await?;
        let skipped = self.service.committer().stats().duplicates.load(Ordering::Relaxed);
        self.crash().await;
        Ok(skipped)
    }

    /// Graceful: in-flight requests finish, then every task ends.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task).await.context("sync function shutdown")???;
        }
        self.drop_runtime().await
    }

    /// Every task dropped where it stands.
    async fn crash(mut self) {
        let _ = self.drop_runtime().await;
    }

    async fn drop_runtime(&mut self) -> anyhow::Result<()> {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks until its blocking work is done: not here.
            let (done, finished) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                drop(runtime);
                let _ = done.send(());
            });
            finished.await.context("runtime shutdown thread")?;
        }
        Ok(())
    }
}

impl Drop for DrillServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The drill's verdict lines, for `render`.
pub(crate) fn mismatches(summary: &DrillSummary) -> Vec<String> {
    let mut out = Vec::new();
    if summary.found != summary.injected {
        out.push(format!("found {:?} ≠ injected {:?}", summary.found, summary.injected));
    }
    if summary.drift_after_repair != 0 {
        out.push(format!("{} differences remain after repair", summary.drift_after_repair));
    }
    if summary.second_run_findings != 0 {
        out.push(format!("the second run found {}", summary.second_run_findings));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::OutOfOrder;

    #[test]
    fn out_of_order_sends_each_newer_change_then_the_older_then_the_newer_again() {
        // Two documents, a and b, each changed twice, in commit order.
        let events = ["a1", "b1", "a2", "b2"];
        let order = OutOfOrder::of(&events, |event| &event[..1]);
        let sent: Vec<&str> = order.sends.iter().map(|index| events[*index]).collect();
        assert_eq!(sent, ["b2", "a2", "b1", "a1", "a2", "b2"]);
        assert_eq!((order.reordered, order.duplicates), (2, 2));
    }
}
