//! The rebuild function's router: verify the caller, decode the request, run one
//! rebuild, map the outcome to a status. All behaviour lives in `converge-rebuild`
//! (the rebuild) and `converge-auth` (who may ask for one).
//!
//! `POST /` with `{"tenant": "acme", "tables": ["records"], "max_docs_per_second":
//! 5000, "key": "…"}` (only `tenant` required) answers the run's report when the
//! rebuild is committed. An initial import is the same request for a tenant that has
//! no derived rows yet, usually with `max_docs_per_second` so live sync keeps its share.
//!
//! Statuses: 401 no or invalid token; 403 a valid token of a caller not allowed;
//! 400 a request that is not one; 409 a rebuild of the tenant is running; 413 a body
//! over 64 KiB; 503 try again (nothing of the attempt is visible); 500 would fail again.
//! Authentication comes first: an unauthenticated caller learns nothing about the
//! request's validity, and error bodies carry no detail of why a token was refused.

use std::path::Path;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use converge_auth::{IdTokenVerifier, VerifierConfig};
use converge_http::{Settings, SettingsError};
use converge_rebuild::run::RebuildErrorKind;
use converge_rebuild::{RebuildRequest, Rebuilder};
use serde_json::json;

/// Largest accepted request: a rebuild request is a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// The audience of local tokens when `CONVERGE_AUTH_AUDIENCE` is unset (embedded only).
pub const LOCAL_AUDIENCE: &str = "converge-local-rebuild";
/// The caller allowed by default on the embedded setup: who `converge rebuild` signs as.
pub const LOCAL_OPERATOR: &str = converge_http::caller_auth::LOCAL_OPERATOR;

#[derive(Clone)]
pub struct RebuildState {
    pub rebuilder: Arc<Rebuilder>,
    pub verifier: IdTokenVerifier,
}

/// Who may call (see [`converge_http::caller_auth`]): in the cloud Google-signed tokens
/// for `CONVERGE_AUTH_AUDIENCE` from `CONVERGE_AUTH_ALLOWED_EMAILS`; embedded, the local
/// signer's (`converge rebuild` signs with it).
pub fn verifier_config(settings: &Settings, lookup: impl Fn(&str) -> Option<String>) -> Result<VerifierConfig, SettingsError> {
    converge_http::caller_auth::verifier_config(settings, lookup, LOCAL_AUDIENCE, "rebuild")
}

/// Makes sure the embedded setup's local signer exists.
pub fn ensure_local_signer(data_dir: &Path) -> anyhow::Result<()> {
    Ok(converge_http::caller_auth::ensure_local_signer(data_dir)?)
}

/// `POST /` and `GET /healthz`.
pub fn app(state: RebuildState) -> Router {
    Router::new().route("/", post(receive)).merge(converge_http::health_routes()).with_state(state)
}

fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(json!({"error": error.into()}))).into_response()
}

async fn receive(State(state): State<RebuildState>, headers: HeaderMap, body: Body) -> Response {
    let caller = match state.verifier.verify_headers(&headers).await {
        Ok(caller) => caller,
        Err(error) => {
            // The reason goes to the log, never to the caller.
            tracing::warn!(%error, status = error.status().as_u16(), "rebuild request refused");
            return refuse(error.status(), error.public_message());
        }
    };
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("expected a JSON request of at most {MAX_BODY} bytes")),
    };
    let request: RebuildRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"tenant\": \"…\", \"tables\": [\"…\"], \"max_docs_per_second\": N, \"key\": \"…\"}} (tenant required): {error}"),
            )
        }
    };
    tracing::info!(caller = caller.email, tenant = request.tenant, tables = ?request.tables, "rebuild requested");
    match state.rebuilder.run(request).await {
        Ok(run) => (StatusCode::OK, Json(run)).into_response(),
        Err(error) => {
            let status = match error.kind() {
                RebuildErrorKind::BadRequest => StatusCode::BAD_REQUEST,
                RebuildErrorKind::Conflict => StatusCode::CONFLICT,
                RebuildErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                RebuildErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refuse(status, error.to_string())
        }
    }
}
