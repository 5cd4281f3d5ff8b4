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
