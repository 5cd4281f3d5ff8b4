//! This crate's failures, and how each maps onto the core's [`ErrorKind`].
//!
//! gRPC status codes decide the kind: the ones Google documents as worth retrying
//! (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `ABORTED`, `RESOURCE_EXHAUSTED`) and failures
//! of the connection itself are [`ErrorKind::Retryable`]; `INVALID_ARGUMENT` (a
//! value or path Firestore refuses) is [`ErrorKind::InvalidInput`]; everything else
//! (permissions, a missing database, a broken response) is [`ErrorKind::Permanent`].

use std::time::Duration;

use converge_core::{ErrorKind, StoreError};
use firestore::gcloud_sdk::tonic::{Code, Status};

/// The backend name in every [`StoreError`] this crate reports.
pub const BACKEND: &str = "firestore";

#[derive(Debug, thiserror::Error)]
pub enum FirestoreError {
    #[error("Firestore {operation} failed: {code:?}: {message}{hint}", hint = hint(*code))]
    Rpc { operation: &'static str, code: Code, message: String, transport: bool },

    #[error("Firestore {operation} did not answer within {timeout:?}; the service (or emulator) is slow or unreachable, try again or raise the request timeout")]
    Timeout { operation: &'static str, timeout: Duration },

    #[error("cannot connect to Firestore at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },

    #[error("`{path}` is not a document path: {reason}")]
    InvalidDocumentPath { path: String, reason: &'static str },

    #[error("`{path}` is not a collection path: {reason}")]
    InvalidCollectionPath { path: String, reason: &'static str },

    #[error("document `{0}` is written more than once in one batch; a batch gives every write one commit time, so two states of one document would tie: send one write per document")]
    DuplicateWrite(String),

    #[error("record id `{id}` cannot be a Firestore document id: {reason}")]
    InvalidRecordId { id: String, reason: &'static str },

    #[error(transparent)]
    Convert(#[from] ConvertError),

    #[error("Firestore {operation} answered without {what}; expected it in every successful response (a broken server or emulator)")]
    MissingInResponse { operation: &'static str, what: &'static str },

    #[error("stored {what} is not what Converge writes: {detail}; was it written by another tool or a newer version?")]
    CorruptRecord { what: &'static str, detail: String },

    #[error("{operation} of `{scope}` over {range}: a scope of more than one collection takes only the whole range (PathRange::all()), since Firestore orders `__name__` segment by segment, not in the byte order of whole paths that ranges follow; ask for the whole scope, or for one collection's scope")]
    RangeOfNestedScope { operation: &'static str, scope: String, range: String },

    #[error("range bound `{bound}` falls among the documents of `{collection}` at id `{id}`, which Firestore refuses as a document id ({reason}), so no `__name__` filter expresses it; expected a bound that is a document path (or a path outside the collection)")]
    UnusableRangeBound { bound: String, collection: String, id: String, reason: &'static str },

    #[error("change field {field:?}: expected the name of a top-level timestamp field, such as `updated_at`")]
    InvalidChangeField { field: String },

    #[error("{operation}: the record `{id}` kept changing under concurrent writers ({attempts} attempts); try again")]
    Contention { operation: &'static str, id: String, attempts: u32 },
}

fn hint(code: Code) -> &'static str {
    match code {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted => " (transient: try again)",
        Code::PermissionDenied | Code::Unauthenticated => {
            " (check the credentials and that the service account may use Firestore in this project)"
        }
        Code::FailedPrecondition => " (a missing index, or a database that does not exist or is not in Native mode)",
        Code::InvalidArgument => " (Firestore refused the input as it is)",
        _ => "",
    }
}

impl FirestoreError {
    pub(crate) fn rpc(operation: &'static str, status: Status) -> Self {
        // A status tonic made up from a failed connection, rather than one the server
        // sent, carries the transport error as its source.
        let transport = std::error::Error::source(&status).is_some();
        FirestoreError::Rpc { operation, code: status.code(), message: status.message().to_owned(), transport }
    }

    /// The gRPC code, for a failure the server (or connection) reported.
    pub fn code(&self) -> Option<Code> {
        match self {
            FirestoreError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            FirestoreError::Rpc { code, transport, .. } => code_kind(*code, *transport),
            FirestoreError::Timeout { .. } | FirestoreError::Connect { .. } | FirestoreError::Contention { .. } => ErrorKind::Retryable,
            FirestoreError::InvalidDocumentPath { .. }
            | FirestoreError::InvalidCollectionPath { .. }
            | FirestoreError::DuplicateWrite(_)
            | FirestoreError::InvalidRecordId { .. }
            | FirestoreError::RangeOfNestedScope { .. }
            | FirestoreError::UnusableRangeBound { .. }
            | FirestoreError::InvalidChangeField { .. } => ErrorKind::InvalidInput,
            FirestoreError::Convert(e) => e.kind(),
            FirestoreError::MissingInResponse { .. } | FirestoreError::CorruptRecord { .. } => ErrorKind::Permanent,
        }
    }
}

/// Why a Firestore value or document cannot be read as a core one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("field `{at}` holds a {found}, which only Firestore pipelines use and no stored document can hold; expected a stored value type")]
    UnsupportedValue { at: String, found: &'static str },

    #[error("field `{at}` has no value type set; expected one of Firestore's value types (a client newer than this build?)")]
    MissingValue { at: String },

    #[error("document `{name}` is not under `{root}`; expected a document of the configured database")]
    ForeignDocument { name: String, root: String },

    #[error("document `{name}` arrived without its {what}; Firestore always sends it with a stored document")]
    MissingTime { name: String, what: &'static str },

    #[error("timestamp {seconds}s {nanos}ns is outside Firestore's range (nanos must be 0..1e9)")]
    BadTimestamp { seconds: i64, nanos: i32 },
}

impl ConvertError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConvertError::BadTimestamp { .. } => ErrorKind::InvalidInput,
            _ => ErrorKind::Permanent,
        }
    }
}

/// The kind of a gRPC status code.
pub fn code_kind(code: Code, transport: bool) -> ErrorKind {
    match code {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted => ErrorKind::Retryable,
        // IAM (a missing role), credentials, a missing index or database: they heal
        // once the project is fixed, and the platform's redelivery then lands every
        // version (https://firebase.google.com/docs/reference/kotlin/com/google/firebase/firestore/FirebaseFirestoreException.Code).
        Code::PermissionDenied | Code::Unauthenticated | Code::FailedPrecondition => ErrorKind::Retryable,
        // The connection broke mid-call (reset, refused, closed): the same call may
        // succeed on a new connection.
        Code::Unknown | Code::Cancelled | Code::Internal if transport => ErrorKind::Retryable,
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidInput,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::Conflict,
        _ => ErrorKind::Permanent,
    }
}

impl From<FirestoreError> for StoreError {
    fn from(error: FirestoreError) -> Self {
        StoreError::new(error.kind(), BACKEND, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Aborted, Code::ResourceExhausted] {
            let error = FirestoreError::rpc("Commit", Status::new(code, "x"));
            assert_eq!(error.kind(), ErrorKind::Retryable, "{code:?}");
            assert!(error.to_string().contains("try again"), "{error}");
        }
        assert_eq!(FirestoreError::rpc("Commit", Status::invalid_argument("bad")).kind(), ErrorKind::InvalidInput);
        // IAM and configuration heal once fixed: the platform redelivers meanwhile.
        assert_eq!(FirestoreError::rpc("Commit", Status::permission_denied("no")).kind(), ErrorKind::Retryable);
        assert_eq!(FirestoreError::rpc("Commit", Status::unauthenticated("no")).kind(), ErrorKind::Retryable);
        assert_eq!(FirestoreError::rpc("Commit", Status::failed_precondition("no index")).kind(), ErrorKind::Retryable);
        assert_eq!(FirestoreError::rpc("Commit", Status::internal("bug")).kind(), ErrorKind::Permanent);
        assert_eq!(code_kind(Code::Unknown, true), ErrorKind::Retryable);
        assert_eq!(code_kind(Code::Unknown, false), ErrorKind::Permanent);
        let store: StoreError = FirestoreError::DuplicateWrite("c/a".into()).into();
        assert_eq!((store.kind, store.backend), (ErrorKind::InvalidInput, BACKEND));
    }
}
