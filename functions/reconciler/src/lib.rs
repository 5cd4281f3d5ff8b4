//! The reconciler function's router: decode the trigger, run the reconciler once, map
//! the outcome to a status. All behaviour lives in `converge-reconcile`.
//!
//! Triggers accepted on `POST /`:
//! - Cloud Scheduler through Pub/Sub and Eventarc: a CloudEvent
//!   `google.cloud.pubsub.topic.v1.messagePublished` in binary mode, whose message data
//!   (base64) is the JSON request below, or empty for every tenant. The message id is
//!   the run's key: a redelivered message is the same batch.
//! - Cloud Scheduler's direct HTTP target (or an operator): the JSON request itself,
//!   `{"tenant": "acme", "dry_run": false}`, both optional; the
//!   `X-CloudScheduler-ScheduleTime` header, when present, is the run's key.
//!
//! Invocation is authenticated by Cloud Run's IAM invoker check (the Scheduler and
//! Eventarc service accounts hold `run.invoker`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use converge_reconcile::{Reconciler, RunOptions};
use serde::Deserialize;
use serde_json::json;

/// The CloudEvent type of a Pub/Sub message delivered through Eventarc.
pub use converge_http::pubsub::MESSAGE_PUBLISHED as PUBSUB_EVENT_TYPE;
/// Largest accepted request: a trigger is a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

/// What a trigger asks for.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    pub tenant: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// The mass-tombstoning guard's share (see `converge_core::drift::OrphanGuard`).
    #[serde(default)]
    pub max_orphan_share: Option<f64>,
}

/// `POST /` and `GET /healthz`.
pub fn app(reconciler: Arc<Reconciler>) -> Router {
    Router::new()
        .route("/", post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .merge(converge_http::health_routes())
        .with_state(reconciler)
}

async fn receive(State(reconciler): State<Arc<Reconciler>>, headers: HeaderMap, body: Bytes) -> Response {
    let options = match decode(&headers, &body) {
        Ok(options) => options,
        Err(error) => return (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response(),
    };
    match reconciler.run_with(options).await {
        Ok(run) => (StatusCode::OK, Json(run)).into_response(),
        Err(error) => {
            // Retryable: 503 and the scheduler or Pub/Sub tries again (same key, same
            // batch). Anything else would fail again: 500, visible in the logs.
            let status = if error.is_retryable() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
            tracing::error!(%error, retryable = error.is_retryable(), "reconcile run failed");
            (status, Json(json!({"error": error.to_string(), "retryable": error.is_retryable()}))).into_response()
        }
    }
}

/// The run a trigger asks for. Errors say what was expected.
pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<RunOptions, String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (request, key) = match header("ce-type") {
        Some(event_type) if event_type == PUBSUB_EVENT_TYPE => {
            let message = converge_http::pubsub::decode_message_published(body)?;
            (parse_request(&message.data)?, message.message_id.or_else(|| header("ce-id")))
        }
        Some(other) => return Err(format!("unexpected CloudEvent type `{other}`: expected `{PUBSUB_EVENT_TYPE}` or a plain JSON request")),
        None => (parse_request(body)?, header("x-cloudscheduler-scheduletime")),
    };
    if let Some(tenant) = &request.tenant {
        if tenant.is_empty() || tenant.contains('/') {
            return Err(format!("tenant {tenant:?} is not a document id: expected a non-empty id without `/`"));
        }
    }
    let orphan_guard = request.max_orphan_share.map(|max_share| converge_reconcile::OrphanGuard { max_share, ..Default::default() });
    Ok(RunOptions { tenant: request.tenant, dry_run: request.dry_run, key, orphan_guard })
}

fn parse_request(bytes: &[u8]) -> Result<ReconcileRequest, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(ReconcileRequest::default());
    }
    serde_json::from_slice(bytes).map_err(|e| format!("expected a JSON request {{\"tenant\": \"…\", \"dry_run\": false}} (both optional): {e}"))
}
