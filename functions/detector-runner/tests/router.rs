//! The detector runner function's router without a socket, on real SQLite and DuckDB,
//! with Google-shaped tokens signed by a key this test generates and serves on loopback.

use converge_core::RunOutcome;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use converge_auth::testing::{google_claims, JwksServer};
use converge_auth::{IdTokenVerifier, KeySource, RsaSigningKey, VerifierConfig, GOOGLE_ISSUERS};
use converge_core::{MirrorConfig, SystemClock, Warehouse};
use converge_detect::{Pack, SHIPPED_PACK_TOML};
use converge_detector_runner::{DetectorRunner, RunnerOptions};
use converge_duckdb::DuckWarehouse;
use converge_events::EventSource;
use converge_sqlite::SqliteStore;
use detector_runner::{app, DetectorRunnerState};
use tower::ServiceExt;

const AUDIENCE: &str = "https://converge-detector-runner-abc123-ew.a.run.app";
const SCHEDULER: &str = "converge-scheduler@project.iam.gserviceaccount.com";

struct Harness {
    router: axum::Router,
    key: RsaSigningKey,
    warehouse: DuckWarehouse,
    _jwks: JwksServer,
    _dir: tempfile::TempDir,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A raw-SQL detector reading a column that does not exist.
const BROKEN: &str = r#"
[[detector]]
id = "broken_reader"
title = "Reads a missing column"
entity_type = "page"
severity = "info"
message = "{entity_id}"
windows = { recent_days = 7 }

[detector.raw_sql]
duckdb = """
SELECT tenant, entity_type, entity_id, no_such_column AS recent_value, NULL::DOUBLE AS baseline_value,
  NULL::DOUBLE AS volume, NULL::DOUBLE AS reference_value
FROM daily_entity_metrics WHERE date = CAST($1 AS DATE) AND (CAST($2 AS VARCHAR) IS NULL OR tenant = CAST($2 AS VARCHAR))
"""
"#;

async fn harness(pack: Pack) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("source.sqlite"), Arc::new(SystemClock), EventSource::local()).unwrap();
    let warehouse = DuckWarehouse::open_in_memory().unwrap();
    warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap();
    warehouse
        .reader()
        .unwrap()
        .execute_batch(
            "CREATE TABLE daily_entity_metrics (date DATE, tenant VARCHAR, entity_type VARCHAR, entity_id VARCHAR, metric VARCHAR, value DOUBLE);
             INSERT INTO daily_entity_metrics VALUES ('2025-03-31', 'acme', 'page', '/', 'sessions', 100);",
        )
        .unwrap();
    let key = RsaSigningKey::generate().unwrap().with_key_id("key-1");
    let jwks = JwksServer::start(key.jwk_set()).await;
    let verifier =
        IdTokenVerifier::new(VerifierConfig::new(KeySource::jwks(jwks.url()), GOOGLE_ISSUERS, AUDIENCE, [SCHEDULER]), Arc::new(SystemClock)).unwrap();
    let runner = Arc::new(DetectorRunner::new(
        pack,
        Arc::new(warehouse.clone()),
        Arc::new(warehouse.clone()),
        Arc::new(store),
        Arc::new(SystemClock),
        RunnerOptions::default(),
    ));
    let router = app(DetectorRunnerState { runner, verifier, clock: Arc::new(SystemClock) });
    Harness { router, key, warehouse, _jwks: jwks, _dir: dir }
}

impl Harness {
    fn valid(&self) -> String {
        self.key.sign(&google_claims(SCHEDULER, AUDIENCE, now() - 10, 3600)).unwrap()
    }

    async fn post(&self, token: Option<&str>, headers: &[(&str, &str)], body: &str) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method("POST").uri("/").header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.router.clone().oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }
}

#[tokio::test]
async fn without_a_valid_token_nothing_runs() {
    let h = harness(Pack::shipped().unwrap()).await;
    assert_eq!(h.post(None, &[], "").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.post(Some("not.a.token"), &[], "").await.0, StatusCode::UNAUTHORIZED);
    let stranger = h.key.sign(&google_claims("someone@example.com", AUDIENCE, now() - 10, 3600)).unwrap();
    assert_eq!(h.post(Some(&stranger), &[], "").await.0, StatusCode::FORBIDDEN);
    assert!(h.warehouse.runs("detectors", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn requests_that_are_not_requests_are_refused() {
    let h = harness(Pack::shipped().unwrap()).await;
    let token = h.valid();
    let (status, body) = h.post(Some(&token), &[], r#"{"as_of": "March"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().contains("expected a JSON request"), "{body}");
    assert_eq!(h.post(Some(&token), &[], r#"{"detectors": ["nope"]}"#).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(h.post(Some(&token), &[("x-cloudscheduler-scheduletime", "soon")], "").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_scheduler_tick_runs_the_pack_over_the_day_before_and_records_it() {
    let h = harness(Pack::shipped().unwrap()).await;
    let token = h.valid();
    let (status, body) = h.post(Some(&token), &[("x-cloudscheduler-scheduletime", "2025-04-01T02:00:00Z")], "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["as_of"].as_str(), body["outcome"].as_str(), body["run"].as_u64()), (Some("2025-03-31"), Some("ok"), Some(34)));
    let records = h.warehouse.runs("detectors", 10).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].batch_id, body["batch_id"].as_str().unwrap());
    assert_eq!(records[0].batch_id, converge_core::batch_id("detectors", "*", "2025-03-31"));
}

#[tokio::test]
async fn a_partial_pass_with_a_permanently_broken_detector_answers_200_and_names_it() {
    let pack = Pack::from_toml("test pack", &format!("{SHIPPED_PACK_TOML}\n{BROKEN}")).unwrap();
    let h = harness(pack).await;
    let (status, body) = h.post(Some(&h.valid()), &[], r#"{"as_of": "2025-03-31"}"#).await;
    assert_eq!(status, StatusCode::OK, "a retry would fail the same way: {body}");
    assert_eq!((body["outcome"].as_str(), body["failed"].as_u64()), (Some("partial"), Some(1)));
    assert_eq!(body["failures"][0]["detector"], "broken_reader");
    assert_eq!(h.warehouse.runs("detectors", 1).await.unwrap()[0].outcome, RunOutcome::Partial);
}

#[tokio::test]
async fn a_pass_where_every_detector_fails_is_a_500() {
    let h = harness(Pack::shipped().unwrap()).await;
    h.warehouse.reader().unwrap().execute_batch("DROP TABLE daily_entity_metrics").unwrap();
    let (status, body) = h.post(Some(&h.valid()), &[], r#"{"as_of": "2025-03-31"}"#).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!((body["outcome"].as_str(), body["failed"].as_u64()), (Some("failed"), Some(34)));
}
