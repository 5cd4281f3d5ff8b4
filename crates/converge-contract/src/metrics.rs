//! The metrics warehouse contract: a (tenant, date) slice of `daily_entity_metrics`,
//! `entity_map` and `etl_loads` is replaced whole or not at all, and replacing it
//! again with the same rows changes nothing.

use std::future::Future;
use std::sync::Arc;

use chrono::NaiveDate;
use converge_core::{EntityMapRow, ErrorKind, MetricRow, MetricsWarehouse, SliceLoad, SliceRow, StoreError, Timestamp};
use futures::StreamExt;

use crate::case;

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, d).expect("a March day")
}

fn metric(tenant: &str, date: NaiveDate, entity_id: &str, metric: &str, value: f64) -> MetricRow {
    MetricRow { date, tenant: tenant.into(), entity_type: "page".into(), entity_id: entity_id.into(), metric: metric.into(), value }
}

fn entity(tenant: &str, date: NaiveDate, raw_id: &str, entity_id: &str) -> EntityMapRow {
    EntityMapRow { date, tenant: tenant.into(), entity_type: "page".into(), raw_id: raw_id.into(), entity_id: entity_id.into(), raw_records: 2 }
}

fn load(tenant: &str, date: NaiveDate, rows_in: u64, rows_out: u64) -> SliceLoad {
    SliceLoad {
        tenant: tenant.into(),
        date,
        batch_id: format!("etl-{tenant}-{date}"),
        rows_in,
        rows_out,
        loaded_at: Timestamp::new(1_741_000_000, 123_456_000),
    }
}

/// A slice: `n` pages with two metrics each, values derived from `seed`.
fn slice(tenant: &str, date: NaiveDate, n: usize, seed: f64) -> (Vec<MetricRow>, Vec<EntityMapRow>) {
    let mut metrics = Vec::new();
    let mut entities = Vec::new();
    for i in 0..n {
        let page = format!("/p{i:04}");
        metrics.push(metric(tenant, date, &page, "pageviews", seed + i as f64 * 0.5));
        metrics.push(metric(tenant, date, &page, "sessions", seed * 2.0 + i as f64));
        entities.push(entity(tenant, date, &format!("https://example.com{page}?utm_source=x"), &page));
    }
    (metrics, entities)
}

fn rows(metrics: &[MetricRow], entities: &[EntityMapRow]) -> futures::stream::BoxStream<'static, Result<SliceRow, StoreError>> {
    let items: Vec<Result<SliceRow, StoreError>> =
        metrics.iter().cloned().map(SliceRow::Metric).chain(entities.iter().cloned().map(SliceRow::Entity)).map(Ok).collect();
    futures::stream::iter(items).boxed()
}

fn sorted(mut metrics: Vec<MetricRow>) -> Vec<MetricRow> {
    metrics.sort_by(|a, b| (&a.entity_type, &a.entity_id, &a.metric).cmp(&(&b.entity_type, &b.entity_id, &b.metric)));
    metrics
}

fn sorted_entities(mut entities: Vec<EntityMapRow>) -> Vec<EntityMapRow> {
    entities.sort_by(|a, b| (&a.entity_type, &a.raw_id).cmp(&(&b.entity_type, &b.raw_id)));
    entities
}

/// Runs every metrics warehouse case, each on a fresh, empty warehouse from `fresh`.
/// `slice_rows` sets the size of the large slice (thousands of rows on an embedded
/// backend; fewer on an emulator).
pub async fn metrics_warehouse_contract<F, Fut>(slice_rows: usize, fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn MetricsWarehouse>>,
{
    let suite = "metrics warehouse";

    case(suite, "a replaced slice reads back exactly, and ensuring tables twice is harmless", async {
        let warehouse = fresh().await;
        let before = warehouse.check_metrics_tables().await.expect_err("a fresh warehouse has no metrics tables");
        assert_eq!(before.kind, ErrorKind::NotFound, "{before}");
        // Names the missing table, or what holds it (a BigQuery dataset not created yet).
        assert!(before.message.contains("`daily_entity_metrics`") || before.message.contains("does not exist"), "names what is missing: {before}");
        warehouse.ensure_metrics_tables().await.unwrap();
        warehouse.check_metrics_tables().await.expect("the tables ensure_metrics_tables made pass the check");
        warehouse.ensure_metrics_tables().await.unwrap();
        assert!(warehouse.slice_metrics("acme", day(1)).await.unwrap().is_empty());
        let (metrics, entities) = slice("acme", day(1), slice_rows, 1.25);
        let receipt = warehouse.replace_slice(load("acme", day(1), 10, metrics.len() as u64), rows(&metrics, &entities)).await.unwrap();
        assert_eq!(receipt.metrics_written, metrics.len() as u64);
        assert_eq!(receipt.entities_written, entities.len() as u64);
        assert_eq!(warehouse.slice_metrics("acme", day(1)).await.unwrap(), sorted(metrics));
        assert_eq!(warehouse.slice_entity_map("acme", day(1)).await.unwrap(), sorted_entities(entities));
    })
    .await;

    case(suite, "a replace swaps the whole slice and touches no other", async {
        let warehouse = fresh().await;
        warehouse.ensure_metrics_tables().await.unwrap();
        for (tenant, date) in [("acme", day(1)), ("acme", day(2)), ("beta", day(1))] {
            let (metrics, entities) = slice(tenant, date, 5, 1.0);
            warehouse.replace_slice(load(tenant, date, 5, 10), rows(&metrics, &entities)).await.unwrap();
        }
        let (metrics, entities) = slice("acme", day(1), 3, 7.0);
        warehouse.replace_slice(load("acme", day(1), 3, 6), rows(&metrics, &entities)).await.unwrap();
        assert_eq!(warehouse.slice_metrics("acme", day(1)).await.unwrap(), sorted(metrics), "no row of the old slice is left");
        assert_eq!(warehouse.slice_entity_map("acme", day(1)).await.unwrap(), sorted_entities(entities));
        for (tenant, date) in [("acme", day(2)), ("beta", day(1))] {
            assert_eq!(warehouse.slice_metrics(tenant, date).await.unwrap(), sorted(slice(tenant, date, 5, 1.0).0), "({tenant}, {date}) untouched");
        }
        let loads = warehouse.loads_before("acme", day(2), 10).await.unwrap();
        assert_eq!(loads, vec![load("acme", day(1), 3, 6)], "one load per slice, the latest");
        // An empty slice is a slice too: it replaces the old rows with none.
        warehouse.replace_slice(load("acme", day(2), 0, 0), rows(&[], &[])).await.unwrap();
        assert!(warehouse.slice_metrics("acme", day(2)).await.unwrap().is_empty());
        assert!(warehouse.slice_entity_map("acme", day(2)).await.unwrap().is_empty());
    })
    .await;

    case(suite, "replacing a slice with the same rows again leaves the same end state", async {
        let warehouse = fresh().await;
        warehouse.ensure_metrics_tables().await.unwrap();
        let (metrics, entities) = slice("acme", day(4), 20, 3.5);
        for _ in 0..3 {
            warehouse.replace_slice(load("acme", day(4), 20, 40), rows(&metrics, &entities)).await.unwrap();
        }
        assert_eq!(warehouse.slice_metrics("acme", day(4)).await.unwrap(), sorted(metrics));
        assert_eq!(warehouse.slice_entity_map("acme", day(4)).await.unwrap(), sorted_entities(entities));
        assert_eq!(warehouse.loads_before("acme", day(5), 10).await.unwrap(), vec![load("acme", day(4), 20, 40)]);
    })
    .await;

    case(suite, "a replace whose rows end in an error leaves the old slice", async {
        let warehouse = fresh().await;
        warehouse.ensure_metrics_tables().await.unwrap();
        let (old_metrics, old_entities) = slice("acme", day(6), 10, 1.0);
        warehouse.replace_slice(load("acme", day(6), 10, 20), rows(&old_metrics, &old_entities)).await.unwrap();
        let (metrics, entities) = slice("acme", day(6), slice_rows, 9.0);
        let cut = metrics.len() / 2;
        let broken = rows(&metrics, &entities)
            .take(cut)
            .chain(futures::stream::once(async { Err(StoreError::retryable("test", "the input died mid-slice")) }))
            .boxed();
        let error = warehouse.replace_slice(load("acme", day(6), 99, 99), broken).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Retryable, "the stream's own error is the replace's: {error}");
        assert_eq!(warehouse.slice_metrics("acme", day(6)).await.unwrap(), sorted(old_metrics));
        assert_eq!(warehouse.slice_entity_map("acme", day(6)).await.unwrap(), sorted_entities(old_entities));
        assert_eq!(warehouse.loads_before("acme", day(7), 10).await.unwrap(), vec![load("acme", day(6), 10, 20)]);
    })
    .await;

    case(suite, "a row of another slice is refused and changes nothing", async {
        let warehouse = fresh().await;
        warehouse.ensure_metrics_tables().await.unwrap();
        let (old_metrics, old_entities) = slice("acme", day(8), 4, 1.0);
        warehouse.replace_slice(load("acme", day(8), 4, 8), rows(&old_metrics, &old_entities)).await.unwrap();
        let (mut metrics, entities) = slice("acme", day(8), 4, 2.0);
        metrics.push(metric("beta", day(8), "/x", "sessions", 1.0));
        let error = warehouse.replace_slice(load("acme", day(8), 4, 9), rows(&metrics, &entities)).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
        assert_eq!(warehouse.slice_metrics("acme", day(8)).await.unwrap(), sorted(old_metrics));
        assert!(warehouse.slice_metrics("beta", day(8)).await.unwrap().is_empty());
    })
    .await;

    case(suite, "loads before a date: that tenant's, newest first, at most the limit", async {
        let warehouse = fresh().await;
        warehouse.ensure_metrics_tables().await.unwrap();
        for d in [1, 2, 3, 5] {
            warehouse.replace_slice(load("acme", day(d), u64::from(d) * 100, 1), rows(&[], &[])).await.unwrap();
        }
        warehouse.replace_slice(load("beta", day(4), 7, 1), rows(&[], &[])).await.unwrap();
        let loads = warehouse.loads_before("acme", day(5), 2).await.unwrap();
        assert_eq!(loads, vec![load("acme", day(3), 300, 1), load("acme", day(2), 200, 1)]);
        assert_eq!(warehouse.loads_before("acme", day(1), 10).await.unwrap(), vec![]);
        assert_eq!(warehouse.loads_before("beta", day(30), 10).await.unwrap(), vec![load("beta", day(4), 7, 1)]);
    })
    .await;
}
