//! The pack on BigQuery for real: every shipped detector's BigQuery SQL run on the
//! BigQuery emulator (`bqemulator`) over the planted 90 days, against the DuckDB SQL
//! over the same rows: the same findings (the same opportunity ids, i.e. the same
//! (tenant, entity type, entity id) per detector) and values within 1e-9 relative,
//! for every tenant (a NULL `@tenant`) and for one, and with known events declared
//! (the days left out of both windows, bound as a tenant parameter and date literals).
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
use converge_core::{FindingRow, KnownEvent, KnownEvents, QueryDialect};
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
    // Declared: acme's last two days and a day a fortnight ago, quiet's day before.
    let day = |back: u64| as_of - chrono::Days::new(back);
    let declared = KnownEvents::new([
        KnownEvent { tenant: planted::PLANTED_TENANT.into(), id: "outage".into(), from: day(1), until: day(0), reason: "outage".into() },
        KnownEvent { tenant: planted::PLANTED_TENANT.into(), id: "holiday".into(), from: day(14), until: day(14), reason: "holiday".into() },
        KnownEvent { tenant: planted::QUIET_TENANT.into(), id: "holiday".into(), from: day(1), until: day(1), reason: String::new() },
    ]);
    let none = KnownEvents::default();
    let mut compared = 0;
    let mut findings = 0;
    for spec in pack.detectors() {
        assert!(spec.runs_on(QueryDialect::BigQuery), "{} has no BigQuery form", spec.id);
        let period = converge_core::opportunity_period(as_of, spec.windows.map_or(1, |w| w.recent_days));
        for (tenant, known) in [(None, &none), (Some(planted::PLANTED_TENANT), &none), (None, &declared)] {
            let on_duckdb = tokio::task::spawn_blocking({
                let (duck, spec, known) = (duck.clone(), spec.clone(), known.clone());
                move || duck.fire_with(&spec, as_of, tenant, &known)
            })
            .await
            .unwrap();
            let compiled = compile(spec, QueryDialect::BigQuery, as_of, tenant, known).unwrap();
            let sql = compiled.sql.clone();
            let on_bigquery = fire(&*warehouse, compiled).await.unwrap_or_else(|e| panic!("{} on bqemulator: {e}\n{sql}", spec.id));
            let (b, d) = (by_id(&spec.id, &period, &on_bigquery), by_id(&spec.id, &period, &on_duckdb));
            let ids = |m: &BTreeMap<String, &FindingRow>| m.values().map(|r| format!("{}/{}", r.tenant, r.entity_id)).collect::<Vec<_>>();
            assert_eq!(ids(&b), ids(&d), "{} (tenant {tenant:?}, known events {}): BigQuery vs DuckDB findings", spec.id, !known.is_empty());
            assert_eq!(b.keys().collect::<Vec<_>>(), d.keys().collect::<Vec<_>>(), "{}: opportunity ids", spec.id);
            for (id, bq) in &b {
                let dk = d[id];
                assert_eq!(bq.entity_type, dk.entity_type);
                for (what, x, y) in [
                    ("recent_value", bq.recent_value, dk.recent_value),
                    ("baseline_value", bq.baseline_value, dk.baseline_value),
                    ("volume", bq.volume, dk.volume),
                    ("reference_value", bq.reference_value, dk.reference_value),
                    ("baseline_volume", bq.baseline_volume, dk.baseline_volume),
                    ("statistic", bq.statistic, dk.statistic),
                    ("p_value", bq.p_value, dk.p_value),
                    ("q_value", bq.q_value, dk.q_value),
                ] {
                    assert!(values_agree(x, y), "{} {} {what}: BigQuery {x:?}, DuckDB {y:?}", spec.id, bq.entity_id);
                }
            }
            compared += 1;
            if known.is_empty() {
                findings += b.len();
            } else if spec.id == "funnel_step_stalled" {
                // Its 2-day window is acme's declared outage: nothing left to judge.
                assert!(b.is_empty(), "declared days are left out on BigQuery too: {:?}", ids(&b));
            }
        }
    }
    assert_eq!(compared, 3 * pack.len());
    let planted_total: usize = planted::expected_acme_findings().iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(findings, 2 * planted_total, "every tenant and acme alone: the planted findings, twice");
}
