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

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use converge_backends::{Backends, Tables};
use converge_core::SystemClock;
use converge_function::answer::{failed_run, Answer};
use converge_function::scheduled::{ScheduledFront, Trigger, Triggers};
use converge_function::{Settings, StartError};
use converge_reconcile::{Reconciler, RunOptions};
use serde::Deserialize;
use tokio::net::TcpListener;

/// The CloudEvent type of a Pub/Sub message delivered through Eventarc.
pub use converge_function::pubsub::MESSAGE_PUBLISHED as PUBSUB_EVENT_TYPE;

/// The function's state: one reconciler over the backends.
pub struct ReconcilerState {
    pub reconciler: Arc<Reconciler>,
}

impl ReconcilerState {
    /// The backends from the settings, their changelog tables readied (in the cloud
    /// only checked: a dataset the setup step has not made stops the start here,
    /// naming what is missing), and the reconciler over them.
    pub async fn open(settings: &Settings) -> Result<Self, StartError> {
        let backends = Backends::open(settings, Arc::new(SystemClock)).await.map_err(StartError::Backends)?;
        backends.open_tables(&settings.mirror, Tables::Changelog).await.map_err(StartError::Tables)?;
        tracing::info!(backend = backends.kind, "reconciler backends open");
        let reconciler = Reconciler::new(backends.source, backends.errors, backends.warehouse, settings.mirror.clone(), Arc::new(SystemClock));
        Ok(Self { reconciler: Arc::new(reconciler) })
    }

    /// Serves [`app`] on `listener` until `shutdown` resolves.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        converge_function::serve(listener, app(self.reconciler), shutdown).await
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
}

/// `POST /` and `GET /healthz`.
pub fn app(reconciler: Arc<Reconciler>) -> Router {
    // No token check in the app: Cloud Run's IAM invoker check is the gate.
    let front = ScheduledFront { name: "reconcile", verifier: None, triggers: Triggers::HttpAndPubSub };
    Router::new().route("/", post(receive)).merge(converge_function::health_routes()).with_state((front, reconciler))
}

async fn receive(State((front, reconciler)): State<(ScheduledFront, Arc<Reconciler>)>, headers: HeaderMap, body: Body) -> Response {
    let options = match front.accept(&headers, body).await.and_then(|trigger| decode(&trigger).map_err(|e| Answer::BAD_REQUEST.error(e))) {
        Ok(options) => options,
        Err(refusal) => return refusal,
    };
    match reconciler.run_with(options).await {
        Ok(run) => Answer::Done.with(run),
        Err(error) => {
            // Retryable: 503 and the scheduler or Pub/Sub tries again (same key, same
            // batch). Anything else would fail again: 500, visible in the logs.
            tracing::error!(%error, retryable = error.is_retryable(), "reconcile run failed");
            failed_run(error.kind(), &error)
        }
    }
}

/// The run a trigger asks for; its key is the trigger's (a redelivered message or a
/// retried tick is the same batch). Errors say what was expected.
pub fn decode(trigger: &Trigger) -> Result<RunOptions, String> {
    let request: ReconcileRequest = trigger.request("expected a JSON request {\"tenant\": \"…\", \"dry_run\": false} (both optional)")?;
    if let Some(tenant) = &request.tenant {
        if tenant.is_empty() || tenant.contains('/') {
            return Err(format!("tenant {tenant:?} is not a document id: expected a non-empty id without `/`"));
        }
    }
    let orphan_guard = request.max_orphan_share.map(|max_share| converge_reconcile::OrphanGuard { max_share, ..Default::default() });
    Ok(RunOptions { tenant: request.tenant, dry_run: request.dry_run, key: trigger.key.clone(), orphan_guard })
}
