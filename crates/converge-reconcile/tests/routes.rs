//! Several routes at once, one of them nested (`orgs/{tenant}/projects/{project}/tasks/{doc}`),
//! on both backends — SQLite + DuckDB, and Firestore + BigQuery on their emulators:
//! every route's drift found, repaired, and a second run finds nothing. Project ids
//! `p` and `p-1` order differently segment by segment (Firestore's `__name__`) and as
//! whole paths (the warehouse's `ORDER BY doc_path`); the merge must still pair them.

use std::sync::Arc;

use converge_bigquery::BigQueryEmulator;
use converge_core::drift::compare_tenant;
use converge_core::value::fields_from_json;
use converge_core::{ChangeRow, DocWrite, Document, ErrorLog, MirrorConfig, Op, RowContext, SourceStore, SystemClock, Timestamp, Value, Warehouse};
use converge_duckdb::DuckWarehouse;
use converge_events::EventSource;
use converge_firestore::{EmulatorOptions, FirestoreEmulator};
use converge_reconcile::Reconciler;
use converge_sqlite::SqliteStore;

const ROUTES: &str = r#"
[[route]]
pattern = "orgs/{tenant}/records/{doc}"
table = "records"
[[route.promote]]
column = "amount"
field = "amount"
type = "float64"

[[route]]
pattern = "orgs/{tenant}/invoices/{doc}"
table = "invoices"

[[route]]
pattern = "orgs/{tenant}/projects/{project}/tasks/{doc}"
table = "tasks"
[[route.promote]]
column = "done"
field = "done"
type = "bool"
"#;

fn ctx() -> RowContext {
    RowContext { ingested_at: Timestamp::new(1_700_000_000, 0), run_id: "setup".into(), code_version: "test".into() }
}

fn json(value: serde_json::Value) -> converge_core::Fields {
    fields_from_json(&value).unwrap()
}

/// The documents of one tenant on every route: 6 records, 3 invoices, 3 tasks in each
/// of the projects `p`, `p-1` and `q`; and two documents no route mirrors.
fn documents(tenant: &str) -> Vec<DocWrite> {
    let mut writes = Vec::new();
    for i in 0..6 {
        writes.push(DocWrite::Set { path: format!("orgs/{tenant}/records/r{i}"), fields: json(serde_json::json!({"amount": i})) });
    }
    for i in 0..3 {
        writes.push(DocWrite::Set { path: format!("orgs/{tenant}/invoices/i{i}"), fields: json(serde_json::json!({"total": i * 10})) });
    }
    for project in ["p", "p-1", "q"] {
        for i in 0..3 {
            let path = format!("orgs/{tenant}/projects/{project}/tasks/t{i}");
            writes.push(DocWrite::Set { path, fields: json(serde_json::json!({"done": i % 2 == 0, "project": project})) });
        }
    }
    writes.push(DocWrite::Set { path: format!("orgs/{tenant}/tasks/loose"), fields: json(serde_json::json!({})) });
    writes.push(DocWrite::Set { path: format!("orgs/{tenant}/projects/p/tasks/t0/tasks/deeper"), fields: json(serde_json::json!({})) });
    writes
}

/// Both tenants written and mirrored; then acme drifts on every route: a record and
/// two tasks missing, an invoice and a task different, a task orphaned.
async fn seed(source: &dyn SourceStore, warehouse: &dyn Warehouse, config: &MirrorConfig) {
    warehouse.ensure_tables(config).await.unwrap();
    for tenant in ["acme", "globex"] {
        source.apply(documents(tenant)).await.unwrap();
    }
    let lost = ["orgs/acme/records/r2", "orgs/acme/projects/p/tasks/t1", "orgs/acme/projects/p-1/tasks/t2"];
    let stale = ["orgs/acme/invoices/i1", "orgs/acme/projects/q/tasks/t0"];
    let mut rows = Vec::new();
    for tenant in ["acme", "globex"] {
        for write in documents(tenant) {
            let DocWrite::Set { path, .. } = write else { unreachable!() };
            let Some(routed) = config.route(&path) else { continue };
            if lost.contains(&path.as_str()) {
                continue;
            }
            let mut doc = source.get(&path).await.unwrap().unwrap();
            if stale.contains(&path.as_str()) {
                doc.update_time = Timestamp::from_micros(doc.update_time.as_micros() - 1_000);
                doc.fields.insert("stale".into(), Value::Boolean(true));
            }
            rows.push(ChangeRow::live(&routed, Op::Create, &doc, &format!("sync-{path}"), &ctx()).unwrap());
        }
    }
    let ghost = Document {
        path: "orgs/acme/projects/gone/tasks/t9".into(),
        fields: json(serde_json::json!({"done": true})),
        create_time: Timestamp::new(1_600_000_000, 0),
        update_time: Timestamp::new(1_600_000_000, 0),
    };
    rows.push(ChangeRow::live(&config.route(&ghost.path).unwrap(), Op::Create, &ghost, "ghost", &ctx()).unwrap());
    warehouse.append(rows).await.unwrap();
}

async fn every_route_is_reconciled(source: Arc<dyn SourceStore>, errors: Arc<dyn ErrorLog>, warehouse: Arc<dyn Warehouse>) {
    let config = MirrorConfig::from_toml(ROUTES).unwrap();
    seed(source.as_ref(), warehouse.as_ref(), &config).await;
    let reconciler = Reconciler::new(source.clone(), errors, warehouse.clone(), config.clone(), Arc::new(SystemClock));

    let run = reconciler.run(None, false).await.unwrap();
    assert_eq!((run.missing, run.different, run.orphan, run.repaired), (3, 2, 1, 6), "{run:#?}");
    let by_table = |table: &str| run.tenants.iter().filter(|t| t.table == table && t.tenant == "acme").map(|t| (t.missing, t.different, t.orphan)).next();
    assert_eq!(by_table("records"), Some((1, 0, 0)));
    assert_eq!(by_table("invoices"), Some((0, 1, 0)));
    assert_eq!(by_table("tasks"), Some((2, 1, 1)));
    let tasks_read: u64 = run.tenants.iter().filter(|t| t.table == "tasks").map(|t| t.source_docs_read).sum();
    assert_eq!(tasks_read, 18, "nine tasks per tenant; the loose and the deeper `tasks` documents are no route's");

    for route in &config.routes {
        for tenant in ["acme", "globex"] {
            let report = compare_tenant(source.as_ref(), warehouse.as_ref(), route, tenant).await.unwrap();
            assert!(report.is_clean(), "{} {tenant}: {report:?}", route.table);
        }
    }
    assert_eq!(warehouse.latest_count("tasks", "acme").await.unwrap(), 9);
    let again = reconciler.run(None, false).await.unwrap();
    assert_eq!(again.findings(), 0, "{again:#?}");
}

#[tokio::test]
async fn embedded_every_route_is_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let source = SqliteStore::open(&dir.path().join("source.sqlite"), Arc::new(SystemClock), EventSource::local()).unwrap();
    let warehouse = DuckWarehouse::open_in_memory().unwrap();
    every_route_is_reconciled(Arc::new(source.clone()), Arc::new(source), Arc::new(warehouse)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_every_route_is_reconciled() {
    if let Err(error) = converge_firestore::emulator::locate(None) {
        eprintln!("!!!!! SKIPPED several routes on the emulators: Firestore emulator unavailable ({error})");
        return;
    }
    let Some(bigquery) = BigQueryEmulator::for_tests().await else { return };
    let firestore = FirestoreEmulator::start(EmulatorOptions::default()).await.expect("Firestore emulator");
    let source = Arc::new(firestore.source().await.unwrap());
    let warehouse: Arc<dyn Warehouse> = Arc::new(bigquery.fresh_warehouse().await.unwrap());
    every_route_is_reconciled(source.clone(), source, warehouse).await;
}
