//! The nightly ETL on the embedded stores (SQLite source, DuckDB warehouse): what
//! it loads, what it refuses, and that running it again changes nothing.

mod common;

use converge_core::RunOutcome;
use std::sync::Arc;
use std::time::Instant;

use common::{day, day_writes, record, set, Env};
use converge_core::business_metrics::FaultyMetricsWarehouse;
use converge_core::{batch_id, DocWrite, ErrorLog, MetricsWarehouse, QuarantineReason, SourceScope, SourceStore, Value, Warehouse};
use converge_etl::collections::{AD_KEYWORDS, GA4_PAGES, GA4_TRAFFIC_SOURCES};
use converge_etl::{EtlBackends, EtlError, EtlRequest, EtlRunner, SliceReport};

fn one_day(date: chrono::NaiveDate) -> EtlRequest {
    EtlRequest { late_days: Some(0), ..EtlRequest::for_date(date) }
}

fn report(run: &converge_etl::EtlRun, index: usize) -> SliceReport {
    serde_json::from_value(run.runs[index].report.clone()).unwrap()
}

async fn state(env: &Env, tenant: &str, date: chrono::NaiveDate) -> (Vec<converge_core::MetricRow>, Vec<converge_core::EntityMapRow>) {
    (env.warehouse.slice_metrics(tenant, date).await.unwrap(), env.warehouse.slice_entity_map(tenant, date).await.unwrap())
}

#[tokio::test]
async fn raw_ids_roll_up_to_canonical_entities_with_the_vocabulary_metrics() {
    let env = Env::new().await;
    env.write(vec![
        set("orgs/acme/ga4_pages/a".into(), record(&GA4_PAGES, day(3), "https://shop.example/pricing?utm_source=news", 0, 1)),
        set("orgs/acme/ga4_pages/b".into(), record(&GA4_PAGES, day(3), "https://shop.example/pricing/?gclid=x", 1, 2)),
        set("orgs/acme/ga4_traffic_sources/c".into(), record(&GA4_TRAFFIC_SOURCES, day(3), "Google/CPC", 0, 1)),
        set("orgs/acme/ad_keywords/d".into(), record(&AD_KEYWORDS, day(3), " Running  SHOES", 0, 2)),
    ])
    .await;
    let run = env.runner().run(one_day(day(3))).await.unwrap();
    assert_eq!((run.outcome.as_str(), run.rows_in), ("ok", 4));
    // One read per document the day's queries returned, and one for each of the other
    // collections' empty answers; the pass also read the tenant list (one id) and the
    // tenant's known events (an empty answer, one read).
    let empty = converge_etl::RAW_COLLECTIONS.len() as u64 - 3;
    assert_eq!(report(&run, 0).cost.source_reads, 4 + empty, "{:?}", report(&run, 0).cost);
    assert_eq!(run.cost.source_reads, 4 + empty + 1 + 1, "{:?}", run.cost);
    assert!(run.cost.estimated_usd > 0.0, "{:?}", run.cost);
    let (metrics, entities) = state(&env, "acme", day(3)).await;
    let value = |entity_type: &str, id: &str, metric: &str| {
        metrics.iter().find(|m| m.entity_type == entity_type && m.entity_id == id && m.metric == metric).unwrap_or_else(|| panic!("{entity_type} {id} {metric}")).value
    };
    // sessions is the first measure: scale 1 and 2 → 1 + 2.
    assert_eq!(value("page", "/pricing", "sessions"), 3.0);
    assert_eq!(value("page", "/pricing", "revenue"), 0.5 * 6.0 + 0.5 * 12.0, "amounts sum");
    assert_eq!(value("traffic_source", "google/cpc", "sessions"), 1.0);
    // keywords: impressions (1st measure) 2, cost_micros (3rd) 6 million → 6.0, avg_position (5th) 5.0 × impressions 2.
    assert_eq!(value("keyword", "running shoes", "cost"), 6.0);
    assert_eq!(value("keyword", "running shoes", "position_sum"), 10.0);
    assert_eq!(metrics.len(), 10 + 6 + 5, "every metric of each entity's type");
    let raw_ids: Vec<(&str, &str)> = entities.iter().map(|e| (e.raw_id.as_str(), e.entity_id.as_str())).collect();
    assert_eq!(
        raw_ids,
        [(" Running  SHOES", "running shoes"), ("https://shop.example/pricing/?gclid=x", "/pricing"), ("https://shop.example/pricing?utm_source=news", "/pricing"), ("Google/CPC", "google/cpc")]
    );
}

#[tokio::test]
async fn running_a_date_again_changes_nothing_and_keeps_its_batch_id() {
    let env = Env::new().await;
    env.write(day_writes("acme", day(5), 12)).await;
    env.write(day_writes("beta", day(5), 4)).await;
    let first = env.runner().run(one_day(day(5))).await.unwrap();
    assert_eq!(first.slices, 2);
    assert_eq!(first.batch_id, first.run_id, "two slices: the pass's id at the top");
    let single = env.runner().run(EtlRequest { tenants: Some(vec!["beta".into()]), ..one_day(day(5)) }).await.unwrap();
    assert_eq!(single.batch_id, batch_id("etl", "beta", "2025-04-05"), "one slice: its batch id at the top");
    let before = (state(&env, "acme", day(5)).await, state(&env, "beta", day(5)).await);
    let second = env.runner().run(one_day(day(5))).await.unwrap();
    assert_eq!((state(&env, "acme", day(5)).await, state(&env, "beta", day(5)).await), before);
    for (a, b) in first.runs.iter().zip(&second.runs) {
        assert_eq!(a.batch_id, batch_id("etl", &a.scope, &day(5).to_string()));
        assert_eq!(a.batch_id, b.batch_id, "the same slice is the same batch");
        // The same report but for when it ran: its duration, its reads' times (each
        // read of the source is at its own instant, as in Firestore), and the warehouse
        // bytes (replacing a slice reads the one it replaces). The reads are the same.
        assert_eq!(a.report["cost"]["source_reads"], b.report["cost"]["source_reads"]);
        let when_aside = |report: &serde_json::Value| {
            let mut report = report.clone();
            report["millis"] = 0.into();
            report["cost"] = serde_json::Value::Null;
            for watermark in report["watermarks"].as_array_mut().into_iter().flatten() {
                watermark["read_time"] = serde_json::Value::Null;
            }
            report
        };
        assert_eq!(when_aside(&a.report), when_aside(&b.report), "the same report");
    }
    let runs = env.warehouse.runs("etl", 10).await.unwrap();
    assert_eq!(runs.len(), 2, "one record per (tenant, date), replaced by the re-run");
    assert_eq!(env.warehouse.loads_before("acme", day(6), 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn late_data_within_the_window_is_picked_up() {
    let env = Env::new().await;
    for d in 1..=4 {
        env.write(day_writes("acme", day(d), 6)).await;
    }
    env.runner().run(EtlRequest::for_date(day(4))).await.unwrap();
    let before = state(&env, "acme", day(2)).await;
    // A page row for day 2 lands two days late, and a revision of a keyword row.
    env.write(vec![
        set("orgs/acme/ga4_pages/late".into(), record(&GA4_PAGES, day(2), "https://shop.example/late", 0, 3)),
        set(format!("orgs/acme/ad_keywords/{}-0", day(2)), record(&AD_KEYWORDS, day(2), "running shoes 0", 0, 9)),
    ])
    .await;
    env.write(day_writes("acme", day(5), 6)).await;
    let run = env.runner().run(EtlRequest::for_date(day(5))).await.unwrap();
    assert_eq!((run.from.as_str(), run.to.as_str()), ("2025-04-02", "2025-04-05"));
    let after = state(&env, "acme", day(2)).await;
    assert_ne!(after, before);
    assert!(after.0.iter().any(|m| m.entity_id == "/late" && m.metric == "sessions" && m.value == 3.0));
    let impressions: f64 = after.0.iter().filter(|m| m.entity_type == "keyword" && m.entity_id == "running shoes 0" && m.metric == "impressions").map(|m| m.value).sum();
    // Rows 0 and 4 carry that keyword: row 0 revised from 1 to 9 impressions, row 4 keeps its 5.
    assert_eq!(impressions, 9.0 + 5.0, "the revised row replaces its old values");
    let report = report(&run, 0);
    let pages = report.watermarks.iter().find(|w| w.collection == "ga4_pages").unwrap();
    assert_eq!(pages.docs_read, 7);
    assert!(pages.max_update_time.is_some() && !pages.read_time.is_empty());
}

#[tokio::test]
async fn a_schema_violation_is_quarantined_with_its_reason_and_the_rest_loads() {
    let env = Env::new().await;
    env.write(day_writes("acme", day(6), 5)).await;
    let mut bad = record(&GA4_PAGES, day(6), "https://shop.example/bad", 0, 1);
    bad.insert("sessions".into(), Value::Integer(-4));
    bad.insert("bounces".into(), Value::String("n/a".into()));
    env.write(vec![set("orgs/acme/ga4_pages/bad".into(), bad)]).await;
    let run = env.runner().run(one_day(day(6))).await.unwrap();
    let report = report(&run, 0);
    assert_eq!((report.outcome.as_str(), report.quarantined, report.rows_in), ("partial", 1, 35));
    assert_eq!(report.quarantined_docs, ["orgs/acme/ga4_pages/bad"]);
    let (metrics, _) = state(&env, "acme", day(6)).await;
    assert!(!metrics.iter().any(|m| m.entity_id == "/bad"), "the violator is not loaded, nor fixed");
    assert!(metrics.iter().any(|m| m.entity_id == "/page0"), "the rest of the slice is");
    let quarantined = env.source.quarantined(10).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    let record = &quarantined[0];
    assert_eq!(record.reason, QuarantineReason::SchemaViolation);
    assert!(record.detail.contains("field `sessions` is the integer -4: expected an integer >= 0"), "{}", record.detail);
    assert!(record.detail.contains("field `bounces` is the string \"n/a\""), "{}", record.detail);
    assert!(String::from_utf8_lossy(&record.payload).contains("\"sessions\":-4"), "the raw record is kept");
    // The same bad record found again merges into its record.
    env.runner().run(one_day(day(6))).await.unwrap();
    let again = env.source.quarantined(10).await.unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 2));
}

/// Loads day `d` fully, then breaks it with `breakage` and runs it again: the run
/// says which check failed, and the old slice is still there.
async fn check_fails_and_old_slice_stays(env: &Env, date: chrono::NaiveDate, breakage: Vec<DocWrite>, check: &str) {
    let before = state(env, "acme", date).await;
    assert!(!before.0.is_empty());
    env.write(breakage).await;
    let run = env.runner().run(one_day(date)).await.unwrap();
    assert_eq!((run.outcome.as_str(), run.failed_slices), ("failed", 1));
    let report = report(&run, 0);
    let failed: Vec<&str> = report.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
    assert_eq!(failed, [check], "{:?}", report.checks);
    assert_eq!(run.runs[0].outcome, RunOutcome::Failed);
    assert_eq!(state(env, "acme", date).await, before, "the old slice stays");
    let stored = env.warehouse.runs("etl", 50).await.unwrap();
    let stored = stored.iter().find(|r| r.batch_id == batch_id("etl", "acme", &date.to_string())).unwrap();
    assert_eq!(stored.outcome, RunOutcome::Failed, "the failure is recorded");
}

#[tokio::test]
async fn each_quality_check_fails_the_slice_and_leaves_the_old_one() {
    let env = Env::new().await;
    for d in 1..=6 {
        env.write(day_writes("acme", day(d), 10)).await;
    }
    env.runner().run(EtlRequest { from: Some(day(1)), ..one_day(day(6)) }).await.unwrap();

    // The same export row under a second document id.
    let copy = record(&GA4_PAGES, day(4), "https://shop.example/page0?utm_source=s0", 0, 1);
    check_fails_and_old_slice_stays(&env, day(4), vec![set("orgs/acme/ga4_pages/copy".into(), copy)], "duplicate_keys").await;
    env.write(vec![DocWrite::Delete { path: "orgs/acme/ga4_pages/copy".into() }]).await;

    // A keyword that is blank once trimmed.
    let blank = record(&AD_KEYWORDS, day(5), "   ", 99, 1);
    check_fails_and_old_slice_stays(&env, day(5), vec![set("orgs/acme/ad_keywords/blank".into(), blank)], "empty_entity_ids").await;
    env.write(vec![DocWrite::Delete { path: "orgs/acme/ad_keywords/blank".into() }]).await;

    // Most of a day's export gone: 70 rows a day before, 7 now.
    let gone: Vec<DocWrite> = day_writes("acme", day(6), 10)
        .into_iter()
        .filter_map(|w| match w {
            DocWrite::Set { path, .. } if !path.ends_with("-0") => Some(DocWrite::Delete { path }),
            _ => None,
        })
        .collect();
    check_fails_and_old_slice_stays(&env, day(6), gone, "rows_in_vs_trailing_median").await;

    // Fixed: the day loads again.
    env.write(day_writes("acme", day(6), 10)).await;
    assert_eq!(env.runner().run(one_day(day(6))).await.unwrap().outcome, RunOutcome::Ok);
}

#[tokio::test]
async fn an_interrupted_replace_leaves_the_old_slice_and_says_retry() {
    let env = Env::new().await;
    env.write(day_writes("acme", day(7), 8)).await;
    env.runner().run(one_day(day(7))).await.unwrap();
    let before = state(&env, "acme", day(7)).await;
    env.write(vec![set("orgs/acme/ga4_pages/new".into(), record(&GA4_PAGES, day(7), "https://shop.example/new", 0, 1))]).await;
    let faulty = Arc::new(FaultyMetricsWarehouse::new(Arc::new(env.warehouse.clone())));
    faulty.interrupt_next_replace_after(10);
    let runner = EtlRunner::new(EtlBackends { metrics: faulty.clone(), ..env.backends() }, env.clock.clone());
    let error = runner.run(one_day(day(7))).await.unwrap_err();
    assert!(matches!(error, EtlError::Store { .. }), "{error}");
    assert_eq!(error.kind(), converge_core::ErrorKind::Retryable, "retryable: {error}");
    assert_eq!(faulty.injected(), 1);
    assert_eq!(state(&env, "acme", day(7)).await, before, "the old slice, whole");
    let stored = env.warehouse.runs("etl", 5).await.unwrap();
    assert_eq!(stored[0].outcome, RunOutcome::Failed);
    // The failed slice had read its 7 × 8 + 1 documents: billed, so recorded.
    assert_eq!(stored[0].report["cost"]["source_reads"], 57, "{}", stored[0].report);
    // The retry loads the new row.
    let run = runner.run(one_day(day(7))).await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Ok);
    assert!(state(&env, "acme", day(7)).await.0.iter().any(|m| m.entity_id == "/new"));
}

#[tokio::test]
async fn a_backfill_respects_its_throughput_cap() {
    let env = Env::new().await;
    for d in 1..=2 {
        env.write(day_writes("acme", day(d), 3)).await;
    }
    // 42 records at 60 per second: the last passes 41/60 s after the first.
    let started = Instant::now();
    let run = env.runner().run(EtlRequest { from: Some(day(1)), max_records_per_second: Some(60), ..one_day(day(2)) }).await.unwrap();
    assert_eq!(run.rows_in, 42);
    assert!(started.elapsed().as_secs_f64() >= 41.0 / 60.0 - 0.01, "{:?}", started.elapsed());
}

#[tokio::test]
async fn tenants_default_to_every_org_and_bad_ones_are_refused() {
    let env = Env::new().await;
    env.write(day_writes("acme", day(8), 2)).await;
    env.write(day_writes("beta", day(8), 2)).await;
    let run = env.runner().run(one_day(day(8))).await.unwrap();
    assert_eq!(run.tenants, ["acme", "beta"]);
    let error = env.runner().run(EtlRequest { tenants: Some(vec!["a/b".into()]), ..one_day(day(8)) }).await.unwrap_err();
    assert_eq!(error.kind(), converge_core::ErrorKind::InvalidInput, "{error}");
}

#[tokio::test]
async fn raw_writes_produce_no_outbox_events_under_the_mirror_filter() {
    let env = Env::new().await;
    env.write(day_writes("acme", day(9), 3)).await;
    assert_eq!(env.source.outbox_stats().await.unwrap().pending, 0, "raw collections are not mirrored");
    assert!(env.source.count(&SourceScope::collection("orgs/acme/ga4_pages").unwrap()).await.unwrap() > 0);
}

#[tokio::test]
async fn a_declared_known_event_passes_the_volume_check_and_stays_out_of_the_median() {
    let env = Env::new().await;
    for d in 1..=5 {
        env.write(day_writes("acme", day(d), 10)).await;
    }
    // Day 6 is a holiday: one row per collection instead of ten. Undeclared, it fails.
    env.write(day_writes("acme", day(6), 1)).await;
    let run = env.runner().run(EtlRequest { from: Some(day(1)), ..one_day(day(6)) }).await.unwrap();
    assert_eq!(run.failed_slices, 1, "an undeclared dip fails the volume check");

    let holiday = converge_core::KnownEvent { tenant: "acme".into(), id: "holiday".into(), from: day(6), until: day(6), reason: "holiday".into() };
    env.write(vec![holiday.to_write()]).await;
    let run = env.runner().run(one_day(day(6))).await.unwrap();
    assert_eq!(run.outcome, RunOutcome::Ok);
    let check = report(&run, 0).checks.into_iter().find(|c| c.name == "rows_in_vs_trailing_median").unwrap();
    assert!(check.passed && check.detail.contains("declared known event (holiday)"), "{}", check.detail);

    // The day after is checked against the days before the holiday: at 5 rows a
    // collection (half of 10) it passes; had the holiday's 7 rows counted in the
    // median of the last loads, the floor would have been lower still.
    env.write(day_writes("acme", day(7), 10)).await;
    let run = env.runner().run(one_day(day(7))).await.unwrap();
    let check = report(&run, 0).checks.into_iter().find(|c| c.name == "rows_in_vs_trailing_median").unwrap();
    assert!(check.passed && check.detail.contains("median of the last 5 loads with data 70"), "{}", check.detail);
}
