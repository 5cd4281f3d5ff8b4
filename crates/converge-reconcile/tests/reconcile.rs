//! The reconciler on both backends — SQLite + DuckDB, and Firestore + BigQuery on
//! their emulators — through one set of scenarios: every kind of drift found, known
//! and silent told apart, repaired, and a second run finds nothing.

use converge_core::RunOutcome;
use std::sync::Arc;

use converge_core::faulty_warehouse::FaultyWarehouse;
use converge_core::value::fields_from_json;
use converge_core::{
    ChangeRow, DocWrite, Document, ErrorKind, ErrorLog, MirrorConfig, Op, RowContext, SourceStore, SyncErrorRecord, SystemClock, Timestamp,
    Warehouse,
};
use converge_duckdb::DuckWarehouse;
use converge_events::EventSource;
use converge_bigquery::BigQueryEmulator;
use converge_firestore::{EmulatorOptions, FirestoreEmulator};
use converge_reconcile::Reconciler;
use converge_sqlite::SqliteStore;

struct Setup {
    source: Arc<dyn SourceStore>,
    errors: Arc<dyn ErrorLog>,
    warehouse: Arc<dyn Warehouse>,
    faulty: Arc<FaultyWarehouse>,
    config: MirrorConfig,
}

fn path(tenant: &str, i: usize) -> String {
    format!("orgs/{tenant}/records/r{i:03}")
}

fn ctx() -> RowContext {
    RowContext { ingested_at: Timestamp::new(1_700_000_000, 0), run_id: "setup".into(), code_version: "test".into() }
}

fn row(config: &MirrorConfig, doc: &Document, event_id: &str) -> ChangeRow {
    ChangeRow::live(&config.route(&doc.path).unwrap(), Op::Create, doc, event_id, &ctx()).unwrap()
}

fn error_for(path: &str, tenant: &str) -> SyncErrorRecord {
    let doc_id = path.rsplit('/').next().unwrap();
    SyncErrorRecord {
        id: converge_core::change::error_id("records", tenant, doc_id, "update"),
        tenant: tenant.into(),
        doc_id: doc_id.into(),
        doc_path: path.into(),
        action: "update".into(),
        event_id: "lost".into(),
        error: "warehouse unavailable".into(),
        attempts: 1,
        first_seen: Timestamp::new(1, 0),
        last_seen: Timestamp::new(1, 0),
        resolved: false,
    }
}

/// 40 documents per tenant mirrored exactly, then: missing r00–r03, different r10–r13,
/// orphans x0–x3; the first two of each kind have an open error record (known).
async fn setup(source: Arc<dyn SourceStore>, errors: Arc<dyn ErrorLog>, warehouse: Arc<dyn Warehouse>) -> Setup {
    let config = MirrorConfig::default();
    warehouse.ensure_tables(&config).await.unwrap();
    for tenant in ["acme", "globex"] {
        let writes = (0..40).map(|i| DocWrite::Set { path: path(tenant, i), fields: fields_from_json(&serde_json::json!({"amount": i, "label": "x"})).unwrap() }).collect();
        source.apply(writes).await.unwrap();
        let mut rows = Vec::new();
        for i in 0..40 {
            let doc = source.get(&path(tenant, i)).await.unwrap().unwrap();
            if tenant == "acme" && i < 4 {
                continue; // missing
            }
            let mut mirrored = doc.clone();
            if tenant == "acme" && (10..14).contains(&i) {
                // different: the warehouse kept an older state
                mirrored.update_time = Timestamp::from_micros(doc.update_time.as_micros() - 1_000);
                mirrored.fields.insert("amount".into(), converge_core::Value::Integer(-1));
            }
            rows.push(row(&config, &mirrored, &format!("{tenant}-{i}")));
        }
        for i in 0..4 {
            if tenant == "acme" {
                let ghost = Document {
                    path: format!("orgs/acme/records/x{i}"),
                    fields: fields_from_json(&serde_json::json!({"amount": 1})).unwrap(),
                    create_time: Timestamp::new(1_600_000_000, 0),
                    update_time: Timestamp::new(1_600_000_000, 0),
                };
                rows.push(row(&config, &ghost, &format!("ghost-{i}")));
            }
        }
        warehouse.append(rows).await.unwrap();
    }
    for p in [path("acme", 0), path("acme", 1), path("acme", 10), path("acme", 11), "orgs/acme/records/x0".into(), "orgs/acme/records/x1".into()] {
        errors.record_sync_error(error_for(&p, "acme")).await.unwrap();
    }
    // An open record whose document is fine: its change landed on a redelivery.
    errors.record_sync_error(error_for(&path("globex", 5), "globex")).await.unwrap();
    let faulty = Arc::new(FaultyWarehouse::new(warehouse.clone()));
    Setup { source, errors, warehouse, faulty, config }
}

fn reconciler(s: &Setup) -> Reconciler {
    Reconciler::new(s.source.clone(), s.errors.clone(), s.faulty.clone(), s.config.clone(), Arc::new(SystemClock))
}

async fn finds_every_kind_tells_known_from_silent_repairs_and_converges(s: Setup) {
    let reconciler = reconciler(&s);

    let dry = reconciler.run(None, true).await.unwrap();
    assert_eq!((dry.missing, dry.different, dry.orphan, dry.known, dry.silent), (4, 4, 4, 6, 6), "{dry:#?}");
    assert_eq!((dry.repaired, dry.errors_resolved, dry.outcome.as_str()), (0, 0, "dry_run"));
    assert_eq!(dry.source_docs_read, 80);
    assert_eq!(s.warehouse.latest_count("records", "acme").await.unwrap(), 40, "a dry run writes nothing");
    assert!(s.warehouse.runs("reconcile", 10).await.unwrap().is_empty());
    let silent: Vec<&str> = dry.tenants.iter().flat_map(|t| t.silent_docs.iter().map(String::as_str)).collect();
    assert!(silent.contains(&"orgs/acme/records/r002") && silent.contains(&"orgs/acme/records/x3"), "{silent:?}");

    let run = reconciler.run(None, false).await.unwrap();
    assert_eq!((run.missing, run.different, run.orphan, run.known, run.silent, run.repaired), (4, 4, 4, 6, 6, 12), "{run:#?}");
    assert_eq!(run.errors_resolved, 7, "six repaired and one that had converged");
    assert!(s.errors.open_sync_errors(None).await.unwrap().is_empty());
    assert_eq!(s.warehouse.latest_count("records", "acme").await.unwrap(), 40);
    let runs = s.warehouse.runs("reconcile", 10).await.unwrap();
    assert_eq!((runs.len(), runs[0].batch_id.as_str(), runs[0].outcome.as_str()), (1, run.batch_id.as_str(), "ok"));
    assert_eq!(runs[0].report["repaired"], 12);

    let again = reconciler.run(None, false).await.unwrap();
    assert_eq!(again.findings(), 0, "{again:#?}");
    assert_eq!(again.repaired, 0);
}

async fn one_tenant_only_and_a_repair_that_keeps_failing_stays_visible(s: Setup) {
    let reconciler = reconciler(&s);
    let globex = reconciler.run(Some("globex"), false).await.unwrap();
    assert_eq!((globex.findings(), globex.errors_resolved, globex.source_docs_read), (0, 1, 40));

    s.faulty.fail_next_appends(100, ErrorKind::Retryable);
    let failing = reconciler.run(Some("acme"), false).await.unwrap();
    assert_eq!((failing.findings(), failing.repaired, failing.repair_failures, failing.outcome.as_str()), (12, 0, 12, "partial"));
    let open = s.errors.open_sync_errors(Some("acme")).await.unwrap();
    assert!(open.iter().any(|r| r.action == "repair" && r.error.contains("injected")), "{open:?}");
    assert_eq!(s.faulty.injected(), 3, "three attempts with backoff");

    s.faulty.fail_next_appends(0, ErrorKind::Retryable);
    let healed = reconciler.run(Some("acme"), false).await.unwrap();
    assert_eq!((healed.repaired, healed.repair_failures), (12, 0));
    assert!(s.errors.open_sync_errors(Some("acme")).await.unwrap().is_empty(), "repair records resolved too");
    assert_eq!(reconciler.run(Some("acme"), false).await.unwrap().findings(), 0);
}

async fn a_write_during_the_run_wins_over_the_repair(s: Setup) {
    let reconciler = reconciler(&s);
    reconciler.run(Some("acme"), false).await.unwrap();
    // A later live write to a repaired document: its row carries a later version.
    s.source.apply(vec![DocWrite::Set { path: path("acme", 0), fields: fields_from_json(&serde_json::json!({"amount": 999})).unwrap() }]).await.unwrap();
    let doc = s.source.get(&path("acme", 0)).await.unwrap().unwrap();
    s.warehouse.append(vec![row(&s.config, &doc, "late")]).await.unwrap();
    assert_eq!(reconciler.run(Some("acme"), false).await.unwrap().findings(), 0);
}

/// The two corruptions a version-only order could not repair: a row at the document's
/// own update_time with other content (a corrupt row, or an older code version's), and
/// a tombstone dated after the document's last write (a delete the source never had).
/// One run repairs both; the next finds nothing; the old rows delivered again change
/// nothing.
async fn wrong_content_at_the_same_version_and_a_wrong_tombstone_converge_in_one_run(s: Setup) {
    let reconciler = reconciler(&s);
    let wrong_content = s.source.get(&path("globex", 5)).await.unwrap().unwrap();
    let mut corrupt = wrong_content.clone();
    corrupt.fields.insert("amount".into(), converge_core::Value::Integer(-5));
    let corrupt_row = ChangeRow { code_version: "0.0.1".into(), ..row(&s.config, &corrupt, "older-code") };
    let deleted = s.source.get(&path("globex", 6)).await.unwrap().unwrap();
    let routed = s.config.route(&deleted.path).unwrap();
    let later = deleted.update_time.as_micros() + 1_000;
    let wrong_tombstone = ChangeRow::tombstone(&routed, &deleted.path, Op::Delete, later, "never-deleted", &ctx());
    s.warehouse.append(vec![corrupt_row.clone(), wrong_tombstone.clone()]).await.unwrap();

    let run = reconciler.run(Some("globex"), false).await.unwrap();
    assert_eq!((run.missing, run.different, run.orphan, run.repaired), (1, 1, 0, 2), "{run:#?}");
    assert_eq!(reconciler.run(Some("globex"), false).await.unwrap().findings(), 0, "one run converges");
    s.warehouse.append(vec![corrupt_row, wrong_tombstone]).await.unwrap();
    assert_eq!(reconciler.run(Some("globex"), true).await.unwrap().findings(), 0, "redelivered rows undo nothing");
}

/// A scan that lost a third of a tenant's documents (20 warehouse-only of 60) looks
/// like 20 deletes: the tenant's orphans are reported, not tombstoned, and the run is
/// recorded as refused; other tenants are repaired as usual; on purpose it goes.
async fn a_mass_orphan_run_is_refused_unless_allowed(s: Setup) {
    let routed_rows: Vec<ChangeRow> = (0..20)
        .map(|i| {
            let ghost = Document {
                path: format!("orgs/globex/records/ghost{i:02}"),
                fields: fields_from_json(&serde_json::json!({"amount": 1})).unwrap(),
                create_time: Timestamp::new(1_600_000_000, 0),
                update_time: Timestamp::new(1_600_000_000, 0),
            };
            row(&s.config, &ghost, &format!("mass-ghost-{i}"))
        })
        .collect();
    s.warehouse.append(routed_rows).await.unwrap();
    let reconciler = reconciler(&s);
    let run = reconciler.run(None, false).await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Refused, "{run:#?}");
    assert_eq!(run.refused.len(), 1, "{run:#?}");
    assert_eq!((run.refused[0].tenant.as_str(), run.refused[0].orphans, run.refused[0].derived_docs), ("globex", 20, 60));
    assert!(run.refused[0].how_to_override.contains("--max-orphan-share 1.0"));
    assert_eq!(s.warehouse.latest_count("records", "globex").await.unwrap(), 60, "no tombstone for globex");
    assert_eq!(s.warehouse.latest_count("records", "acme").await.unwrap(), 40, "acme repaired as usual");
    assert_eq!(s.warehouse.runs("reconcile", 10).await.unwrap()[0].outcome, RunOutcome::Refused);

    let allowed = converge_reconcile::RunOptions {
        orphan_guard: Some(converge_reconcile::OrphanGuard { max_share: 1.0, ..Default::default() }),
        ..Default::default()
    };
    let run = reconciler.run_with(allowed).await.unwrap();
    assert_eq!((run.outcome.as_str(), run.orphan), ("ok", 20), "{run:#?}");
    assert_eq!(s.warehouse.latest_count("records", "globex").await.unwrap(), 40);
}

// --- Embedded: SQLite + DuckDB ------------------------------------------------------

async fn embedded() -> (Setup, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let source = SqliteStore::open(&dir.path().join("source.sqlite"), Arc::new(SystemClock), EventSource::local()).unwrap();
    let warehouse = DuckWarehouse::open_in_memory().unwrap();
    (setup(Arc::new(source.clone()), Arc::new(source), Arc::new(warehouse)).await, dir)
}

/// The error log's own retry: only the documents open records name are re-read and
/// appended (four known drifts, two lost deletes, one that had converged); the silent
/// drift is left for the full reconcile. A record newer than the read and one of an
/// unroutable path stay open.
async fn the_retry_pass_repairs_what_open_errors_name_and_nothing_else(s: Setup) {
    let reconciler = reconciler(&s);
    let mut late = error_for(&path("acme", 20), "acme");
    late.id = "late".into();
    late.first_seen = Timestamp::new(4_000_000_000, 0);
    late.last_seen = Timestamp::new(4_000_000_000, 0);
    s.errors.record_sync_error(late).await.unwrap();
    let mut stray = error_for("elsewhere/acme/things/t1", "acme");
    stray.id = "stray".into();
    s.errors.record_sync_error(stray).await.unwrap();

    let retry = reconciler.retry_errors(None).await.unwrap();
    assert_eq!((retry.open_errors, retry.documents, retry.rows_appended, retry.tombstones), (9, 9, 8, 2), "{retry:#?}");
    assert_eq!((retry.errors_resolved, retry.recorded_after_read, retry.unroutable, retry.outcome), (7, 1, 1, RunOutcome::Partial), "{retry:#?}");
    let open: Vec<String> = s.errors.open_sync_errors(None).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(open, vec!["late".to_owned(), "stray".to_owned()]);
    let runs = s.warehouse.runs(converge_reconcile::RETRY_KIND, 10).await.unwrap();
    assert_eq!((runs.len(), runs[0].outcome, runs[0].report["errors_resolved"].as_u64()), (1, RunOutcome::Partial, Some(7)));

    // What is left is the silent drift, which only the full reconcile can find.
    let dry = reconciler.run(None, true).await.unwrap();
    assert_eq!((dry.missing, dry.different, dry.orphan, dry.known, dry.silent), (2, 2, 2, 0, 6), "{dry:#?}");
}

#[tokio::test]
async fn embedded_finds_every_kind_tells_known_from_silent_repairs_and_converges() {
    let (s, _dir) = embedded().await;
    finds_every_kind_tells_known_from_silent_repairs_and_converges(s).await;
}

#[tokio::test]
async fn embedded_one_tenant_only_and_a_repair_that_keeps_failing_stays_visible() {
    let (s, _dir) = embedded().await;
    one_tenant_only_and_a_repair_that_keeps_failing_stays_visible(s).await;
}

#[tokio::test]
async fn embedded_a_write_during_the_run_wins_over_the_repair() {
    let (s, _dir) = embedded().await;
    a_write_during_the_run_wins_over_the_repair(s).await;
}

#[tokio::test]
async fn embedded_wrong_content_at_the_same_version_and_a_wrong_tombstone_converge_in_one_run() {
    let (s, _dir) = embedded().await;
    wrong_content_at_the_same_version_and_a_wrong_tombstone_converge_in_one_run(s).await;
}

#[tokio::test]
async fn embedded_the_retry_pass_repairs_what_open_errors_name_and_nothing_else() {
    let (s, _dir) = embedded().await;
    the_retry_pass_repairs_what_open_errors_name_and_nothing_else(s).await;
}

#[tokio::test]
async fn embedded_a_mass_orphan_run_is_refused_unless_allowed() {
    let (s, _dir) = embedded().await;
    a_mass_orphan_run_is_refused_unless_allowed(s).await;
}

// --- Cloud: Firestore + BigQuery on their emulators ---------------------------------

/// Both emulators, or `None` (said loudly) where one is missing outside CI.
async fn emulators() -> Option<(FirestoreEmulator, BigQueryEmulator)> {
    if let Err(error) = converge_firestore::emulator::locate(None) {
        eprintln!("!!!!! SKIPPED the reconciler on the emulators: Firestore emulator unavailable ({error})");
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
        let source = Arc::new(firestore.source().await.unwrap());
        let warehouse: Arc<dyn Warehouse> = Arc::new(bigquery.fresh_warehouse().await.unwrap());
        let s = setup(source.clone(), source, warehouse).await;
        match scenario {
            0 => finds_every_kind_tells_known_from_silent_repairs_and_converges(s).await,
            1 => one_tenant_only_and_a_repair_that_keeps_failing_stays_visible(s).await,
            2 => wrong_content_at_the_same_version_and_a_wrong_tombstone_converge_in_one_run(s).await,
            3 => a_mass_orphan_run_is_refused_unless_allowed(s).await,
            4 => the_retry_pass_repairs_what_open_errors_name_and_nothing_else(s).await,
            _ => a_write_during_the_run_wins_over_the_repair(s).await,
        }
    }
}
