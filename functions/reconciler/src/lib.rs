//! The reconciler function's router: decode the trigger, run the reconciler once, map
//! the outcome to a status. All behaviour lives in `converge-reconcile`.
//!
//! Four kinds of work, one path each, each with its own Cloud Scheduler job in
//! `deploy/deploy.sh` (`SCHEDULED_PATHS`):
//! - `POST /` ([`RECONCILE_PATH`]): the reconcile run. Its request's `mode` says which:
//!   `"incremental"` daily (what may have changed since each tenant's last verified
//!   point; what only a full run sees is `converge_core::incremental`'s module docs),
//!   `"full"` weekly, each its own job with its own body. No `mode` is a full run, as
//!   every request was before there were modes.
//! - `POST /retry-errors` ([`RETRY_ERRORS_PATH`]): the error log's own retry
//!   (`Reconciler::retry_errors`), every few minutes: only the documents open
//!   `sync_errors` records name are re-read and appended, their records resolved.
//!   Request `{"tenant": "acme"}` (optional); the answer is the pass's `RetryRun`.
//!
//! - `POST /refresh-current` ([`REFRESH_CURRENT_PATH`]): every `<table>_current`
//!   refreshed from its watermark (`converge_retention::Retention::refresh`), every 15
//!   minutes. Request `{"full": true}` (optional) rebuilds them from the whole changelog.
//! - `POST /compact` ([`COMPACT_PATH`]): compaction with a retention horizon
//!   (`Retention::compact`), daily. Request `{"retain_days": 90}` (optional; default
//!   [`DEFAULT_RETAIN_DAYS`]); set it on the Scheduler job's body.
//!
//! A further kind of work is one more path: a request type with its `decode`, a
//! handler that runs it and answers through [`answer_run`], a route in [`app`], and a
//! line in `SCHEDULED_PATHS`.
//!
//! Triggers accepted on every path:
//! - Cloud Scheduler through Pub/Sub and Eventarc: a CloudEvent
//!   `google.cloud.pubsub.topic.v1.messagePublished` in binary mode, whose message data
//!   (base64) is the JSON request below, or empty for every tenant. The message id is
//!   the run's key: a redelivered message is the same batch.
//! - Cloud Scheduler's direct HTTP target (or an operator): the JSON request itself
//!   (on `/`: `{"tenant": "acme", "dry_run": false, "mode": "incremental"}`, each
//!   optional); the `X-CloudScheduler-ScheduleTime` header, when present, is the
//!   run's key.
//!
//! Invocation is authenticated by Cloud Run's IAM invoker check (the Scheduler and
//! Eventarc service accounts hold `run.invoker`).

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use converge_backends::{Backends, Tables};
use converge_core::{ReconcileMode, RefreshFrom, SystemClock};
use converge_function::answer::{failed_run, Answer};
use converge_function::scheduled::{ScheduledFront, Trigger, Triggers};
use converge_function::{Settings, StartError};
use converge_reconcile::{ReconcileError, Reconciler, RetryOptions, RunOptions};
use converge_retention::{Retention, RetentionError};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// The CloudEvent type of a Pub/Sub message delivered through Eventarc.
pub use converge_function::pubsub::MESSAGE_PUBLISHED as PUBSUB_EVENT_TYPE;

/// The function's state: one reconciler over the backends.
pub struct ReconcilerState {
    pub reconciler: Arc<Reconciler>,
    /// The status page's stores (`GET /status`, `GET /status.json`).
    pub status: Arc<converge_status::StatusSources>,
}

impl ReconcilerState {
    /// The backends from the settings, their changelog tables readied (in the cloud
    /// only checked: a dataset the setup step has not made stops the start here,
    /// naming what is missing), and the reconciler over them.
    pub async fn open(settings: &Settings) -> Result<Self, StartError> {
        let backends = Backends::open(settings, Arc::new(SystemClock)).await.map_err(StartError::Backends)?;
        backends.open_tables(&settings.mirror, Tables::Changelog).await.map_err(StartError::Tables)?;
        tracing::info!(backend = backends.kind, "reconciler backends open");
        let commands = match settings.backend {
            converge_function::settings::Backend::Embedded => converge_status::Commands::Embedded { data_dir: settings.data_dir.display().to_string() },
            converge_function::settings::Backend::Cloud(_) => converge_status::Commands::Cloud,
        };
        let status = converge_status::StatusSources::new(&backends, settings.mirror.clone(), Arc::new(SystemClock), commands);
        let reconciler = Reconciler::new(backends.source, backends.errors, backends.warehouse, settings.mirror.clone(), Arc::new(SystemClock)).with_prices(settings.prices);
        Ok(Self { reconciler: Arc::new(reconciler), status: Arc::new(status) })
    }

    /// Serves [`app`] and the status page on `listener` until `shutdown` resolves. The
    /// page is behind the same IAM invoker check as the runs: a person opens it through
    /// `gcloud run services proxy converge-reconciler --region REGION`, which serves it on
    /// localhost with their identity token attached; they need the Cloud Run Invoker
    /// role on the service (<https://cloud.google.com/sdk/gcloud/reference/run/services/proxy>,
    /// <https://cloud.google.com/run/docs/authenticating/developers>).
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        converge_function::serve(listener, app(self.reconciler).merge(converge_status::app(self.status)), shutdown).await
    }
}

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
    /// `"full"` (the default) or `"incremental"`.
    #[serde(default)]
    pub mode: ReconcileMode,
}

/// The path of the reconcile run, full or incremental.
pub const RECONCILE_PATH: &str = "/";
/// The path of the error log's own retry pass.
pub const RETRY_ERRORS_PATH: &str = "/retry-errors";

/// The path of the current tables' refresh.
pub const REFRESH_CURRENT_PATH: &str = "/refresh-current";
/// The path of compaction.
pub const COMPACT_PATH: &str = "/compact";
/// History kept by a compaction run that names no `retain_days`: a little over a year,
/// so a year-on-year as-of question still has its answer.
pub const DEFAULT_RETAIN_DAYS: u32 = 400;

/// What a refresh of the current tables is asked for.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RefreshCurrentRequest {
    #[serde(default)]
    pub full: bool,
}

/// What a compaction run is asked for.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CompactRequest {
    pub retain_days: Option<u32>,
}

/// What the error log's retry pass is asked for.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryErrorsRequest {
    pub tenant: Option<String>,
}

type AppState = (ScheduledFront, Arc<Reconciler>, Arc<Retention>);

/// `POST /` (reconcile), `POST /retry-errors` (the error log's retry),
/// `POST /refresh-current`, `POST /compact` and `GET /healthz`.
pub fn app(reconciler: Arc<Reconciler>) -> Router {
    // No token check in the app: Cloud Run's IAM invoker check is the gate.
    let front = ScheduledFront { name: "reconcile", verifier: None, triggers: Triggers::HttpAndPubSub };
    let retention = Arc::new(Retention::new(reconciler.warehouse(), reconciler.config().clone(), reconciler.clock()).with_prices(reconciler.prices()));
    Router::new()
        .route(RECONCILE_PATH, post(reconcile))
        .route(RETRY_ERRORS_PATH, post(retry_errors))
        .route(REFRESH_CURRENT_PATH, post(refresh_current))
        .route(COMPACT_PATH, post(compact))
        .merge(converge_function::health_routes())
        .with_state((front, reconciler, retention))
}

async fn refresh_current(State((front, _, retention)): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match accept(&front, &headers, body, decode_refresh_current).await {
        Ok((from, key)) => answer_run("current table refresh", retention.refresh(from, key.as_deref()).await.map_err(from_retention)),
        Err(refusal) => refusal,
    }
}

async fn compact(State((front, _, retention)): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match accept(&front, &headers, body, decode_compact).await {
        Ok((retain_days, key)) => answer_run("compaction run", retention.compact(retain_days, key.as_deref()).await.map_err(from_retention)),
        Err(refusal) => refusal,
    }
}

fn from_retention(error: RetentionError) -> ReconcileError {
    match error {
        RetentionError::Store(error) => ReconcileError::Store(error),
    }
}

/// The refresh a trigger asks for, keyed like a run.
pub fn decode_refresh_current(trigger: &Trigger) -> Result<(RefreshFrom, Option<String>), String> {
    let request: RefreshCurrentRequest = trigger.request("expected a JSON request {\"full\": false} (optional) for the current tables' refresh")?;
    Ok((if request.full { RefreshFrom::Full } else { RefreshFrom::Watermark }, trigger.key.clone()))
}

/// The compaction a trigger asks for, keyed like a run.
pub fn decode_compact(trigger: &Trigger) -> Result<(u32, Option<String>), String> {
    let request: CompactRequest = trigger.request("expected a JSON request {\"retain_days\": 90} (optional) for compaction")?;
    Ok((request.retain_days.unwrap_or(DEFAULT_RETAIN_DAYS), trigger.key.clone()))
}

async fn reconcile(State((front, reconciler, _)): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match accept(&front, &headers, body, decode).await {
        Ok(options) => answer_run("reconcile run", reconciler.run_with(options).await),
        Err(refusal) => refusal,
    }
}

async fn retry_errors(State((front, reconciler, _)): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match accept(&front, &headers, body, decode_retry_errors).await {
        Ok(options) => answer_run("sync error retry pass", reconciler.retry_errors_with(options).await),
        Err(refusal) => refusal,
    }
}

/// The trigger checked and decoded into a mode's options, or the answer refusing it.
async fn accept<T>(front: &ScheduledFront, headers: &HeaderMap, body: Body, decode: fn(&Trigger) -> Result<T, String>) -> Result<T, Response> {
    let trigger = front.accept(headers, body).await?;
    decode(&trigger).map_err(|e| Answer::BAD_REQUEST.error(e))
}

/// A mode's report (200), or its error: retryable, 503 and the scheduler or Pub/Sub
/// tries again (same key, same batch); anything else would fail again: 500, visible in
/// the logs.
pub fn answer_run<T: Serialize>(what: &str, result: Result<T, ReconcileError>) -> Response {
    match result {
        Ok(run) => Answer::Done.with(run),
        Err(error) => {
            tracing::error!(%error, retryable = error.is_retryable(), "{what} failed");
            failed_run(error.kind(), &error)
        }
    }
}

/// The run a trigger asks for; its key is the trigger's (a redelivered message or a
/// retried tick is the same batch). Errors say what was expected.
pub fn decode(trigger: &Trigger) -> Result<RunOptions, String> {
    let request: ReconcileRequest = trigger
        .request("expected a JSON request {\"tenant\": \"…\", \"dry_run\": false, \"mode\": \"full\" or \"incremental\"} (each optional)")?;
    check_tenant(request.tenant.as_deref())?;
    let orphan_guard = request.max_orphan_share.map(|max_share| converge_reconcile::OrphanGuard { max_share, ..Default::default() });
    Ok(RunOptions { tenant: request.tenant, dry_run: request.dry_run, key: trigger.key.clone(), orphan_guard, mode: request.mode })
}

/// The retry pass a trigger asks for, keyed like a run.
pub fn decode_retry_errors(trigger: &Trigger) -> Result<RetryOptions, String> {
    let request: RetryErrorsRequest = trigger.request("expected a JSON request {\"tenant\": \"…\"} (optional) for the sync error retry pass")?;
    check_tenant(request.tenant.as_deref())?;
    Ok(RetryOptions { tenant: request.tenant, key: trigger.key.clone() })
}

fn check_tenant(tenant: Option<&str>) -> Result<(), String> {
    match tenant {
        Some(tenant) if tenant.is_empty() || tenant.contains('/') => {
            Err(format!("tenant {tenant:?} is not a document id: expected a non-empty id without `/`"))
        }
        _ => Ok(()),
    }
}
