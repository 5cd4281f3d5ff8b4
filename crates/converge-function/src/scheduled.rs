//! The shared front of the scheduled functions (nightly ETL, reconciler, detector
//! runner): who may call, the body limit, and the trigger — Cloud Scheduler's direct
//! HTTP target (or an operator's POST), or a Pub/Sub message delivered by Eventarc —
//! with the run's date and key. Each function then reads its own request from the
//! [`Trigger`], runs, and answers through [`crate::answer`].

use axum::body::{to_bytes, Body};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Days, NaiveDate, Utc};
use converge_auth::IdTokenVerifier;
use serde::de::DeserializeOwned;

use crate::answer::{self, Answer};
use crate::pubsub::{decode_message_published, MESSAGE_PUBLISHED};

/// Largest accepted request: a trigger is a few hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Cloud Scheduler's header with the tick's scheduled time (RFC 3339).
pub const SCHEDULE_TIME_HEADER: &str = "x-cloudscheduler-scheduletime";

/// Which ways in a function takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triggers {
    /// A plain POST (Cloud Scheduler's HTTP target, an operator), and a CloudEvent
    /// `messagePublished` from Pub/Sub through Eventarc.
    HttpAndPubSub,
    /// A plain POST only; CloudEvent headers mean nothing (the detector runner).
    Http,
}

/// Everything a scheduled function checks before reading its own request.
#[derive(Clone)]
pub struct ScheduledFront {
    /// Who runs behind it, for log lines ("nightly ETL").
    pub name: &'static str,
    /// Who may call; `None` where Cloud Run's IAM invoker check is the only gate (the
    /// reconciler).
    pub verifier: Option<IdTokenVerifier>,
    pub triggers: Triggers,
}

/// When a tick was scheduled, and the header or field that said so (named in errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerTime {
    pub source: &'static str,
    pub text: String,
}

/// One trigger, whichever way it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The request: the body of a plain POST, the payload of a Pub/Sub message; may be
    /// empty (a bare tick).
    pub body: Vec<u8>,
    /// The scheduled time: `X-CloudScheduler-ScheduleTime`, or the message's
    /// `publishTime` (else `ce-time`).
    pub time: Option<TriggerTime>,
    /// What makes this tick this tick, so a redelivery is the same batch: the message
    /// id (else `ce-id`), or the schedule time.
    pub key: Option<String>,
    /// The verified caller's email, where the function checks tokens.
    pub caller: Option<String>,
}

impl ScheduledFront {
    /// Checks the caller (authentication first: an unauthenticated caller learns nothing
    /// about its request), reads at most [`MAX_BODY`] bytes and decodes the trigger; or
    /// the response refusing it (401/403, 413, 400).
    pub async fn accept(&self, headers: &HeaderMap, body: Body) -> Result<Trigger, Response> {
        let caller = match &self.verifier {
            None => None,
            Some(verifier) => match verifier.verify_headers(headers).await {
                Ok(caller) => Some(caller.email),
                Err(error) => {
                    let response = answer::refused_caller(&error);
                    // The reason goes to the log, never to the caller.
                    tracing::warn!(%error, status = response.status().as_u16(), "{} request refused", self.name);
                    return Err(response);
                }
            },
        };
        let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| Answer::TooLarge.error(format!("expected a request of at most {MAX_BODY} bytes")))?;
        let mut trigger = Trigger::decode(headers, &bytes, self.triggers).map_err(|error| Answer::BAD_REQUEST.error(error))?;
        trigger.caller = caller;
        Ok(trigger)
    }
}

impl Trigger {
    /// Reads a trigger from its headers and body. Errors say what was expected.
    pub fn decode(headers: &HeaderMap, body: &[u8], triggers: Triggers) -> Result<Trigger, String> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        match header("ce-type").filter(|_| triggers == Triggers::HttpAndPubSub) {
            Some(event_type) if event_type == MESSAGE_PUBLISHED => {
                let message = decode_message_published(body)?;
                let time = message.publish_time.or_else(|| header("ce-time"));
                Ok(Trigger {
                    body: message.data,
                    time: time.map(|text| TriggerTime { source: "message.publishTime", text }),
                    key: message.message_id.or_else(|| header("ce-id")),
                    caller: None,
                })
            }
            Some(other) => Err(format!(
                "unexpected CloudEvent type `{other}`: expected `{MESSAGE_PUBLISHED}`, or a plain JSON request (Cloud Scheduler's HTTP target, an operator)"
            )),
            None => {
                let time = header(SCHEDULE_TIME_HEADER);
                Ok(Trigger {
                    body: body.to_vec(),
                    key: time.clone(),
                    time: time.map(|text| TriggerTime { source: "X-CloudScheduler-ScheduleTime", text }),
                    caller: None,
                })
            }
        }
    }

    /// The request the trigger carries: `T::default()` for an empty body, else its JSON;
    /// `expected` describes the shape in the error.
    pub fn request<T: DeserializeOwned + Default>(&self, expected: &str) -> Result<T, String> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&self.body).map_err(|e| format!("{expected}: {e}"))
    }

    /// The day a tick runs over when its request names none: the UTC date of the
    /// trigger's time minus one day (a 02:00 tick runs over yesterday, the day that just
    /// ended, and a retried tick names the same day), else yesterday by `now`.
    pub fn run_date(&self, now: DateTime<Utc>) -> Result<NaiveDate, String> {
        let time = match &self.time {
            Some(TriggerTime { source, text }) => DateTime::parse_from_rfc3339(text)
                .map_err(|e| format!("{source} {text:?} is not an RFC 3339 time such as 2025-04-01T02:00:00Z: {e}"))?
                .with_timezone(&Utc),
            None => now,
        };
        time.date_naive().checked_sub_days(Days::new(1)).ok_or_else(|| "the trigger time is the first day of the calendar".to_owned())
    }
}

/// The clock's time as a `chrono` time, for [`Trigger::run_date`].
pub fn utc(now: converge_core::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(now.seconds, now.nanos as u32).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (axum::http::HeaderName::from_static(*name), value.parse().unwrap())).collect()
    }

    #[test]
    fn a_scheduler_post_is_keyed_and_dated_by_its_schedule_time() {
        let trigger = Trigger::decode(&headers(&[(SCHEDULE_TIME_HEADER, "2025-06-02T02:00:00Z")]), b"{}", Triggers::HttpAndPubSub).unwrap();
        assert_eq!((trigger.key.as_deref(), trigger.body.as_slice()), (Some("2025-06-02T02:00:00Z"), &b"{}"[..]));
        assert_eq!(trigger.run_date(DateTime::default()).unwrap(), NaiveDate::from_ymd_opt(2025, 6, 1).unwrap());
    }

    #[test]
    fn a_pubsub_message_is_keyed_by_its_id_and_dated_by_its_publish_time() {
        let body = br#"{"message": {"data": "e30=", "messageId": "m1", "publishTime": "2025-06-05T02:00:01Z"}}"#;
        let trigger = Trigger::decode(&headers(&[("ce-type", MESSAGE_PUBLISHED)]), body, Triggers::HttpAndPubSub).unwrap();
        assert_eq!((trigger.key.as_deref(), trigger.body.as_slice()), (Some("m1"), &b"{}"[..]));
        assert_eq!(trigger.run_date(DateTime::default()).unwrap(), NaiveDate::from_ymd_opt(2025, 6, 4).unwrap());
        // A function that takes plain POSTs only reads the envelope as its request.
        assert_eq!(Trigger::decode(&headers(&[("ce-type", MESSAGE_PUBLISHED)]), body, Triggers::Http).unwrap().body, body.to_vec());
    }

    #[test]
    fn an_empty_body_is_the_default_request() {
        let trigger = Trigger::decode(&HeaderMap::new(), b" \n", Triggers::Http).unwrap();
        assert_eq!(trigger.request::<Option<u32>>("expected a number").unwrap(), None);
        let trigger = Trigger::decode(&HeaderMap::new(), b"x", Triggers::Http).unwrap();
        assert!(trigger.request::<Option<u32>>("expected a number").unwrap_err().starts_with("expected a number: "));
    }
}
