//! The on-write sync router: decode nothing here, decide nothing here; call the
//! service and map its outcome to an answer, whose status `converge_function::answer`
//! chooses.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use converge_core::ErrorKind;
use converge_function::Answer;
use serde_json::json;

use crate::service::{SyncOutcome, SyncService};

/// `POST /` (the Eventarc CloudEvent route) and `GET /healthz`.
pub fn app(service: Arc<SyncService>) -> Router {
    Router::new()
        .route("/", post(receive))
        .merge(converge_function::health_routes())
        .with_state(service)
}

/// The path the Firestore emulator posts its Eventarc-style deliveries to.
pub const EMULATOR_ROUTE: &str = "/functions/projects/{project}/triggers/{trigger}";

/// The local route for the Firestore emulator's deliveries (base64 bodies; see
/// [`SyncService::handle_emulator_delivery`]). Merged into [`app`] only when a local
/// setup asks for it; a cloud deployment never serves it.
pub fn emulator_route(service: Arc<SyncService>) -> Router {
    Router::new().route(EMULATOR_ROUTE, post(receive_from_emulator)).with_state(service)
}

async fn receive_from_emulator(State(service): State<Arc<SyncService>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    service.handle_emulator_delivery(&parts.headers, body).await.into_response()
}

async fn receive(State(service): State<Arc<SyncService>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    service.handle(&parts.headers, body).await.into_response()
}

impl IntoResponse for SyncOutcome {
    fn into_response(self) -> Response {
        match self {
            // The common answers are constant text: no JSON built per event.
            SyncOutcome::Written => constant_json(r#"{"outcome":"written"}"#),
            SyncOutcome::NoState => constant_json(r#"{"outcome":"no_state"}"#),
            // Acknowledged: its quarantine record is durable (otherwise the outcome is
            // Unrecorded, 503). Eventarc (Pub/Sub underneath) redelivers every answer
            // that is not a success, for a day by default, then drops it
            // (https://cloud.google.com/eventarc/docs/retry-events): a 4xx here would
            // only repeat the same refusal ~150 times. The body says what was wrong.
            SyncOutcome::Quarantined { record_id, reason, detail } => {
                Answer::Done.with(json!({"outcome": "quarantined", "reason": reason.as_str(), "error": detail, "quarantine_id": record_id}))
            }
            // The record is durable: a retryable failure asks for the redelivery that will
            // land once it heals; a permanent one is acknowledged, left to the reconciler.
            SyncOutcome::ErrorRecorded { error_id, error } => {
                let answer = if error.is_retryable() { Answer::Failed(error.kind) } else { Answer::Recorded };
                answer.with(json!({"outcome": "error_recorded", "error_id": error_id, "error": error.to_string(), "retryable": error.is_retryable()}))
            }
            // Nothing durable: only the redelivery can save the event, whatever the kind.
            SyncOutcome::Unrecorded { error } => {
                Answer::Failed(ErrorKind::Retryable).with(json!({"outcome": "unrecorded", "error": error.to_string(), "retryable": true}))
            }
        }
    }
}

fn constant_json(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}
