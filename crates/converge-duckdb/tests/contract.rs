//! DuckDB passes the warehouse contract every backend passes.

use std::sync::Arc;

use converge_contract::kit::backends::sqlite_source;
use converge_duckdb::DuckWarehouse;

fn fresh() -> DuckWarehouse {
    DuckWarehouse::open_in_memory().expect("in-memory DuckDB")
}

#[tokio::test]
async fn duckdb_passes_the_warehouse_contract() {
    converge_contract::warehouse_contract(|| async { Arc::new(fresh()) as _ }).await;
}

#[tokio::test]
async fn duckdb_passes_the_promoted_backfill_contract() {
    converge_contract::promoted_backfill_contract(|| async { Arc::new(fresh()) as _ }).await;
}

#[tokio::test]
async fn duckdb_passes_the_metrics_warehouse_contract() {
    converge_contract::metrics_warehouse_contract(5_000, || async { Arc::new(fresh()) as _ }).await;
}

/// 600 rows: more than two of the findings stream's chunks (256 rows).
#[tokio::test]
async fn duckdb_passes_the_findings_warehouse_contract() {
    converge_contract::findings_warehouse_contract(600, || async { Arc::new(fresh()) as _ }).await;
}

/// The latest view follows converge_core::RowOrder, and one reconcile run converges
/// from any warehouse state (converge_contract::convergence).
#[tokio::test]
async fn duckdb_converges_from_any_warehouse_state() {
    converge_contract::convergence_property(64, || async { Arc::new(fresh()) as _ }, sqlite_source).await;
}
