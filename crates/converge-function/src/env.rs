//! Every environment variable Converge reads. Nothing else in the code base calls
//! `std::env::var` with a literal name.

// --- Which backends -------------------------------------------------------------

/// `embedded` (SQLite + DuckDB in `CONVERGE_DATA_DIR`, the default) or `cloud`
/// (Firestore + BigQuery).
pub const BACKEND: &str = "CONVERGE_BACKEND";
/// The Google Cloud project of the cloud backends. Required when `CONVERGE_BACKEND=cloud`.
pub const PROJECT: &str = "GOOGLE_CLOUD_PROJECT";
/// Firestore database id. Default `(default)`.
pub const FIRESTORE_DATABASE: &str = "CONVERGE_FIRESTORE_DATABASE";
/// `host:port` of a Firestore emulator; the real service when unset.
pub const FIRESTORE_EMULATOR_HOST: &str = "FIRESTORE_EMULATOR_HOST";
/// BigQuery dataset of the changelog tables and views. Default `converge`.
pub const BIGQUERY_DATASET: &str = "CONVERGE_BIGQUERY_DATASET";
/// BigQuery location for creating the dataset (`US`, `europe-west1`). Default: BigQuery's.
pub const BIGQUERY_LOCATION: &str = "CONVERGE_BIGQUERY_LOCATION";
/// `host:port` (or URL) of a BigQuery emulator's REST API; the real service when unset.
pub const BIGQUERY_EMULATOR_HOST: &str = "BIGQUERY_EMULATOR_HOST";
/// `host:port` (or URL) of a BigQuery emulator's Storage API (gRPC). Required with
/// `BIGQUERY_EMULATOR_HOST`.
pub const BIGQUERY_STORAGE_EMULATOR_HOST: &str = "CONVERGE_BIGQUERY_STORAGE_EMULATOR_HOST";
/// `true` to also serve the Firestore emulator's trigger deliveries
/// (`POST /functions/projects/{p}/triggers/{t}`, base64 bodies). Local runs only:
/// refused on Cloud Run.
pub const ACCEPT_EMULATOR_EVENTS: &str = "CONVERGE_ACCEPT_EMULATOR_EVENTS";

// --- Serving ----------------------------------------------------------------------

/// Port to listen on (Cloud Run's convention). Default 8080.
pub const PORT: &str = "PORT";
/// IP address to listen on. Default: `0.0.0.0` on Cloud Run (`K_SERVICE` set),
/// `127.0.0.1` elsewhere.
pub const BIND: &str = "CONVERGE_BIND";
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
/// DuckDB's memory cap for the embedded warehouse (`96MB` by default; DuckDB syntax).
/// Read by `converge_duckdb` (same name there).
pub const DUCKDB_MEMORY_LIMIT: &str = "CONVERGE_DUCKDB_MEMORY_LIMIT";

// --- Who may call (the rebuild function) -------------------------------------------

/// The audience ID tokens must carry: the service's URL. Required on the cloud backend;
/// embedded default `converge-local-rebuild`.
pub const AUTH_AUDIENCE: &str = "CONVERGE_AUTH_AUDIENCE";
/// Comma-separated emails (people or service accounts) allowed to call. Required on the
/// cloud backend; embedded default `operator@converge.local`, the local signer's caller.
pub const AUTH_ALLOWED_EMAILS: &str = "CONVERGE_AUTH_ALLOWED_EMAILS";

// --- Local tools --------------------------------------------------------------------

/// Path of the BigQuery emulator binary (`bqemulator`), for the BigQuery adapter's
/// tests and local cloud runs. Default: `tools/bqemulator/venv/bin/bqemulator`, which
/// `make bqemulator` installs. Read by `converge_bigquery::emulator` (same name there).
pub const BQEMULATOR: &str = "CONVERGE_BQEMULATOR";
/// Path of Google's Firestore emulator launcher (`cloud_firestore_emulator`). Default:
/// the Google Cloud SDK's `platform/cloud-firestore-emulator/` under `/usr/lib/google-cloud-sdk`.
pub const FIRESTORE_EMULATOR: &str = "CONVERGE_FIRESTORE_EMULATOR";
