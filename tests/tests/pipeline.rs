//! The whole embedded pipeline: SQLite source writes → outbox → relay → CloudEvents
//! over loopback HTTP → the sync function → DuckDB. After the outbox drains, the
//! latest view equals the source for every tenant, document by document, whatever
//! crashed on the way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use converge_core::{DocWrite, ErrorKind, ErrorLog, SourceStore, StoreError, Warehouse};
use converge_duckdb::DuckWarehouse;
use converge_e2e::{
    assert_converged, bounded, data_dir, delete, duplicate_event_ids, open_source, open_warehouse, query_i64, quick_relay_config,
    record_path, set, wait_for_outbox, wait_until, FaultyWarehouse, start_relay, stop_relay, kill_relay, ServerOptions, SyncServer, TABLE,
};
use converge_relay::Relay;
use converge_sqlite::SqliteStore;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// The live documents the source should hold, per tenant, kept next to the writes.
#[derive(Default)]
struct Model {
    live: BTreeMap<String, BTreeSet<String>>,
    events: u64,
    deletes: u64,
}

impl Model {
    /// Applies `writes` to the source and to the model. Every write here changes
    /// something, so each is one outbox event.
    async fn apply(&mut self, source: &SqliteStore, writes: Vec<DocWrite>) {
        for write in &writes {
            match write {
                DocWrite::Set { path, .. } => {
                    self.live.entry(tenant_of(path)).or_default().insert(path.clone());
                }
                DocWrite::Delete { path } => {
                    assert!(self.live.entry(tenant_of(path)).or_default().remove(path), "the model deletes only live documents: {path}");
                    self.deletes += 1;
                }
            }
            self.events += 1;
        }
        source.apply(writes).await.expect("source write");
    }

    fn count(&self, tenant: &str) -> u64 {
        self.live.get(tenant).map_or(0, |docs| docs.len() as u64)
    }
}

fn tenant_of(path: &str) -> String {
    path.split('/').nth(1).expect("orgs/{tenant}/records/{doc}").to_owned()
}

/// Creates `per_tenant` records in every tenant, then updates every third one:
/// `per_tenant * 4 / 3` events per tenant, committed in batches of 500.
async fn load(model: &mut Model, source: &SqliteStore, per_tenant: u64) {
    for tenant in TENANTS {
        let creates: Vec<DocWrite> = (0..per_tenant).map(|i| set(tenant, &format!("r{i:05}"), i, i as f64)).collect();
        for batch in creates.chunks(500) {
            model.apply(source, batch.to_vec()).await;
        }
        let updates: Vec<DocWrite> = (0..per_tenant).step_by(3).map(|i| set(tenant, &format!("r{i:05}"), i, i as f64 + 0.5)).collect();
        for batch in updates.chunks(500) {
            model.apply(source, batch.to_vec()).await;
        }
    }
}

/// When the stall happens; shared with the test, which never holds the warehouse.
struct StallControl {
    after_rows: u64,
    committed: AtomicU64,
    stalled: AtomicBool,
}

/// The real warehouse, whose append hangs forever after committing once
/// `after_rows` rows are stored: a process that dies between its commit and its answers.
struct StallAfterCommit {
    inner: DuckWarehouse,
    control: Arc<StallControl>,
}

#[async_trait::async_trait]
impl Warehouse for StallAfterCommit {
    async fn ensure_tables(&self, config: &converge_core::MirrorConfig) -> Result<(), StoreError> {
        self.inner.ensure_tables(config).await
    }

    async fn check_tables(&self, config: &converge_core::MirrorConfig) -> Result<(), StoreError> {
        self.inner.check_tables(config).await
    }

    async fn append(&self, rows: Vec<converge_core::ChangeRow>) -> Result<converge_core::AppendReceipt, StoreError> {
        let receipt = self.inner.append(rows).await?;
        let committed = self.control.committed.fetch_add(receipt.written, Ordering::SeqCst) + receipt.written;
        if committed >= self.control.after_rows {
            self.control.stalled.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Ok(receipt)
    }

    async fn append_atomic(
        &self,
        rows: futures::stream::BoxStream<'static, Result<converge_core::ChangeRow, StoreError>>,
    ) -> Result<converge_core::AppendReceipt, StoreError> {
        self.inner.append_atomic(rows).await
    }

    async fn latest_states(&self, table: &str, tenant: &str) -> Result<converge_core::Scan<converge_core::DocState>, StoreError> {
        self.inner.latest_states(table, tenant).await
    }

    async fn latest_count(&self, table: &str, tenant: &str) -> Result<u64, StoreError> {
        self.inner.latest_count(table, tenant).await
    }

    async fn tenants(&self, table: &str) -> Result<Vec<String>, StoreError> {
        self.inner.tenants(table).await
    }

    async fn record_run(&self, run: converge_core::RunRecord) -> Result<(), StoreError> {
        self.inner.record_run(run).await
    }

    async fn runs(&self, kind: &str, limit: usize) -> Result<Vec<converge_core::RunRecord>, StoreError> {
        self.inner.runs(kind, limit).await
    }

    async fn current_states(&self, table: &str, tenant: &str) -> Result<converge_core::Scan<converge_core::DocState>, StoreError> {
        self.inner.current_states(table, tenant).await
    }

    async fn as_of_states(&self, table: &str, tenant: &str, as_of: converge_core::Timestamp) -> Result<converge_core::Scan<converge_core::DocState>, StoreError> {
        self.inner.as_of_states(table, tenant, as_of).await
    }

    async fn verified_points(&self, table: &str) -> Result<Vec<converge_core::VerifiedPoint>, StoreError> {
        self.inner.verified_points(table).await
    }

    async fn record_verified_points(&self, points: Vec<converge_core::VerifiedPoint>) -> Result<(), StoreError> {
        self.inner.record_verified_points(points).await
    }

    fn bytes_processed(&self) -> converge_core::WarehouseBytes {
        self.inner.bytes_processed()
    }

    async fn refresh_current(&self, table: &str, from: converge_core::RefreshFrom) -> Result<converge_core::CurrentRefresh, StoreError> {
        self.inner.refresh_current(table, from).await
    }

    async fn compact(&self, table: &str, plan: converge_core::CompactionPlan) -> Result<converge_core::TableCompaction, StoreError> {
        self.inner.compact(table, plan).await
    }
}

/// Every event became exactly one changelog row: nothing lost, nothing twice.
async fn assert_one_row_per_event(source: &SqliteStore, warehouse: &DuckWarehouse, events: u64) {
    let outbox = source.outbox_stats().await.unwrap();
    assert_eq!((outbox.pending, outbox.rejected, outbox.delivered), (0, 0, events), "{outbox:?}");
    assert_eq!(duplicate_event_ids(warehouse).await, 0, "an event id was appended twice");
    assert_eq!(warehouse.changelog_rows(TABLE).await.unwrap(), events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_writes_converge_through_the_relay() {
    bounded(90, "pipeline", async {
        let (_dir, path) = data_dir();
        let source = open_source(&path);
        let warehouse = open_warehouse(&path);
        let server = SyncServer::start(Arc::new(warehouse.clone()), Arc::new(source.clone()), ServerOptions::default()).await.unwrap();
        let relay = start_relay(&source, &server.url, quick_relay_config());
        let mut model = Model::default();

        // Creates, then updates of every third record, while the relay delivers.
        load(&mut model, &source, 600).await;
        for tenant in TENANTS {
            let id = |i: u64| format!("r{i:05}");
            // Deletes of documents created earlier in this run.
            let deletes: Vec<DocWrite> = (0..600).step_by(7).map(|i| delete(tenant, &id(i))).collect();
            model.apply(&source, deletes).await;
            // A batch mixing an update, a delete and a create.
            model.apply(&source, vec![set(tenant, &id(1), 1, 111.0), delete(tenant, &id(2)), set(tenant, "mixed", 9, 9.0)]).await;
            // A deleted document created again.
            model.apply(&source, vec![set(tenant, &id(7), 7, 77.0)]).await;
            // Create-then-delete, one commit each, back to back.
            for i in 0..20 {
                model.apply(&source, vec![set(tenant, &format!("tmp{i:02}"), i, 1.0)]).await;
                model.apply(&source, vec![delete(tenant, &format!("tmp{i:02}"))]).await;
            }
            // Update then delete of the same document.
            model.apply(&source, vec![set(tenant, &id(10), 10, 10.5)]).await;
            model.apply(&source, vec![delete(tenant, &id(10))]).await;
        }
        // Writes that change nothing commit no event (as in Firestore).
        source.apply(vec![set("acme", "r00001", 1, 111.0), delete("acme", "never-existed")]).await.unwrap();

        wait_for_outbox(&source, Duration::from_secs(60)).await.unwrap();
        let counts = assert_converged(&source, &warehouse, &TENANTS).await;
        let expected: Vec<u64> = TENANTS.iter().map(|t| model.count(t)).collect();
        assert_eq!(counts, expected, "the source holds what was written");
        assert!(counts.iter().all(|n| *n > 400), "{counts:?}");
        assert_one_row_per_event(&source, &warehouse, model.events).await;
        let tombstones = query_i64(&warehouse, "SELECT count(*) FROM records WHERE op = 'DELETE' AND is_deleted").await;
        assert_eq!(tombstones as u64, model.deletes);
        assert_eq!(source.get(&record_path("acme", "r00007")).await.unwrap().map(|d| d.fields["amount"].clone()), Some(converge_core::Value::Double(77.0)));
        assert!(source.open_sync_errors(None).await.unwrap().is_empty());
        assert!(source.quarantined(10).await.unwrap().is_empty());

        let stats = stop_relay(relay).await;
        assert_eq!((stats.delivered, stats.rejected), (model.events, 0));
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_mid_batch_loses_nothing_and_appends_nothing_twice() {
    bounded(100, "server crash", async {
        let (_dir, path) = data_dir();
        let source = open_source(&path);
        let mut model = Model::default();
        load(&mut model, &source, 1_250).await;
        assert_eq!(model.events, 3 * (1_250 + 417));

        // The server owns the only handle on the warehouse file. Once 1,500 rows are
        // committed, the append that crossed the mark never returns: the process
        // "dies" after its commit and before any of that append's events is answered.
        let control = Arc::new(StallControl { after_rows: 1_500, committed: AtomicU64::new(0), stalled: AtomicBool::new(false) });
        let warehouse = StallAfterCommit { inner: open_warehouse(&path), control: control.clone() };
        let first = SyncServer::start_owned(Arc::new(warehouse), Arc::new(source.clone()), ServerOptions::default()).await.unwrap();
        let addr = first.addr;
        let relay = start_relay(&source, &first.url, quick_relay_config());
        wait_until("the first server to commit 1,500 rows", Duration::from_secs(30), || control.stalled.load(Ordering::SeqCst)).await;
        first.crash().await;
        let committed_before_crash = control.committed.load(Ordering::SeqCst);
        let pending = source.pending_count().await.unwrap();
        assert!(pending > 0, "the crash came too late to interrupt delivery");

        // The relay keeps trying the dead address.
        let failures_at_crash = relay.relay.stats().failed_attempts;
        wait_until("the relay to see the server down", Duration::from_secs(30), || relay.relay.stats().failed_attempts > failures_at_crash).await;

        // A new process on the same data directory and port.
        let second = SyncServer::start_embedded(&path, &source, ServerOptions { addr: Some(addr), ..ServerOptions::default() }).await.unwrap();
        wait_for_outbox(&source, Duration::from_secs(60)).await.unwrap();
        let stats = stop_relay(relay).await;
        let redelivered = second.service.committer().stats().duplicates.load(Ordering::Relaxed);
        eprintln!(
            "crash: {committed_before_crash} rows committed before the crash, {pending} events pending after it; relay failed attempts {}; {redelivered} redeliveries skipped by the new server",
            stats.failed_attempts
        );
        assert!(second.service.counters().written.load(Ordering::Relaxed) > 0, "the new server wrote the rest");
        // The stalled append's events were committed but never answered: the relay sent
        // them again, and the new process skipped them.
        assert!(redelivered > 0, "no committed-but-unanswered event was redelivered");
        second.stop().await;

        let warehouse = open_warehouse(&path);
        warehouse.ensure_tables(&converge_core::MirrorConfig::default()).await.unwrap();
        let counts = assert_converged(&source, &warehouse, &TENANTS).await;
        assert_eq!(counts, vec![1_250; 3]);
        assert_one_row_per_event(&source, &warehouse, model.events).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_is_replaced_without_loss() {
    bounded(90, "relay kill", async {
        let (_dir, path) = data_dir();
        let source = open_source(&path);
        let warehouse = open_warehouse(&path);
        let server = SyncServer::start(Arc::new(warehouse.clone()), Arc::new(source.clone()), ServerOptions::default()).await.unwrap();
        let mut model = Model::default();
        load(&mut model, &source, 900).await;

        let first = start_relay(&source, &server.url, quick_relay_config());
        let service = server.service.clone();
        wait_until("the server to receive 500 events", Duration::from_secs(30), || service.counters().received.load(Ordering::Relaxed) >= 500).await;
        kill_relay(first).await;
        let after_kill = source.outbox_stats().await.unwrap();
        assert!(after_kill.pending > 0, "the relay was killed too late: {after_kill:?}");

        let second = Relay::new(Arc::new(source.clone()), &server.url, quick_relay_config()).unwrap();
        let drained = second.drain(Duration::from_secs(60)).await.unwrap();
        assert_eq!(drained.delivered + after_kill.delivered, model.events, "every event delivered once by one relay or the other");
        assert_eq!(drained.rejected, 0);
        eprintln!(
            "relay kill: {} delivered before the kill, {} after; the server received {} requests for {} events",
            after_kill.delivered,
            drained.delivered,
            service.counters().received.load(Ordering::Relaxed),
            model.events
        );

        let counts = assert_converged(&source, &warehouse, &TENANTS).await;
        assert_eq!(counts, vec![900; 3]);
        assert_one_row_per_event(&source, &warehouse, model.events).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_recorded_retried_and_converge() {
    bounded(90, "failed writes", async {
        let (_dir, path) = data_dir();
        let source = open_source(&path);
        let duck = open_warehouse(&path);
        let warehouse = Arc::new(FaultyWarehouse::new(Arc::new(duck.clone())));
        let server = SyncServer::start(warehouse.clone(), Arc::new(source.clone()), ServerOptions::default()).await.unwrap();
        let relay = start_relay(&source, &server.url, quick_relay_config());
        let mut model = Model::default();

        // One event whose append fails three times: one error record, three attempts.
        warehouse.fail_next_appends(3, ErrorKind::Retryable);
        model.apply(&source, vec![set("acme", "solo", 1, 1.0)]).await;
        wait_for_outbox(&source, Duration::from_secs(30)).await.unwrap();
        assert_eq!(warehouse.injected(), 3);
        let open = source.open_sync_errors(Some("acme")).await.unwrap();
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!((open[0].id.as_str(), open[0].action.as_str(), open[0].attempts), ("records_acme_solo_create", "create", 3));
        assert!(open[0].error.contains("injected append failure"), "{}", open[0].error);
        assert_eq!(source.outbox_stats().await.unwrap().attempts, 4, "three failed deliveries, then the one that stuck");
        assert_eq!(duck.latest_count(TABLE, "acme").await.unwrap(), 1);

        // A stream of events, the first four appends of which fail.
        warehouse.fail_next_appends(4, ErrorKind::Retryable);
        load(&mut model, &source, 400).await;
        wait_for_outbox(&source, Duration::from_secs(60)).await.unwrap();
        assert_eq!((warehouse.injected(), warehouse.remaining()), (7, 0));

        let counts = assert_converged(&source, warehouse.as_ref(), &TENANTS).await;
        assert_eq!(counts, vec![401, 400, 400]);
        assert_one_row_per_event(&source, &duck, model.events).await;

        // Every failed delivery is one attempt on its error record, never a duplicate record.
        let counters = server.service.counters();
        let recorded = counters.errors_recorded.load(Ordering::Relaxed);
        let open = source.open_sync_errors(None).await.unwrap();
        assert!(open.len() > 1, "the failed appends carried events: {open:?}");
        let ids: BTreeSet<&str> = open.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), open.len());
        assert_eq!(open.iter().map(|r| u64::from(r.attempts)).sum::<u64>(), recorded);
        assert!(open.iter().all(|r| r.attempts >= 1 && r.error.contains("injected append failure")));
        assert_eq!(counters.unrecorded.load(Ordering::Relaxed), 0);
        assert_eq!(server.service.committer().stats().failed_appends.load(Ordering::Relaxed), 7);
        let stats = stop_relay(relay).await;
        assert_eq!((stats.failed_attempts, stats.rejected), (recorded, 0), "each 503 was one retried attempt");
        server.stop().await;
    })
    .await;
}
