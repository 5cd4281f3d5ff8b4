//! The rebuild function's router without a socket, on real SQLite and DuckDB, with
//! Google-shaped tokens signed by keys this test generates and serves on loopback:
//! every way a token can be wrong, requests that are not requests, and rebuilds.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use converge_auth::testing::{google_claims, JwksServer};
use converge_auth::{IdTokenVerifier, KeySource, RsaSigningKey, VerifierConfig, GOOGLE_ISSUERS};
use converge_core::{DocWrite, MirrorConfig, SourceStore, SystemClock, Warehouse};
use converge_duckdb::DuckWarehouse;
use converge_events::EventSource;
use converge_rebuild::Rebuilder;
use converge_sqlite::SqliteStore;
use rebuild::{app, RebuildState};
use tower::ServiceExt;

const AUDIENCE: &str = "https://converge-rebuild-abc123-ew.a.run.app";
const OPERATOR: &str = "ops@example.com";

struct Harness {
    router: axum::Router,
    key: RsaSigningKey,
    warehouse: DuckWarehouse,
    source: SqliteStore,
    rebuilder: Arc<Rebuilder>,
    _jwks: JwksServer,
    _dir: tempfile::TempDir,
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let source = SqliteStore::open(&dir.path().join("source.sqlite"), Arc::new(SystemClock), EventSource::local()).unwrap();
    let warehouse = DuckWarehouse::open_in_memory().unwrap();
    let config = MirrorConfig::default();
    warehouse.ensure_tables(&config).await.unwrap();
    let fields = converge_core::value::fields_from_json(&serde_json::json!({"amount": 1})).unwrap();
    let writes = (0..50).map(|i| DocWrite::Set { path: format!("orgs/acme/records/r{i:02}"), fields: fields.clone() }).collect();
    source.apply(writes).await.unwrap();
    let key = RsaSigningKey::generate().unwrap().with_key_id("key-1");
    let jwks = JwksServer::start(key.jwk_set()).await;
    let verifier = IdTokenVerifier::new(
        VerifierConfig::new(KeySource::jwks(jwks.url()), GOOGLE_ISSUERS, AUDIENCE, [OPERATOR]),
        Arc::new(SystemClock),
    )
    .unwrap();
    let rebuilder = Arc::new(Rebuilder::new(Arc::new(source.clone()), Arc::new(warehouse.clone()), config, Arc::new(SystemClock)));
    let router = app(RebuildState { rebuilder: rebuilder.clone(), verifier });
    Harness { router, key, warehouse, source, rebuilder, _jwks: jwks, _dir: dir }
}

impl Harness {
    fn token(&self, claims: serde_json::Value) -> String {
        self.key.sign(&claims).unwrap()
    }

    fn valid(&self) -> String {
        self.token(google_claims(OPERATOR, AUDIENCE, now() - 10, 3600))
    }

    async fn post(&self, authorization: Option<&str>, body: impl Into<Body>) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method("POST").uri("/").header("content-type", "application/json");
        if let Some(token) = authorization {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = self.router.clone().oneshot(request.body(body.into()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }
}

const ACME: &str = r#"{"tenant": "acme"}"#;

#[tokio::test]
async fn an_allowed_caller_rebuilds_a_tenant() {
    let h = harness().await;
    let (status, run) = h.post(Some(&h.valid()), ACME).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!((run["documents"].as_u64(), run["rows_written"].as_u64(), run["tombstones"].as_u64()), (Some(50), Some(50), Some(0)));
    assert_eq!(run["outcome"], "ok");
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 50);
    assert_eq!(h.warehouse.runs("rebuild", 5).await.unwrap()[0].batch_id, run["batch_id"].as_str().unwrap());
}

#[tokio::test]
async fn every_bad_token_is_401_and_says_nothing_more() {
    let h = harness().await;
    let other_key = RsaSigningKey::generate().unwrap().with_key_id("key-1");
    let mut wrong_issuer = google_claims(OPERATOR, AUDIENCE, now() - 10, 3600);
    wrong_issuer["iss"] = "https://evil.example.com".into();
    let unknown_kid = RsaSigningKey::generate().unwrap().with_key_id("key-never-published");
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("not a JWT", Some("not-a-token".into())),
        ("expired", Some(h.token(google_claims(OPERATOR, AUDIENCE, now() - 7200, 3600)))),
        ("wrong audience", Some(h.token(google_claims(OPERATOR, "https://other-service.a.run.app", now() - 10, 3600)))),
        ("wrong issuer", Some(h.token(wrong_issuer))),
        ("bad signature (another key, same kid)", Some(other_key.sign(&google_claims(OPERATOR, AUDIENCE, now() - 10, 3600)).unwrap())),
        ("unknown key id", Some(unknown_kid.sign(&google_claims(OPERATOR, AUDIENCE, now() - 10, 3600)).unwrap())),
    ];
    for (case, token) in cases {
        let (status, body) = h.post(token.as_deref(), ACME).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
        let text = body.to_string();
        for leak in ["expired", "audience", "issuer", "signature", "kid", "key"] {
            assert!(!text.to_lowercase().contains(leak), "{case}: the body leaks `{leak}`: {text}");
        }
    }
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 0, "nothing ran");
}

#[tokio::test]
async fn a_valid_token_of_a_caller_not_allowed_is_403() {
    let h = harness().await;
    let stranger = h.token(google_claims("someone@example.com", AUDIENCE, now() - 10, 3600));
    let (status, body) = h.post(Some(&stranger), ACME).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!body.to_string().contains("someone@example.com"));
    // The allow-list ignores case, as email addresses do.
    let shouting = h.token(google_claims("OPS@EXAMPLE.COM", AUDIENCE, now() - 10, 3600));
    assert_eq!(h.post(Some(&shouting), ACME).await.0, StatusCode::OK);
}

#[tokio::test]
async fn requests_that_are_not_requests() {
    let h = harness().await;
    let token = h.valid();
    let huge = format!(r#"{{"tenant": "{}"}}"#, "a".repeat(rebuild::MAX_BODY));
    assert_eq!(h.post(Some(&token), huge.clone()).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.post(None, huge).await.0, StatusCode::UNAUTHORIZED, "authentication comes first");
    for (body, expected) in [
        ("{", "expected {"),
        (r#"{"tenant": 7}"#, "expected {"),
        (r#"{"tenant": "acme", "drop": true}"#, "unknown field"),
        (r#"{"tenant": "../../etc/passwd"}"#, "not a document id"),
        (r#"{"tenant": "acme/records/r01"}"#, "not a document id"),
        (r#"{"tenant": "acme", "tables": ["records; DROP TABLE records"]}"#, "no mirrored table"),
    ] {
        let (status, answer) = h.post(Some(&token), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(expected), "{body}: {answer}");
    }
    // SQL in a tenant id is just an id with no documents.
    let (status, run) = h.post(Some(&token), r#"{"tenant": "acme' OR '1'='1"}"#).await;
    assert_eq!((status, run["documents"].as_u64()), (StatusCode::OK, Some(0)), "{run}");
    assert_eq!(h.warehouse.latest_count("records", "acme").await.unwrap(), 0, "acme untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rebuild_of_a_running_tenant_is_409() {
    let h = harness().await;
    let token = h.valid();
    let slow = {
        let (router, token) = (h.router.clone(), token.clone());
        tokio::spawn(async move {
            let request = Request::builder()
                .method("POST")
                .uri("/")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(r#"{"tenant": "acme", "max_docs_per_second": 50}"#))
                .unwrap();
            router.oneshot(request).await.unwrap().status()
        })
    };
    while h.rebuilder.progress("acme").is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = h.post(Some(&token), ACME).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    assert_eq!(h.post(Some(&token), ACME).await.0, StatusCode::OK, "free again");
    drop(h.source);
}
