//! The detector runner function's router: verify the caller, decode the request, run
//! one detector pass, map the outcome to a status. All behaviour lives in
//! `converge-detector-runner` (the pass) and `converge-auth` (who may ask for one).
//!
//! `POST /` with an optional JSON body `{"as_of": "2025-03-31", "tenants": ["acme"],
//! "detectors": ["page_slow_load"]}` (every field optional; an empty body is the whole
//! pack for every tenant). Without `as_of`: the UTC date of Cloud Scheduler's
//! `X-CloudScheduler-ScheduleTime` minus one day (a 02:00 tick runs over yesterday,
//! the last day the nightly ETL loaded, and a retried tick is the same batch), else
//! yesterday by the clock.
//!
//! Statuses (chosen in `converge_function::answer`): 401 no or invalid token; 403 a valid
//! token of a caller not allowed; 400 a request that is not one; 413 a body over 64
//! KiB; 200 the pass ran (`ok`, or
//! `partial` with only permanent detector failures: a retry would fail the same way,
//! the run record names them); 503 some detector failed in a way that may pass
//! (timeout, unavailable backend) or the opportunity store did — Cloud Scheduler
//! retries, same batch; 500 every detector failed permanently (e.g. no
//! `daily_entity_metrics`), or the pass could not be recorded for good.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, NaiveDate, Utc};
use converge_auth::{IdTokenVerifier, VerifierConfig};
use converge_backends::{Backends, Tables};
use converge_core::{Clock, SystemClock};
use converge_detect::Pack;
use converge_detector_runner::{DetectRequest, DetectRun, DetectorRunner, RunnerOptions};
use converge_function::answer::Answer;
use converge_function::scheduled::{ScheduledFront, Trigger, Triggers};
use converge_function::{Settings, SettingsError, StartError};
use converge_core::{ErrorKind, RunOutcome};
use serde::Deserialize;
use tokio::net::TcpListener;

/// Largest accepted request: a few hundred bytes in practice.
pub use converge_function::scheduled::MAX_BODY;
/// Cloud Scheduler's header with the tick's scheduled time (RFC 3339).
pub use converge_function::scheduled::SCHEDULE_TIME_HEADER;
/// The audience of local tokens when `CONVERGE_AUTH_AUDIENCE` is unset (embedded only).
pub const LOCAL_AUDIENCE: &str = "converge-local-detector-runner";
/// What the caller is allowed to do, in the error naming a missing allow-list.
const PURPOSE: &str = "run the detectors";

#[derive(Clone)]
pub struct DetectorRunnerState {
    pub runner: Arc<DetectorRunner>,
    pub verifier: IdTokenVerifier,
    pub clock: Arc<dyn Clock>,
}

impl DetectorRunnerState {
    /// Everything the function needs, from its settings: the caller check (and, embedded,
    /// the local signer), the warehouse (findings queries and run records) and the
    /// opportunity store, the changelog and metrics tables readied (in the cloud only
    /// checked: a dataset the setup step has not made stops the start here, naming what
    /// is missing), and the shipped detector pack.
    pub async fn open(settings: &Settings) -> Result<Self, StartError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let verifier = converge_function::caller_auth::open_verifier(settings, LOCAL_AUDIENCE, PURPOSE, clock.clone())?;
        let backends = Backends::open(settings, clock.clone()).await.map_err(StartError::Backends)?;
        backends.open_tables(&settings.mirror, Tables::ChangelogAndMetrics).await.map_err(StartError::Tables)?;
        tracing::info!(backend = backends.kind, "detector-runner backends open");
        let pack = Pack::shipped().map_err(|e| StartError::Other { step: "loading the shipped detector pack", source: e.into() })?;
        let runner = DetectorRunner::new(pack, backends.findings, backends.warehouse, backends.opportunities, clock.clone(), RunnerOptions::default())
            .with_prices(settings.prices)
            .with_known_events(backends.source);
        Ok(Self { runner: Arc::new(runner), verifier, clock })
    }

    /// Serves [`app`] on `listener` until `shutdown` resolves.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        converge_function::serve(listener, app(self), shutdown).await
    }
}

/// Who may call (see [`converge_function::caller_auth`]).
pub fn verifier_config(settings: &Settings, lookup: impl Fn(&str) -> Option<String>) -> Result<VerifierConfig, SettingsError> {
    converge_function::caller_auth::verifier_config(settings, lookup, LOCAL_AUDIENCE, PURPOSE)
}

/// `POST /` and `GET /healthz`.
pub fn app(state: DetectorRunnerState) -> Router {
    // Plain POSTs only: the scheduler's job targets the service directly.
    let front = ScheduledFront { name: "detector run", verifier: Some(state.verifier.clone()), triggers: Triggers::Http };
    Router::new().route("/", post(receive)).merge(converge_function::health_routes()).with_state((front, state))
}

/// The optional body.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    pub as_of: Option<NaiveDate>,
    pub tenants: Option<Vec<String>>,
    pub detectors: Option<Vec<String>>,
}

async fn receive(State((front, state)): State<(ScheduledFront, DetectorRunnerState)>, headers: HeaderMap, body: Body) -> Response {
    let trigger = match front.accept(&headers, body).await {
        Ok(trigger) => trigger,
        Err(refusal) => return refusal,
    };
    let request = match decode(&trigger, converge_function::scheduled::utc(state.clock.now())) {
        Ok(request) => request,
        Err(error) => return Answer::BAD_REQUEST.error(error),
    };
    tracing::info!(caller = trigger.caller.as_deref(), as_of = %request.as_of, tenants = ?request.tenants, detectors = ?request.detectors, "detector run requested");
    match state.runner.run(request).await {
        Ok(run) => answer_of(&run).with(run),
        Err(error) => Answer::Failed(error.kind()).error(error.to_string()),
    }
}

/// A finished pass's answer (see the module documentation): done when every detector
/// ran, or only failed in ways a retry would repeat; else retryable if any failure may
/// pass later, permanent if not.
pub fn answer_of(run: &DetectRun) -> Answer {
    match run.outcome {
        RunOutcome::Ok => Answer::Done,
        _ if run.has_retryable_failure() => Answer::Failed(ErrorKind::Retryable),
        RunOutcome::Partial => Answer::Done,
        _ => Answer::Failed(ErrorKind::Permanent),
    }
}

/// The pass a request asks for; without `as_of`, the day before the trigger's time
/// (else yesterday by `now`). Errors say what was expected.
pub fn decode(trigger: &Trigger, now: DateTime<Utc>) -> Result<DetectRequest, String> {
    let body: RunBody =
        trigger.request("expected a JSON request {\"as_of\": \"YYYY-MM-DD\", \"tenants\": [\"…\"], \"detectors\": [\"…\"]} (all optional)")?;
    let as_of = match body.as_of {
        Some(date) => date,
        None => trigger.run_date(now)?,
    };
    Ok(DetectRequest { as_of, tenants: body.tenants, detectors: body.detectors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use converge_core::{ManualClock, Timestamp};

    /// The trigger and the request it carries, as `receive` reads them.
    fn decode(headers: &HeaderMap, body: &[u8], clock: &dyn Clock) -> Result<DetectRequest, String> {
        super::decode(&Trigger::decode(headers, body, Triggers::Http)?, converge_function::scheduled::utc(clock.now()))
    }

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn as_of_comes_from_the_body_then_the_schedule_time_then_the_clock() {
        let clock = ManualClock::at(Timestamp::new(1_743_472_800, 0)); // 2025-04-01T02:00:00Z
        let mut headers = HeaderMap::new();
        assert_eq!(decode(&headers, b"", &clock).unwrap().as_of, date("2025-03-31"));
        headers.insert(SCHEDULE_TIME_HEADER, "2025-05-10T00:30:00+02:00".parse().unwrap());
        // 2025-05-09T22:30Z: the UTC date, minus one day.
        assert_eq!(decode(&headers, b" ", &clock).unwrap().as_of, date("2025-05-08"));
        let explicit = decode(&headers, br#"{"as_of": "2025-01-15", "tenants": ["acme"]}"#, &clock).unwrap();
        assert_eq!((explicit.as_of, explicit.tenants), (date("2025-01-15"), Some(vec!["acme".to_string()])));
        headers.insert(SCHEDULE_TIME_HEADER, "yesterday".parse().unwrap());
        assert!(decode(&headers, b"", &clock).unwrap_err().contains("RFC 3339"));
        assert!(decode(&HeaderMap::new(), br#"{"tenant": "acme"}"#, &clock).unwrap_err().contains("expected a JSON request"));
    }
}
