//! The runner on the embedded pair (DuckDB warehouse, SQLite opportunities) over the
//! planted 90-day dataset: exact findings, idempotent re-runs, failures that stay
//! contained, resolution of what stopped firing, a bounded number of queries in flight.

mod common;

use converge_core::RunOutcome;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{planted, Embedded};
use converge_core::{
    FindingRow, FindingsQuery, FindingsWarehouse, Opportunity, OpportunityStatus, OpportunityStore, QueryDialect, StoreError, Timestamp,
    Warehouse,
};
use converge_detect::{Pack, SHIPPED_PACK_TOML};
use converge_detector_runner::{DetectRequest, DetectorRunner, RunnerOptions};
use futures::stream::{BoxStream, StreamExt};

fn request() -> DetectRequest {
    DetectRequest::all(planted::as_of())
}

async fn all_opportunities(store: &dyn OpportunityStore, ids: &[(String, String)]) -> Vec<Opportunity> {
    let mut out = Vec::new();
    for (tenant, id) in ids {
        out.push(store.opportunity(tenant, id).await.unwrap().expect("stored"));
    }
    out
}

#[tokio::test]
async fn the_planted_patterns_become_opportunities_and_the_run_is_recorded() {
    let env = Embedded::planted().await;
    let runner = env.runner(Pack::shipped().unwrap(), RunnerOptions::default());
    let run = runner.run(request()).await.unwrap();

    let expected: BTreeMap<&str, Vec<&str>> = planted::expected_acme_findings().into_iter().collect();
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!((run.outcome.as_str(), run.run, run.failed), ("ok", 34, 0), "{:?}", run.failures);
    assert_eq!(run.fired as usize, total);
    assert_eq!((run.opportunities.opened as usize, run.opportunities.updated, run.opportunities.resolved), (total, 0, 0));
    let mut fired: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for finding in &run.findings {
        assert_eq!(finding.tenant, planted::PLANTED_TENANT, "the quiet tenant fires nothing");
        fired.entry(finding.detector.as_str()).or_default().push(finding.entity_id.as_str());
    }
    assert_eq!(fired, expected);

    let open = env.store.open_opportunities(None).await.unwrap();
    assert_eq!(open.len(), total);
    let pricing = open.iter().find(|o| o.detector == "page_conversion_rate_drop" && o.entity_id == "/pricing").unwrap();
    assert_eq!(pricing.period, converge_core::opportunity_period(planted::as_of(), 28));
    assert_eq!(pricing.id, converge_core::opportunity_id("page_conversion_rate_drop", "acme", "page", "/pricing", &pricing.period));
    assert!(pricing.message.contains("/pricing"), "{}", pricing.message);
    assert_eq!((pricing.status, pricing.first_seen, pricing.batch_id.as_str()), (OpportunityStatus::Open, env.clock.now_ts(), run.batch_id.as_str()));

    let records = env.warehouse.runs("detectors", 10).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].batch_id, converge_core::batch_id("detectors", "*", &planted::as_of().to_string()));
    assert_eq!(records[0].report["fired"], total as u64);
    assert_eq!(records[0].report["opportunities"]["opened"], total as u64);
    assert_eq!(records[0].outcome, RunOutcome::Ok);
    // The pass read the open opportunities once (every one it had just upserted; the
    // upserts are writes).
    assert_eq!(run.cost.source_reads, total as u64, "{:?}", run.cost);
    assert!(run.cost.estimated_usd > 0.0, "{:?}", run.cost);
    assert_eq!(records[0].report["cost"]["source_reads"], total as u64);
}

trait NowTs {
    fn now_ts(&self) -> Timestamp;
}
impl NowTs for converge_core::ManualClock {
    fn now_ts(&self) -> Timestamp {
        converge_core::Clock::now(self)
    }
}

#[tokio::test]
async fn running_again_changes_nothing_but_last_seen() {
    let env = Embedded::planted().await;
    let runner = env.runner(Pack::shipped().unwrap(), RunnerOptions::default());
    let first = runner.run(request()).await.unwrap();
    let ids: Vec<(String, String)> = first.findings.iter().map(|f| (f.tenant.clone(), f.id.clone())).collect();
    let before = all_opportunities(&env.store, &ids).await;

    env.clock.advance_micros(3_600_000_000);
    let second = runner.run(request()).await.unwrap();
    assert_eq!(second.batch_id, first.batch_id, "same work, same batch");
    assert_eq!((second.opportunities.opened, second.opportunities.updated, second.opportunities.resolved), (0, first.fired, 0));
    // The same findings; only the sighting times of the pass differ.
    let unsighted = |run: &converge_detector_runner::DetectRun| -> Vec<converge_core::Opportunity> {
        let never = converge_core::Timestamp::new(0, 0);
        run.findings.iter().map(|o| converge_core::Opportunity { first_seen: never, last_seen: never, ..o.with_numbers_rounded(8) }).collect()
    };
    assert_eq!(unsighted(&second), unsighted(&first));
    let after = all_opportunities(&env.store, &ids).await;
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(new.last_seen, env.clock.now_ts(), "last_seen is the one field a re-run moves");
        assert_eq!(Opportunity { last_seen: old.last_seen, ..new.with_numbers_rounded(8) }, old.with_numbers_rounded(8));
    }
    assert_eq!(env.store.open_opportunities(None).await.unwrap().len(), ids.len(), "no duplicates");
    assert_eq!(env.warehouse.runs("detectors", 10).await.unwrap().len(), 1, "one record per batch");
}

/// The shipped pack plus one raw-SQL detector reading a column that does not exist.
fn pack_with_broken_detector(broken_id: &str) -> Pack {
    let broken = format!(
        r#"
[[detector]]
id = "{broken_id}"
title = "Reads a column the table does not have"
entity_type = "page"
severity = "info"
message = "{{entity_id}}"
windows = {{ recent_days = 7 }}

[detector.raw_sql]
duckdb = """
SELECT tenant, entity_type, entity_id, no_such_column AS recent_value, NULL::DOUBLE AS baseline_value,
  NULL::DOUBLE AS volume, NULL::DOUBLE AS reference_value
FROM daily_entity_metrics WHERE date = CAST($1 AS DATE) AND (CAST($2 AS VARCHAR) IS NULL OR tenant = CAST($2 AS VARCHAR))
"""
bigquery = """
SELECT tenant, entity_type, entity_id, no_such_column AS recent_value, CAST(NULL AS FLOAT64) AS baseline_value,
  CAST(NULL AS FLOAT64) AS volume, CAST(NULL AS FLOAT64) AS reference_value
FROM daily_entity_metrics WHERE date = @as_of AND (@tenant IS NULL OR tenant = @tenant)
"""
"#
    );
    Pack::from_toml("test pack", &format!("{SHIPPED_PACK_TOML}\n{broken}")).unwrap()
}

#[tokio::test]
async fn a_failing_detector_is_recorded_and_the_others_run() {
    let env = Embedded::planted().await;
    let runner = env.runner(pack_with_broken_detector("broken_reader"), RunnerOptions::default());
    let run = runner.run(request()).await.unwrap();
    assert_eq!((run.outcome.as_str(), run.run, run.failed), ("partial", 35, 1));
    assert_eq!(run.failures.len(), 1);
    assert_eq!(run.failures[0].detector, "broken_reader");
    assert!(run.failures[0].error.contains("no_such_column"), "{}", run.failures[0].error);
    assert!(!run.failures[0].retryable);
    let total: usize = planted::expected_acme_findings().iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(run.fired as usize, total, "every other detector's findings stand");
    let record = &env.warehouse.runs("detectors", 1).await.unwrap()[0];
    assert_eq!(record.outcome, RunOutcome::Partial);
    assert_eq!(record.report["failures"][0]["detector"], "broken_reader");
}

#[tokio::test]
async fn a_failed_detector_does_not_resolve_its_opportunities() {
    let env = Embedded::planted().await;
    env.runner(Pack::shipped().unwrap(), RunnerOptions::default()).run(request()).await.unwrap();
    // The same id, now broken: its open opportunities must stay open.
    let text = SHIPPED_PACK_TOML.replace(
        "id = \"device_mobile_conversion_gap\"",
        "id = \"device_mobile_conversion_gap\"\n# broken below",
    );
    let broken = text.replacen("WITH device_sums AS (", "WITH device_sums AS (\n  SELECT missing_column FROM daily_entity_metrics), unused AS (", 1);
    let pack = Pack::from_toml("broken pack", &broken).unwrap();
    let run = env.runner(pack, RunnerOptions::default()).run(request()).await.unwrap();
    assert_eq!(run.failures.iter().map(|f| f.detector.as_str()).collect::<Vec<_>>(), ["device_mobile_conversion_gap"]);
    assert_eq!(run.opportunities.resolved, 0);
    let open = env.store.open_opportunities(Some("acme")).await.unwrap();
    assert!(open.iter().any(|o| o.detector == "device_mobile_conversion_gap" && o.entity_id == "mobile"));
}

#[tokio::test]
async fn an_opportunity_that_stops_firing_is_resolved_and_reopens_if_it_fires_again() {
    let env = Embedded::planted().await;
    let runner = env.runner(Pack::shipped().unwrap(), RunnerOptions::default());
    let first = runner.run(request()).await.unwrap();
    let slow = first.findings.iter().find(|f| f.detector == "page_slow_load").unwrap().clone();
    assert_eq!(slow.entity_id, "/checkout");

    // /checkout loads fast again: copy a healthy page's load times over its recent week.
    env.execute(
        "CREATE TABLE saved AS SELECT * FROM daily_entity_metrics WHERE tenant = 'acme' AND entity_id = '/checkout' AND metric = 'load_time_ms_sum';
         UPDATE daily_entity_metrics SET value = value / 10 WHERE tenant = 'acme' AND entity_id = '/checkout' AND metric = 'load_time_ms_sum';",
    );
    env.clock.advance_micros(60_000_000);
    let second = runner.run(request()).await.unwrap();
    assert_eq!(second.opportunities.resolved, 1, "{:?}", second.findings.iter().map(|f| &f.detector).collect::<Vec<_>>());
    // Every open one listed, and the resolved one read again before its update.
    assert_eq!((first.cost.source_reads, second.cost.source_reads), (first.fired, first.fired + 1));
    let resolved = env.store.opportunity("acme", &slow.id).await.unwrap().unwrap();
    assert_eq!((resolved.status, resolved.resolved_at, resolved.batch_id.as_str()), (OpportunityStatus::Resolved, Some(env.clock.now_ts()), second.batch_id.as_str()));
    let third = runner.run(request()).await.unwrap();
    assert_eq!(third.opportunities.resolved, 0, "resolved once");

    // Slow again: the same opportunity opens again, first sighting kept.
    env.execute(
        "DELETE FROM daily_entity_metrics WHERE tenant = 'acme' AND entity_id = '/checkout' AND metric = 'load_time_ms_sum';
         INSERT INTO daily_entity_metrics SELECT * FROM saved;",
    );
    let fourth = runner.run(request()).await.unwrap();
    assert_eq!((fourth.opportunities.opened, fourth.opportunities.resolved), (0, 0));
    let reopened = env.store.opportunity("acme", &slow.id).await.unwrap().unwrap();
    assert_eq!((reopened.status, reopened.resolved_at, reopened.first_seen), (OpportunityStatus::Open, None, resolved.first_seen));
}

#[tokio::test]
async fn a_run_for_one_tenant_resolves_nothing_of_another() {
    let env = Embedded::planted().await;
    let runner = env.runner(Pack::shipped().unwrap(), RunnerOptions::default());
    let all = runner.run(request()).await.unwrap();
    let quiet = runner.run(DetectRequest { tenants: Some(vec!["quiet".into()]), ..request() }).await.unwrap();
    assert_eq!((quiet.outcome.as_str(), quiet.fired, quiet.opportunities.resolved), ("ok", 0, 0));
    assert_ne!(quiet.batch_id, all.batch_id);
    assert_eq!(env.store.open_opportunities(Some("acme")).await.unwrap().len() as u64, all.fired);
    let acme = runner.run(DetectRequest { tenants: Some(vec!["acme".into()]), ..request() }).await.unwrap();
    assert_eq!((acme.fired, acme.opportunities.updated, acme.opportunities.opened), (all.fired, all.fired, 0), "same ids per tenant");
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_runs() {
    let env = Embedded::planted().await;
    let runner = env.runner(Pack::shipped().unwrap(), RunnerOptions::default());
    let unknown = runner.run(DetectRequest { detectors: Some(vec!["nope".into()]), ..request() }).await.unwrap_err();
    assert_eq!(unknown.kind(), converge_core::ErrorKind::InvalidInput);
    assert!(unknown.to_string().contains("\"nope\""), "{unknown}");
    let tenant = runner.run(DetectRequest { tenants: Some(vec!["a/b".into()]), ..request() }).await.unwrap_err();
    assert_eq!(tenant.kind(), converge_core::ErrorKind::InvalidInput);
    assert!(env.warehouse.runs("detectors", 10).await.unwrap().is_empty());
}

/// The real warehouse, counting its queries in flight. Each query waits (bounded) until
/// as many are in flight as the limit allows or every query has started, so the
/// maximum seen is the runner's limit, not an accident of timing.
struct ConcurrencyProbe {
    inner: Arc<dyn FindingsWarehouse>,
    limit: usize,
    total: usize,
    started: AtomicUsize,
    in_flight: Arc<AtomicUsize>,
    max_seen: AtomicUsize,
}

struct InFlight(Arc<AtomicUsize>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl FindingsWarehouse for ConcurrencyProbe {
    fn dialect(&self) -> QueryDialect {
        self.inner.dialect()
    }

    async fn query_findings(&self, query: FindingsQuery) -> Result<BoxStream<'static, Result<FindingRow, StoreError>>, StoreError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = InFlight(self.in_flight.clone());
        self.max_seen.fetch_max(now, Ordering::SeqCst);
        let started = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.in_flight.load(Ordering::SeqCst) < self.limit && self.started.load(Ordering::SeqCst) < self.total && started <= self.total {
            if tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.max_seen.fetch_max(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        let rows = self.inner.query_findings(query).await?;
        Ok(rows.map(move |row| (&guard, row).1).boxed())
    }
}

#[tokio::test]
async fn no_more_queries_run_at_once_than_the_limit() {
    let env = Embedded::planted().await;
    for limit in [1, 3] {
        let probe = Arc::new(ConcurrencyProbe {
            inner: Arc::new(env.warehouse.clone()),
            limit,
            total: 34,
            started: AtomicUsize::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_seen: AtomicUsize::new(0),
        });
        let runner = DetectorRunner::new(
            Pack::shipped().unwrap(),
            probe.clone(),
            Arc::new(env.warehouse.clone()),
            Arc::new(env.store.clone()),
            env.clock.clone(),
            RunnerOptions { concurrency: limit, query_timeout: Duration::from_secs(60) },
        );
        let run = runner.run(request()).await.unwrap();
        assert_eq!(run.outcome, RunOutcome::Ok);
        assert_eq!(probe.started.load(Ordering::SeqCst), 34);
        assert_eq!(probe.max_seen.load(Ordering::SeqCst), limit, "queries in flight at most, and at least once exactly, the limit");
    }
}


/// The real warehouse, except that `page_slow_load`'s query fails with a passing
/// (retryable) error while another query is in flight: DuckDB's shared memory cap.
struct CrowdedWarehouse {
    inner: Arc<dyn FindingsWarehouse>,
    in_flight: Arc<AtomicUsize>,
    crowded_failures: AtomicUsize,
}

#[async_trait]
impl FindingsWarehouse for CrowdedWarehouse {
    fn dialect(&self) -> QueryDialect {
        self.inner.dialect()
    }

    async fn query_findings(&self, query: FindingsQuery) -> Result<BoxStream<'static, Result<FindingRow, StoreError>>, StoreError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = InFlight(self.in_flight.clone());
        if query.label == "page_slow_load" && now > 1 {
            self.crowded_failures.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::retryable("duckdb", "query `page_slow_load`: Out of Memory Error: could not allocate block"));
        }
        // Keep every other query in flight a moment, so page_slow_load meets company.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rows = self.inner.query_findings(query).await?;
        Ok(rows.map(move |row| (&guard, row).1).boxed())
    }
}

#[tokio::test]
async fn a_query_that_fails_beside_others_for_a_passing_reason_runs_again_alone() {
    let env = Embedded::planted().await;
    let crowded = Arc::new(CrowdedWarehouse { inner: Arc::new(env.warehouse.clone()), in_flight: Arc::new(AtomicUsize::new(0)), crowded_failures: AtomicUsize::new(0) });
    let runner = DetectorRunner::new(
        Pack::shipped().unwrap(),
        crowded.clone(),
        Arc::new(env.warehouse.clone()),
        Arc::new(env.store.clone()),
        env.clock.clone(),
        RunnerOptions { concurrency: 4, ..RunnerOptions::default() },
    );
    let run = runner.run(request()).await.unwrap();
    assert_eq!(crowded.crowded_failures.load(Ordering::SeqCst), 1, "it failed once, beside others");
    assert_eq!((run.outcome, run.failed, run.retried_alone.as_slice()), (RunOutcome::Ok, 0, &["page_slow_load".to_string()][..]));
    assert!(run.findings.iter().any(|f| f.detector == "page_slow_load" && f.entity_id == "/checkout"), "found on the second try");

    // One at a time there is nobody to wait for: a failure is a failure.
    let lone = DetectorRunner::new(
        Pack::shipped().unwrap(),
        Arc::new(CrowdedWarehouse { inner: Arc::new(env.warehouse.clone()), in_flight: Arc::new(AtomicUsize::new(1)), crowded_failures: AtomicUsize::new(0) }),
        Arc::new(env.warehouse.clone()),
        Arc::new(env.store.clone()),
        env.clock.clone(),
        RunnerOptions { concurrency: 1, ..RunnerOptions::default() },
    );
    let run = lone.run(request()).await.unwrap();
    assert_eq!((run.outcome, run.failed), (RunOutcome::Partial, 1));
    assert!(run.retried_alone.is_empty() && run.failures[0].retryable);
}

#[tokio::test]
async fn declared_known_events_are_read_from_the_source_and_left_out() {
    let env = Embedded::planted().await;
    let as_of = planted::as_of();
    // acme declares its last two days an outage; quiet declares a day with no date.
    let outage = converge_core::KnownEvent {
        tenant: "acme".into(),
        id: "outage".into(),
        from: as_of - chrono::Days::new(1),
        until: as_of,
        reason: "tracking outage".into(),
    };
    let mut broken = converge_core::Fields::new();
    broken.insert("reason".into(), converge_core::Value::String("holiday".into()));
    converge_core::SourceStore::apply(
        &env.store,
        vec![outage.to_write(), converge_core::DocWrite::Set { path: "orgs/quiet/known_events/x".into(), fields: broken }],
    )
    .await
    .unwrap();

    let plain = env.runner(Pack::shipped().unwrap(), RunnerOptions::default()).run(request()).await.unwrap();
    assert!(plain.findings.iter().any(|f| f.detector == "funnel_step_stalled"), "without known events the stall fires");
    assert_eq!(plain.known_event_days, 0);

    let runner = env.runner(Pack::shipped().unwrap(), RunnerOptions::default()).with_known_events(Arc::new(env.store.clone()));
    let run = runner.run(DetectRequest { tenants: Some(vec!["acme".into(), "quiet".into()]), ..request() }).await.unwrap();
    assert_eq!(run.known_event_days, 2);
    assert_eq!(run.known_event_problems.len(), 1, "{:?}", run.known_event_problems);
    assert!(run.known_event_problems[0].starts_with("orgs/quiet/known_events/x: `date`"), "{:?}", run.known_event_problems);
    assert!(
        !run.findings.iter().any(|f| f.detector == "funnel_step_stalled"),
        "its two-day window is the declared outage: nothing left to judge"
    );
    assert!(run.findings.iter().any(|f| f.detector == "page_conversion_rate_drop"), "the rest of the month still speaks");
    // Two tenants' known events read (the outage; the broken one), on top of the open
    // opportunities the pass lists.
    assert!(run.cost.source_reads >= 2, "{:?}", run.cost);
}
