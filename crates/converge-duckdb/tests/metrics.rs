//! DuckDB's slice replace seen from another reader while it runs: the old slice,
//! whole, until the commit; then the new one, whole.

use std::sync::Arc;

use chrono::NaiveDate;
use converge_core::{MetricRow, MetricsWarehouse, SliceLoad, SliceRow, StoreError, Timestamp};
use converge_duckdb::DuckWarehouse;
use futures::StreamExt;

fn row(date: NaiveDate, entity: usize, value: f64) -> Result<SliceRow, StoreError> {
    Ok(SliceRow::Metric(MetricRow {
        date,
        tenant: "acme".into(),
        entity_type: "keyword".into(),
        entity_id: format!("k{entity:05}"),
        metric: "clicks".into(),
        value,
    }))
}

fn load(date: NaiveDate, rows: u64) -> SliceLoad {
    SliceLoad { tenant: "acme".into(), date, batch_id: "b".into(), rows_in: rows, rows_out: rows, loaded_at: Timestamp::new(1_700_000_000, 0) }
}

#[tokio::test]
async fn a_reader_sees_the_old_slice_until_the_commit_then_the_new_one() {
    let warehouse = DuckWarehouse::open_in_memory().unwrap();
    warehouse.ensure_metrics_tables().await.unwrap();
    let date = NaiveDate::from_ymd_opt(2025, 3, 1).unwrap();
    let old: Vec<_> = (0..3_000).map(|i| row(date, i, 1.0)).collect();
    warehouse.replace_slice(load(date, 3_000), futures::stream::iter(old).boxed()).await.unwrap();

    // The new slice's rows arrive in two halves; between them the replace has deleted
    // the old rows and appended 6,000 new ones inside its open transaction.
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    let first: Vec<_> = (0..6_000).map(|i| row(date, i, 2.0)).collect();
    let second: Vec<_> = (6_000..10_000).map(|i| row(date, i, 2.0)).collect();
    let rows = futures::stream::iter(first)
        .chain(futures::stream::once(async move {
            let _ = gate_rx.await;
            row(date, 10_000, 2.0)
        }))
        .chain(futures::stream::iter(second))
        .boxed();
    let writer = Arc::new(warehouse.clone());
    let replace = tokio::spawn(async move { writer.replace_slice(load(date, 10_001), rows).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let during = warehouse.slice_metrics("acme", date).await.unwrap();
    assert_eq!(during.len(), 3_000, "the old slice, whole, while the replace runs");
    assert!(during.iter().all(|m| m.value == 1.0));
    gate_tx.send(()).unwrap();
    let receipt = replace.await.unwrap().unwrap();
    assert_eq!(receipt.metrics_written, 10_001);
    let after = warehouse.slice_metrics("acme", date).await.unwrap();
    assert_eq!(after.len(), 10_001, "the new slice, whole");
    assert!(after.iter().all(|m| m.value == 2.0));
}
