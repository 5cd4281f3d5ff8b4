//! The one place a function's answer becomes an HTTP status: every status a Converge
//! function sends is chosen here, from what happened ([`Answer`]) and, for a failure,
//! the core's [`ErrorKind`] alone (never an error's message).
//!
//! Eventarc and Cloud Scheduler redeliver on any answer that is not 2xx, so the split
//! that matters is: 2xx once the work, or a durable record of why not, is done; 5xx for
//! what may succeed later; 4xx for what never will.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use converge_auth::{AuthError, AuthErrorKind};
use converge_core::ErrorKind;
use serde::Serialize;
use serde_json::json;

/// What became of a request, in the words every function shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Done, or nothing to do, or bad input whose quarantine record is durable: 200.
    Done,
    /// Failed for good, and the failure's record is durable (the reconciler acts on
    /// it): 202, so the platform stops redelivering.
    Recorded,
    /// The work ran and its own quality checks refused the result, the previous state
    /// kept (the nightly ETL): 422. A retry would be refused the same way; the
    /// scheduler shows the job as failed.
    Refused,
    /// No token, or one that proves nothing: 401.
    Unauthenticated,
    /// A genuine token of a caller not allowed here: 403.
    Forbidden,
    /// A body over the function's limit: 413.
    TooLarge,
    /// Failed as the kind says: see [`status_for`].
    Failed(ErrorKind),
}

impl Answer {
    /// A request that is not one: 400.
    pub const BAD_REQUEST: Answer = Answer::Failed(ErrorKind::InvalidInput);

    pub fn status(self) -> StatusCode {
        match self {
            Answer::Done => StatusCode::OK,
            Answer::Recorded => StatusCode::ACCEPTED,
            Answer::Refused => StatusCode::UNPROCESSABLE_ENTITY,
            Answer::Unauthenticated => StatusCode::UNAUTHORIZED,
            Answer::Forbidden => StatusCode::FORBIDDEN,
            Answer::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Answer::Failed(kind) => status_for(kind),
        }
    }

    /// The response: this answer's status with `body` as JSON.
    pub fn with(self, body: impl Serialize) -> Response {
        (self.status(), Json(body)).into_response()
    }

    /// The response `{"error": message}`.
    pub fn error(self, message: impl Into<String>) -> Response {
        self.with(json!({"error": message.into()}))
    }
}

/// A failure's status by its kind: 5xx for what may succeed later
/// ([`ErrorKind::is_retryable`]: 503, the platform redelivers), 4xx for a request that
/// never will, 500 for what would fail again.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Retryable | ErrorKind::NotFound => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Permanent => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The answer to a caller whose token was refused. The body is fixed per kind, free of
/// detail: the reason goes to the log, never to the caller.
pub fn refused_caller(error: &AuthError) -> Response {
    let answer = match error.kind() {
        AuthErrorKind::Unauthenticated => Answer::Unauthenticated,
        AuthErrorKind::Forbidden => Answer::Forbidden,
        // The key set could not be fetched: the same request may pass later.
        AuthErrorKind::Unavailable => Answer::Failed(ErrorKind::Retryable),
    };
    answer.error(error.public_message())
}

/// The answer to a run that failed as a whole: `{"error": …, "retryable": …}`, so the
/// scheduler's log says whether its retry can help.
pub fn failed_run(kind: ErrorKind, error: &impl std::fmt::Display) -> Response {
    Answer::Failed(kind).with(json!({"error": error.to_string(), "retryable": kind.is_retryable()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_succeed_later_is_5xx_and_what_never_will_is_4xx() {
        for kind in [ErrorKind::Retryable, ErrorKind::NotFound, ErrorKind::InvalidInput, ErrorKind::Conflict, ErrorKind::Permanent] {
            let status = status_for(kind);
            assert_eq!(status == StatusCode::SERVICE_UNAVAILABLE, kind.is_retryable(), "{kind:?}");
            assert!(status.is_client_error() || status.is_server_error(), "{kind:?}");
        }
        assert_eq!(Answer::BAD_REQUEST.status(), StatusCode::BAD_REQUEST);
        assert_eq!(Answer::Failed(ErrorKind::Conflict).status(), StatusCode::CONFLICT);
        assert!(Answer::Recorded.status().is_success() && Answer::Done.status().is_success());
    }

    #[test]
    fn a_refused_caller_learns_only_the_kind() {
        assert_eq!(refused_caller(&AuthError::MissingToken).status(), StatusCode::UNAUTHORIZED);
    }
}
