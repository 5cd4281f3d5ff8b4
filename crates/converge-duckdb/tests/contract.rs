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

/// The latest view follows converge_core::RowOrder, and one reconcile run converges
/// from any warehouse state (converge_contract::convergence).
#[tokio::test]
async fn duckdb_converges_from_any_warehouse_state() {
    converge_contract::convergence_property(64, || async { Arc::new(DuckWarehouse::open_in_memory().expect("in-memory DuckDB")) as _ }, sqlite_source).await;
}

/// A fresh SQLite source store (and error log) in a temporary directory, on `clock`.
async fn sqlite_source(clock: Arc<converge_core::ManualClock>) -> (Arc<dyn converge_core::SourceStore>, Arc<dyn converge_core::ErrorLog>) {
    let dir = tempfile::tempdir().expect("a temporary directory").keep();
    let store = Arc::new(
        converge_sqlite::SqliteStore::open(&dir.join("source.sqlite"), clock, converge_events::EventSource::local()).expect("a SQLite source"),
    );
    (store.clone(), store)
}
