//! `SyncService::replay` on the real embedded stores (SQLite error log, DuckDB behind
//! fault injection): events quarantined as unroutable, replayed once a route is added,
//! each outcome recorded on its record — written (once, however often), refused again
//! under another reason (the new record named), the append refused (a `sync_errors`
//! record), and a record without its whole body left alone.

use std::sync::Arc;

use axum::body::Body;
use converge_core::faulty_warehouse::FaultyWarehouse;
use converge_core::value::fields_from_json;
use converge_core::{Document, DocumentChange, ErrorKind, ErrorLog, ManualClock, MirrorConfig, QuarantineReason, ReplayOutcome, Timestamp, Warehouse};
use converge_duckdb::DuckWarehouse;
use converge_events::{to_binary, EventSource};
use converge_sqlite::SqliteStore;
use converge_sync::{GroupCommitConfig, SyncConfig, SyncOutcome, SyncService};

const TASKS: &str = r#"
[[route]]
pattern = "orgs/{tenant}/tasks/{doc}"
table = "tasks"
[[route.promote]]
column = "n"
field = "n"
type = "int64"
"#;

fn service(config: MirrorConfig, warehouse: Arc<dyn Warehouse>, errors: &SqliteStore, clock: Arc<ManualClock>) -> SyncService {
    SyncService::start(SyncConfig {
        mirror: config,
        warehouse,
        errors: Arc::new(errors.clone()),
        clock,
        run_id: "replay-test".into(),
        max_body_bytes: 1024 * 1024,
        commit: GroupCommitConfig::default(),
    })
}

fn task(id: &str, n: serde_json::Value) -> DocumentChange {
    let path = format!("orgs/acme/tasks/{id}");
    let doc = Document {
        path: path.clone(),
        fields: fields_from_json(&serde_json::json!({ "n": n })).unwrap(),
        create_time: Timestamp::new(1_700_000_000, 0),
        update_time: Timestamp::new(1_700_000_000, 0),
    };
    DocumentChange {
        event_id: format!("event-{id}"),
        event_type: "google.cloud.firestore.document.v1.written".into(),
        event_time: Timestamp::new(1_700_000_000, 0),
        document: path,
        value: Some(doc),
        old_value: None,
        update_mask: vec![],
    }
}

#[tokio::test]
async fn replays_after_a_route_is_added_record_each_outcome_and_write_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp::new(1_800_000_000, 0)));
    let errors = SqliteStore::open(&dir.path().join("source.sqlite"), clock.clone(), EventSource::local()).unwrap();
    let duck = DuckWarehouse::open_in_memory().unwrap();
    let warehouse = Arc::new(FaultyWarehouse::new(Arc::new(duck.clone())));

    // Before the fix: every task event is unroutable.
    let before = service(MirrorConfig::default(), warehouse.clone(), &errors, clock.clone());
    warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap();
    let mut ids = Vec::new();
    for change in [task("t1", 1.into()), task("t2", "not a number".into()), task("t3", 3.into())] {
        let (headers, body) = to_binary(&change, &EventSource::local());
        match before.handle(&headers, Body::from(body)).await {
            SyncOutcome::Quarantined { record_id, reason: QuarantineReason::Unroutable, .. } => ids.push(record_id),
            other => panic!("expected unroutable, got {other:?}"),
        }
    }

    // The fix: a route for tasks.
    let mut routes = MirrorConfig::default().routes;
    routes.extend(MirrorConfig::from_toml(TASKS).unwrap().routes);
    let fixed = MirrorConfig::new(routes).unwrap();
    warehouse.ensure_tables(&fixed).await.unwrap();
    let after = service(fixed, warehouse.clone(), &errors, clock.clone());
    warehouse.fail_rows_where(|row| row.doc_id == "t3", ErrorKind::Permanent);
    clock.advance_micros(1_000_000);

    let record = |i: usize| {
        let errors = errors.clone();
        let id = ids[i].clone();
        async move { errors.quarantine_record(&id).await.unwrap().expect("the record") }
    };
    let written = after.replay(&record(0).await).await.unwrap();
    assert_eq!(written.outcome, ReplayOutcome::Written, "{written:?}");
    assert_eq!(written.at, Timestamp::new(1_800_000_001, 0), "dated by the service's clock");
    let t1 = record(0).await;
    assert_eq!((t1.replays, t1.last_replay.as_ref(), t1.is_open()), (1, Some(&written), false));

    // t2's `n` is not an int64: refused again, under another reason and record.
    let refused = after.replay(&record(1).await).await.unwrap();
    assert_eq!(refused.outcome, ReplayOutcome::Quarantined);
    let schema = errors.quarantined(10).await.unwrap().into_iter().find(|r| r.reason == QuarantineReason::SchemaViolation).expect("a schema_violation record");
    assert!(refused.detail.contains("refused again as schema_violation") && refused.detail.contains(&format!("quarantine record {}", schema.id)), "{}", refused.detail);
    assert!(record(1).await.is_open());

    // t3's append is refused: a sync_errors record, and the quarantine record stays open.
    let failed = after.replay(&record(2).await).await.unwrap();
    assert_eq!(failed.outcome, ReplayOutcome::ErrorRecorded, "{failed:?}");
    let open = errors.open_sync_errors(Some("acme")).await.unwrap();
    assert_eq!(open.iter().map(|r| r.doc_path.as_str()).collect::<Vec<_>>(), ["orgs/acme/tasks/t3"]);
    assert!(failed.detail.contains(&format!("sync_errors/{}", open[0].id)) && failed.detail.contains("converge retry-errors"), "{}", failed.detail);
    assert!(record(2).await.is_open());

    // Replayed again and again: one row.
    for _ in 0..2 {
        assert_eq!(after.replay(&record(0).await).await.unwrap().outcome, ReplayOutcome::Written);
    }
    assert_eq!(record(0).await.replays, 3);
    let rows = duck.query_json("SELECT count(*) AS n FROM tasks WHERE doc_id = 't1'").await.unwrap();
    assert_eq!(rows[0]["n"], 1, "written once: {rows:?}");
    assert_eq!(duck.latest_count("tasks", "acme").await.unwrap(), 1);

    // A record without its whole body is not re-submitted.
    let mut truncated = record(1).await;
    truncated.payload_bytes = truncated.payload.len() as u64 + 1;
    let refused = after.replay(&truncated).await.unwrap();
    assert_eq!(refused.outcome, ReplayOutcome::NotReplayable);
    assert!(refused.detail.starts_with("not replayable: the body was"), "{}", refused.detail);
    assert_eq!(errors.quarantined(10).await.unwrap().len(), 4, "nothing new quarantined");
}
