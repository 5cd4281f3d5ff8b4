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
//! Statuses: 401 no or invalid token; 403 a valid token of a caller not allowed; 400 a
//! request that is not one; 413 a body over 64 KiB; 200 the pass ran (`ok`, or
//! `partial` with only permanent detector failures: a retry would fail the same way,
//! the run record names them); 503 some detector failed in a way that may pass
//! (timeout, unavailable backend) or the opportunity store did — Cloud Scheduler
//! retries, same batch; 500 every detector failed permanently (e.g. no
//! `daily_entity_metrics`), or the pass could not be recorded for good.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Days, NaiveDate};
use converge_auth::{IdTokenVerifier, VerifierConfig};
use converge_core::Clock;
use converge_detector_runner::{DetectErrorKind, DetectRequest, DetectRun, DetectorRunner};
use converge_http::{Settings, SettingsError};
use serde::Deserialize;
use serde_json::json;

/// Largest accepted request: a few hundred bytes in practice.
pub const MAX_BODY: usize = 64 * 1024;
/// The audience of local tokens when `CONVERGE_AUTH_AUDIENCE` is unset (embedded only).
pub const LOCAL_AUDIENCE: &str = "converge-local-detector-runner";
/// Cloud Scheduler's header with the tick's scheduled time (RFC 3339).
pub const SCHEDULE_TIME_HEADER: &str = "x-cloudscheduler-scheduletime";

#[derive(Clone)]
pub struct DetectorRunnerState {
    pub runner: Arc<DetectorRunner>,
    pub verifier: IdTokenVerifier,
    pub clock: Arc<dyn Clock>,
}

/// Who may call (see [`converge_http::caller_auth`]).
pub fn verifier_config(settings: &Settings, lookup: impl Fn(&str) -> Option<String>) -> Result<VerifierConfig, SettingsError> {
    converge_http::caller_auth::verifier_config(settings, lookup, LOCAL_AUDIENCE, "run the detectors")
}

/// `POST /` and `GET /healthz`.
pub fn app(state: DetectorRunnerState) -> Router {
    Router::new().route("/", post(receive)).merge(converge_http::health_routes()).with_state(state)
}

/// The optional body.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    pub as_of: Option<NaiveDate>,
    pub tenants: Option<Vec<String>>,
    pub detectors: Option<Vec<String>>,
}

fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(json!({"error": error.into()}))).into_response()
}

async fn receive(State(state): State<DetectorRunnerState>, headers: HeaderMap, body: Body) -> Response {
    let caller = match state.verifier.verify_headers(&headers).await {
        Ok(caller) => caller,
        Err(error) => {
            // The reason goes to the log, never to the caller.
            tracing::warn!(%error, status = error.status().as_u16(), "detector run request refused");
            return refuse(error.status(), error.public_message());
        }
    };
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("expected a JSON request of at most {MAX_BODY} bytes")),
    };
    let request = match decode(&headers, &bytes, state.clock.as_ref()) {
        Ok(request) => request,
        Err(error) => return refuse(StatusCode::BAD_REQUEST, error),
    };
    tracing::info!(caller = caller.email, as_of = %request.as_of, tenants = ?request.tenants, detectors = ?request.detectors, "detector run requested");
    match state.runner.run(request).await {
        Ok(run) => (status_of(&run), Json(run)).into_response(),
        Err(error) => {
            let status = match error.kind() {
                DetectErrorKind::BadRequest => StatusCode::BAD_REQUEST,
                DetectErrorKind::Retryable => StatusCode::SERVICE_UNAVAILABLE,
                DetectErrorKind::Permanent => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refuse(status, error.to_string())
        }
    }
}

/// A finished pass's status (see the module documentation).
pub fn status_of(run: &DetectRun) -> StatusCode {
    match run.outcome.as_str() {
        "ok" => StatusCode::OK,
        _ if run.has_retryable_failure() => StatusCode::SERVICE_UNAVAILABLE,
        "partial" => StatusCode::OK,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The pass a request asks for. Errors say what was expected.
pub fn decode(headers: &HeaderMap, body: &[u8], clock: &dyn Clock) -> Result<DetectRequest, String> {
    let body: RunBody = if body.iter().all(u8::is_ascii_whitespace) {
        RunBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            format!("expected a JSON request {{\"as_of\": \"YYYY-MM-DD\", \"tenants\": [\"…\"], \"detectors\": [\"…\"]}} (all optional): {e}")
        })?
    };
    let as_of = match body.as_of {
        Some(date) => date,
        None => match headers.get(SCHEDULE_TIME_HEADER) {
            Some(value) => {
                let text = value.to_str().map_err(|_| format!("{SCHEDULE_TIME_HEADER} is not text"))?;
                let time = DateTime::parse_from_rfc3339(text)
                    .map_err(|e| format!("{SCHEDULE_TIME_HEADER} {text:?}: expected an RFC 3339 time such as 2025-04-01T02:00:00Z: {e}"))?;
                time.to_utc().date_naive() - Days::new(1)
            }
            None => {
                let now = clock.now();
                DateTime::from_timestamp(now.seconds, 0).ok_or("the clock is out of range")?.date_naive() - Days::new(1)
            }
        },
    };
    Ok(DetectRequest { as_of, tenants: body.tenants, detectors: body.detectors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use converge_core::{ManualClock, Timestamp};

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
