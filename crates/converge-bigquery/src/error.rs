//! BigQuery failures as [`StoreError`]s. Callers decide on the kind alone: a
//! retryable failure (unavailable, deadline, 5xx, 429, rate limits) makes the platform
//! redeliver; a permanent one (schema mismatch, invalid request) is recorded and left
//! for the reconciler, because retrying cannot fix it.

use converge_core::{ErrorKind, StoreError};
use google_cloud_bigquery::error::{AppendError, CommitError, QueryError, WriterBuilderError};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::error::Error as GaxError;

pub const BACKEND: &str = "bigquery";

/// The kind of a transport or RPC failure.
pub fn gax_kind(error: &GaxError) -> ErrorKind {
    if error.is_timeout() || error.is_io() || error.is_connect() || error.is_transient_and_before_rpc() || error.is_exhausted() {
        return ErrorKind::Retryable;
    }
    if let Some(code) = error.http_status_code() {
        return http_kind(code);
    }
    if let Some(status) = error.status() {
        return code_kind(status.code);
    }
    if error.is_authentication() {
        // Credentials that cannot be obtained now (metadata server hiccup) may be later;
        // wrong ones show up as 401/403 above.
        return ErrorKind::Retryable;
    }
    if error.is_transport() {
        return ErrorKind::Retryable;
    }
    ErrorKind::Permanent
}

/// Permission (401, 403: also quota and rate-limit reasons) and configuration
/// failures are retryable: once IAM or the configuration is fixed, redelivery heals and
/// every version lands (https://cloud.google.com/bigquery/docs/error-messages).
pub fn http_kind(code: u16) -> ErrorKind {
    match code {
        401 | 403 | 408 | 429 | 500..=599 => ErrorKind::Retryable,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        _ => ErrorKind::Permanent,
    }
}

pub fn code_kind(code: Code) -> ErrorKind {
    match code {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted | Code::Internal | Code::Unknown | Code::Cancelled => {
            ErrorKind::Retryable
        }
        // IAM or configuration: heals once fixed (see `http_kind`).
        Code::PermissionDenied | Code::Unauthenticated | Code::FailedPrecondition => ErrorKind::Retryable,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::Conflict,
        _ => ErrorKind::Permanent,
    }
}

/// The kind of a failed job's reason (<https://cloud.google.com/bigquery/docs/error-messages>).
pub fn reason_kind(reason: &str) -> ErrorKind {
    match reason {
        "backendError" | "internalError" | "rateLimitExceeded" | "jobRateLimitExceeded" | "jobBackendError" | "jobInternalError" => {
            ErrorKind::Retryable
        }
        // Permission, quota and billing: heal once fixed (see `http_kind`).
        "accessDenied" | "quotaExceeded" | "billingNotEnabled" | "billingTierLimitExceeded" => ErrorKind::Retryable,
        "notFound" => ErrorKind::NotFound,
        "duplicate" => ErrorKind::Conflict,
        _ => ErrorKind::Permanent,
    }
}

fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Retryable => "transient: retry later",
        ErrorKind::NotFound => "check project and dataset, and run `converge setup --backend cloud` with the same configuration",
        ErrorKind::Conflict => "someone else changed it concurrently: retry",
        ErrorKind::InvalidInput => "the rows cannot be stored as they are",
        ErrorKind::Permanent => "retrying will not help: check the table layout against the mirror configuration",
    }
}

fn store_error(kind: ErrorKind, context: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::new(kind, BACKEND, format!("{context}: {detail} ({})", hint(kind)))
}

pub fn from_gax(context: &str, error: &GaxError) -> StoreError {
    store_error(gax_kind(error), context, error)
}

pub fn from_query(context: &str, error: &QueryError) -> StoreError {
    match error {
        QueryError::Rpc { source, .. } => from_gax(context, source),
        QueryError::JobFailed { errors, .. } => {
            // The most hopeful reason decides: one transient reason among several means
            // the job may pass when rerun.
            let kind = errors.iter().map(|e| reason_kind(&e.reason)).min_by_key(|k| *k != ErrorKind::Retryable).unwrap_or(ErrorKind::Permanent);
            let detail = errors.iter().map(|e| format!("{}: {}", e.reason, e.message)).collect::<Vec<_>>().join("; ");
            store_error(kind, context, format!("job failed: {detail}"))
        }
        other => store_error(ErrorKind::Permanent, context, other),
    }
}

pub fn from_append(context: &str, error: &AppendError) -> StoreError {
    match error {
        AppendError::Rpc { source, .. } => from_gax(context, source),
        AppendError::RowErrors { row_errors, .. } => {
            let detail = row_errors.iter().take(5).map(|e| format!("row {}: {}", e.index, e.message)).collect::<Vec<_>>().join("; ");
            store_error(ErrorKind::InvalidInput, context, format!("BigQuery refused {} row(s), none of the batch was stored: {detail}", row_errors.len()))
        }
        // The client gave up on a broken stream; the rows may or may not have landed,
        // and appending them again is harmless (the views ignore the copy).
        AppendError::UnexpectedEndOfStream => store_error(ErrorKind::Retryable, context, error),
        other => store_error(ErrorKind::Retryable, context, other),
    }
}

pub fn from_commit(context: &str, error: &CommitError) -> StoreError {
    match error {
        CommitError::Rpc { source, .. } => from_gax(context, source),
        // Nothing of the stream was committed: the whole atomic append may run again.
        other => store_error(ErrorKind::Retryable, context, other),
    }
}

pub fn from_writer(context: &str, error: &WriterBuilderError) -> StoreError {
    match error {
        WriterBuilderError::Rpc { source, .. } => from_gax(context, source),
        other => store_error(ErrorKind::Permanent, context, other),
    }
}

/// A call that did not finish within [`crate::BigQueryConfig::call_timeout`].
pub fn timed_out(context: &str, after: std::time::Duration) -> StoreError {
    store_error(ErrorKind::Retryable, context, format!("no answer within {} s (is BigQuery reachable?)", after.as_secs_f32()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(http_kind(503), ErrorKind::Retryable);
        assert_eq!(http_kind(429), ErrorKind::Retryable);
        assert_eq!(http_kind(400), ErrorKind::Permanent);
        assert_eq!(http_kind(404), ErrorKind::NotFound);
        assert_eq!(code_kind(Code::Unavailable), ErrorKind::Retryable);
        assert_eq!(code_kind(Code::DeadlineExceeded), ErrorKind::Retryable);
        assert_eq!(code_kind(Code::InvalidArgument), ErrorKind::Permanent);
        assert_eq!(reason_kind("rateLimitExceeded"), ErrorKind::Retryable);
        assert_eq!(reason_kind("invalidQuery"), ErrorKind::Permanent);
        // Permission, credentials, quota, a missing table: fixed, they heal by redelivery.
        for code in [401, 403] {
            assert_eq!(http_kind(code), ErrorKind::Retryable, "{code}");
        }
        for code in [Code::PermissionDenied, Code::Unauthenticated, Code::FailedPrecondition] {
            assert_eq!(code_kind(code), ErrorKind::Retryable, "{code:?}");
        }
        for reason in ["accessDenied", "quotaExceeded", "billingNotEnabled"] {
            assert_eq!(reason_kind(reason), ErrorKind::Retryable, "{reason}");
        }
        assert!(StoreError::new(http_kind(404), BACKEND, "no table").is_retryable());
    }
}
