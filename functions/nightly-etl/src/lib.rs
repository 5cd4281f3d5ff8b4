//! The nightly ETL function's router: verify the caller, decode the trigger, run one
//! ETL pass, map the outcome to a status. All behaviour lives in `converge-etl` (the
//! ETL) and `converge-auth` (who may trigger it).
//!
//! Triggers accepted on `POST /`:
//! - Cloud Scheduler's direct HTTP target: a plain POST with an OIDC token; the body
//!   is the optional JSON request below. The run date is the UTC date of
//!   `X-CloudScheduler-ScheduleTime` minus one day (a run at 02:00 loads yesterday),
//!   unless the body names one.
//! - Cloud Scheduler through Pub/Sub and Eventarc: a CloudEvent
//!   `google.cloud.pubsub.topic.v1.messagePublished` in binary mode whose message data
//!   (base64) is the JSON request, or empty. The run date is the message's
//!   `publishTime` (UTC) minus one day unless the request names one.
//! - An operator: the same plain POST with their own token.
//!
//! Request (every field optional): `{"date": "2025-06-01", "tenants": ["acme"],
//! "from": "2025-05-01", "to": "2025-05-31", "late_days": 3,
//! "max_records_per_second": 20000}`. `date` and `to` both name the last day loaded
//! (give one); with `from`, every day `from..=to` is loaded (a backfill), otherwise
//! the run date and the `late_days` before it.
//!
//! Statuses, decided once in [`status_for`]: 200 every slice loaded (the run's
//! report); 422 a slice failed a quality check (not loaded, the old slice stays; the
//! report says which check, and the scheduler shows the job as failed); 400 a request
//! that is not one; 401/403 no or a refused token; 413 a body over 64 KiB; 503 try
//! again (retryable backend failure: the same request converges); 500 would fail
//! again. Authentication comes first, as in the rebuild function.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Days, NaiveDate, Utc};
use converge_auth::{IdTokenVerifier, VerifierConfig};
use converge_core::Clock;
use converge_etl::{EtlError, EtlErrorKind, EtlRequest, EtlRun, EtlRunner};
use converge_http::{Settings, SettingsError};
use serde::Deserialize;
use serde_json::json;

/// The CloudEvent type of a Pub/Sub message delivered through Eventarc.
pub use converge_http::pubsub::MESSAGE_PUBLISHED as PUBSUB_EVENT_TYPE;
/// Cloud Scheduler's header carrying the tick's scheduled time (RFC 3339).
pub const SCHEDULE_TIME_HEADER: &str = "x-cloudscheduler-scheduletime";
/// Largest accepted request: a trigger is a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// The audience of local tokens when `CONVERGE_AUTH_AUDIENCE` is unset (embedded only).
pub const LOCAL_AUDIENCE: &str = "converge-local-nightly-etl";

#[derive(Clone)]
pub struct EtlState {
    pub runner: Arc<EtlRunner>,
    pub verifier: IdTokenVerifier,
    /// The run date when no trigger names one: yesterday by this clock.
    pub clock: Arc<dyn Clock>,
}

/// Who may trigger a run: see [`converge_http::caller_auth`] (in the cloud, the
/// scheduler's and Eventarc trigger's service accounts, by email).
pub fn verifier_config(settings: &Settings, lookup: impl Fn(&str) -> Option<String>) -> Result<VerifierConfig, SettingsError> {
    converge_http::caller_auth::verifier_config(settings, lookup, LOCAL_AUDIENCE, "run the nightly ETL")
}

/// `POST /` and `GET /healthz`.
pub fn app(state: EtlState) -> Router {
    Router::new().route("/", post(receive)).merge(converge_http::health_routes()).with_state(state)
}

/// What a trigger's body may say.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    pub date: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub from: Option<NaiveDate>,
    pub tenants: Option<Vec<String>>,
    pub late_days: Option<u32>,
    pub max_records_per_second: Option<u32>,
}

const EXPECTED_BODY: &str = "expected an empty body or a JSON object {\"date\": \"YYYY-MM-DD\", \"tenants\": [\"…\"], \"from\": \"YYYY-MM-DD\", \"to\": \"YYYY-MM-DD\", \"late_days\": N, \"max_records_per_second\": N}, every field optional";

/// The ETL request a trigger asks for; `now` is the fallback when the trigger
/// carries no time. Errors say what was expected.
pub fn decode(headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<EtlRequest, String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (body, trigger_time) = match header("ce-type") {
        Some(event_type) if event_type == PUBSUB_EVENT_TYPE => {
            let message = converge_http::pubsub::decode_message_published(body)?;
            let time = message.publish_time.or_else(|| header("ce-time"));
            (message.data, time.map(|t| ("message.publishTime", t)))
        }
        Some(other) => return Err(format!("unexpected CloudEvent type `{other}`: expected `{PUBSUB_EVENT_TYPE}` or a plain POST from Cloud Scheduler")),
        None => (body.to_vec(), header(SCHEDULE_TIME_HEADER).map(|t| ("X-CloudScheduler-ScheduleTime", t))),
    };
    let request: TriggerBody =
        if body.iter().all(u8::is_ascii_whitespace) { TriggerBody::default() } else { serde_json::from_slice(&body).map_err(|e| format!("{EXPECTED_BODY}: {e}"))? };
    let named = match (request.date, request.to) {
        (Some(date), Some(to)) if date != to => return Err(format!("date {date} and to {to} differ: both name the last day to load, give one")),
        (date, to) => date.or(to),
    };
    let run_date = match named {
        Some(date) => date,
        None => {
            let time = match trigger_time {
                Some((name, text)) => DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| format!("{name} {text:?} is not an RFC 3339 time: {e}"))?
                    .with_timezone(&Utc),
                None => now,
            };
            // The day that just ended: a run scheduled at 02:00 UTC loads yesterday.
            time.date_naive().checked_sub_days(Days::new(1)).ok_or("the trigger time is the first day of the calendar")?
        }
    };
    Ok(EtlRequest { run_date, from: request.from, tenants: request.tenants, late_days: request.late_days, max_records_per_second: request.max_records_per_second })
}

/// The one mapping from an ETL outcome to a status.
pub fn status_for(outcome: &Result<EtlRun, EtlError>) -> StatusCode {
    match outcome {
        Ok(run) if run.outcome == "failed" => StatusCode::UNPROCESSABLE_ENTITY,
        Ok(_) => StatusCode::OK,
        Err(error) => match error.kind() {
            EtlErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            EtlErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            EtlErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(json!({"error": error.into()}))).into_response()
}

async fn receive(State(state): State<EtlState>, headers: HeaderMap, body: Body) -> Response {
    let caller = match state.verifier.verify_headers(&headers).await {
        Ok(caller) => caller,
        Err(error) => {
            // The reason goes to the log, never to the caller.
            tracing::warn!(%error, status = error.status().as_u16(), "nightly ETL request refused");
            return refuse(error.status(), error.public_message());
        }
    };
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("expected a request of at most {MAX_BODY} bytes")),
    };
    let now = {
        let t = state.clock.now();
        DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap_or_default()
    };
    let request = match decode(&headers, &bytes, now) {
        Ok(request) => request,
        Err(error) => return refuse(StatusCode::BAD_REQUEST, error),
    };
    tracing::info!(caller = caller.email, run_date = %request.run_date, from = ?request.from, tenants = ?request.tenants, "nightly ETL requested");
    let outcome = state.runner.run(request).await;
    let status = status_for(&outcome);
    match outcome {
        Ok(run) => (status, Json(run)).into_response(),
        Err(error) => {
            tracing::error!(%error, retryable = error.is_retryable(), status = status.as_u16(), "nightly ETL failed");
            (status, Json(json!({"error": error.to_string(), "retryable": error.is_retryable()}))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-10T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_schedule_time_names_yesterday_unless_the_body_names_a_date() {
        let tick = headers(&[(SCHEDULE_TIME_HEADER, "2025-06-02T02:00:00Z")]);
        assert_eq!(decode(&tick, b"", now()).unwrap().run_date, day("2025-06-01"));
        // 23:30 in UTC-2 is 01:30 UTC the next day: the UTC date counts.
        let offset = headers(&[(SCHEDULE_TIME_HEADER, "2025-06-01T23:30:00-02:00")]);
        assert_eq!(decode(&offset, b"", now()).unwrap().run_date, day("2025-06-01"));
        let named = decode(&tick, br#"{"date": "2025-05-20", "tenants": ["acme"], "late_days": 0}"#, now()).unwrap();
        assert_eq!((named.run_date, named.tenants, named.late_days), (day("2025-05-20"), Some(vec!["acme".to_string()]), Some(0)));
        assert_eq!(decode(&HeaderMap::new(), b"  ", now()).unwrap().run_date, day("2025-06-09"), "no trigger time: yesterday by the clock");
    }

    #[test]
    fn a_backfill_range() {
        let request = decode(&HeaderMap::new(), br#"{"from": "2025-05-01", "to": "2025-05-31", "max_records_per_second": 500}"#, now()).unwrap();
        assert_eq!((request.from, request.run_date, request.max_records_per_second), (Some(day("2025-05-01")), day("2025-05-31"), Some(500)));
        let error = decode(&HeaderMap::new(), br#"{"date": "2025-05-02", "to": "2025-05-31"}"#, now()).unwrap_err();
        assert!(error.contains("give one"), "{error}");
    }

    #[test]
    fn the_pubsub_form() {
        let data = base64::engine::general_purpose::STANDARD.encode(br#"{"tenants": ["beta"]}"#);
        let body = json!({"message": {"data": data, "messageId": "1", "publishTime": "2025-06-05T02:00:01.5Z"}, "subscription": "s"});
        let ce = headers(&[("ce-type", PUBSUB_EVENT_TYPE), ("ce-id", "1")]);
        let request = decode(&ce, body.to_string().as_bytes(), now()).unwrap();
        assert_eq!((request.run_date, request.tenants), (day("2025-06-04"), Some(vec!["beta".to_string()])));
        let empty = json!({"message": {"messageId": "2", "publishTime": "2025-06-05T02:00:00Z"}});
        assert_eq!(decode(&ce, empty.to_string().as_bytes(), now()).unwrap().run_date, day("2025-06-04"));
    }

    #[test]
    fn what_is_not_a_request_says_what_was_expected() {
        for (hdrs, body, expected) in [
            (headers(&[]), &b"{\"date\": \"yesterday\"}"[..], "expected an empty body or a JSON object"),
            (headers(&[]), &b"{\"tenant\": \"acme\"}"[..], "unknown field `tenant`"),
            (headers(&[(SCHEDULE_TIME_HEADER, "at two")]), &b""[..], "X-CloudScheduler-ScheduleTime \"at two\" is not an RFC 3339 time"),
            (headers(&[("ce-type", "google.cloud.storage.object.v1.finalized")]), &b"{}"[..], "unexpected CloudEvent type"),
            (headers(&[("ce-type", PUBSUB_EVENT_TYPE)]), &b"{\"message\": {\"data\": \"%%%\"}}"[..], "not base64"),
        ] {
            let error = decode(&hdrs, body, now()).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}
