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
//! 4. **Reconcile**: one run, then another (which must find nothing), then source and
//!    latest view compared document by document per tenant (which must agree).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use converge_backends::EmbeddedBackends;
use converge_core::fault::FaultyWarehouse;
use converge_core::{Clock, DocWrite, ErrorKind, ErrorLog, MirrorConfig, Op, SourceStore, SystemClock, Value, Warehouse};
use converge_reconcile::Reconciler;
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DriftCounts {
    pub missing: u64,
    pub different: u64,
    pub orphan: u64,
    pub known: u64,
    pub silent: u64,
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
    /// Relays killed mid-batch.
    pub relay_kills: u64,
    /// Events pending in the outbox when each relay was killed.
    pub pending_at_relay_kills: Vec<u64>,
    /// Requests the sync function had answered in the batch each relay was killed in
    /// (delivered, but not yet recorded in the outbox: sent again by the next relay).
    pub answered_in_killed_batches: Vec<u64>,
    /// Rows the warehouse skipped because their event was already stored (duplicates,
    /// and events of the killed group commit delivered again).
    pub redeliveries_skipped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillSummary {
    pub data_dir: String,
    pub records: u64,
    pub events_delivered: u64,
    pub injected: DriftCounts,
    pub found: DriftCounts,
    pub no_drift_faults: NoDriftFaults,
    pub repaired: u64,
    pub errors_resolved: u64,
    /// Differences between source and latest view, all tenants, after the repairing run.
    pub drift_after_repair: u64,
    /// What a second reconciler run, right after the first, found.
    pub second_run_findings: u64,
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

const TRANSIENT_FAILURES: usize = 3;
const RELAY_KILLS_AT: [u64; 2] = [30, 45];
const SYNC_KILL_AT: u64 = 60;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

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

    // The losses, chosen up front.
    let plan = LossPlan::new(&tenant_names, &pattern, (options.records / 2_000).max(3));

    // sync function → FaultyWarehouse (transient and known failures, silent losses, the
    // stall after a commit) → DuckDB
    let faulty = Arc::new(FaultyWarehouse::new(backends.warehouse()));
    let silent = plan.silent_rows();
    faulty.lose_rows_where(move |row| silent.contains(&(row.doc_path.clone(), row.op)));
    let mut server = DrillServer::start(faulty.clone(), backends.error_log(), &config, None).await?;
    let addr = server.addr;
    let url = format!("http://{addr}/");
    let mut relay = RunningRelay::spawn(Arc::new(Relay::new(Arc::new(source.clone()), &url, relay_config())?));
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
    wait_delivered(&source, at(10), &bars).await?;
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
        relay = RunningRelay::spawn(Arc::new(Relay::new(Arc::new(source.clone()), &url, relay_config())?));
    }
    wait_delivered(&source, at(SYNC_KILL_AT), &bars).await?;
    faulty.stall_after_next_commit();
    wait_for("the sync function to stall after a commit", Duration::from_secs(120), || faulty.stalled()).await?;
    let skipped_before_kill = server.service.committer().stats().duplicates.load(Ordering::Relaxed);
    server.crash().await;
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
    relay = RunningRelay::spawn(Arc::new(Relay::new(Arc::new(source.clone()), &url, relay_config())?));

    // 3. Losses: the documents that lose a change exist first (their creates land).
    for chunk in plan.setup_writes(now).chunks(500) {
        source.apply(chunk.to_vec()).await?;
    }
    wait_delivered(&source, u64::MAX, &bars).await?;
    // Known losses, alone in flight: the warehouse refuses their rows for good.
    let known = plan.known_rows();
    faulty.fail_rows_where(move |row| known.contains(&(row.doc_path.clone(), row.op)), ErrorKind::Permanent);
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
    server.stop().await?;
    if faulty.lost() < plan.per_cell * 3 {
        bail!("the warehouse lost {} rows silently; {} silent losses were planned", faulty.lost(), plan.per_cell * 3);
    }

    // 4. Reconcile, twice; then source and latest view, document by document.
    let reconciler = Reconciler::new(backends.source_store(), backends.error_log(), backends.warehouse(), config.clone(), clock.clone());
    let first = reconciler.run(None, false).await?;
    let second = reconciler.run(None, false).await?;
    let compared = demo::compare_tenants(&source, &backends.warehouse, &route, &tenant_names).await?;
    let drift_after_repair: u64 = compared.iter().map(|t| (t.missing + t.different + t.orphan) as u64).sum();

    let injected = plan.injected();
    let found = DriftCounts { missing: first.missing, different: first.different, orphan: first.orphan, known: first.known, silent: first.silent };
    let passed = found == injected && drift_after_repair == 0 && second.findings() == 0;
    Ok(DrillSummary {
        data_dir: data_dir.display().to_string(),
        records: options.records,
        events_delivered: source.outbox_stats().await?.delivered,
        injected,
        found,
        no_drift_faults: faults,
        repaired: first.repaired,
        errors_resolved: first.errors_resolved,
        drift_after_repair,
        second_run_findings: second.findings(),
        passed,
        total_millis: started.elapsed().as_millis() as u64,
    })
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

async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Phase 2: with the relay stopped, `n` documents get two changes each (create then
/// update, or create then delete); the drill sends their events newest first, then
/// the newest again, and marks them delivered. Returns (reordered, duplicates).
async fn deliver_out_of_order(source: &SqliteStore, pattern: &converge_core::PathPattern, url: &str, records: u64) -> anyhow::Result<(u64, u64)> {
    let n = (records / 400).clamp(20, 200);
    let path = |i: u64| pattern.document_path("acme", &format!("reorder-{i:04}")).expect("plain pattern");
    let now = SystemClock.now();
    source.apply((0..n).map(|i| DocWrite::Set { path: path(i), fields: dataset::record(9, i, now) }).collect()).await?;
    let second: Vec<DocWrite> = (0..n)
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
    let (mut reordered, mut duplicates) = (0, 0);
    let mut seen = HashSet::new();
    for event in events.iter().rev() {
        send(event).await?;
        if !seen.insert(event.meta.document.clone()) {
            reordered += 1;
        }
    }
    let newest = &events[n as usize..];
    for event in newest {
        send(event).await?;
        duplicates += 1;
    }
    source.mark_delivered(&events.iter().map(|e| e.seq).collect::<Vec<_>>()).await?;
    Ok((reordered, duplicates))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Missing,
    Different,
    Orphan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
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
struct LossPlan {
    losses: Vec<Loss>,
    per_cell: u64,
}

impl LossPlan {
    fn new(tenants: &[&str], pattern: &converge_core::PathPattern, per_cell: u64) -> Self {
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

    fn silent_rows(&self) -> HashSet<(String, Op)> {
        self.rows(Class::Silent)
    }

    fn known_rows(&self) -> HashSet<(String, Op)> {
        self.rows(Class::Known)
    }

    /// The creates that must land before an update or a delete can be lost.
    fn setup_writes(&self, now: converge_core::Timestamp) -> Vec<DocWrite> {
        self.losses
            .iter()
            .filter(|l| l.kind != Kind::Missing)
            .map(|l| DocWrite::Set { path: l.path.clone(), fields: dataset::record(7, l.seed, now) })
            .collect()
    }

    /// The changes that are lost, of one class.
    fn lossy_writes(&self, class: Class, now: converge_core::Timestamp) -> Vec<DocWrite> {
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

    fn injected(&self) -> DriftCounts {
        let count = |f: &dyn Fn(&Loss) -> bool| self.losses.iter().filter(|l| f(l)).count() as u64;
        DriftCounts {
            missing: count(&|l| l.kind == Kind::Missing),
            different: count(&|l| l.kind == Kind::Different),
            orphan: count(&|l| l.kind == Kind::Orphan),
            known: count(&|l| l.class == Class::Known),
            silent: count(&|l| l.class == Class::Silent),
        }
    }
}

/// The sync function on a runtime of its own, so that a crash ends it the way a
/// process dies: every task (listener, connections, the group-commit writer) at once.
struct DrillServer {
    addr: SocketAddr,
    service: Arc<SyncService>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DrillServer {
    async fn start(warehouse: Arc<dyn Warehouse>, errors: Arc<dyn ErrorLog>, config: &MirrorConfig, addr: Option<SocketAddr>) -> anyhow::Result<Self> {
        let listener = converge_http::bind_retrying(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("drill-sync").enable_all().build()?;
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
        let app = converge_sync::app(service.clone());
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

    /// Graceful: in-flight requests finish, then every task ends.
    async fn stop(mut self) -> anyhow::Result<()> {
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
