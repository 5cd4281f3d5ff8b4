//! [`DetectorRunner`]: one pass of the pack.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use converge_core::{
    batch_id, load_known_events, opportunity_id, opportunity_period, path, Clock, Evidence, FindingRow, FindingsWarehouse, KnownEvents,
    Opportunity, OpportunityStatus, OpportunityStore, PriceTable, RunOutcome, RunRecord, SourceStore, StoreError, UpsertOutcome,
    Warehouse, CODE_VERSION,
};
use converge_detect::{compile, render_message, test_description, DetectorSpec, Pack};
use futures::stream::{self, StreamExt};
use tracing::Instrument;

use crate::error::DetectError;
use crate::report::{DetectRun, DetectorFailure, DetectorStats};
use crate::request::{DetectRequest, RunnerOptions};
use crate::RUN_KIND;

/// Runs passes of one pack against one warehouse, writing one opportunity store.
pub struct DetectorRunner {
    pack: Pack,
    findings: Arc<dyn FindingsWarehouse>,
    runs: Arc<dyn Warehouse>,
    opportunities: Arc<dyn OpportunityStore>,
    clock: Arc<dyn Clock>,
    options: RunnerOptions,
    prices: PriceTable,
    /// Where tenants declare known events (`orgs/{tenant}/known_events`); `None` reads none.
    known_events: Option<Arc<dyn SourceStore>>,
}

/// One query of a pass: a detector, for all tenants (`None`) or one. Owns its spec (a
/// small clone) so the queries' futures borrow nothing but the runner and stay `Send`
/// under axum.
struct Unit {
    spec: DetectorSpec,
    tenant: Option<String>,
}

/// What one unit produced.
struct UnitResult {
    spec: DetectorSpec,
    tenant: Option<String>,
    millis: u64,
    rows: Result<Vec<FindingRow>, StoreError>,
}

impl DetectorRunner {
    /// `findings` and `runs` are usually the same warehouse behind two traits.
    pub fn new(
        pack: Pack,
        findings: Arc<dyn FindingsWarehouse>,
        runs: Arc<dyn Warehouse>,
        opportunities: Arc<dyn OpportunityStore>,
        clock: Arc<dyn Clock>,
        options: RunnerOptions,
    ) -> Self {
        let options = RunnerOptions { concurrency: options.concurrency.max(1), ..options };
        Self { pack, findings, runs, opportunities, clock, options, prices: PriceTable::default(), known_events: None }
    }

    /// Reads the tenants' known events from `source` at the start of each pass, and
    /// leaves their days out of every tested detector's windows.
    pub fn with_known_events(mut self, source: Arc<dyn SourceStore>) -> Self {
        self.known_events = Some(source);
        self
    }

    /// Prices passes' costs with `prices` instead of the list prices.
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    pub fn pack(&self) -> &Pack {
        &self.pack
    }

    pub fn options(&self) -> RunnerOptions {
        self.options
    }

    fn selected(&self, request: &DetectRequest) -> Result<(Vec<&DetectorSpec>, Vec<Option<String>>), DetectError> {
        let specs: Vec<&DetectorSpec> = match &request.detectors {
            None => self.pack.detectors().iter().collect(),
            Some(ids) if ids.is_empty() => return Err(DetectError::EmptySelection { what: "detectors" }),
            // Pack order, whatever the request's order: reports compare run to run.
            Some(ids) => {
                for id in ids {
                    if self.pack.get(id).is_none() {
                        return Err(DetectError::UnknownDetector { id: id.clone(), known: self.pack.len() });
                    }
                }
                self.pack.detectors().iter().filter(|spec| ids.contains(&spec.id)).collect()
            }
        };
        let tenants: Vec<Option<String>> = match &request.tenants {
            None => vec![None],
            Some(tenants) if tenants.is_empty() => return Err(DetectError::EmptySelection { what: "tenants" }),
            Some(tenants) => {
                let mut sorted = tenants.clone();
                sorted.sort();
                sorted.dedup();
                for tenant in &sorted {
                    path::check_id(tenant).map_err(|problem| DetectError::InvalidTenant { tenant: tenant.clone(), problem })?;
                }
                sorted.into_iter().map(Some).collect()
            }
        };
        Ok((specs, tenants))
    }

    /// One pass: every selected detector for the selected tenants, findings upserted,
    /// stale opportunities resolved, the run recorded. A failing detector makes the
    /// outcome `partial` (`failed` if all fail) and is named in the report; only the
    /// opportunity store or the run record failing makes this an error.
    pub async fn run(&self, request: DetectRequest) -> Result<DetectRun, DetectError> {
        // Every line of the run carries its id and kind (`converge_function::telemetry`).
        let span = tracing::info_span!("run", kind = "detectors", run_id = tracing::field::Empty);
        async move {
        let (specs, tenants) = self.selected(&request)?;
        let started = Instant::now();
        let started_at = self.clock.now();
        let scope = request.scope();
        let as_of = request.as_of.to_string();
        let mut run = DetectRun {
            batch_id: batch_id(RUN_KIND, &scope, &as_of),
            as_of: as_of.clone(),
            scope: scope.clone(),
            code_version: CODE_VERSION.into(),
            ..DetectRun::default()
        };
        tracing::Span::current().record("run_id", run.batch_id.as_str());
        tracing::info!(batch_id = run.batch_id, scope, as_of, detectors = specs.len(), concurrency = self.options.concurrency, "detector pass started");
        // The findings' queries run on `findings`, usually the same warehouse as `runs`
        // (whose counters these are); see `converge_core::cost`.
        let bytes_before = self.runs.bytes_processed();
        let known = match &self.known_events {
            Some(source) => {
                let tenants: Option<Vec<String>> = tenants.iter().cloned().collect();
                let known = load_known_events(source.as_ref(), tenants.as_deref()).await.map_err(DetectError::Store)?;
                run.cost.docs_read(known.documents_billed);
                run.known_event_days = known.by_tenant().map(|(_, days)| days.len() as u64).sum();
                for problem in &known.problems {
                    tracing::warn!(batch_id = run.batch_id, problem, "known event left out: fix the document");
                }
                run.known_event_problems = known.problems.clone();
                known
            }
            None => KnownEvents::default(),
        };
        let known = &known;

        let units: Vec<Unit> = specs
            .iter()
            .flat_map(|spec| tenants.iter().map(move |tenant| Unit { spec: (*spec).clone(), tenant: tenant.clone() }))
            .collect();
        let mut results = stream::iter(units).map(|unit| self.execute(unit, request.as_of, known)).buffer_unordered(self.options.concurrency);

        let mut stats: BTreeMap<&str, DetectorStats> = specs
            .iter()
            .map(|spec| (spec.id.as_str(), DetectorStats { id: spec.id.clone(), findings: 0, millis: 0, ok: true }))
            .collect();
        // (detector, tenant scope of its query) that succeeded, and ids found.
        let mut succeeded: HashSet<(String, Option<String>)> = HashSet::new();
        let mut found: HashSet<(String, String)> = HashSet::new();
        let mut outcome: Result<(), StoreError> = Ok(());
        // A query that failed for a passing reason beside the others (out of memory under
        // the embedded warehouse's shared cap, a timeout) runs once more, alone, after them.
        let mut again: Vec<Unit> = Vec::new();
        let mut alone = false;
        loop {
            let result = if alone {
                match again.pop() {
                    Some(unit) => self.execute(unit, request.as_of, known).await,
                    None => break,
                }
            } else {
                match results.next().await {
                    Some(result) => result,
                    None => {
                        alone = true;
                        continue;
                    }
                }
            };
            let entry = stats.get_mut(result.spec.id.as_str()).expect("every unit's detector has stats");
            entry.millis += result.millis;
            let rows = match result.rows {
                Ok(rows) => rows,
                Err(error) if !alone && error.is_retryable() && self.options.concurrency > 1 => {
                    tracing::info!(batch_id = run.batch_id, detector = result.spec.id, tenant = result.tenant, %error, "detector failed beside others; it runs again alone after them");
                    run.retried_alone.push(result.spec.id.clone());
                    again.push(Unit { spec: result.spec, tenant: result.tenant });
                    continue;
                }
                Err(error) => {
                    tracing::warn!(batch_id = run.batch_id, detector = result.spec.id, tenant = result.tenant, %error, "detector failed");
                    entry.ok = false;
                    run.failures.push(DetectorFailure {
                        detector: result.spec.id.clone(),
                        tenant: result.tenant.clone(),
                        error: error.to_string(),
                        retryable: error.is_retryable(),
                    });
                    continue;
                }
            };
            entry.findings += rows.len() as u64;
            run.fired += rows.len() as u64;
            succeeded.insert((result.spec.id.clone(), result.tenant.clone()));
            if outcome.is_err() {
                continue;
            }
            for row in rows {
                let opportunity = self.opportunity(&result.spec, &row, request.as_of, started_at, &run.batch_id);
                found.insert((opportunity.tenant.clone(), opportunity.id.clone()));
                run.findings.push(opportunity.clone());
                match self.opportunities.upsert_opportunity(opportunity).await {
                    Ok(UpsertOutcome::Opened) => run.opportunities.opened += 1,
                    Ok(UpsertOutcome::Updated) => run.opportunities.updated += 1,
                    Err(error) => {
                        // Keep draining the queries (they are in flight) but write nothing more.
                        outcome = Err(error);
                        break;
                    }
                }
            }
        }
        drop(results);
        if outcome.is_ok() {
            outcome = self.resolve_stale(&tenants, &succeeded, &found, &as_of, &mut run).await;
        }

        run.detectors = stats.into_values().collect();
        let order: BTreeMap<&str, usize> = specs.iter().enumerate().map(|(i, spec)| (spec.id.as_str(), i)).collect();
        run.detectors.sort_by_key(|d| order[d.id.as_str()]);
        run.retried_alone.sort_by_key(|id| order[id.as_str()]);
        run.retried_alone.dedup();
        run.failures.sort_by(|a, b| order[a.detector.as_str()].cmp(&order[b.detector.as_str()]).then_with(|| a.tenant.cmp(&b.tenant)));
        run.findings.sort_by(|a, b| {
            (order[a.detector.as_str()], &a.tenant, &a.entity_id).cmp(&(order[b.detector.as_str()], &b.tenant, &b.entity_id))
        });
        run.run = specs.len() as u64;
        run.failed = run.detectors.iter().filter(|d| !d.ok).count() as u64;
        run.millis = started.elapsed().as_millis() as u64;
        run.outcome = match (&outcome, run.failed) {
            (Err(_), _) => RunOutcome::Failed,
            (Ok(()), 0) => RunOutcome::Ok,
            (Ok(()), failed) if failed == run.run => RunOutcome::Failed,
            (Ok(()), _) => RunOutcome::Partial,
        };
        run.cost.warehouse(bytes_before, self.runs.bytes_processed());
        run.cost = run.cost.priced(&self.prices);

        let record = RunRecord::new(run.batch_id.clone(), RUN_KIND, scope, started_at, self.clock.now(), run.outcome, &run);
        if let Err(error) = outcome {
            if let Err(record_error) = self.runs.record_run(record).await {
                tracing::warn!(batch_id = run.batch_id, %record_error, "the failed pass's run record could not be stored");
            }
            tracing::error!(batch_id = run.batch_id, %error, retryable = error.is_retryable(), "detector pass failed");
            return Err(DetectError::Store(error));
        }
        self.runs.record_run(record).await.map_err(|source| DetectError::NotRecorded { batch_id: run.batch_id.clone(), source })?;
        tracing::info!(batch_id = run.batch_id, outcome = %run.outcome, run = run.run, fired = run.fired, failed = run.failed,
            opened = run.opportunities.opened, updated = run.opportunities.updated, resolved = run.opportunities.resolved,
            millis = run.millis, warehouse_bytes = run.cost.warehouse_bytes, source_reads = run.cost.source_reads,
            estimated_usd = run.cost.estimated_usd, "detector pass finished");
        Ok(run)
        }
        .instrument(span)
        .await
    }

    /// Compiles and runs one unit; any failure is the unit's, never the pass's.
    async fn execute(&self, unit: Unit, as_of: NaiveDate, known: &KnownEvents) -> UnitResult {
        let started = Instant::now();
        let rows = self.query(&unit.spec, unit.tenant.as_deref(), as_of, known).await;
        UnitResult { spec: unit.spec, tenant: unit.tenant, millis: started.elapsed().as_millis() as u64, rows }
    }

    /// The compiler writes the warehouse's own query type, and the warehouse's rows are
    /// what the message template reads: nothing to translate either way.
    async fn query(&self, spec: &DetectorSpec, tenant: Option<&str>, as_of: NaiveDate, known: &KnownEvents) -> Result<Vec<FindingRow>, StoreError> {
        let compiled = compile(spec, self.findings.dialect(), as_of, tenant, known).map_err(|e| StoreError::permanent("detector", e.to_string()))?;
        let mut stream = self.findings.query_findings(compiled.into_query(self.options.query_timeout)).await?;
        let mut rows = Vec::new();
        while let Some(row) = stream.next().await {
            rows.push(row?);
        }
        Ok(rows)
    }

    fn opportunity(
        &self,
        spec: &DetectorSpec,
        row: &FindingRow,
        as_of: NaiveDate,
        seen: converge_core::Timestamp,
        batch_id: &str,
    ) -> Opportunity {
        let period = opportunity_period(as_of, spec.windows.map_or(1, |w| w.recent_days));
        Opportunity {
            id: opportunity_id(&spec.id, &row.tenant, &row.entity_type, &row.entity_id, &period),
            tenant: row.tenant.clone(),
            detector: spec.id.clone(),
            title: spec.title.clone(),
            severity: spec.severity.as_str().into(),
            entity_type: row.entity_type.clone(),
            entity_id: row.entity_id.clone(),
            message: render_message(spec, row),
            recent_value: row.recent_value,
            baseline_value: row.baseline_value,
            reference_value: row.reference_value,
            volume: row.volume,
            period,
            as_of: as_of.to_string(),
            first_seen: seen,
            last_seen: seen,
            status: OpportunityStatus::Open,
            resolved_at: None,
            batch_id: batch_id.into(),
            evidence: Evidence {
                test: test_description(spec),
                effect_pct: row.change_pct(),
                baseline_volume: row.baseline_volume,
                statistic: row.statistic,
                p_value: row.p_value,
                q_value: row.q_value,
            },
        }
    }

    /// Resolves each open opportunity, within the pass's tenants, of a detector that
    /// succeeded for its tenant this pass and did not find it again — unless it was
    /// last found for a later run date.
    async fn resolve_stale(
        &self,
        tenants: &[Option<String>],
        succeeded: &HashSet<(String, Option<String>)>,
        found: &HashSet<(String, String)>,
        as_of: &str,
        run: &mut DetectRun,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        for tenant in tenants {
            let open = self.opportunities.open_opportunities(tenant.as_deref()).await?;
            run.cost.docs_read(open.len() as u64);
            for open in open {
                let ran = succeeded.contains(&(open.detector.clone(), tenant.clone()));
                let stale = ran && !found.contains(&(open.tenant.clone(), open.id.clone())) && open.as_of.as_str() <= as_of;
                if !stale {
                    continue;
                }
                // A resolve reads the document, then updates it only if still open.
                run.cost.docs_read(1);
                if self.opportunities.resolve_opportunity(&open.tenant, &open.id, now, &run.batch_id).await? {
                    run.opportunities.resolved += 1;
                }
            }
        }
        Ok(())
    }
}
