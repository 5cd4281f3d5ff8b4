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
//! (`MetricsWarehouse`: one atomic replace per (tenant, date) slice, the kit's
//! `MetricsLoader`), and queried the way the runner does (`FindingsWarehouse`).
//!
//! Without the emulator the test prints one line and passes (`make bqemulator`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{planted, MetricsDb};
use converge_bigquery::BigQueryEmulator;
use converge_contract::kit::{fire, values_agree, MetricsLoader};
use converge_core::{FindingRow, QueryDialect};
use converge_detect::{compile, Pack};

/// Opportunity ids of `rows`, keyed by id, for comparison.
fn by_id<'a>(detector: &str, period: &str, rows: &'a [FindingRow]) -> BTreeMap<String, &'a FindingRow> {
    rows.iter().map(|r| (converge_core::opportunity_id(detector, &r.tenant, &r.entity_type, &r.entity_id, period), r)).collect()
}

#[tokio::test]
async fn every_shipped_detector_finds_the_same_on_bigquery_as_on_duckdb() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let warehouse = Arc::new(emulator.fresh_warehouse().await.unwrap());
    let rows = planted::dataset();
    // The DuckDB side runs on a runtime of its own (the tests' synchronous support),
    // off this one's thread.
    let duck = tokio::task::spawn_blocking({
        let rows = rows.clone();
        move || {
            let duck = MetricsDb::new();
            duck.insert(&rows);
            duck
        }
    })
    .await
    .unwrap();
    MetricsLoader::new(warehouse.clone()).await.insert(rows).await;
    let duck = Arc::new(duck);

    let pack = Pack::shipped().unwrap();
    let as_of = planted::as_of();
    let mut compared = 0;
    let mut findings = 0;
    for spec in pack.detectors() {
        assert!(spec.runs_on(QueryDialect::BigQuery), "{} has no BigQuery form", spec.id);
        let period = converge_core::opportunity_period(as_of, spec.windows.map_or(1, |w| w.recent_days));
        for tenant in [None, Some(planted::PLANTED_TENANT)] {
            let on_duckdb = tokio::task::spawn_blocking({
                let (duck, spec) = (duck.clone(), spec.clone());
                move || duck.fire(&spec, as_of, tenant)
            })
            .await
            .unwrap();
            let compiled = compile(spec, QueryDialect::BigQuery, as_of, tenant, &converge_core::KnownEvents::default()).unwrap();
            let sql = compiled.sql.clone();
            let on_bigquery = fire(&*warehouse, compiled).await.unwrap_or_else(|e| panic!("{} on bqemulator: {e}\n{sql}", spec.id));
            let (b, d) = (by_id(&spec.id, &period, &on_bigquery), by_id(&spec.id, &period, &on_duckdb));
            let ids = |m: &BTreeMap<String, &FindingRow>| m.values().map(|r| format!("{}/{}", r.tenant, r.entity_id)).collect::<Vec<_>>();
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
                    assert!(values_agree(x, y), "{} {} {what}: BigQuery {x:?}, DuckDB {y:?}", spec.id, bq.entity_id);
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
