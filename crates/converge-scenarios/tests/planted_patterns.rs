//! The demo's operational pass at a reduced scale (the named and planted entities are
//! in every scale's universe): the planted patterns are found exactly, nothing else
//! fires, and re-running the ETL of a day and the detectors changes nothing.

use converge_core::RunOutcome;
use std::sync::Arc;

use chrono::NaiveDate;
use converge_backends::EmbeddedBackends;
use converge_scenarios::planted_patterns::{self, expected_findings, OpsBars, OpsPlan};
use converge_detect::Pack;
use converge_core::{Clock, MetricsWarehouse, MirrorConfig, Opportunity, OpportunityStore, SystemClock, Warehouse};
use converge_etl::EtlRequest;
use indicatif::ProgressBar;

/// Opportunities by id, `last_seen` aside, numbers to 8 significant digits (the
/// warehouse's parallel sums differ run to run in the last bits).
fn opportunities_but_last_seen(opportunities: Vec<Opportunity>) -> Vec<Opportunity> {
    let mut opportunities: Vec<Opportunity> =
        opportunities.iter().map(|o| Opportunity { last_seen: o.first_seen, ..o.with_numbers_rounded(8) }).collect();
    opportunities.sort_by(|a, b| a.id.cmp(&b.id));
    opportunities
}

/// 90 days of ops data for `acme` (planted) and `globex` (quiet) at the given scales,
/// seeded, loaded by the ETL and run through the detectors, in a fresh data directory.
async fn seed_load_and_detect(
    acme_scale: f64,
    globex_scale: f64,
) -> (tempfile::TempDir, EmbeddedBackends, Arc<dyn Clock>, OpsPlan, planted_patterns::OpsOutcome) {
    let dir = tempfile::tempdir().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = MirrorConfig::default();
    let backends = EmbeddedBackends::open_for(dir.path(), clock.clone(), &config).unwrap();
    backends.warehouse.ensure_tables(&config).await.unwrap();
    let plan = OpsPlan {
        tenants: vec![("acme".into(), acme_scale), ("globex".into(), globex_scale)],
        planted_tenant: "acme".into(),
        first_day: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
        days: 90,
    };
    let bars = OpsBars { seeded: ProgressBar::hidden(), etl: ProgressBar::hidden() };
    let outcome = planted_patterns::run(&backends, clock.clone(), &plan, &bars).await.unwrap();
    (dir, backends, clock, plan, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_patterns_are_found_exactly_and_rerunning_changes_nothing() {
    // A quiet tenant beside the planted one: its healthy data must fire nothing.
    let (_dir, backends, clock, plan, outcome) = seed_load_and_detect(0.05, 0.05).await;

    let detect = &outcome.detect_run;
    let found: Vec<String> = detect.findings.iter().map(|f| format!("{} {} {}: {}", f.detector, f.tenant, f.entity_id, f.message)).collect();
    assert_eq!((outcome.missed.as_slice(), outcome.unexpected.as_slice()), (&[][..], &[][..]), "findings:\n{}", found.join("\n"));
    let mut keys: Vec<_> = detect.findings.iter().map(planted_patterns::key).collect();
    keys.sort();
    let mut expected = expected_findings("acme");
    expected.sort();
    assert_eq!(keys, expected, "each planted finding exactly once");
    assert_eq!(detect.failed, 0, "{:?}", detect.failures);
    assert_eq!(detect.run, Pack::shipped().unwrap().len() as u64);
    let summary = &outcome.detectors;
    assert_eq!((summary.planted_found, summary.planted_total, summary.unexpected), (expected.len() as u64, expected.len() as u64, 0));
    assert!(expected.len() >= 34, "at least one planted finding per shipped detector");
    assert_eq!(outcome.etl.rows_in, outcome.raw_rows, "every seeded row read once");
    assert!(outcome.etl.rows_out > 0);

    // Re-running the ETL of the last day leaves its slices as they were.
    let last = plan.last_day();
    let before = (backends.warehouse.slice_metrics("acme", last).await.unwrap(), backends.warehouse.slice_metrics("globex", last).await.unwrap());
    let runner = converge_scenarios::embedded_etl::runner(&backends, clock.clone());
    let rerun = runner.run(EtlRequest { late_days: Some(0), ..EtlRequest::for_date(last) }).await.unwrap();
    assert_eq!(rerun.outcome, RunOutcome::Ok);
    let after = (backends.warehouse.slice_metrics("acme", last).await.unwrap(), backends.warehouse.slice_metrics("globex", last).await.unwrap());
    assert_eq!(before, after, "re-running the ETL of {last} changed a slice");
    assert!(!before.0.is_empty());

    // Re-running the detectors: the same opportunities (ids and contents); only
    // last_seen moves, and nothing is opened or resolved.
    let opened = backends.source.open_opportunities(None).await.unwrap();
    assert_eq!(opened.len(), expected.len());
    let again = planted_patterns::detect(&backends, clock, last).await.unwrap();
    assert_eq!((again.opportunities.opened, again.opportunities.resolved), (0, 0), "{:?}", again.opportunities);
    assert_eq!(again.opportunities.updated, expected.len() as u64);
    let reopened = backends.source.open_opportunities(None).await.unwrap();
    assert_eq!(opportunities_but_last_seen(reopened), opportunities_but_last_seen(opened));
}

/// At the demo's own scale (a real account's ~6,000 raw rows a day for the planted
/// tenant, a tenth of that for a quiet one), where the long tail of small pages lives:
/// the planted findings and nothing else. ~20 s: 90 days seeded, loaded and detected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_demos_scale_the_planted_patterns_and_nothing_else_fire() {
    let (_dir, _backends, _clock, _plan, outcome) = seed_load_and_detect(1.0, 0.1).await;
    let found: Vec<String> =
        outcome.detect_run.findings.iter().map(|f| format!("{} {} {}: {}", f.detector, f.tenant, f.entity_id, f.message)).collect();
    assert_eq!((outcome.missed.as_slice(), outcome.unexpected.as_slice()), (&[][..], &[][..]), "findings:\n{}", found.join("\n"));
    assert_eq!(outcome.detectors.planted_found, expected_findings("acme").len() as u64);
    assert_eq!(outcome.detect_run.failed, 0, "{:?}", outcome.detect_run.failures);
    assert_eq!(outcome.detectors.known_event_days, 1, "acme's declared holiday, read and left out");
}
