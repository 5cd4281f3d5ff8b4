//! DuckDB passes the warehouse contract every backend passes.

use std::sync::Arc;

use converge_duckdb::DuckWarehouse;

#[tokio::test]
async fn duckdb_passes_the_warehouse_contract() {
    converge_contract::warehouse_contract(|| async { Arc::new(DuckWarehouse::open_in_memory().expect("in-memory DuckDB")) as _ }).await;
}

#[tokio::test]
async fn duckdb_passes_the_metrics_warehouse_contract() {
    converge_contract::metrics_warehouse_contract(5_000, || async { Arc::new(DuckWarehouse::open_in_memory().expect("in-memory DuckDB")) as _ }).await;
}
