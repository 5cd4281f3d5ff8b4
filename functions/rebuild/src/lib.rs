//! The rebuild function's router: verify the caller, decode the request, run one
//! rebuild, map the outcome to a status. All behaviour lives in `converge-rebuild`
//! (the rebuild) and `converge-auth` (who may ask for one).
//!
//! `POST /` with `{"tenant": "acme", "tables": ["records"], "max_docs_per_second":
//! 5000, "key": "…"}` (only `tenant` required) answers the run's report when the
//! rebuild is committed. An initial import is the same request for a tenant that has
//! no derived rows yet, usually with `max_docs_per_second` so live sync keeps its share.
//!
//! Statuses (chosen in `converge_function::answer`): 401 no or invalid token; 403 a valid
//! token of a caller not allowed; 400 a request that is not one; 409 a rebuild of the
//! tenant is running; 413 a body over 64 KiB; 503 try again (nothing of the attempt is
//! visible); 500 would fail again.
//! Authentication comes first: an unauthenticated caller learns nothing about the
//! request's validity, and error bodies carry no detail of why a token was refused.

use std::future::Future;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use converge_auth::{IdTokenVerifier, VerifierConfig};
use converge_backends::{Backends, Tables};
use converge_core::{Clock, SystemClock};
use converge_function::answer::{refused_caller, Answer};
use converge_function::{Settings, SettingsError, StartError};
use converge_rebuild::{RebuildRequest, Rebuilder};
use tokio::net::TcpListener;

/// Largest accepted request: a rebuild request is a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// The audience of local tokens when `CONVERGE_AUTH_AUDIENCE` is unset (embedded only).
pub const LOCAL_AUDIENCE: &str = "converge-local-rebuild";
/// The caller allowed by default on the embedded setup: who `converge rebuild` signs as.
pub const LOCAL_OPERATOR: &str = converge_function::caller_auth::LOCAL_OPERATOR;
/// What the caller is allowed to do, in the error naming a missing allow-list.
const PURPOSE: &str = "rebuild";
/// Makes sure the embedded setup's local signer exists (`converge rebuild` signs with it).
pub use converge_function::caller_auth::ensure_local_signer;

#[derive(Clone)]
pub struct RebuildState {
    pub rebuilder: Arc<Rebuilder>,
    pub verifier: IdTokenVerifier,
}

impl RebuildState {
    /// Everything the function needs, from its settings: the caller check (and, embedded,
    /// the local signer), the backends, their changelog tables readied (in the cloud only
    /// checked: a dataset the setup step has not made stops the start here, naming what
    /// is missing), and the rebuilder over them.
    pub async fn open(settings: &Settings) -> Result<Self, StartError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let verifier = converge_function::caller_auth::open_verifier(settings, LOCAL_AUDIENCE, PURPOSE, clock.clone())?;
        let backends = Backends::open(settings, clock.clone()).await.map_err(StartError::Backends)?;
        backends.open_tables(&settings.mirror, Tables::Changelog).await.map_err(StartError::Tables)?;
        tracing::info!(backend = backends.kind, "rebuild backends open");
        let rebuilder = Rebuilder::new(backends.source, backends.warehouse, settings.mirror.clone(), clock).with_prices(settings.prices);
        Ok(Self { rebuilder: Arc::new(rebuilder), verifier })
    }

    /// Serves [`app`] on `listener` until `shutdown` resolves.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        converge_function::serve(listener, app(self), shutdown).await
    }
}

/// Who may call (see [`converge_function::caller_auth`]): in the cloud Google-signed tokens
/// for `CONVERGE_AUTH_AUDIENCE` from `CONVERGE_AUTH_ALLOWED_EMAILS`; embedded, the local
/// signer's (`converge rebuild` signs with it).
pub fn verifier_config(settings: &Settings, lookup: impl Fn(&str) -> Option<String>) -> Result<VerifierConfig, SettingsError> {
    converge_function::caller_auth::verifier_config(settings, lookup, LOCAL_AUDIENCE, PURPOSE)
}

/// `POST /` and `GET /healthz`.
pub fn app(state: RebuildState) -> Router {
    Router::new().route("/", post(receive)).merge(converge_function::health_routes()).with_state(state)
}

async fn receive(State(state): State<RebuildState>, headers: HeaderMap, body: Body) -> Response {
    let caller = match state.verifier.verify_headers(&headers).await {
        Ok(caller) => caller,
        Err(error) => {
            let response = refused_caller(&error);
            // The reason goes to the log, never to the caller.
            tracing::warn!(%error, status = response.status().as_u16(), "rebuild request refused");
            return response;
        }
    };
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return Answer::TooLarge.error(format!("expected a JSON request of at most {MAX_BODY} bytes")),
    };
    let request: RebuildRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => {
            return Answer::BAD_REQUEST
                .error(format!("expected {{\"tenant\": \"…\", \"tables\": [\"…\"], \"max_docs_per_second\": N, \"key\": \"…\"}} (tenant required): {error}"))
        }
    };
    tracing::info!(caller = caller.email, tenant = request.tenant, tables = ?request.tables, "rebuild requested");
    match state.rebuilder.run(request).await {
        Ok(run) => Answer::Done.with(run),
        Err(error) => Answer::Failed(error.kind()).error(error.to_string()),
    }
}
