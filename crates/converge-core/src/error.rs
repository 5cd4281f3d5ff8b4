//! Errors of the core and of every backend behind its traits.
//!
//! Backends report a [`StoreError`] with a small [`ErrorKind`], and every library's own
//! error says which kind it is (`kind()`); callers decide on the kind alone (retry,
//! answer 4xx, answer 5xx), never on message text. Whether a kind is worth retrying is
//! [`ErrorKind::is_retryable`]; which HTTP status it is, `converge_function::answer`.

/// What a caller can do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Transient: the same call may succeed later (timeouts, lock contention,
    /// unavailable backend). The platform redelivers: answer 5xx.
    Retryable,
    /// The input can never succeed as it is: quarantine and answer 4xx.
    InvalidInput,
    /// The thing asked for does not exist.
    NotFound,
    /// Someone else holds it (a rebuild already running).
    Conflict,
    /// A bug or a broken backend that retrying will not fix.
    Permanent,
}

impl ErrorKind {
    /// Whether running the same call again later may succeed, so the platform should
    /// redeliver (5xx) rather than take a failure record as the answer. Something not
    /// found (a table or dataset missing, a wrong project) heals once the configuration
    /// is fixed, and then every redelivered version lands; only input refused for its
    /// own content (`InvalidInput`), a conflict and broken invariants (`Permanent`) do
    /// not.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Retryable | ErrorKind::NotFound)
    }
}

/// A failure of a source store, warehouse or error log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct StoreError {
    pub kind: ErrorKind,
    pub backend: &'static str,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: ErrorKind, backend: &'static str, message: impl Into<String>) -> Self {
        Self { kind, backend, message: message.into() }
    }

    pub fn retryable(backend: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retryable, backend, message)
    }

    pub fn permanent(backend: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, backend, message)
    }

    /// What a start-up check (`Warehouse::check_tables`) reports when the setup step
    /// has not made what the caller needs: `NotFound`, naming every missing or
    /// outdated object of `place` (a dataset, a database file).
    pub fn not_set_up(backend: &'static str, place: &str, missing: &[String]) -> Self {
        Self::new(
            ErrorKind::NotFound,
            backend,
            format!("{place} is not set up for this configuration and version of Converge: {}", missing.join("; ")),
        )
    }

    /// Whether running the same call again later may succeed: [`ErrorKind::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// A configuration that cannot be used; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("mirror configuration is not valid TOML: {0}")]
    Parse(String),
    #[error("route pattern `{pattern}` is invalid: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("mirror configuration: {0}")]
    Invalid(String),
}
