//! What can stop a pass as a whole. A failing detector does not: it is recorded in the
//! run's report ([`crate::DetectorFailure`]).

use converge_core::{ErrorKind, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("no detector named {id:?} in the pack; the pack has {known} detectors (`converge detectors list`)")]
    UnknownDetector { id: String, known: usize },
    #[error("tenant {tenant:?} is not a document id ({problem}): expected a Firestore document id such as `acme`")]
    InvalidTenant { tenant: String, problem: &'static str },
    #[error("the request names no {what}: expected at least one, or leave the field out for all")]
    EmptySelection { what: &'static str },
    #[error("the detector pack cannot be used: {0}")]
    Pack(#[from] converge_detect::PackError),
    #[error("detector pass failed writing or reading opportunities ({0}); running it again is safe (same batch)")]
    Store(StoreError),
    #[error("detector pass (batch {batch_id}) wrote its opportunities but its run record could not be stored: {source}; running it again is safe")]
    NotRecorded { batch_id: String, source: StoreError },
}

impl DetectError {
    /// What a caller can do about it (the HTTP status follows from the kind alone, in
    /// `converge_function::answer`): a wrong request is `InvalidInput`; a transient store
    /// failure `Retryable` (same batch on the next try); anything else, an unusable pack
    /// included, `Permanent`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DetectError::UnknownDetector { .. } | DetectError::InvalidTenant { .. } | DetectError::EmptySelection { .. } => {
                ErrorKind::InvalidInput
            }
            DetectError::Store(e) | DetectError::NotRecorded { source: e, .. } if e.kind == ErrorKind::Retryable => ErrorKind::Retryable,
            DetectError::Store(_) | DetectError::NotRecorded { .. } | DetectError::Pack(_) => ErrorKind::Permanent,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}
