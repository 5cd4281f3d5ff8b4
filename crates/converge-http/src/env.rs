//! Every environment variable Converge reads. Nothing else in the code base calls
//! `std::env::var` with a literal name.

/// Port to listen on (Cloud Run's convention). Default 8080.
pub const PORT: &str = "PORT";
/// Directory of the embedded backends (SQLite source, DuckDB warehouse). Default `./.converge`.
pub const DATA_DIR: &str = "CONVERGE_DATA_DIR";
/// Path of the mirror configuration (TOML). Default: the built-in `records` route.
pub const CONFIG: &str = "CONVERGE_CONFIG";
/// Largest accepted request body, in bytes. Default 4 MiB.
pub const MAX_BODY_BYTES: &str = "CONVERGE_MAX_BODY_BYTES";
/// `json` or `text` log lines. Default: `json` on Cloud Run, `text` elsewhere.
pub const LOG_FORMAT: &str = "CONVERGE_LOG_FORMAT";
/// Log filter in `tracing_subscriber::EnvFilter` syntax. Default `info`.
pub const LOG: &str = "CONVERGE_LOG";
/// Set by Cloud Run: the service name. Its presence selects JSON logs.
pub const CLOUD_RUN_SERVICE: &str = "K_SERVICE";
/// Set by Cloud Run: the revision, recorded as the code version when present.
pub const CLOUD_RUN_REVISION: &str = "K_REVISION";
