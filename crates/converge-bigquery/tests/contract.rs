//! BigQuery, on the local emulator, passes the warehouse contract every backend
//! passes (crates/converge-contract). One emulator for the whole suite, a fresh
//! dataset per case.
//!
//! Without the emulator this prints one line and passes; with `CI=true` it fails
//! (see `BigQueryEmulator::for_tests`): `make test` installs it.

use std::sync::Arc;

use converge_bigquery::BigQueryEmulator;

#[tokio::test]
async fn bigquery_passes_the_warehouse_contract() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let emulator = Arc::new(emulator);
    converge_contract::warehouse_contract(|| {
        let emulator = emulator.clone();
        async move { Arc::new(emulator.fresh_warehouse().await.expect("a warehouse on the emulator")) as _ }
    })
    .await;
}

#[tokio::test]
async fn bigquery_passes_the_metrics_warehouse_contract() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let emulator = Arc::new(emulator);
    converge_contract::metrics_warehouse_contract(300, || {
        let emulator = emulator.clone();
        async move { Arc::new(emulator.fresh_warehouse().await.expect("a warehouse on the emulator")) as _ }
    })
    .await;
}

/// The latest view follows converge_core::RowOrder, and one reconcile run converges
/// from any warehouse state (converge_contract::convergence). Fewer cases than on
/// DuckDB: each costs a dozen emulator queries.
#[tokio::test]
async fn bigquery_converges_from_any_warehouse_state() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let emulator = Arc::new(emulator);
    converge_contract::convergence_property(
        12,
        || {
            let emulator = emulator.clone();
            async move { Arc::new(emulator.fresh_warehouse().await.expect("a warehouse on the emulator")) as _ }
        },
        sqlite_source,
    )
    .await;
}

/// A fresh SQLite source store (and error log) in a temporary directory, on `clock`.
async fn sqlite_source(clock: Arc<converge_core::ManualClock>) -> (Arc<dyn converge_core::SourceStore>, Arc<dyn converge_core::ErrorLog>) {
    let dir = tempfile::tempdir().expect("a temporary directory").keep();
    let store = Arc::new(
        converge_sqlite::SqliteStore::open(&dir.join("source.sqlite"), clock, converge_events::EventSource::local()).expect("a SQLite source"),
    );
    (store.clone(), store)
}
