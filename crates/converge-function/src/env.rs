//! Every environment variable Converge reads. Nothing else in the code base calls
//! `std::env::var` with a literal name.

use converge_core::cost::{PriceError, PriceTable};

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

// --- What a run's cost is estimated with (`converge_core::cost`) -----------------------

/// US dollars per 100,000 Firestore document reads. Default 0.03 (a regional location
/// such as `us-central1`); a multi-region location such as `nam5` is 0.06.
pub const PRICE_FIRESTORE_READS_PER_100K: &str = "CONVERGE_PRICE_FIRESTORE_READS_PER_100K";
/// US dollars per TiB billed by BigQuery on-demand queries. Default 6.25.
pub const PRICE_BIGQUERY_PER_TIB: &str = "CONVERGE_PRICE_BIGQUERY_PER_TIB";

/// The price table every run record's `cost` is estimated with: Google's list prices
/// ([`PriceTable::default`]), each replaced by its variable when set. A malformed value
/// is an error naming the variable, so a typo cannot silently price runs at the default.
pub fn prices_from_env() -> Result<PriceTable, PriceError> {
    prices_from_lookup(|name| std::env::var(name).ok())
}

/// [`prices_from_env`] through `lookup`, so tests need not touch the process environment.
pub fn prices_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<PriceTable, PriceError> {
    let defaults = PriceTable::default();
    let price = |name: &str, default: f64| PriceTable::price_setting(name, lookup(name).as_deref(), default);
    Ok(PriceTable {
        firestore_usd_per_100k_reads: price(PRICE_FIRESTORE_READS_PER_100K, defaults.firestore_usd_per_100k_reads)?,
        bigquery_usd_per_tib: price(PRICE_BIGQUERY_PER_TIB, defaults.bigquery_usd_per_tib)?,
    })
}

// --- Local tools --------------------------------------------------------------------

/// Path of the BigQuery emulator binary (`bqemulator`), for the BigQuery adapter's
/// tests and local cloud runs. Default: `tools/bqemulator/venv/bin/bqemulator`, which
/// `make bqemulator` installs. Read by `converge_bigquery::emulator` (same name there).
pub const BQEMULATOR: &str = "CONVERGE_BQEMULATOR";
/// Path of Google's Firestore emulator launcher (`cloud_firestore_emulator`). Default:
/// the Google Cloud SDK's `platform/cloud-firestore-emulator/` under `/usr/lib/google-cloud-sdk`.
pub const FIRESTORE_EMULATOR: &str = "CONVERGE_FIRESTORE_EMULATOR";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_default_to_the_list_prices_and_a_malformed_one_names_its_variable() {
        assert_eq!(prices_from_lookup(|_| None).unwrap(), PriceTable::default());
        let nam5 = prices_from_lookup(|name| (name == PRICE_FIRESTORE_READS_PER_100K).then(|| "0.06".to_owned())).unwrap();
        assert_eq!((nam5.firestore_usd_per_100k_reads, nam5.bigquery_usd_per_tib), (0.06, PriceTable::default().bigquery_usd_per_tib));
        let error = prices_from_lookup(|name| (name == PRICE_BIGQUERY_PER_TIB).then(|| "6,25".to_owned())).unwrap_err();
        assert!(error.to_string().starts_with("setting CONVERGE_PRICE_BIGQUERY_PER_TIB: expected a price in US dollars"), "{error}");
    }
}
