//! The runner on the cloud pair — BigQuery (`bqemulator`) for the findings queries and
//! run records, Firestore (Google's emulator) for the opportunities — over the same
//! planted 90 days as the embedded tests: the same opportunities as DuckDB + SQLite,
//! and a re-run that changes nothing but `last_seen`.
//!
//! `daily_entity_metrics` is created and filled the way the nightly ETL does it on
//! BigQuery (`MetricsWarehouse`: one atomic replace per (tenant, date) slice).
//! Without either emulator the test prints one line and passes (`make bqemulator`;
//! the Firestore emulator comes with the Google Cloud SDK).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{planted, Embedded};
use converge_bigquery::BigQueryEmulator;
use converge_contract::kit::backends::firestore_for_tests;
use converge_contract::kit::{values_agree, MetricsLoader};
use converge_core::{ManualClock, MirrorConfig, Opportunity, OpportunityStore, Timestamp, Warehouse};
use converge_detect::Pack;
use converge_detector_runner::{DetectRequest, DetectRun, DetectorRunner, RunnerOptions};
use converge_firestore::FirestoreSource;

fn by_id(run: &DetectRun) -> BTreeMap<String, Opportunity> {
    run.findings.iter().map(|f| (f.id.clone(), f.clone())).collect()
}

#[tokio::test]
async fn on_bigquery_and_firestore_the_runner_opens_what_it_opens_embedded_and_a_rerun_moves_only_last_seen() {
    let Some(bigquery) = BigQueryEmulator::for_tests().await else { return };
    let Some(firestore) = firestore_for_tests().await else { return };
    let warehouse = bigquery.fresh_warehouse().await.unwrap();
    warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap();
    let started = std::time::Instant::now();
    MetricsLoader::new(Arc::new(warehouse.clone())).await.insert(planted::dataset()).await;
    eprintln!("loaded the planted metrics into bqemulator in {:?}", started.elapsed());
    let store: FirestoreSource = firestore.fresh_source().await.unwrap();

    let embedded = Embedded::planted().await;
    let reference = embedded.runner(Pack::shipped().unwrap(), RunnerOptions::default()).run(DetectRequest::all(planted::as_of())).await.unwrap();

    let clock = Arc::new(ManualClock::at(Timestamp::new(1_743_465_600, 0)));
    let runner = DetectorRunner::new(
        Pack::shipped().unwrap(),
        Arc::new(warehouse.clone()),
        Arc::new(warehouse.clone()),
        Arc::new(store.clone()),
        clock.clone(),
        RunnerOptions::default(),
    );
    let started = std::time::Instant::now();
    let first = runner.run(DetectRequest::all(planted::as_of())).await.unwrap();
    eprintln!("the pack on bqemulator + Firestore emulator: {:?}", started.elapsed());
    assert_eq!((first.outcome.as_str(), first.run, first.failed), ("ok", reference.run, 0), "{:?}", first.failures);

    // The same opportunities: ids, entities, messages; values within 1e-9 relative.
    let (cloud, local) = (by_id(&first), by_id(&reference));
    assert_eq!(cloud.keys().collect::<Vec<_>>(), local.keys().collect::<Vec<_>>(), "the same opportunity ids");
    for (id, c) in &cloud {
        let l = &local[id];
        assert_eq!((&c.detector, &c.tenant, &c.entity_type, &c.entity_id, &c.severity), (&l.detector, &l.tenant, &l.entity_type, &l.entity_id, &l.severity));
        for (what, a, b) in [
            ("recent", c.recent_value, l.recent_value),
            ("baseline", c.baseline_value, l.baseline_value),
            ("reference", c.reference_value, l.reference_value),
            ("volume", c.volume, l.volume),
        ] {
            assert!(values_agree(a, b), "{} {} {what}: BigQuery {a:?}, DuckDB {b:?}", c.detector, c.entity_id);
        }
        assert_eq!(c.message, l.message, "{} {}", c.detector, c.entity_id);
    }
    let expected: usize = planted::expected_acme_findings().iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!((first.fired as usize, first.opportunities.opened as usize), (expected, expected));
    let open = store.open_opportunities(None).await.unwrap();
    assert_eq!(open.iter().map(|o| o.id.clone()).collect::<Vec<_>>(), cloud.keys().cloned().collect::<Vec<_>>(), "every finding is an open document");
    let runs = warehouse.runs("detectors", 10).await.unwrap();
    assert_eq!((runs.len(), runs[0].batch_id.as_str(), runs[0].outcome.as_str()), (1, first.batch_id.as_str(), "ok"));

    // Again, an hour later: only last_seen moves.
    clock.advance_micros(3_600_000_000);
    let second = runner.run(DetectRequest::all(planted::as_of())).await.unwrap();
    assert_eq!(second.batch_id, first.batch_id);
    assert_eq!((second.opportunities.opened, second.opportunities.updated, second.opportunities.resolved), (0, first.fired, 0));
    // The same findings; only the sighting times of the pass differ.
    let unsighted = |run: &converge_detector_runner::DetectRun| -> Vec<converge_core::Opportunity> {
        let never = converge_core::Timestamp::new(0, 0);
        run.findings.iter().map(|o| converge_core::Opportunity { first_seen: never, last_seen: never, ..o.with_numbers_rounded(8) }).collect()
    };
    assert_eq!(unsighted(&second), unsighted(&first));
    let after = store.open_opportunities(None).await.unwrap();
    assert_eq!(after.len(), open.len(), "no duplicates");
    for (old, new) in open.iter().zip(&after) {
        assert_eq!(new.last_seen, clock_now(&clock));
        assert_eq!(Opportunity { last_seen: old.last_seen, ..new.with_numbers_rounded(8) }, old.with_numbers_rounded(8));
    }
    assert_eq!(warehouse.runs("detectors", 10).await.unwrap().len(), 1, "one record per batch");

    // acme declares its last two days an outage in Firestore: read over the wire, the
    // stalled funnel step's two-day window is left with nothing to judge, and its open
    // opportunity is resolved (the detector ran and did not find it).
    let outage = converge_core::KnownEvent {
        tenant: "acme".into(),
        id: "outage".into(),
        from: planted::as_of() - chrono::Days::new(1),
        until: planted::as_of(),
        reason: "tracking outage".into(),
    };
    converge_core::SourceStore::apply(&store, vec![outage.to_write()]).await.unwrap();
    let declared = DetectorRunner::new(
        Pack::shipped().unwrap(),
        Arc::new(warehouse.clone()),
        Arc::new(warehouse.clone()),
        Arc::new(store.clone()),
        clock.clone(),
        RunnerOptions::default(),
    )
    .with_known_events(Arc::new(store.clone()));
    let request = DetectRequest { tenants: Some(vec!["acme".into()]), detectors: Some(vec!["funnel_step_stalled".into()]), ..DetectRequest::all(planted::as_of()) };
    let run = declared.run(request).await.unwrap();
    assert_eq!((run.outcome.as_str(), run.known_event_days, run.fired, run.opportunities.resolved), ("ok", 2, 0, 1), "{:?}", run.known_event_problems);
}

fn clock_now(clock: &ManualClock) -> Timestamp {
    converge_core::Clock::now(clock)
}

