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
//! Statuses (chosen in `converge_function::answer`): 200 every slice loaded (the run's
//! report); 422 a slice failed a quality check (not loaded, the old slice stays; the
//! report says which check, and the scheduler shows the job as failed); 400 a request
//! that is not one; 401/403 no or a refused token; 413 a body over 64 KiB; 503 try
//! again (retryable backend failure: the same request converges); 500 would fail
//! again. Authentication comes first, as in the rebuild function
//! (`converge_function::scheduled`).

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
use converge_core::{Clock, RunOutcome, SystemClock};
use converge_etl::{EtlBackends, EtlError, EtlRequest, EtlRun, EtlRunner};
use converge_function::answer::{failed_run, Answer};
use converge_function::scheduled::{ScheduledFront, Trigger, Triggers};
use converge_function::{Settings, SettingsError, StartError};
use serde::Deserialize;
use tokio::net::TcpListener;

/// The CloudEvent type of a Pub/Sub message delivered through Eventarc.
pub use converge_function::pubsub::MESSAGE_PUBLISHED as PUBSUB_EVENT_TYPE;
/// Cloud Scheduler's header carrying the tick's scheduled time (RFC 3339).
pub use converge_function::scheduled::SCHEDULE_TIME_HEADER;
/// Largest accepted request: a trigger is a few hundred bytes.
pub use converge_function::scheduled::MAX_BODY;
/// The audience of local tokens when `CONVERGE_AUTH_AUDIENCE` is unset (embedded only).
pub const LOCAL_AUDIENCE: &str = "converge-local-nightly-etl";
/// What the caller is allowed to do, in the error naming a missing allow-list.
const PURPOSE: &str = "run the nightly ETL";

#[derive(Clone)]
pub struct EtlState {
    pub runner: Arc<EtlRunner>,
    pub verifier: IdTokenVerifier,
    /// The run date when no trigger names one: yesterday by this clock.
    pub clock: Arc<dyn Clock>,
}

impl EtlState {
    /// Everything the function needs, from its settings: the caller check (and, embedded,
    /// the local signer), the backends, and the raw, changelog and metrics tables
    /// readied (in the cloud only checked: a dataset the setup step has not made stops
    /// the start here, naming what is missing).
    pub async fn open(settings: &Settings) -> Result<Self, StartError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let verifier = converge_function::caller_auth::open_verifier(settings, LOCAL_AUDIENCE, PURPOSE, clock.clone())?;
        let backends = Backends::open(settings, clock.clone()).await.map_err(StartError::Backends)?;
        backends.open_tables(&settings.mirror, Tables::ChangelogAndMetrics).await.map_err(StartError::Tables)?;
        tracing::info!(backend = backends.kind, "nightly-etl backends open");
        let etl = EtlBackends {
            raw: backends.raw,
            source: backends.source,
            errors: backends.errors,
            warehouse: backends.warehouse,
            metrics: backends.metrics,
        };
        Ok(Self { runner: Arc::new(EtlRunner::new(etl, clock.clone()).with_prices(settings.prices)), verifier, clock })
    }

    /// Serves [`app`] on `listener` until `shutdown` resolves.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        converge_function::serve(listener, app(self), shutdown).await
    }
}

/// Who may trigger a run: see [`converge_function::caller_auth`] (in the cloud, the
/// scheduler's and Eventarc trigger's service accounts, by email).
pub fn verifier_config(settings: &Settings, lookup: impl Fn(&str) -> Option<String>) -> Result<VerifierConfig, SettingsError> {
    converge_function::caller_auth::verifier_config(settings, lookup, LOCAL_AUDIENCE, PURPOSE)
}

/// `POST /` and `GET /healthz`.
pub fn app(state: EtlState) -> Router {
    let front = ScheduledFront { name: "nightly ETL", verifier: Some(state.verifier.clone()), triggers: Triggers::HttpAndPubSub };
    Router::new().route("/", post(receive)).merge(converge_function::health_routes()).with_state((front, state))
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
pub fn decode(trigger: &Trigger, now: DateTime<Utc>) -> Result<EtlRequest, String> {
    let request: TriggerBody = trigger.request(EXPECTED_BODY)?;
    let named = match (request.date, request.to) {
        (Some(date), Some(to)) if date != to => return Err(format!("date {date} and to {to} differ: both name the last day to load, give one")),
        (date, to) => date.or(to),
    };
    let run_date = match named {
        Some(date) => date,
        None => trigger.run_date(now)?,
    };
    Ok(EtlRequest { run_date, from: request.from, tenants: request.tenants, late_days: request.late_days, max_records_per_second: request.max_records_per_second })
}

/// What an ETL outcome answers: a run whose slice a quality check refused is
/// [`Answer::Refused`]; a failed run, its error's kind.
pub fn answer_for(outcome: &Result<EtlRun, EtlError>) -> Answer {
    match outcome {
        Ok(run) if run.outcome == RunOutcome::Failed => Answer::Refused,
        Ok(_) => Answer::Done,
        Err(error) => Answer::Failed(error.kind()),
    }
}

async fn receive(State((front, state)): State<(ScheduledFront, EtlState)>, headers: HeaderMap, body: Body) -> Response {
    let trigger = match front.accept(&headers, body).await {
        Ok(trigger) => trigger,
        Err(refusal) => return refusal,
    };
    let request = match decode(&trigger, converge_function::scheduled::utc(state.clock.now())) {
        Ok(request) => request,
        Err(error) => return Answer::BAD_REQUEST.error(error),
    };
    tracing::info!(caller = trigger.caller.as_deref(), run_date = %request.run_date, from = ?request.from, tenants = ?request.tenants, "nightly ETL requested");
    let outcome = state.runner.run(request).await;
    let answer = answer_for(&outcome);
    match outcome {
        Ok(run) => answer.with(run),
        Err(error) => {
            tracing::error!(%error, retryable = error.is_retryable(), status = answer.status().as_u16(), "nightly ETL failed");
            failed_run(error.kind(), &error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    /// The trigger and the request it carries, as `receive` reads them.
    fn decode(headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<EtlRequest, String> {
        super::decode(&Trigger::decode(headers, body, Triggers::HttpAndPubSub)?, now)
    }

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
