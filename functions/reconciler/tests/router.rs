//! The reconciler's router without a socket, on real SQLite and DuckDB: both trigger
//! forms, bad requests, a run that repairs, full and incremental runs by the request's
//! mode, and the error log's retry pass on its own path.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use converge_core::{Clock, DocWrite, ErrorLog, MirrorConfig, SourceStore, SyncErrorRecord, SystemClock, Timestamp, Value, Warehouse};
use converge_duckdb::DuckWarehouse;
use converge_events::EventSource;
use converge_reconcile::Reconciler;
use converge_sqlite::SqliteStore;
use tower::ServiceExt;

async fn router() -> (axum::Router, SqliteStore, DuckWarehouse, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let source = SqliteStore::open(&dir.path().join("source.sqlite"), Arc::new(SystemClock), EventSource::local()).unwrap();
    let warehouse = DuckWarehouse::open_in_memory().unwrap();
    let config = MirrorConfig::default();
    warehouse.ensure_tables(&config).await.unwrap();
    let fields = converge_core::value::fields_from_json(&serde_json::json!({"amount": 1})).unwrap();
    source
        .apply(vec![
            DocWrite::Set { path: "orgs/acme/records/a".into(), fields: fields.clone() },
            DocWrite::Set { path: "orgs/globex/records/b".into(), fields },
        ])
        .await
        .unwrap();
    let reconciler = Reconciler::new(Arc::new(source.clone()), Arc::new(source.clone()), Arc::new(warehouse.clone()), config, Arc::new(SystemClock));
    (reconciler::app(Arc::new(reconciler)), source, warehouse, dir)
}

async fn post(router: &axum::Router, headers: &[(&str, &str)], body: String) -> (StatusCode, serde_json::Value) {
    post_to(router, "/", headers, body).await
}

async fn post_to(router: &axum::Router, path: &str, headers: &[(&str, &str)], body: String) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method("POST").uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_scheduler_request_reconciles_one_tenant_and_a_dry_run_writes_nothing() {
    let (router, _source, warehouse, _dir) = router().await;
    let (status, run) = post(&router, &[("content-type", "application/json")], r#"{"tenant": "acme", "dry_run": true}"#.into()).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!((run["missing"].as_u64(), run["dry_run"].as_bool()), (Some(1), Some(true)));
    assert_eq!(warehouse.latest_count("records", "acme").await.unwrap(), 0);

    let schedule = [("content-type", "application/json"), ("x-cloudscheduler-scheduletime", "2026-11-24T03:00:00Z")];
    let (status, first) = post(&router, &schedule, r#"{"tenant": "acme"}"#.into()).await;
    assert_eq!((status, first["repaired"].as_u64()), (StatusCode::OK, Some(1)), "{first}");
    assert_eq!(warehouse.latest_count("records", "acme").await.unwrap(), 1);
    assert_eq!(warehouse.latest_count("records", "globex").await.unwrap(), 0, "one tenant only");
    // The same schedule time is the same batch.
    let (_, again) = post(&router, &schedule, r#"{"tenant": "acme"}"#.into()).await;
    assert_eq!(again["batch_id"], first["batch_id"]);
    assert_eq!(again["missing"].as_u64(), Some(0));
}

#[tokio::test]
async fn a_pubsub_cloudevent_reconciles_every_tenant() {
    let (router, _source, warehouse, _dir) = router().await;
    let data = base64::engine::general_purpose::STANDARD.encode("");
    let body = serde_json::json!({"message": {"data": data, "messageId": "m-1", "publishTime": "2026-11-24T03:00:00Z"}, "subscription": "projects/p/subscriptions/s"});
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-type", reconciler::PUBSUB_EVENT_TYPE),
        ("ce-source", "//pubsub.googleapis.com/projects/p/topics/converge-reconcile"),
        ("ce-id", "m-1"),
        ("content-type", "application/json"),
    ];
    let (status, run) = post(&router, &headers, body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!((run["scope"].as_str(), run["repaired"].as_u64()), (Some("*"), Some(2)));
    assert_eq!(warehouse.latest_count("records", "globex").await.unwrap(), 1);
}

#[tokio::test]
async fn bad_requests_are_refused_with_what_was_expected() {
    let (router, _source, _warehouse, _dir) = router().await;
    for (headers, body, expected) in [
        (vec![], "{not json".to_owned(), "expected a JSON request"),
        (vec![], r#"{"tenant": "acme", "drop": true}"#.to_owned(), "unknown field"),
        (vec![], r#"{"tenant": "../etc"}"#.to_owned(), "not a document id"),
        (vec![], r#"{"mode": "fast"}"#.to_owned(), "unknown variant `fast`, expected `full` or `incremental`"),
        (vec![("ce-type", "google.cloud.storage.object.v1.finalized")], "{}".to_owned(), "unexpected CloudEvent type"),
        (vec![("ce-type", reconciler::PUBSUB_EVENT_TYPE)], r#"{"message": {"data": "%%%"}}"#.to_owned(), "not base64"),
    ] {
        let (status, reply) = post(&router, &headers, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert!(reply["error"].as_str().unwrap().contains(expected), "{reply}");
    }
    let (status, _) = post(&router, &[], "x".repeat(100 * 1024)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// The request's `mode` goes into the run: none is a full run (every request was one
/// before there were modes), `"incremental"` reads what changed since the tenant's
/// verified point, which a full run records. The two modes of one schedule time are
/// two batches, so the weekly full run never replaces the daily incremental one's record.
#[tokio::test]
async fn the_request_s_mode_picks_a_full_or_an_incremental_run() {
    let (router, source, warehouse, _dir) = router().await;
    // No verified point yet: an incremental run reads the tenant in full, and says why.
    let (status, first) = post(&router, &[], r#"{"tenant": "acme", "mode": "incremental", "dry_run": true}"#.into()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!((first["mode"].as_str(), first["tenants"][0]["mode"].as_str()), (Some("incremental"), Some("full")), "{first}");
    assert!(first["tenants"][0]["full_because"].as_str().unwrap().contains("no verified point"), "{first}");

    let schedule = [("x-cloudscheduler-scheduletime", "2026-11-29T03:00:00Z")];
    let (status, full) = post(&router, &schedule, r#"{"tenant": "acme"}"#.into()).await;
    assert_eq!((status, full["mode"].as_str(), full["repaired"].as_u64()), (StatusCode::OK, Some("full"), Some(1)), "{full}");
    let points = warehouse.verified_points("records").await.unwrap();
    assert_eq!(points.iter().map(|p| p.tenant.as_str()).collect::<Vec<_>>(), ["acme"], "{points:?}");

    // A write since, as the app makes it (its change field set), that never reached
    // the warehouse.
    let mut fields = converge_core::value::fields_from_json(&serde_json::json!({"amount": 2})).unwrap();
    fields.insert("updated_at".into(), Value::Timestamp(SystemClock.now()));
    source.apply(vec![DocWrite::Set { path: "orgs/acme/records/c".into(), fields }]).await.unwrap();
    let (status, run) = post(&router, &schedule, r#"{"tenant": "acme", "mode": "incremental"}"#.into()).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let tenant = &run["tenants"][0];
    assert_eq!((run["mode"].as_str(), tenant["mode"].as_str(), tenant["full_because"].as_str()), (Some("incremental"), Some("incremental"), None), "{run}");
    assert_eq!((run["missing"].as_u64(), run["repaired"].as_u64(), tenant["changed_docs"].as_u64()), (Some(1), Some(1), Some(1)), "{run}");
    assert_ne!(run["batch_id"], full["batch_id"], "same schedule time, another mode: another batch");
    assert_eq!(warehouse.latest_count("records", "acme").await.unwrap(), 2);
}

/// An open record of a lost create of `orgs/{tenant}/records/{doc_id}`.
fn lost_create(tenant: &str, doc_id: &str) -> SyncErrorRecord {
    SyncErrorRecord {
        id: converge_core::change::error_id("records", tenant, doc_id, "create"),
        tenant: tenant.into(),
        doc_id: doc_id.into(),
        doc_path: format!("orgs/{tenant}/records/{doc_id}"),
        action: "create".into(),
        event_id: format!("lost-{doc_id}"),
        error: "warehouse unavailable".into(),
        attempts: 1,
        first_seen: Timestamp::new(1_700_000_000, 0),
        last_seen: Timestamp::new(1_700_000_000, 0),
        resolved: false,
    }
}

#[tokio::test]
async fn the_retry_errors_path_appends_what_open_records_name_and_resolves_them() {
    let (router, source, warehouse, _dir) = router().await;
    source.record_sync_error(lost_create("acme", "a")).await.unwrap();
    source.record_sync_error(lost_create("globex", "b")).await.unwrap();

    let schedule = [("content-type", "application/json"), ("x-cloudscheduler-scheduletime", "2026-11-24T03:10:00Z")];
    let (status, pass) = post_to(&router, reconciler::RETRY_ERRORS_PATH, &schedule, r#"{"tenant": "acme"}"#.into()).await;
    assert_eq!(status, StatusCode::OK, "{pass}");
    assert_eq!((pass["scope"].as_str(), pass["open_errors"].as_u64(), pass["rows_appended"].as_u64(), pass["errors_resolved"].as_u64()), (Some("acme"), Some(1), Some(1), Some(1)), "{pass}");
    assert_eq!(pass["outcome"], "ok");
    assert_eq!(warehouse.latest_count("records", "acme").await.unwrap(), 1);
    assert_eq!(warehouse.latest_count("records", "globex").await.unwrap(), 0, "one tenant only");
    let open: Vec<String> = source.open_sync_errors(None).await.unwrap().into_iter().map(|r| r.tenant).collect();
    assert_eq!(open, ["globex"]);
    let runs = warehouse.runs(converge_reconcile::RETRY_KIND, 10).await.unwrap();
    assert_eq!((runs.len(), runs[0].batch_id.as_str()), (1, pass["batch_id"].as_str().unwrap()), "recorded as a retry_errors run");

    // A retried tick (same schedule time) is the same batch, and finds nothing left.
    let (_, again) = post_to(&router, reconciler::RETRY_ERRORS_PATH, &schedule, r#"{"tenant": "acme"}"#.into()).await;
    assert_eq!((again["batch_id"].clone(), again["open_errors"].as_u64()), (pass["batch_id"].clone(), Some(0)), "{again}");

    // A bare tick through Pub/Sub takes every tenant's records.
    let data = base64::engine::general_purpose::STANDARD.encode("");
    let body = serde_json::json!({"message": {"data": data, "messageId": "m-2", "publishTime": "2026-11-24T03:20:00Z"}, "subscription": "projects/p/subscriptions/s"});
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-type", reconciler::PUBSUB_EVENT_TYPE),
        ("ce-source", "//pubsub.googleapis.com/projects/p/topics/converge-retry-errors"),
        ("ce-id", "m-2"),
        ("content-type", "application/json"),
    ];
    let (status, every) = post_to(&router, reconciler::RETRY_ERRORS_PATH, &headers, body.to_string()).await;
    assert_eq!((status, every["scope"].as_str(), every["errors_resolved"].as_u64()), (StatusCode::OK, Some("*"), Some(1)), "{every}");
    assert!(source.open_sync_errors(None).await.unwrap().is_empty());
    assert_eq!(warehouse.latest_count("records", "globex").await.unwrap(), 1);
}

#[tokio::test]
async fn the_retry_errors_path_refuses_bad_requests_with_what_was_expected() {
    let (router, _source, _warehouse, _dir) = router().await;
    for (body, expected) in [
        ("{not json", "expected a JSON request {\"tenant\": \"…\"} (optional) for the sync error retry pass"),
        (r#"{"tenant": "acme", "dry_run": true}"#, "unknown field `dry_run`"),
        (r#"{"tenant": ""}"#, "not a document id"),
    ] {
        let (status, reply) = post_to(&router, reconciler::RETRY_ERRORS_PATH, &[], body.to_owned()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert!(reply["error"].as_str().unwrap().contains(expected), "{reply}");
    }
    let (status, _) = post_to(&router, reconciler::RETRY_ERRORS_PATH, &[], "x".repeat(100 * 1024)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn the_refresh_and_compact_paths_keep_the_current_table_and_prune_by_the_horizon() {
    let (router, _source, warehouse, _dir) = router().await;
    // Two versions of one record, long ago, and a record of today.
    let old = |id: &str, secs: i64, amount: f64| {
        let config = converge_core::MirrorConfig::default();
        let path = format!("orgs/acme/records/{id}");
        let doc = converge_core::Document {
            path: path.clone(),
            fields: converge_core::value::fields_from_json(&serde_json::json!({"amount": amount})).unwrap(),
            create_time: converge_core::Timestamp::new(secs, 0),
            update_time: converge_core::Timestamp::new(secs, 0),
        };
        let ctx = converge_core::RowContext { ingested_at: converge_core::Timestamp::new(secs + 1, 0), run_id: "t".into(), code_version: "t".into() };
        converge_core::ChangeRow::live(&config.route(&path).unwrap(), converge_core::Op::Update, &doc, &format!("{id}-{secs}"), &ctx).unwrap()
    };
    let now = converge_core::Clock::now(&converge_core::SystemClock).as_micros() / 1_000_000;
    warehouse.append(vec![old("a", 1_600_000_000, 1.0), old("a", 1_600_000_100, 2.0), old("b", now - 60, 3.0)]).await.unwrap();

    let schedule = [("content-type", "application/json"), ("x-cloudscheduler-scheduletime", "2026-12-07T04:00:00Z")];
    let (status, refresh) = post_to(&router, reconciler::REFRESH_CURRENT_PATH, &schedule, String::new()).await;
    assert_eq!(status, StatusCode::OK, "{refresh}");
    assert_eq!((refresh["documents_merged"].as_u64(), refresh["tables"][0]["current_rows"].as_u64()), (Some(2), Some(2)), "{refresh}");
    assert_eq!(warehouse.runs(converge_retention::REFRESH_KIND, 10).await.unwrap().len(), 1);

    let (status, run) = post_to(&router, reconciler::COMPACT_PATH, &schedule, r#"{"retain_days": 30}"#.into()).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!((run["rows_before"].as_u64(), run["superseded_pruned"].as_u64(), run["rows_after"].as_u64(), run["retain_days"].as_u64()), (Some(3), Some(1), Some(2), Some(30)), "{run}");
    assert_eq!(warehouse.latest_count("records", "acme").await.unwrap(), 2);
    assert_eq!(warehouse.runs(converge_retention::COMPACT_KIND, 10).await.unwrap()[0].batch_id, run["batch_id"].as_str().unwrap());

    for (path, body, expected) in [
        (reconciler::COMPACT_PATH, r#"{"retain_days": -1}"#, "retain_days"),
        (reconciler::COMPACT_PATH, r#"{"days": 3}"#, "unknown field `days`"),
        (reconciler::REFRESH_CURRENT_PATH, r#"{"full": "yes"}"#, "full"),
    ] {
        let (status, reply) = post_to(&router, path, &[], body.to_owned()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
        assert!(reply["error"].as_str().unwrap().contains(expected), "{path} {body}: {reply}");
    }
}
