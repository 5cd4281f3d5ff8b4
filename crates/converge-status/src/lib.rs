//! The status page: one page a person can look at to know whether every tenant's copy
//! equals its source, what the last reconcile found (known vs silent, by kind) and
//! repaired, how far behind the sync is, what waits in the error log and the
//! quarantine (and the command that deals with each), how last night's runs went and
//! what they cost.
//!
//! # Layout
//!
//! - [`report`]: [`StatusReport`], collected from the stores the pipeline writes
//!   (source counts, current-table counts, run records, error log, quarantine,
//!   opportunities). Read only.
//! - [`page`]: the report as one HTML document, styles inline, no script.
//! - [`svg`]: the charts (drift per reconcile run, sync events and lag per minute),
//!   drawn on the server as inline SVG.
//! - [`app`]: `GET /status` (the page) and `GET /status.json` (the report), served by
//!   `converge serve` over the embedded stores and by the reconciler function over
//!   the cloud ones (behind Cloud Run's IAM invoker check).

pub mod page;
pub mod report;
pub mod svg;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

pub use report::{collect, Commands, StatusReport, StatusSources};

/// The page's path.
pub const STATUS_PATH: &str = "/status";
/// The report's path, as JSON.
pub const STATUS_JSON_PATH: &str = "/status.json";

/// `GET /status` and `GET /status.json` over `sources`.
pub fn app(sources: Arc<StatusSources>) -> Router {
    Router::new().route(STATUS_PATH, get(status_page)).route(STATUS_JSON_PATH, get(status_json)).with_state(sources)
}

async fn status_page(State(sources): State<Arc<StatusSources>>) -> Response {
    match collect(&sources).await {
        Ok(report) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], page::render(&report)).into_response(),
        Err(error) => failed(error),
    }
}

async fn status_json(State(sources): State<Arc<StatusSources>>) -> Response {
    match collect(&sources).await {
        Ok(report) => ([(header::CACHE_CONTROL, "no-store")], Json(report)).into_response(),
        Err(error) => failed(error),
    }
}

/// A store that could not be read: its kind's status (a transient failure is 503,
/// so a reload may help), the message as plain text.
fn failed(error: converge_core::StoreError) -> Response {
    tracing::warn!(%error, "the status page could not be collected");
    (converge_function::answer::status_for(error.kind), format!("the status could not be read: {error}\n")).into_response()
}
