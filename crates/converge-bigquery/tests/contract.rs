//! BigQuery, on the local emulator, passes the warehouse contract every backend
//! passes (crates/converge-contract). One emulator per suite, a fresh dataset per
//! case.
//!
//! Without the emulator this prints one line and passes; with `CI=true` it fails
//! (see `BigQueryEmulator::for_tests`): `make test` installs it.

use std::future::Future;
use std::sync::Arc;

use converge_bigquery::{BigQueryEmulator, BigQueryWarehouse};
use converge_contract::kit::backends::sqlite_source;

/// The emulator, or `None` (skipped), and a factory of fresh warehouses on it, each
/// made ready by `ready` (e.g. a smaller page size).
async fn fresh_warehouses<W, R, RFut>(ready: R) -> Option<impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Arc<W>>>>>
where
    W: ?Sized + 'static,
    R: Fn(BigQueryWarehouse) -> RFut + Clone + 'static,
    RFut: Future<Output = Arc<W>> + 'static,
{
    let emulator = Arc::new(BigQueryEmulator::for_tests().await?);
    Some(move || {
        let (emulator, ready) = (emulator.clone(), ready.clone());
        Box::pin(async move { ready(emulator.fresh_warehouse().await.expect("a warehouse on the emulator")).await }) as _
    })
}

#[tokio::test]
async fn bigquery_passes_the_warehouse_contract() {
    let Some(fresh) = fresh_warehouses(|w| async move { Arc::new(w) as Arc<dyn converge_core::Warehouse> }).await else { return };
    converge_contract::warehouse_contract(fresh).await;
}

#[tokio::test]
async fn bigquery_passes_the_promoted_backfill_contract() {
    let Some(fresh) = fresh_warehouses(|w| async move { Arc::new(w) as Arc<dyn converge_core::Warehouse> }).await else { return };
    converge_contract::promoted_backfill_contract(fresh).await;
}

#[tokio::test]
async fn bigquery_passes_the_metrics_warehouse_contract() {
    let Some(fresh) = fresh_warehouses(|w| async move { Arc::new(w) as Arc<dyn converge_core::MetricsWarehouse> }).await else { return };
    converge_contract::metrics_warehouse_contract(300, fresh).await;
}

/// Pages of 100 rows, so 250 rows come back over three pages.
#[tokio::test]
async fn bigquery_passes_the_findings_warehouse_contract() {
    let Some(fresh) = fresh_warehouses(|w| async move {
        let mut config = w.config().clone();
        config.page_size = 100;
        Arc::new(BigQueryWarehouse::connect(config).await.expect("reconnect with a smaller page")) as Arc<dyn converge_contract::kit::MetricsAndFindings>
    })
    .await
    else {
        return;
    };
    converge_contract::findings_warehouse_contract(250, fresh).await;
}

/// The latest view follows converge_core::RowOrder, and one reconcile run converges
/// from any warehouse state (converge_contract::convergence). Fewer cases than on
/// DuckDB: each costs a dozen emulator queries.
#[tokio::test]
async fn bigquery_converges_from_any_warehouse_state() {
    let Some(fresh) = fresh_warehouses(|w| async move { Arc::new(w) as Arc<dyn converge_core::Warehouse> }).await else { return };
    converge_contract::convergence_property(12, fresh, sqlite_source).await;
}
