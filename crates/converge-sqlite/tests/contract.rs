//! SQLite passes the source store, error log and opportunity store contracts every
//! backend passes.

use std::sync::Arc;

use converge_core::SystemClock;
use converge_events::EventSource;
use converge_sqlite::SqliteStore;

/// A fresh store in its own temporary directory, kept alive as long as the store.
fn fresh_store() -> SqliteStore {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(&dir.path().join("source.sqlite"), Arc::new(SystemClock), EventSource::local()).expect("open SQLite");
    // The directory is removed when the test process ends, not when this returns:
    // the store keeps using the file.
    std::mem::forget(dir);
    store
}

#[tokio::test]
async fn sqlite_passes_the_source_store_contract() {
    let contract = converge_contract::SourceContract { reference_root: "projects/local/databases/(default)/documents".into(), max_batch: 500 };
    converge_contract::source_store_contract(contract, || async { Arc::new(fresh_store()) as _ }).await;
}

#[tokio::test]
async fn sqlite_passes_the_error_log_contract() {
    converge_contract::error_log_contract(|| async { Arc::new(fresh_store()) as _ }).await;
}

#[tokio::test]
async fn sqlite_passes_the_opportunity_store_contract() {
    converge_contract::opportunity_store_contract(|| async { Arc::new(fresh_store()) as _ }).await;
}

#[tokio::test]
async fn sqlite_passes_the_raw_source_contract() {
    converge_contract::raw_source_contract(500, || async {
        let store = Arc::new(fresh_store());
        (store.clone() as _, store as _)
    })
    .await;
}
