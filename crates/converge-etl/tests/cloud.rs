//! The nightly ETL on the cloud adapters: Firestore (Google's emulator) as the raw
//! source and error log, BigQuery (bqemulator) as the warehouse, at a small size.
//! Without an emulator this prints one loud line and passes (`make test` installs
//! them; see the adapters' own harnesses).

mod common;

use std::sync::Arc;

use common::{day, day_writes, record};
use converge_bigquery::BigQueryEmulator;
use converge_core::{ErrorLog, ManualClock, MetricsWarehouse, MirrorConfig, QuarantineReason, SourceScope, SourceStore, Timestamp, Value, Warehouse};
use converge_etl::collections::GA4_PAGES;
use converge_etl::{EtlBackends, EtlRequest, EtlRunner, SliceReport};
use converge_firestore::{EmulatorError, EmulatorOptions, FirestoreEmulator};

fn loud(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[tokio::test]
async fn on_firestore_and_bigquery_a_rerun_changes_nothing_and_violators_are_quarantined() {
    let firestore = match FirestoreEmulator::start(EmulatorOptions::default()).await {
        Ok(emulator) => emulator,
        Err(e @ EmulatorError::Unavailable { .. }) => return loud(&format!("!!!!! SKIPPING the cloud ETL test: {e} !!!!!")),
        Err(e) => panic!("{e}"),
    };
    let Some(bigquery) = BigQueryEmulator::for_tests().await else { return };
    let source = Arc::new(firestore.fresh_source().await.expect("Firestore"));
    let warehouse = Arc::new(bigquery.fresh_warehouse().await.expect("BigQuery"));
    warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap();
    let clock = Arc::new(ManualClock::at(Timestamp::new(1_745_000_000, 0)));
    let backends = EtlBackends { raw: source.clone(), source: source.clone(), errors: source.clone(), warehouse: warehouse.clone(), metrics: warehouse.clone() };
    let runner = EtlRunner::new(backends, clock);
    runner.ensure_tables().await.unwrap();

    for d in 1..=2 {
        for batch in day_writes("acme", day(d), 4).chunks(500) {
            source.apply(batch.to_vec()).await.unwrap();
        }
    }
    let mut bad = record(&GA4_PAGES, day(2), "https://shop.example/bad", 0, 1);
    bad.insert("exits".into(), Value::Double(-1.0));
    source.apply(vec![converge_core::DocWrite::Set { path: "orgs/acme/ga4_pages/bad".into(), fields: bad }]).await.unwrap();

    let request = EtlRequest { from: Some(day(1)), ..EtlRequest::for_date(day(2)) };
    let first = runner.run(request.clone()).await.unwrap();
    assert_eq!((first.outcome.as_str(), first.slices, first.rows_in, first.quarantined), ("partial", 2, 56, 1));
    let report: SliceReport = serde_json::from_value(first.runs[1].report.clone()).unwrap();
    assert_eq!(report.quarantined_docs, ["orgs/acme/ga4_pages/bad"]);
    let before = (warehouse.slice_metrics("acme", day(2)).await.unwrap(), warehouse.slice_entity_map("acme", day(2)).await.unwrap());
    assert!(before.0.iter().any(|m| m.entity_type == "keyword" && m.entity_id == "running shoes 1"));
    assert!(!before.0.iter().any(|m| m.entity_id == "/bad"));

    let second = runner.run(request).await.unwrap();
    assert_eq!(second.runs.iter().map(|r| &r.batch_id).collect::<Vec<_>>(), first.runs.iter().map(|r| &r.batch_id).collect::<Vec<_>>());
    let after = (warehouse.slice_metrics("acme", day(2)).await.unwrap(), warehouse.slice_entity_map("acme", day(2)).await.unwrap());
    assert_eq!(after, before, "the same end state");
    assert_eq!(warehouse.loads_before("acme", day(3), 10).await.unwrap().len(), 2, "one load per slice");
    assert_eq!(warehouse.runs("etl", 10).await.unwrap().len(), 2, "one run record per slice");

    let quarantined = source.quarantined(10).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!((quarantined[0].reason, quarantined[0].attempts), (QuarantineReason::SchemaViolation, 2));
    assert!(quarantined[0].detail.contains("field `exits` is the double -1"), "{}", quarantined[0].detail);
    assert_eq!(source.count(&SourceScope::collection("orgs/acme/ga4_pages").unwrap()).await.unwrap(), 9);
}
