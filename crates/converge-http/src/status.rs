//! The one place error kinds become HTTP statuses.
//!
//! Eventarc and Cloud Scheduler redeliver on any non-2xx answer, so the split that
//! matters is: 5xx for what may succeed later, 4xx for what never will.

use axum::http::StatusCode;
use converge_core::ErrorKind;

pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Retryable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Permanent => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
