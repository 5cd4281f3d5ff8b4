//! Rebuild on both backends — SQLite + DuckDB, and Firestore + BigQuery on their
//! emulators — through one set of scenarios: a drifted tenant rebuilt to equal the
//! source, all or nothing when interrupted, a live write that still wins, one rebuild
//! per tenant at a time, and readers that only ever see the old or the new state.

use converge_core::RunOutcome;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use converge_bigquery::BigQueryEmulator;
use converge_core::faulty_warehouse::FaultyWarehouse;
use converge_core::value::fields_from_json;
use converge_core::{ChangeRow, DocWrite, Document, MirrorConfig, Op, RowContext, SourceScope, SourceStore, SystemClock, Timestamp, Warehouse};
use converge_duckdb::DuckWarehouse;
use converge_events::EventSource;
use converge_firestore::{EmulatorOptions, FirestoreEmulator};
use converge_rebuild::{RebuildError, RebuildRequest, Rebuilder};
use converge_sqlite::SqliteStore;
use futures::StreamExt;

struct Setup {
    source: Arc<dyn SourceStore>,
    warehouse: Arc<dyn Warehouse>,
    faulty: Arc<FaultyWarehouse>,
    config: MirrorConfig,
}

fn path(tenant: &str, i: usize) -> String {
    format!("orgs/{tenant}/records/r{i:06}")
}

fn ctx() -> RowContext {
    RowContext { ingested_at: Timestamp::new(1_700_000_000, 0), run_id: "setup".into(), code_version: "test".into() }
}

fn row(config: &MirrorConfig, doc: &Document, event_id: &str) -> ChangeRow {
    ChangeRow::live(&config.route(&doc.path).unwrap(), Op::Create, doc, event_id, &ctx()).unwrap()
}

fn request(tenant: &str) -> RebuildRequest {
    RebuildRequest { tenant: tenant.into(), ..RebuildRequest::default() }
}

fn rebuilder(s: &Setup) -> Rebuilder {
    Rebuilder::new(s.source.clone(), s.faulty.clone(), s.config.clone(), Arc::new(SystemClock))
}

/// `count` documents for `tenant` in the source; the warehouse holds the first
/// `mirrored` of them as they are, an older state of the next `stale`, and `orphans`
/// documents the source does not have.
async fn seed(s: &Setup, tenant: &str, count: usize, mirrored: usize, stale: usize, orphans: usize) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let writes = chunk
            .iter()
            .map(|&i| DocWrite::Set {
                path: path(tenant, i),
                fields: fields_from_json(&serde_json::json!({"amount": i, "label": if i % 3 == 0 { "x" } else { "y" }})).unwrap(),
            })
            .collect();
        s.source.apply(writes).await.unwrap();
    }
    let scan = s.source.scan_documents(&SourceScope::collection(&format!("orgs/{tenant}/records")).unwrap()).await.unwrap();
    let mut docs = scan.items.enumerate();
    let mut rows = Vec::new();
    while let Some((i, doc)) = docs.next().await {
        let mut doc = doc.unwrap();
        if i >= mirrored + stale {
            break;
        }
        if i >= mirrored {
            doc.update_time = Timestamp::from_micros(doc.update_time.as_micros() - 1_000);
            doc.fields.insert("amount".into(), converge_core::Value::Integer(-1));
        }
        rows.push(row(&s.config, &doc, &format!("seed-{tenant}-{i}")));
        if rows.len() == 5_000 {
            s.warehouse.append(std::mem::take(&mut rows)).await.unwrap();
        }
    }
    for i in 0..orphans {
        let ghost = Document {
            path: format!("orgs/{tenant}/records/x{i:04}"),
            fields: fields_from_json(&serde_json::json!({"amount": 1})).unwrap(),
            create_time: Timestamp::new(1_600_000_000, 0),
            update_time: Timestamp::new(1_600_000_000, 0),
        };
        rows.push(row(&s.config, &ghost, &format!("ghost-{tenant}-{i}")));
    }
    s.warehouse.append(rows).await.unwrap();
}

/// Source and latest view agree on every (path, version, hash) of `tenant`.
async fn converged(s: &Setup, tenant: &str) -> bool {
    let key = |s: converge_core::DocState| (s.doc_path, s.update_time, s.content_hash);
    let source: Vec<_> = s.source.scan_states(&SourceScope::collection(&format!("orgs/{tenant}/records")).unwrap()).await.unwrap().items.map(Result::unwrap).map(key).collect().await;
    let derived: Vec<_> = s.warehouse.latest_states("records", tenant).await.unwrap().items.map(Result::unwrap).map(key).collect().await;
    source == derived
}

/// What a reader of the latest view sees: (documents, sum of versions).
async fn fingerprint(warehouse: &dyn Warehouse, tenant: &str) -> (u64, i128) {
    let mut states = warehouse.latest_states("records", tenant).await.unwrap().items;
    let (mut count, mut sum) = (0u64, 0i128);
    while let Some(state) = states.next().await {
        count += 1;
        sum += i128::from(state.unwrap().version);
    }
    (count, sum)
}

async fn a_drifted_tenant_is_rebuilt_to_equal_the_source(s: Setup) {
    seed(&s, "acme", 40, 30, 5, 4).await;
    seed(&s, "globex", 10, 10, 0, 0).await;
    assert!(!converged(&s, "acme").await);
    let before_globex = fingerprint(s.warehouse.as_ref(), "globex").await;

    let run = rebuilder(&s).run(request("acme")).await.unwrap();
    // 5 stale and 5 missing written, the 30 mirrored as they are left alone.
    assert_eq!((run.documents, run.unchanged, run.tombstones, run.skipped, run.outcome.as_str()), (10, 30, 4, 0, "ok"), "{run:#?}");
    assert_eq!(run.rows_written + run.duplicates, 14);
    assert!(converged(&s, "acme").await);
    assert_eq!(fingerprint(s.warehouse.as_ref(), "globex").await, before_globex, "other tenants untouched");
    let records = s.warehouse.runs("rebuild", 10).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].batch_id.as_str(), records[0].outcome.as_str(), records[0].scope.as_str()), (run.batch_id.as_str(), "ok", "acme"));
    assert_eq!(records[0].report["documents"], 10);
    // Every document scanned is one read, the 30 left alone included.
    assert_eq!(run.cost.source_reads, 40, "{:?}", run.cost);
    assert!(run.cost.estimated_usd > 0.0, "{:?}", run.cost);
    assert_eq!(records[0].report["cost"]["source_reads"], 40);

    // Run again (same day: the same batch): the same end state, and nothing appended.
    let rows_before = s.warehouse.latest_count("records", "acme").await.unwrap();
    let again = rebuilder(&s).run(request("acme")).await.unwrap();
    assert_eq!(again.batch_id, run.batch_id);
    assert_eq!((again.documents, again.unchanged, again.tombstones, again.rows_written), (0, 40, 0, 0), "nothing differs any more: {again:#?}");
    assert_eq!(again.cost.source_reads, 40, "nothing written, all read: {:?}", again.cost);
    assert_eq!(s.warehouse.latest_count("records", "acme").await.unwrap(), rows_before);
    assert!(converged(&s, "acme").await);
}

async fn an_interrupted_rebuild_leaves_nothing_visible_and_runs_again(s: Setup) {
    seed(&s, "acme", 60, 20, 0, 3).await;
    let before = fingerprint(s.warehouse.as_ref(), "acme").await;
    s.faulty.interrupt_next_atomic_after(25);
    let error = rebuilder(&s).run(request("acme")).await.unwrap_err();
    assert!(matches!(&error, RebuildError::Store(e) if e.is_retryable()), "{error}");
    assert_eq!(fingerprint(s.warehouse.as_ref(), "acme").await, before, "nothing of the interrupted rebuild is visible");
    let failed = s.warehouse.runs("rebuild", 10).await.unwrap();
    assert_eq!(failed[0].outcome, RunOutcome::Failed);
    // Its 43 rows went out as one chunk after the scan read all 60 documents: a run
    // that failed was billed its reads all the same.
    assert_eq!(failed[0].report["cost"]["source_reads"], 60, "{}", failed[0].report);

    let run = rebuilder(&s).run(request("acme")).await.unwrap();
    assert_eq!(run.batch_id, failed[0].batch_id, "the re-run is the same batch");
    assert_eq!((run.documents, run.unchanged, run.tombstones, run.outcome.as_str()), (40, 20, 3, "ok"));
    assert!(converged(&s, "acme").await);
    assert_eq!(s.warehouse.runs("rebuild", 10).await.unwrap()[0].outcome, RunOutcome::Ok, "the latest record of the batch wins");
}

async fn a_committed_rebuild_whose_record_fails_says_so_and_runs_again(s: Setup) {
    seed(&s, "acme", 20, 10, 0, 2).await;
    s.faulty.fail_next_run_records(1);
    let error = rebuilder(&s).run(request("acme")).await.unwrap_err();
    assert!(matches!(&error, RebuildError::NotRecorded { .. }), "{error}");
    assert!(error.to_string().contains("rows are visible"), "{error}");
    assert!(converged(&s, "acme").await, "the rows were committed");
    let run = rebuilder(&s).run(request("acme")).await.unwrap();
    assert_eq!(s.warehouse.runs("rebuild", 10).await.unwrap()[0].batch_id, run.batch_id);
    assert!(converged(&s, "acme").await);
}

async fn a_live_write_during_the_rebuild_wins_and_a_second_rebuild_is_refused(s: Setup) {
    seed(&s, "acme", 40, 0, 0, 0).await;
    let rebuilder = Arc::new(rebuilder(&s));
    // 40 documents at 100/s: the rebuild runs for ~0.4 s after its snapshot.
    let running = {
        let rebuilder = rebuilder.clone();
        tokio::spawn(async move { rebuilder.run(RebuildRequest { max_docs_per_second: Some(100), ..request("acme") }).await })
    };
    while rebuilder.progress("acme").is_none_or(|p| p.documents.load(Ordering::SeqCst) < 5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = rebuilder.run(request("acme")).await.unwrap_err();
    assert!(matches!(refused, RebuildError::Busy { .. }), "{refused}");
    // A live write after the snapshot, synced at once: its update_time is later than
    // what the rebuild read.
    let live = path("acme", 30);
    s.source.apply(vec![DocWrite::Set { path: live.clone(), fields: fields_from_json(&serde_json::json!({"amount": 999})).unwrap() }]).await.unwrap();
    let doc = s.source.get(&live).await.unwrap().unwrap();
    s.warehouse.append(vec![row(&s.config, &doc, "live-write")]).await.unwrap();

    let run = running.await.unwrap().unwrap();
    assert_eq!(run.documents, 40);
    assert!(rebuilder.progress("acme").is_none(), "the tenant is free again");
    assert!(converged(&s, "acme").await, "the live write is the latest state, not the rebuild's older copy");
    rebuilder.run(request("acme")).await.expect("a rebuild after the first finished is accepted");
}

/// A source that lost a fifth of the warehouse's documents (a wrong scan looks like
/// that): the rebuild tombstones nothing, writes nothing, says so; on purpose it goes.
async fn a_mass_orphan_rebuild_is_refused_unless_allowed(s: Setup) {
    seed(&s, "acme", 80, 70, 0, 20).await;
    let before = fingerprint(s.warehouse.as_ref(), "acme").await;
    let run = rebuilder(&s).run(request("acme")).await.unwrap();
    assert_eq!((run.outcome.as_str(), run.tombstones, run.rows_written), ("refused", 20, 0), "{run:#?}");
    assert!(run.tables[0].refused && run.tables[0].derived_docs == 90, "{run:#?}");
    assert!(run.how_to_override.as_deref().is_some_and(|h| h.contains("--max-orphan-share 1.0")), "{run:#?}");
    assert_eq!(fingerprint(s.warehouse.as_ref(), "acme").await, before, "nothing of a refused rebuild is visible");
    assert_eq!(s.warehouse.runs("rebuild", 10).await.unwrap()[0].outcome, RunOutcome::Refused);
    assert_eq!(run.cost.source_reads, 80, "a refused rebuild read the whole source: {:?}", run.cost);

    let run = rebuilder(&s).run(RebuildRequest { max_orphan_share: Some(1.0), ..request("acme") }).await.unwrap();
    assert_eq!((run.outcome.as_str(), run.documents, run.tombstones), ("ok", 10, 20), "{run:#?}");
    assert!(converged(&s, "acme").await);
}

async fn bad_requests_are_refused_before_anything_runs(s: Setup) {
    seed(&s, "acme", 5, 5, 0, 0).await;
    let rebuilder = rebuilder(&s);
    for tenant in ["", "..", "acme/records/r1", "../../etc", "__acme__"] {
        let error = rebuilder.run(request(tenant)).await.unwrap_err();
        assert!(matches!(error, RebuildError::InvalidTenant { .. }), "{tenant}: {error}");
    }
    let error = rebuilder.run(RebuildRequest { tables: Some(vec!["records; DROP TABLE records".into()]), ..request("acme") }).await.unwrap_err();
    assert!(matches!(error, RebuildError::UnknownTable { .. }), "{error}");
    // A tenant id that reads like SQL is only an id: parameters carry it, it has no
    // documents, nothing else is touched.
    let run = rebuilder.run(request("acme' OR '1'='1")).await.unwrap();
    assert_eq!((run.documents, run.tombstones, run.rows_written), (0, 0, 0));
    assert_eq!(run.cost.source_reads, 1, "a scan that returns nothing is billed one read");
    assert!(converged(&s, "acme").await);
    assert_eq!(fingerprint(s.warehouse.as_ref(), "acme").await.0, 5);
}

/// A reader loops over the latest view while `count` documents are rebuilt: every
/// read is the complete old state or the complete new one.
async fn readers_see_the_old_state_or_the_new_never_a_mix(s: Setup, count: usize) {
    seed(&s, "big", count, count / 2, count / 10, count / 100 + 1).await;
    let old = fingerprint(s.warehouse.as_ref(), "big").await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (warehouse, stop) = (s.warehouse.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                seen.push(fingerprint(warehouse.as_ref(), "big").await);
            }
            seen
        })
    };
    let run = rebuilder(&s).run(request("big")).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let new = fingerprint(s.warehouse.as_ref(), "big").await;
    assert_eq!(new.0, count as u64);
    assert_ne!(old, new);
    assert!(seen.len() >= 2, "the reader read during the rebuild ({} reads)", seen.len());
    for state in &seen {
        assert!(*state == old || *state == new, "a reader saw {state:?}: neither the old {old:?} nor the new {new:?}");
    }
    eprintln!("{count} documents rebuilt in {} ms; {} reads, all old or new", run.millis, seen.len());
    assert!(converged(&s, "big").await);
}

// --- Embedded: SQLite + DuckDB ------------------------------------------------------

async fn embedded() -> (Setup, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let source = SqliteStore::open(&dir.path().join("source.sqlite"), Arc::new(SystemClock), EventSource::local()).unwrap();
    let warehouse: Arc<dyn Warehouse> = Arc::new(DuckWarehouse::open(&dir.path().join("warehouse.duckdb")).unwrap());
    (setup(Arc::new(source), warehouse).await, dir)
}

async fn setup(source: Arc<dyn SourceStore>, warehouse: Arc<dyn Warehouse>) -> Setup {
    let config = MirrorConfig::default();
    warehouse.ensure_tables(&config).await.unwrap();
    let faulty = Arc::new(FaultyWarehouse::new(warehouse.clone()));
    Setup { source, warehouse, faulty, config }
}

#[tokio::test]
async fn embedded_a_drifted_tenant_is_rebuilt_to_equal_the_source() {
    let (s, _dir) = embedded().await;
    a_drifted_tenant_is_rebuilt_to_equal_the_source(s).await;
}

#[tokio::test]
async fn embedded_an_interrupted_rebuild_leaves_nothing_visible_and_runs_again() {
    let (s, _dir) = embedded().await;
    an_interrupted_rebuild_leaves_nothing_visible_and_runs_again(s).await;
}

#[tokio::test]
async fn embedded_a_committed_rebuild_whose_record_fails_says_so_and_runs_again() {
    let (s, _dir) = embedded().await;
    a_committed_rebuild_whose_record_fails_says_so_and_runs_again(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_live_write_during_the_rebuild_wins_and_a_second_rebuild_is_refused() {
    let (s, _dir) = embedded().await;
    a_live_write_during_the_rebuild_wins_and_a_second_rebuild_is_refused(s).await;
}

#[tokio::test]
async fn embedded_a_mass_orphan_rebuild_is_refused_unless_allowed() {
    let (s, _dir) = embedded().await;
    a_mass_orphan_rebuild_is_refused_unless_allowed(s).await;
}

#[tokio::test]
async fn embedded_bad_requests_are_refused_before_anything_runs() {
    let (s, _dir) = embedded().await;
    bad_requests_are_refused_before_anything_runs(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_readers_see_the_old_state_or_the_new_during_a_300k_rebuild() {
    let (s, _dir) = embedded().await;
    readers_see_the_old_state_or_the_new_never_a_mix(s, 300_000).await;
}

// --- Cloud: Firestore + BigQuery on their emulators ---------------------------------

async fn emulators() -> Option<(FirestoreEmulator, BigQueryEmulator)> {
    if let Err(error) = converge_firestore::emulator::locate(None) {
        eprintln!("!!!!! SKIPPED rebuild on the emulators: Firestore emulator unavailable ({error})");
        return None;
    }
    let bigquery = BigQueryEmulator::for_tests().await?;
    let firestore = FirestoreEmulator::start(EmulatorOptions::default()).await.expect("Firestore emulator");
    Some((firestore, bigquery))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_backends_pass_the_same_scenarios() {
    let Some((firestore, bigquery)) = emulators().await else { return };
    for scenario in 0..6 {
        firestore.reset().await.unwrap();
        let source: Arc<dyn SourceStore> = Arc::new(firestore.source().await.unwrap());
        let warehouse: Arc<dyn Warehouse> = Arc::new(bigquery.fresh_warehouse().await.unwrap());
        let s = setup(source, warehouse).await;
        match scenario {
            0 => a_drifted_tenant_is_rebuilt_to_equal_the_source(s).await,
            1 => an_interrupted_rebuild_leaves_nothing_visible_and_runs_again(s).await,
            2 => a_live_write_during_the_rebuild_wins_and_a_second_rebuild_is_refused(s).await,
            3 => bad_requests_are_refused_before_anything_runs(s).await,
            4 => a_mass_orphan_rebuild_is_refused_unless_allowed(s).await,
            _ => readers_see_the_old_state_or_the_new_never_a_mix(s, 1_000).await,
        }
    }
}
