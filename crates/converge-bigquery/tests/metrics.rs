//! What the metrics tables' atomic replace relies on, checked on bqemulator: a
//! multi-statement transaction that fails after its DELETE leaves the old rows, and
//! the replace script the warehouse runs carries no input text.

use std::sync::Arc;

use chrono::NaiveDate;
use converge_bigquery::metrics::replace_script;
use converge_bigquery::BigQueryEmulator;
use converge_core::{MetricRow, MetricsWarehouse, SliceLoad, SliceRow, Timestamp};
use futures::StreamExt;

fn load(tenant: &str) -> SliceLoad {
    SliceLoad {
        tenant: tenant.into(),
        date: NaiveDate::from_ymd_opt(2025, 2, 3).unwrap(),
        batch_id: "0123abcd".into(),
        rows_in: 1,
        rows_out: 1,
        loaded_at: Timestamp::new(1_740_000_000, 0),
    }
}

#[tokio::test]
async fn a_transaction_that_fails_after_its_delete_leaves_the_old_slice() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let emulator = Arc::new(emulator);
    let warehouse = emulator.fresh_warehouse().await.unwrap();
    warehouse.ensure_metrics_tables().await.unwrap();
    let slice = load("acme");
    let row = MetricRow { date: slice.date, tenant: "acme".into(), entity_type: "page".into(), entity_id: "/".into(), metric: "sessions".into(), value: 4.0 };
    warehouse.replace_slice(slice.clone(), futures::stream::iter([Ok(SliceRow::Metric(row.clone()))]).boxed()).await.unwrap();
    let table = format!("`{}.{}.daily_entity_metrics`", warehouse.config().project, warehouse.config().dataset);
    let failing = format!(
        "BEGIN TRANSACTION; DELETE FROM {table} WHERE tenant = 'acme'; \
         INSERT INTO {table} (date, tenant, entity_type, entity_id, metric, value) SELECT DATE '2025-02-03', 'acme', 'page', '/', 'sessions', CAST('x' AS FLOAT64); \
         COMMIT TRANSACTION;"
    );
    assert!(warehouse.query_json(&failing, &[]).await.is_err(), "the script fails");
    assert_eq!(warehouse.slice_metrics("acme", slice.date).await.unwrap(), vec![row], "its DELETE was rolled back");
}

#[test]
fn the_replace_script_carries_no_input_text() {
    let config = converge_bigquery::BigQueryConfig::new("p", "converge").unwrap();
    let script = replace_script(&config, &load("o'reilly; DROP TABLE x --"), "00ff");
    assert!(!script.contains("reilly"), "{script}");
    assert!(script.contains(&hex::encode("o'reilly; DROP TABLE x --")));
    assert!(script.starts_with("BEGIN TRANSACTION;") && script.ends_with("COMMIT TRANSACTION;"));
}
