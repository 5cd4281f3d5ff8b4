use std::sync::Arc;
use std::time::Instant;

use converge_core::{
    DocWrite, ErrorKind, Fields, GeoPoint, ManualClock, SourceStore,
    SystemClock, Timestamp, Value,
};
use converge_events::EventSource;
use futures::StreamExt;

use super::*;

const T0: i64 = 1_714_557_600; // 2024-05-01T10:00:00Z

struct Fixture {
    // Held so the directory outlives the store.
    _dir: tempfile::TempDir,
    store: SqliteStore,
    clock: Arc<ManualClock>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp::new(T0, 0)));
    let store = SqliteStore::open(&dir.path().join("source.db"), clock.clone(), EventSource::local()).unwrap();
    Fixture { _dir: dir, store, clock }
}

fn fields(json: serde_json::Value) -> Fields {
    converge_core::value::fields_from_json(&json).unwrap()
}

fn set(path: &str, json: serde_json::Value) -> DocWrite {
    DocWrite::Set { path: path.into(), fields: fields(json) }
}

fn delete(path: &str) -> DocWrite {
    DocWrite::Delete { path: path.into() }
}

/// Raw access to the database file, as a test's second process would have.
fn raw(store: &SqliteStore) -> rusqlite::Connection {
    rusqlite::Connection::open(store.path()).unwrap()
}

fn outbox_rows(store: &SqliteStore) -> Vec<(String, i64, String)> {
    let conn = raw(store);
    let mut stmt = conn.prepare("SELECT document, event_time_us, status FROM outbox ORDER BY seq").unwrap();
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?))).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn a_failing_transaction_leaves_neither_documents_nor_events() {
    let f = fixture();
    f.store.apply(vec![set("c/existing", serde_json::json!({"v": 1}))]).await.unwrap();
    // Make the second event's insert fail, after the first document, its event and
    // the second document were already written inside the transaction.
    raw(&f.store)
        .execute_batch(
            "CREATE TRIGGER fail_boom BEFORE INSERT ON outbox WHEN NEW.document = 'c/boom' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let err = f
        .store
        .apply(vec![set("c/first", serde_json::json!({"v": 1})), set("c/existing", serde_json::json!({"v": 2})), set("c/boom", serde_json::json!({}))])
        .await
        .unwrap_err();
    assert!(err.message.contains("injected failure"), "{err}");
    assert_eq!(f.store.get("c/first").await.unwrap(), None);
    assert_eq!(f.store.get("c/existing").await.unwrap().unwrap().fields, fields(serde_json::json!({"v": 1})));
    assert_eq!(f.store.get("c/boom").await.unwrap(), None);
    assert_eq!(outbox_rows(&f.store).len(), 1, "only the first, committed write has an event");

    // The store keeps working after the rollback.
    raw(&f.store).execute_batch("DROP TRIGGER fail_boom").unwrap();
    f.store.apply(vec![set("c/boom", serde_json::json!({}))]).await.unwrap();
    assert_eq!(outbox_rows(&f.store).len(), 2);
}

#[tokio::test]
async fn commit_times_strictly_increase_even_when_the_clock_stalls_or_goes_back() {
    let f = fixture();
    let t1 = f.store.apply(vec![set("c/a", serde_json::json!({"n": 1}))]).await.unwrap();
    let t2 = f.store.apply(vec![set("c/a", serde_json::json!({"n": 2}))]).await.unwrap();
    f.clock.advance_micros(-5_000_000);
    let t3 = f.store.apply(vec![set("c/b", serde_json::json!({"n": 3})), set("c/c", serde_json::json!({}))]).await.unwrap();
    assert!(t1.as_micros() >= Timestamp::new(T0, 0).as_micros());
    assert_eq!(t2.as_micros(), t1.as_micros() + 1);
    assert_eq!(t3.as_micros(), t2.as_micros() + 1);
    // Every write of a batch carries the batch's commit time.
    for path in ["c/b", "c/c"] {
        assert_eq!(f.store.get(path).await.unwrap().unwrap().update_time, t3);
    }
    let a = f.store.get("c/a").await.unwrap().unwrap();
    assert_eq!((a.create_time, a.update_time), (t1, t2), "an update keeps the create time");
    // And the event times are the commit times.
    let times: Vec<i64> = outbox_rows(&f.store).into_iter().map(|(_, time, _)| time).collect();
    assert_eq!(times, vec![t1.as_micros(), t2.as_micros(), t3.as_micros(), t3.as_micros()]);

    // Across a restart too: the last commit time is persisted.
    let path = f.store.path().to_owned();
    drop(f.store);
    let reopened = SqliteStore::open(&path, f.clock.clone(), EventSource::local()).unwrap();
    let t4 = reopened.apply(vec![delete("c/a")]).await.unwrap();
    assert_eq!(t4.as_micros(), t3.as_micros() + 1);
}

#[tokio::test]
async fn writes_that_change_nothing_emit_nothing() {
    let f = fixture();
    let t1 = f.store.apply(vec![set("c/a", serde_json::json!({"n": 1}))]).await.unwrap();
    f.clock.advance_micros(1_000);
    f.store.apply(vec![delete("c/missing")]).await.unwrap();
    f.store.apply(vec![set("c/a", serde_json::json!({"n": 1}))]).await.unwrap();
    assert_eq!(outbox_rows(&f.store).len(), 1);
    assert_eq!(f.store.get("c/a").await.unwrap().unwrap().update_time, t1, "a no-op write keeps update_time");
    f.store.apply(vec![delete("c/a")]).await.unwrap();
    f.store.apply(vec![delete("c/a")]).await.unwrap();
    let rows = outbox_rows(&f.store);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].0, "c/a");
}

#[tokio::test]
async fn bad_batches_are_invalid_input_and_write_nothing() {
    let f = fixture();
    for writes in [
        vec![set("c", serde_json::json!({}))],
        vec![set("c/a/d", serde_json::json!({}))],
        vec![set("c//a", serde_json::json!({}))],
        vec![set("c/a", serde_json::json!({"n": 1})), delete("c/a")],
    ] {
        let err = f.store.apply(writes).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    }
    assert_eq!(f.store.count(&coll("c")).await.unwrap(), 0);
    assert!(outbox_rows(&f.store).is_empty());
    assert!(SourceScope::collection("c/a").is_err(), "a document path is no collection");
    assert_eq!(f.store.get("c").await.unwrap_err().kind, ErrorKind::InvalidInput);
}

#[tokio::test]
async fn every_value_type_comes_back_exactly() {
    let f = fixture();
    let mut nested = Fields::new();
    nested.insert("$ref".into(), Value::String("a user map shaped like a tag".into()));
    let mut all = Fields::new();
    all.insert("null".into(), Value::Null);
    all.insert("bool".into(), Value::Boolean(true));
    all.insert("int_min".into(), Value::Integer(i64::MIN));
    all.insert("int_big".into(), Value::Integer((1 << 53) + 1));
    all.insert("double".into(), Value::Double(0.1 + 0.2));
    all.insert("neg_zero".into(), Value::Double(-0.0));
    all.insert("nan".into(), Value::Double(f64::NAN));
    all.insert("inf".into(), Value::Double(f64::INFINITY));
    all.insert("subnormal".into(), Value::Double(5e-324));
    all.insert("ts".into(), Value::Timestamp(Timestamp::new(T0, 123_456_789)));
    all.insert("string".into(), Value::String("héllo, \u{1F600}\n".into()));
    all.insert("bytes".into(), Value::Bytes((0..=255).collect()));
    all.insert("ref".into(), Value::Reference("projects/p/databases/(default)/documents/c/x".into()));
    all.insert("geo".into(), Value::GeoPoint(GeoPoint { latitude: 48.858_37, longitude: -2.294_481 }));
    all.insert("array".into(), Value::Array(vec![Value::Integer(1), Value::Double(1.0), Value::Array(vec![]), Value::Map(nested.clone())]));
    all.insert("map".into(), Value::Map(nested));
    f.store.apply(vec![DocWrite::Set { path: "c/all".into(), fields: all.clone() }]).await.unwrap();
    let stored = f.store.get("c/all").await.unwrap().unwrap();
    assert_eq!(codec::encode_fields(&stored.fields), codec::encode_fields(&all), "bit-exact, NaN and -0.0 included");
    assert_eq!(content_hash(&stored.fields), content_hash(&all));
    let mut scan = f.store.scan_states(&coll("c")).await.unwrap();
    let state = scan.items.next().await.unwrap().unwrap();
    assert_eq!((state.doc_path.as_str(), state.content_hash), ("c/all", content_hash(&all)));
}

#[tokio::test]
async fn events_carry_the_change() {
    let f = fixture();
    f.store.apply(vec![set("orgs/t/records/r1", serde_json::json!({"a": 1, "b": "x"}))]).await.unwrap();
    f.store.apply(vec![set("orgs/t/records/r1", serde_json::json!({"a": 2, "b": "x", "odd name": true}))]).await.unwrap();
    f.store.apply(vec![delete("orgs/t/records/r1")]).await.unwrap();
    let events = f.store.pending_batch(10, Timestamp::new(T0, 0)).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let source = EventSource::local();
    let mut decoded = Vec::new();
    for event in &events {
        assert_eq!(event.meta.event_type, WRITTEN_EVENT_TYPE);
        assert_eq!(event.meta.document, "orgs/t/records/r1");
        assert_eq!(event.attempts, 0);
        // What the relay sends decodes to the change, as the sync function sees it.
        let headers = converge_events::binary_headers(&event.meta, &source);
        let change = converge_events::decode(&headers, event.data.clone()).unwrap();
        assert_eq!((change.event_id.as_str(), change.event_time), (event.meta.id.as_str(), event.meta.time));
        decoded.push(change);
    }
    let (create, update, delete) = (&decoded[0], &decoded[1], &decoded[2]);
    let created = create.value.as_ref().unwrap();
    assert_eq!(create.old_value, None);
    assert_eq!((created.fields.clone(), created.create_time, created.update_time), (fields(serde_json::json!({"a": 1, "b": "x"})), create.event_time, create.event_time));
    let updated = update.value.as_ref().unwrap();
    assert_eq!(update.old_value.as_ref(), Some(created));
    assert_eq!((updated.create_time, updated.update_time), (created.create_time, update.event_time));
    assert_eq!(update.update_mask, vec!["a".to_string(), "`odd name`".to_string()]);
    assert_eq!((delete.value.as_ref(), delete.old_value.as_ref()), (None, Some(updated)));
    let ids: HashSet<&str> = events.iter().map(|e| e.meta.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "fresh event ids");
}

#[tokio::test]
async fn outbox_outcomes_are_recorded_once() {
    let f = fixture();
    let writes = (0..5).map(|i| set(&format!("c/d{i}"), serde_json::json!({"i": i}))).collect();
    f.store.apply(writes).await.unwrap();
    let now = Timestamp::new(T0, 0);
    let batch = f.store.pending_batch(3, now).await.unwrap();
    let seqs: Vec<i64> = batch.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), 3);
    let later = Timestamp::new(T0 + 60, 0);
    let changed = f
        .store
        .record_outcomes(vec![
            DeliveryOutcome::Delivered { seq: seqs[0] },
            DeliveryOutcome::Rejected { seq: seqs[1], error: "HTTP 400: unroutable".into() },
            DeliveryOutcome::Failed { seq: seqs[2], error: "HTTP 503".into(), next_attempt: later },
        ])
        .await
        .unwrap();
    assert_eq!(changed, 3);
    // A second report of the same outcomes (a restarted relay) changes nothing.
    assert_eq!(f.store.mark_delivered(&seqs[..2]).await.unwrap(), 0);
    assert_eq!(
        f.store.outbox_stats().await.unwrap(),
        OutboxStats { pending: 3, delivered: 1, rejected: 1, attempts: 3 }
    );
    // The failed event waits for its next attempt; the others are due now.
    let due: Vec<i64> = f.store.pending_batch(10, now).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(due.len(), 2);
    assert!(!due.contains(&seqs[2]));
    assert_eq!(f.store.next_pending_attempt().await.unwrap(), Some(Timestamp::from_micros(0)));
    let retry = f.store.pending_batch(10, later).await.unwrap();
    assert_eq!(retry[0].seq, seqs[2]);
    assert_eq!(retry[0].attempts, 1);
    assert_eq!(f.store.pending_count().await.unwrap(), 3);

    f.store.mark_failed(due[0], "timeout", later).await.unwrap();
    f.store.mark_rejected(due[1], "bad").await.unwrap();
    assert_eq!(f.store.next_pending_attempt().await.unwrap(), Some(later));
    f.clock.advance_micros(1);
    assert_eq!(f.store.prune_delivered(f.clock.now()).await.unwrap(), 1);
    assert_eq!(f.store.outbox_stats().await.unwrap(), OutboxStats { pending: 2, delivered: 0, rejected: 2, attempts: 4 });
}

#[tokio::test]
async fn the_outbox_signal_fires_on_commits_with_events() {
    let f = fixture();
    let signal = f.store.outbox_signal();
    f.store.apply(vec![set("c/a", serde_json::json!({}))]).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(1), signal.notified()).await.expect("signalled");
}

#[tokio::test]
async fn a_scan_is_ordered_and_stays_on_its_snapshot_while_writes_continue() {
    let f = fixture();
    let total = 5_000;
    let writes: Vec<DocWrite> = (0..total).map(|i| set(&format!("orgs/t/records/r{i:05}"), serde_json::json!({"i": i}))).collect();
    let mut last_commit = Timestamp::new(0, 0);
    for chunk in writes.chunks(1_000) {
        last_commit = f.store.apply(chunk.to_vec()).await.unwrap();
    }
    // Another collection, sorting both before and after, must not leak in.
    f.store.apply(vec![set("orgs/t/recordsx/a", serde_json::json!({})), set("orgs/s/records/a", serde_json::json!({}))]).await.unwrap();
    let before = f.store.apply(vec![set("orgs/t/records/r00000", serde_json::json!({"i": "changed"}))]).await.unwrap();
    assert!(before > last_commit);

    let mut scan = f.store.scan_states(&coll("orgs/t/records")).await.unwrap();
    assert_eq!(scan.read_time, before, "read time = latest commit visible");
    let mut seen = Vec::new();
    // Read a little, then write all over the collection while the scan is open.
    for _ in 0..10 {
        seen.push(scan.items.next().await.unwrap().unwrap());
    }
    let after = f
        .store
        .apply(vec![
            delete("orgs/t/records/r04999"),
            set("orgs/t/records/r02500", serde_json::json!({"i": "changed"})),
            set("orgs/t/records/r02500x", serde_json::json!({"new": true})),
            set("orgs/t/records/r00001", serde_json::json!({"i": "changed"})),
        ])
        .await
        .unwrap();
    while let Some(state) = scan.items.next().await {
        seen.push(state.unwrap());
    }
    assert_eq!(seen.len(), total);
    assert!(seen.windows(2).all(|w| w[0].doc_path < w[1].doc_path), "ascending path order");
    assert!(seen.iter().all(|s| s.version < after.as_micros()), "nothing committed after the snapshot");
    assert_eq!(seen[0].version, before.as_micros());
    assert_eq!(seen[total - 1].doc_path, "orgs/t/records/r04999");

    // A new scan sees the new state.
    let scan = f.store.scan_states(&coll("orgs/t/records")).await.unwrap();
    assert_eq!(scan.read_time, after);
    let states: Vec<DocState> = scan.items.map(Result::unwrap).collect().await;
    assert_eq!(states.len(), total);
    assert!(states.iter().any(|s| s.doc_path == "orgs/t/records/r02500x"));
    assert_eq!(f.store.count(&coll("orgs/t/records")).await.unwrap(), total as u64);
    assert_eq!(f.store.count(&coll("orgs/t/recordsx")).await.unwrap(), 1);

    // Dropping a scan half way ends its reader (no leaked transaction blocks writes).
    let mut abandoned = f.store.scan_states(&coll("orgs/t/records")).await.unwrap();
    abandoned.items.next().await.unwrap().unwrap();
    drop(abandoned);
    f.store.apply(vec![delete("orgs/t/records/r00002")]).await.unwrap();
}

#[tokio::test]
async fn an_empty_store_reports_its_creation_as_read_time() {
    let f = fixture();
    let scan = f.store.scan_states(&coll("c")).await.unwrap();
    assert_eq!(scan.read_time, Timestamp::new(T0, 0));
    assert_eq!(scan.items.count().await, 0);
}

// Error log merging and quarantine: the shared contract (tests/contract.rs).

/// Throughput of the bulk-load path. The demo loads 300,000 documents; here a
/// smaller run keeps the suite quick, with a floor far below the target so a slow
/// shared machine does not fail it. Run with `--ignored` for the full size.
async fn bulk_load(documents: usize, batch: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("bulk.db"), Arc::new(SystemClock), EventSource::local()).unwrap();
    let mut applying = std::time::Duration::ZERO;
    for first in (0..documents).step_by(batch) {
        let writes = (first..(first + batch).min(documents))
            .map(|i| {
                set(
                    &format!("orgs/t{}/records/r{i:07}", i % 10),
                    serde_json::json!({"account": format!("acct-{}", i % 97), "amount": i as f64 * 1.25, "date": "2024-03-01", "status": "open", "n": i}),
                )
            })
            .collect();
        let start = Instant::now();
        store.apply(writes).await.unwrap();
        applying += start.elapsed();
    }
    let rate = documents as f64 / applying.as_secs_f64();
    assert_eq!(store.outbox_stats().await.unwrap().pending, documents as u64);
    eprintln!("bulk load: {documents} documents in batches of {batch}: {rate:.0} docs/s");
    rate
}

#[tokio::test]
async fn bulk_load_is_fast() {
    let rate = bulk_load(30_000, 3_000).await;
    assert!(rate > 10_000.0, "{rate:.0} docs/s");
}

#[tokio::test]
#[ignore = "full demo size; run with --ignored"]
async fn bulk_load_300k() {
    bulk_load(300_000, 5_000).await;
}

/// The scope of one collection.
fn coll(path: &str) -> SourceScope {
    SourceScope::collection(path).unwrap()
}
