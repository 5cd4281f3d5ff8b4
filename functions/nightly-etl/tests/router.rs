//! The nightly ETL function's router without a socket, on real SQLite and DuckDB, with
//! Google-shaped tokens signed by a key this test generates and serves on loopback.

use converge_core::RunOutcome;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use converge_auth::testing::{google_claims, JwksServer};
use converge_auth::{IdTokenVerifier, KeySource, RsaSigningKey, VerifierConfig, GOOGLE_ISSUERS};
use converge_core::value::fields_from_json;
use converge_core::{DocWrite, MetricsWarehouse, MirrorConfig, SourceStore, SystemClock, Warehouse};
use converge_duckdb::DuckWarehouse;
use converge_etl::{EtlBackends, EtlRunner};
use converge_events::EventSource;
use converge_sqlite::SqliteStore;
use nightly_etl::{app, EtlState, PUBSUB_EVENT_TYPE, SCHEDULE_TIME_HEADER};
use tower::ServiceExt;

const AUDIENCE: &str = "https://converge-nightly-etl-abc123-ew.a.run.app";
const SCHEDULER: &str = "converge-scheduler@project.iam.gserviceaccount.com";

struct Harness {
    router: axum::Router,
    key: RsaSigningKey,
    source: SqliteStore,
    warehouse: DuckWarehouse,
    _jwks: JwksServer,
    _dir: tempfile::TempDir,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn page(date: &str, url: &str, sessions: i64) -> converge_core::Fields {
    fields_from_json(&serde_json::json!({
        "date": date, "page_location": url, "sessions": sessions, "screen_page_views": 2, "engaged_sessions": 1, "bounces": 0,
        "conversions": 0, "purchase_revenue": 0.0, "entrances": 1, "exits": 1, "page_load_time_ms_sum": 900, "page_load_samples": 1
    }))
    .unwrap()
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let source = SqliteStore::open(&dir.path().join("source.sqlite"), Arc::new(SystemClock), EventSource::local()).unwrap();
    let warehouse = DuckWarehouse::open_in_memory().unwrap();
    warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap();
    warehouse.ensure_metrics_tables().await.unwrap();
    source
        .apply(vec![
            DocWrite::Set { path: "orgs/acme/ga4_pages/a".into(), fields: page("2025-06-01", "https://shop.example/pricing?x=1", 3) },
            DocWrite::Set { path: "orgs/acme/ga4_pages/b".into(), fields: page("2025-06-01", "https://shop.example/pricing?x=2", 4) },
        ])
        .await
        .unwrap();
    let key = RsaSigningKey::generate().unwrap().with_key_id("key-1");
    let jwks = JwksServer::start(key.jwk_set()).await;
    let verifier =
        IdTokenVerifier::new(VerifierConfig::new(KeySource::jwks(jwks.url()), GOOGLE_ISSUERS, AUDIENCE, [SCHEDULER]), Arc::new(SystemClock)).unwrap();
    let backends = EtlBackends {
        raw: Arc::new(source.clone()),
        source: Arc::new(source.clone()),
        errors: Arc::new(source.clone()),
        warehouse: Arc::new(warehouse.clone()),
        metrics: Arc::new(warehouse.clone()),
    };
    let runner = Arc::new(EtlRunner::new(backends, Arc::new(SystemClock)));
    let router = app(EtlState { runner, verifier, clock: Arc::new(SystemClock) });
    Harness { router, key, source, warehouse, _jwks: jwks, _dir: dir }
}

impl Harness {
    fn valid(&self) -> String {
        self.key.sign(&google_claims(SCHEDULER, AUDIENCE, now() - 10, 3600)).unwrap()
    }

    async fn post(&self, token: Option<&str>, headers: &[(&str, &str)], body: impl Into<Body>) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method("POST").uri("/").header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.router.clone().oneshot(request.body(body.into()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }
}

#[tokio::test]
async fn a_scheduler_tick_loads_yesterday_and_answers_the_run() {
    let h = harness().await;
    let (status, run) = h.post(Some(&h.valid()), &[(SCHEDULE_TIME_HEADER, "2025-06-02T02:00:00Z")], "").await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!((run["from"].as_str(), run["to"].as_str()), (Some("2025-05-29"), Some("2025-06-01")), "yesterday and the late window");
    assert_eq!(run["rows_in"], 2);
    assert_eq!(run["runs"].as_array().unwrap().len(), 4, "one run record per (tenant, date)");
    let metrics = h.warehouse.slice_metrics("acme", "2025-06-01".parse().unwrap()).await.unwrap();
    let sessions = metrics.iter().find(|m| m.entity_id == "/pricing" && m.metric == "sessions").unwrap();
    assert_eq!(sessions.value, 7.0);
    // The same tick again: the same end state.
    let (status, again) = h.post(Some(&h.valid()), &[(SCHEDULE_TIME_HEADER, "2025-06-02T02:00:00Z")], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["runs"][3]["batch_id"], run["runs"][3]["batch_id"]);
    assert_eq!(h.warehouse.slice_metrics("acme", "2025-06-01".parse().unwrap()).await.unwrap(), metrics);
}

#[tokio::test]
async fn the_pubsub_form_is_accepted() {
    let h = harness().await;
    let data = base64::engine::general_purpose::STANDARD.encode(br#"{"tenants": ["acme"], "late_days": 0}"#);
    let body = serde_json::json!({"message": {"data": data, "messageId": "m1", "publishTime": "2025-06-02T02:00:03Z"}, "subscription": "s"});
    let (status, run) = h.post(Some(&h.valid()), &[("ce-type", PUBSUB_EVENT_TYPE), ("ce-id", "m1")], body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!((run["from"].as_str(), run["to"].as_str(), run["slices"].as_u64()), (Some("2025-06-01"), Some("2025-06-01"), Some(1)));
}

#[tokio::test]
async fn a_failed_quality_check_is_a_422_with_its_run_record() {
    let h = harness().await;
    // The same export row under a second document id.
    h.source
        .apply(vec![DocWrite::Set { path: "orgs/acme/ga4_pages/copy".into(), fields: page("2025-06-01", "https://shop.example/pricing?x=1", 3) }])
        .await
        .unwrap();
    let (status, run) = h.post(Some(&h.valid()), &[], r#"{"date": "2025-06-01", "late_days": 0}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{run}");
    assert_eq!(run["outcome"], "failed");
    assert_eq!(run["runs"][0]["outcome"], "failed");
    let checks = run["runs"][0]["report"]["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["name"] == "duplicate_keys" && c["passed"] == false), "{checks:?}");
    assert!(h.warehouse.slice_metrics("acme", "2025-06-01".parse().unwrap()).await.unwrap().is_empty(), "nothing loaded");
    assert_eq!(h.warehouse.runs("etl", 5).await.unwrap()[0].outcome, RunOutcome::Failed);
}

#[tokio::test]
async fn authentication_comes_first_then_the_request_is_checked() {
    let h = harness().await;
    assert_eq!(h.post(None, &[], r#"{"date": "2025-06-01"}"#).await.0, StatusCode::UNAUTHORIZED);
    let stranger = h.key.sign(&google_claims("someone@example.com", AUDIENCE, now() - 10, 3600)).unwrap();
    assert_eq!(h.post(Some(&stranger), &[], "{}").await.0, StatusCode::FORBIDDEN);
    assert_eq!(h.post(None, &[], "not json").await.0, StatusCode::UNAUTHORIZED, "an unauthenticated caller learns nothing");
    let (status, reply) = h.post(Some(&h.valid()), &[], "not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reply["error"].as_str().unwrap().contains("expected an empty body or a JSON object"), "{reply}");
    let (status, reply) = h.post(Some(&h.valid()), &[], r#"{"from": "2025-06-05", "to": "2025-06-01"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let (status, _) = h.post(Some(&h.valid()), &[], r#"{"date": "2025-06-01", "tenants": ["a/b"]}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.post(Some(&h.valid()), &[], vec![b' '; nightly_etl::MAX_BODY + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn health() {
    let h = harness().await;
    let response = h.router.clone().oneshot(Request::builder().uri("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
