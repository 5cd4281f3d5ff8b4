//! Findings queries (`FindingsWarehouse`) on the BigQuery emulator: named DATE and
//! (NULL) STRING parameters, the unqualified metrics table resolved in the
//! warehouse's dataset, results read page by page, the column check, and the kinds of
//! failure (a broken query is permanent, a missed deadline retryable).
//!
//! Without the emulator each test prints one line and passes (`make bqemulator`).

use std::time::Duration;

use converge_bigquery::{BigQueryEmulator, BigQueryWarehouse};
use converge_core::{ErrorKind, FindingRow, FindingsParam, FindingsParamValue, FindingsQuery, FindingsWarehouse, MetricsWarehouse, StoreError};
use futures::StreamExt;

const SELECT: &str = "SELECT tenant, entity_type, entity_id, SUM(value) AS recent_value, CAST(NULL AS FLOAT64) AS baseline_value, \
     CAST(COUNT(*) AS FLOAT64) AS volume, MAX(value) AS reference_value, CAST(NULL AS FLOAT64) AS baseline_volume, CAST(NULL AS FLOAT64) AS statistic, CAST(NULL AS FLOAT64) AS p_value, CAST(NULL AS FLOAT64) AS q_value \
     FROM daily_entity_metrics \
     WHERE date <= @as_of AND (@tenant IS NULL OR tenant = @tenant) \
     GROUP BY tenant, entity_type, entity_id ORDER BY tenant, entity_id";

fn query(sql: &str, tenant: Option<&str>, timeout: Duration) -> FindingsQuery {
    FindingsQuery {
        label: "probe".into(),
        sql: sql.into(),
        params: vec![
            FindingsParam { name: "as_of".into(), value: FindingsParamValue::Date("2025-03-31".parse().unwrap()) },
            FindingsParam { name: "tenant".into(), value: FindingsParamValue::String(tenant.map(str::to_owned)) },
        ],
        timeout,
    }
}

async fn collect(warehouse: &BigQueryWarehouse, q: FindingsQuery) -> Result<Vec<FindingRow>, StoreError> {
    warehouse.query_findings(q).await?.collect::<Vec<_>>().await.into_iter().collect()
}

/// A warehouse reading 3 rows per page, over a metrics table with five entities of
/// `acme` (one value on 2025-03-31, one the day after, which `@as_of` excludes) and
/// one of `beta`.
async fn seeded(emulator: &BigQueryEmulator) -> BigQueryWarehouse {
    let mut config = emulator.fresh_warehouse().await.unwrap().config().clone();
    config.page_size = 3;
    let warehouse = BigQueryWarehouse::connect(config.clone()).await.unwrap();
    warehouse.ensure_metrics_tables().await.unwrap();
    let table = format!("`{}.{}.daily_entity_metrics`", config.project, config.dataset);
    let mut values = Vec::new();
    for i in 0..5 {
        values.push(format!("(DATE '2025-03-31', 'acme', 'page', '/p{i}', 'sessions', {}.5)", i + 1));
        values.push(format!("(DATE '2025-04-01', 'acme', 'page', '/p{i}', 'sessions', 1000.0)"));
    }
    values.push("(DATE '2025-03-30', 'beta', 'page', '/b', 'sessions', 7.0)".into());
    warehouse
        .query_json(&format!("INSERT INTO {table} (date, tenant, entity_type, entity_id, metric, value) VALUES {}", values.join(", ")), &[])
        .await
        .unwrap();
    warehouse
}

#[tokio::test]
async fn rows_come_back_typed_across_pages_for_one_tenant_or_all() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let warehouse = seeded(&emulator).await;
    assert_eq!(warehouse.dialect(), converge_core::QueryDialect::BigQuery);

    let all = collect(&warehouse, query(SELECT, None, Duration::from_secs(30))).await.unwrap();
    let ids: Vec<(&str, &str)> = all.iter().map(|r| (r.tenant.as_str(), r.entity_id.as_str())).collect();
    assert_eq!(ids, [("acme", "/p0"), ("acme", "/p1"), ("acme", "/p2"), ("acme", "/p3"), ("acme", "/p4"), ("beta", "/b")], "a NULL tenant reads every tenant");
    assert_eq!(
        all[1],
        FindingRow {
            tenant: "acme".into(),
            entity_type: "page".into(),
            entity_id: "/p1".into(),
            recent_value: Some(2.5),
            baseline_value: None,
            volume: Some(1.0),
            reference_value: Some(2.5),
            baseline_volume: None,
            statistic: None,
            p_value: None,
            q_value: None,
        },
        "the day after @as_of is excluded; NULL stays NULL"
    );

    let beta = collect(&warehouse, query(SELECT, Some("beta"), Duration::from_secs(30))).await.unwrap();
    assert_eq!(beta.iter().map(|r| r.entity_id.as_str()).collect::<Vec<_>>(), ["/b"]);
    assert!(collect(&warehouse, query(SELECT, Some("nobody"), Duration::from_secs(30))).await.unwrap().is_empty());
}

#[tokio::test]
async fn wrong_columns_and_broken_sql_are_permanent_and_name_the_query() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let warehouse = seeded(&emulator).await;

    let swapped = SELECT.replace("AS recent_value, CAST(NULL AS FLOAT64) AS baseline_value", "AS baseline_value, CAST(NULL AS FLOAT64) AS recent_value");
    let error = collect(&warehouse, query(&swapped, None, Duration::from_secs(30))).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Permanent, "{error}");
    assert!(error.message.contains("query `probe`") && error.message.contains("recent_value"), "{error}");

    let missing_column = SELECT.replace("SUM(value)", "SUM(no_such_column)");
    let error = collect(&warehouse, query(&missing_column, None, Duration::from_secs(30))).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Permanent, "{error}");
    assert!(error.message.contains("query `probe`") && error.message.contains("no_such_column"), "{error}");
}

#[tokio::test]
async fn a_query_past_its_deadline_is_retryable() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let warehouse = seeded(&emulator).await;
    // No answer arrives within a microsecond, however fast the emulator.
    let error = collect(&warehouse, query(SELECT, None, Duration::from_micros(1))).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
    assert!(error.message.contains("query `probe`") && error.message.contains("timeout"), "{error}");
}
