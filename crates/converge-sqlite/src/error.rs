//! This crate's failures, and how each maps onto the core's [`ErrorKind`].

use converge_core::{ErrorKind, StoreError};
use rusqlite::ErrorCode;

use crate::codec::CodecError;

/// The backend name in every [`StoreError`] this crate reports.
pub const BACKEND: &str = "sqlite";

#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),

    #[error("`{path}` is not a document path: {reason}")]
    InvalidDocumentPath { path: String, reason: &'static str },

    #[error("`{path}` is not a collection path: {reason}")]
    InvalidCollectionPath { path: String, reason: &'static str },

    #[error("document `{0}` is written more than once in one batch; a batch gives every write one commit time, so two states of one document would tie")]
    DuplicateWrite(String),

    #[error("stored document `{path}` cannot be decoded ({source}); the database is corrupt or was written by a newer version")]
    CorruptDocument { path: String, source: CodecError },

    #[error("stored {what} has an unexpected value `{value}`; the database is corrupt or was written by a newer version")]
    CorruptRow { what: &'static str, value: String },

    #[error("{0}")]
    Io(#[from] std::io::Error),

    #[error("a blocking database task did not finish: {0}")]
    Task(String),
}

impl SqliteError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SqliteError::Sqlite(e) => sqlite_kind(e),
            SqliteError::InvalidDocumentPath { .. } | SqliteError::InvalidCollectionPath { .. } | SqliteError::DuplicateWrite(_) => {
                ErrorKind::InvalidInput
            }
            SqliteError::CorruptDocument { .. } | SqliteError::CorruptRow { .. } | SqliteError::Io(_) => ErrorKind::Permanent,
            // A panicked or cancelled task: the transaction rolled back, so trying the
            // call again is safe.
            SqliteError::Task(_) => ErrorKind::Retryable,
        }
    }
}

/// Lock contention and a full disk go away on their own; everything else (a
/// corrupt file, a schema mismatch, a constraint our own SQL violated) does not.
fn sqlite_kind(error: &rusqlite::Error) -> ErrorKind {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull | ErrorCode::OutOfMemory) => {
            ErrorKind::Retryable
        }
        _ => ErrorKind::Permanent,
    }
}

impl From<SqliteError> for StoreError {
    fn from(error: SqliteError) -> Self {
        StoreError::new(error.kind(), BACKEND, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_retryable_and_bad_paths_are_invalid_input() {
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert_eq!(StoreError::from(SqliteError::from(busy)).kind, ErrorKind::Retryable);
        let locked = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_LOCKED), None);
        assert_eq!(SqliteError::from(locked).kind(), ErrorKind::Retryable);
        let corrupt = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT), None);
        assert_eq!(SqliteError::from(corrupt).kind(), ErrorKind::Permanent);
        let bad = SqliteError::InvalidDocumentPath { path: "a".into(), reason: "odd" };
        assert_eq!(StoreError::from(bad).kind, ErrorKind::InvalidInput);
    }
}
