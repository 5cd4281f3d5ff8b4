//! The sync router without a socket (`oneshot`), on the real embedded stores: every
//! failure mode of one event.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use converge_core::value::fields_from_json;
use converge_core::faulty_warehouse::FaultyWarehouse;
use converge_core::{Document, DocumentChange, ErrorKind, ErrorLog, ManualClock, MirrorConfig, QuarantineReason, Timestamp, Warehouse};
use converge_duckdb::DuckWarehouse;
use converge_events::{to_binary, to_structured, DataFormat, EventSource};
use converge_sqlite::SqliteStore;
use base64::Engine as _;
use converge_sync::{app, emulator_route, GroupCommitConfig, SyncConfig, SyncService};
use tower::ServiceExt;

struct Harness {
    router: axum::Router,
    /// The real warehouse, and the same behind fault injection (what the service uses).
    duck: DuckWarehouse,
    warehouse: Arc<FaultyWarehouse>,
    errors: SqliteStore,
    _dir: tempfile::TempDir,
}

const MAX_BODY: usize = 1024 * 1024;

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp::new(1_800_000_000, 0)));
    let errors = SqliteStore::open(&dir.path().join("source.sqlite"), clock.clone(), EventSource::local()).unwrap();
    let config = MirrorConfig::default();
    let duck = DuckWarehouse::open_in_memory().unwrap();
    let warehouse = Arc::new(FaultyWarehouse::new(Arc::new(duck.clone())));
    warehouse.ensure_tables(&config).await.unwrap();
    let service = SyncService::start(SyncConfig {
        mirror: config,
        warehouse: warehouse.clone(),
        errors: Arc::new(errors.clone()),
        clock,
        run_id: "test-run".into(),
        max_body_bytes: MAX_BODY,
        commit: GroupCommitConfig::default(),
    });
    let service = Arc::new(service);
    Harness { router: app(service.clone()).merge(emulator_route(service)), duck, warehouse, errors, _dir: dir }
}

fn doc(path: &str, update_secs: i64, json: serde_json::Value) -> Document {
    Document { path: path.into(), fields: fields_from_json(&json).unwrap(), create_time: Timestamp::new(1, 0), update_time: Timestamp::new(update_secs, 0) }
}

fn change(id: &str, path: &str, value: Option<Document>, old_value: Option<Document>) -> DocumentChange {
    DocumentChange {
        event_id: id.into(),
        event_type: "google.cloud.firestore.document.v1.written".into(),
        event_time: Timestamp::new(1_700_000_100, 0),
        document: path.into(),
        value,
        old_value,
        update_mask: vec![],
    }
}

async fn post(router: &axum::Router, headers: HeaderMap, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
    post_to(router, "/", headers, body).await
}

async fn post_to(router: &axum::Router, uri: &str, headers: HeaderMap, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method("POST").uri(uri).body(Body::from(body)).unwrap();
    *request.headers_mut() = headers;
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

async fn send(router: &axum::Router, change: &DocumentChange) -> (StatusCode, serde_json::Value) {
    let (headers, body) = to_binary(change, &EventSource::local());
    post(router, headers, body).await
}

fn good(id: &str) -> DocumentChange {
    let path = format!("orgs/acme/records/{id}");
    change(id, &path, Some(doc(&path, 1_700_000_000, serde_json::json!({"amount": 10, "account": "A"}))), None)
}

async fn quarantine_reasons(errors: &SqliteStore) -> Vec<QuarantineReason> {
    errors.quarantined(100).await.unwrap().into_iter().map(|r| r.reason).collect()
}

#[tokio::test]
async fn a_create_becomes_one_row_and_redelivery_changes_nothing() {
    let h = harness().await;
    let event = good("r1");
    for _ in 0..3 {
        let (status, body) = send(&h.router, &event).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(h.duck.changelog_rows("records").await.unwrap(), 1);
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 1);
}

#[tokio::test]
async fn a_delete_before_its_create_still_wins() {
    let h = harness().await;
    let path = "orgs/acme/records/r2";
    let created = doc(path, 1_700_000_000, serde_json::json!({"amount": 1}));
    let delete = change("del", path, None, Some(created.clone()));
    let create = change("cre", path, Some(created), None);
    assert_eq!(send(&h.router, &delete).await.0, StatusCode::OK);
    assert_eq!(send(&h.router, &create).await.0, StatusCode::OK);
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 0);
    assert_eq!(h.duck.changelog_rows("records").await.unwrap(), 2);
}

#[tokio::test]
async fn structured_mode_json_is_accepted() {
    let h = harness().await;
    let (headers, body) = to_structured(&good("r3"), &EventSource::local(), DataFormat::Json);
    let (status, body) = post(&h.router, headers, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 1);
}

#[tokio::test]
async fn bad_input_is_refused_quarantined_and_the_server_keeps_serving() {
    let h = harness().await;
    let (headers, body) = to_binary(&good("r4"), &EventSource::local());

    // Truncated protobuf.
    let (status, reply) = post(&h.router, headers.clone(), body[..body.len() / 2].to_vec()).await;
    assert_eq!((status, reply["outcome"].as_str()), (StatusCode::OK, Some("quarantined")), "{reply}");
    assert_eq!(reply["reason"], "malformed");

    // Wrong content type.
    let mut wrong_type = headers.clone();
    wrong_type.insert("content-type", HeaderValue::from_static("text/plain"));
    let (status, reply) = post(&h.router, wrong_type, body.clone()).await;
    assert_eq!((status, reply["outcome"].as_str()), (StatusCode::OK, Some("quarantined")), "{reply}");

    // Unknown event type.
    let mut unknown = headers.clone();
    unknown.insert("ce-type", HeaderValue::from_static("google.cloud.storage.object.v1.finalized"));
    let (status, reply) = post(&h.router, unknown, body.clone()).await;
    assert_eq!((status, reply["outcome"].as_str()), (StatusCode::OK, Some("quarantined")), "{reply}");
    assert_eq!(reply["reason"], "unknown_event_type");

    // A path no route matches.
    let stray = change("stray", "users/u1", Some(doc("users/u1", 1_700_000_000, serde_json::json!({}))), None);
    let (status, reply) = send(&h.router, &stray).await;
    assert_eq!((status, reply["outcome"].as_str()), (StatusCode::OK, Some("quarantined")), "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("matches no route"), "{reply}");

    // A promoted field of the wrong type.
    let path = "orgs/acme/records/bad";
    let schema = change("schema", path, Some(doc(path, 1_700_000_000, serde_json::json!({"amount": "ten"}))), None);
    let (status, reply) = send(&h.router, &schema).await;
    assert_eq!((status, reply["outcome"].as_str()), (StatusCode::OK, Some("quarantined")), "{reply}");
    assert_eq!(reply["reason"], "schema_violation");

    // Dated an hour past the function's clock (1_800_000_000 s): a wrong clock, whose
    // row would outrank every repair. Half a minute ahead is within the skew bound.
    let future_path = "orgs/acme/records/future";
    let future = change("future", future_path, Some(doc(future_path, 1_800_003_600, serde_json::json!({"amount": 1.0}))), None);
    let (status, reply) = send(&h.router, &future).await;
    assert_eq!((status, reply["outcome"].as_str()), (StatusCode::OK, Some("quarantined")), "{reply}");
    assert_eq!(reply["reason"], "from_the_future");
    assert!(reply["error"].as_str().unwrap().contains("Check the source's and the function's clocks"), "{reply}");
    let skewed = change("skewed", future_path, Some(doc(future_path, 1_800_000_030, serde_json::json!({"amount": 1.0}))), None);
    assert_eq!(send(&h.router, &skewed).await.0, StatusCode::OK);

    // A 20 MB body, declared and streamed.
    let big = vec![b'x'; 20 * 1024 * 1024];
    let (status, reply) = post(&h.router, headers.clone(), big).await;
    assert_eq!((status, reply["outcome"].as_str()), (StatusCode::OK, Some("quarantined")), "{reply}");

    // Not a CloudEvent at all.
    let (status, reply) = post(&h.router, HeaderMap::new(), b"hello".to_vec()).await;
    assert_eq!((status, reply["outcome"].as_str()), (StatusCode::OK, Some("quarantined")), "{reply}");

    // Still serving.
    assert_eq!(send(&h.router, &good("r5")).await.0, StatusCode::OK);
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 2);

    let mut reasons = quarantine_reasons(&h.errors).await;
    reasons.sort_by_key(|r| r.as_str());
    assert!(reasons.contains(&QuarantineReason::Malformed));
    assert!(reasons.contains(&QuarantineReason::UnsupportedContentType));
    assert!(reasons.contains(&QuarantineReason::UnknownEventType));
    assert!(reasons.contains(&QuarantineReason::Unroutable));
    assert!(reasons.contains(&QuarantineReason::SchemaViolation));
    assert!(reasons.contains(&QuarantineReason::Oversized));
    assert!(reasons.contains(&QuarantineReason::FromTheFuture));
    let oversized = h.errors.quarantined(100).await.unwrap().into_iter().find(|r| r.reason == QuarantineReason::Oversized).unwrap();
    assert_eq!(oversized.payload_bytes, 20 * 1024 * 1024);
    assert!(oversized.payload.len() <= converge_core::error_log::QUARANTINE_PAYLOAD_LIMIT);
}

#[tokio::test]
async fn a_redelivered_bad_event_merges_into_one_quarantine_record() {
    let h = harness().await;
    let path = "orgs/acme/records/bad";
    let schema = change("same-id", path, Some(doc(path, 1_700_000_000, serde_json::json!({"amount": "ten"}))), None);
    send(&h.router, &schema).await;
    send(&h.router, &schema).await;
    let records = h.errors.quarantined(10).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].attempts, 2);
}

#[tokio::test]
async fn a_failed_write_records_one_error_and_asks_for_redelivery() {
    let h = harness().await;
    h.warehouse.fail_next_appends(2, ErrorKind::Retryable);
    let event = good("r6");
    let (status, reply) = send(&h.router, &event).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert_eq!(reply["error_id"], "records_acme_r6_create");
    let (status, _) = send(&h.router, &event).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let open = h.errors.open_sync_errors(Some("acme")).await.unwrap();
    assert_eq!(open.len(), 1, "the same failure lands on the same record");
    assert_eq!(open[0].attempts, 2);
    assert!(open[0].error.contains("injected append failure"));
    // The platform's next redelivery succeeds.
    assert_eq!(send(&h.router, &event).await.0, StatusCode::OK);
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 1);
}

#[tokio::test]
async fn a_permanent_write_failure_is_recorded_then_acknowledged() {
    let h = harness().await;
    h.warehouse.fail_next_appends(1, ErrorKind::Permanent);
    let (status, reply) = send(&h.router, &good("r7")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply["outcome"], "error_recorded");
    assert_eq!(h.errors.open_sync_errors(None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_event_without_state_is_acknowledged_and_writes_nothing() {
    let h = harness().await;
    let empty = change("empty", "orgs/acme/records/ghost", None, None);
    let (status, reply) = send(&h.router, &empty).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["outcome"], "no_state");
    assert_eq!(h.duck.changelog_rows("records").await.unwrap(), 0);
}

#[tokio::test]
async fn health() {
    let h = harness().await;
    let response = h.router.clone().oneshot(Request::builder().uri("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

const EMULATOR_URI: &str = "/functions/projects/demo/triggers/converge-records";

#[tokio::test]
async fn the_emulator_route_reads_base64_bodies_and_the_eventarc_route_does_not() {
    let h = harness().await;
    let (headers, body) = to_binary(&good("b64"), &EventSource::local());
    let text = base64::engine::general_purpose::STANDARD.encode(&body).into_bytes();

    let (status, reply) = post_to(&h.router, EMULATOR_URI, headers.clone(), text.clone()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 1);

    // Real Eventarc sends raw protobuf: base64 text on `/` is malformed, not guessed at.
    let (headers, body) = to_binary(&good("b64-strict"), &EventSource::local());
    let text = base64::engine::general_purpose::STANDARD.encode(&body).into_bytes();
    let (status, reply) = post(&h.router, headers, text).await;
    assert_eq!((status, reply["outcome"].as_str()), (StatusCode::OK, Some("quarantined")), "{reply}");
    assert_eq!(quarantine_reasons(&h.errors).await, vec![QuarantineReason::Malformed]);
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 1);
}

#[tokio::test]
async fn the_emulator_route_quarantines_a_body_that_is_not_base64() {
    let h = harness().await;
    let (headers, body) = to_binary(&good("raw"), &EventSource::local());
    let (status, reply) = post_to(&h.router, EMULATOR_URI, headers, body).await;
    assert_eq!((status, reply["outcome"].as_str()), (StatusCode::OK, Some("quarantined")), "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("base64"), "{reply}");
    assert_eq!(quarantine_reasons(&h.errors).await, vec![QuarantineReason::Malformed]);
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 0);
}

#[tokio::test]
async fn the_emulators_empty_events_are_acknowledged_without_a_row() {
    // Deleting a missing document makes the emulator fire `written` with no document
    // at all; there is nothing to mirror and nothing wrong.
    let h = harness().await;
    let empty = change("empty", "orgs/acme/records/ghost", None, None);
    let (headers, body) = to_binary(&empty, &EventSource::local());
    let text = base64::engine::general_purpose::STANDARD.encode(&body).into_bytes();
    let (status, reply) = post_to(&h.router, EMULATOR_URI, headers, text).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["outcome"], "no_state");
    assert_eq!(h.duck.changelog_rows("records").await.unwrap(), 0);
    assert!(quarantine_reasons(&h.errors).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_row_the_warehouse_refuses_fails_alone_not_its_whole_group_commit() {
    let h = harness().await;
    h.warehouse.fail_rows_where(|row| row.doc_id == "bad", ErrorKind::Permanent);
    let events: Vec<DocumentChange> = (0..40).map(|i| good(&format!("ok{i:02}"))).chain([good("bad")]).collect();
    let answers = futures::future::join_all(events.iter().map(|event| send(&h.router, event))).await;
    let failed: Vec<&serde_json::Value> = answers.iter().filter(|(status, _)| *status != StatusCode::OK).map(|(_, body)| body).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["error_id"], "records_acme_bad_create");
    assert_eq!(h.duck.changelog_rows("records").await.unwrap(), 40);
    let open = h.errors.open_sync_errors(None).await.unwrap();
    assert_eq!(open.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["records_acme_bad_create"]);
}
