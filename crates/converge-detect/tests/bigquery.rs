//! The pack on BigQuery for real: every shipped detector's BigQuery SQL run on the
//! BigQuery emulator (`bqemulator`) over the planted 90 days, against the DuckDB SQL
//! over the same rows: the same findings (the same opportunity ids, i.e. the same
//! (tenant, entity type, entity id) per detector) and values within 1e-9 relative,
//! for every tenant (a NULL `@tenant`) and for one.
//!
//! Every shipped detector runs on bqemulator 1.4 as compiled: nothing is skipped. (A
//! detector that the emulator could not run would fail here, not pass quietly; the
//! offline golden check in pack.rs stays for the exact BigQuery text either way.)
//! `daily_entity_metrics` is created and filled the way the nightly ETL does it
//! (`MetricsWarehouse`: one atomic replace per (tenant, date) slice).
//!
//! Without the emulator the test prints one line and passes (`make bqemulator`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{planted, MetricsDb};
use converge_bigquery::{BigQueryEmulator, BigQueryWarehouse};
use converge_core::{FindingsParam, FindingsParamValue, FindingsQuery, FindingsWarehouse, MetricsWarehouse, SliceLoad, SliceRow, Timestamp};
use converge_detect::{compile, Dialect, DetectorRow, Pack, ParamValue};
use futures::stream::{self, StreamExt, TryStreamExt};

async fn load(warehouse: &BigQueryWarehouse, rows: &[common::MetricRow]) {
    warehouse.ensure_metrics_tables().await.unwrap();
    let mut slices: BTreeMap<(String, chrono::NaiveDate), Vec<converge_core::MetricRow>> = BTreeMap::new();
    for row in rows {
        slices.entry((row.tenant.clone(), row.date)).or_default().push(converge_core::MetricRow {
            date: row.date,
            tenant: row.tenant.clone(),
            entity_type: row.entity_type.to_owned(),
            entity_id: row.entity_id.clone(),
            metric: row.metric.to_owned(),
            value: row.value,
        });
    }
    stream::iter(slices)
        .map(|((tenant, date), rows)| async move {
            let load = SliceLoad {
                batch_id: format!("planted-{tenant}-{date}"),
                tenant,
                date,
                rows_in: rows.len() as u64,
                rows_out: rows.len() as u64,
                loaded_at: Timestamp::from_micros(1_743_465_600_000_000),
            };
            warehouse.replace_slice(load, stream::iter(rows.into_iter().map(|r| Ok(SliceRow::Metric(r)))).boxed()).await
        })
        .buffer_unordered(4)
        .try_collect::<Vec<_>>()
        .await
        .expect("load the planted metrics through MetricsWarehouse");
}

async fn run_on_bigquery(warehouse: &BigQueryWarehouse, compiled: &converge_detect::CompiledDetector) -> Vec<DetectorRow> {
    let params = compiled
        .params
        .iter()
        .map(|p| FindingsParam {
            name: p.name.to_owned(),
            value: match &p.value {
                ParamValue::Date(d) => FindingsParamValue::Date(*d),
                ParamValue::String(s) => FindingsParamValue::String(s.clone()),
            },
        })
        .collect();
    let query = FindingsQuery { label: compiled.detector_id.clone(), sql: compiled.sql.clone(), params, timeout: Duration::from_secs(60) };
    let rows: Vec<_> = warehouse
        .query_findings(query)
        .await
        .unwrap_or_else(|e| panic!("{} on bqemulator: {e}\n{}", compiled.detector_id, compiled.sql))
        .collect()
        .await;
    rows.into_iter()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{} on bqemulator: {e}", compiled.detector_id));
            DetectorRow {
                tenant: r.tenant,
                entity_type: r.entity_type,
                entity_id: r.entity_id,
                recent_value: r.recent_value,
                baseline_value: r.baseline_value,
                volume: r.volume,
                reference_value: r.reference_value,
            }
        })
        .collect()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
        _ => false,
    }
}

/// Opportunity ids of `rows`, keyed by id, for comparison.
fn by_id<'a>(detector: &str, period: &str, rows: &'a [DetectorRow]) -> BTreeMap<String, &'a DetectorRow> {
    rows.iter().map(|r| (converge_core::opportunity_id(detector, &r.tenant, &r.entity_type, &r.entity_id, period), r)).collect()
}

#[tokio::test]
async fn every_shipped_detector_finds_the_same_on_bigquery_as_on_duckdb() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let warehouse = emulator.fresh_warehouse().await.unwrap();
    let rows = planted::dataset();
    let duck = MetricsDb::new();
    duck.insert(&rows);
    load(&warehouse, &rows).await;

    let pack = Pack::shipped().unwrap();
    let as_of = planted::as_of();
    let mut compared = 0;
    let mut findings = 0;
    for spec in pack.detectors() {
        assert!(spec.runs_on(Dialect::BigQuery), "{} has no BigQuery form", spec.id);
        let period = converge_core::opportunity_period(as_of, spec.windows.map_or(1, |w| w.recent_days));
        for tenant in [None, Some(planted::PLANTED_TENANT)] {
            let on_duckdb = duck.fire(spec, as_of, tenant);
            let compiled = compile(spec, Dialect::BigQuery, as_of, tenant).unwrap();
            let on_bigquery = run_on_bigquery(&warehouse, &compiled).await;
            let (b, d) = (by_id(&spec.id, &period, &on_bigquery), by_id(&spec.id, &period, &on_duckdb));
            let ids = |m: &BTreeMap<String, &DetectorRow>| m.values().map(|r| format!("{}/{}", r.tenant, r.entity_id)).collect::<Vec<_>>();
            assert_eq!(ids(&b), ids(&d), "{} (tenant {tenant:?}): BigQuery vs DuckDB findings", spec.id);
            assert_eq!(b.keys().collect::<Vec<_>>(), d.keys().collect::<Vec<_>>(), "{}: opportunity ids", spec.id);
            for (id, bq) in &b {
                let dk = d[id];
                assert_eq!(bq.entity_type, dk.entity_type);
                for (what, x, y) in [
                    ("recent_value", bq.recent_value, dk.recent_value),
                    ("baseline_value", bq.baseline_value, dk.baseline_value),
                    ("volume", bq.volume, dk.volume),
                    ("reference_value", bq.reference_value, dk.reference_value),
                ] {
                    assert!(close(x, y), "{} {} {what}: BigQuery {x:?}, DuckDB {y:?}", spec.id, bq.entity_id);
                }
            }
            compared += 1;
            findings += b.len();
        }
    }
    assert_eq!(compared, 2 * pack.len());
    let planted_total: usize = planted::expected_acme_findings().iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(findings, 2 * planted_total, "every tenant and acme alone: the planted findings, twice");
}
