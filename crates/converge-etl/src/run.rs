//! [`EtlRunner`]: one pass of the nightly ETL over tenants and dates, one slice at a
//! time, each with its run record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use converge_core::error_log::QUARANTINE_PAYLOAD_LIMIT;
use converge_core::{
    batch_id, load_known_events, path, Clock, ErrorKind, ErrorLog, KnownEvents, MetricsWarehouse, PriceTable, QuarantineReason, QuarantineRecord, RawSource, RunCost, RunOutcome,
    RunRecord, SliceLoad, SliceRow, SourceStore, StoreError, Timestamp, Warehouse, CODE_VERSION,
};
use converge_rebuild::Throttle;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::checks::{declared_day_check, duplicate_keys_check, empty_ids_check, rows_in_check, CheckPolicy, CheckResult};
use crate::collections::{RawCollection, DATE_FIELD, RAW_COLLECTIONS, TENANT_ROOT};
use crate::slice::SliceBuilder;
use crate::validate::validate;

/// Days before the run date loaded again by default: exports that land late (GA4
/// revises a day for up to 72 hours) are picked up by the next nights' runs.
pub const DEFAULT_LATE_DAYS: u32 = 3;
/// Most dates one request may cover (a year and a day): larger backfills are split.
pub const MAX_DATES: usize = 366;
/// Quarantined documents named in a slice's report.
const NAMED_DOCS: usize = 20;
/// How often a long slice logs its progress.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// What to load. Dates: `from..=run_date` when `from` is given (a backfill), else
/// `run_date - late_days ..= run_date`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtlRequest {
    pub run_date: NaiveDate,
    #[serde(default)]
    pub from: Option<NaiveDate>,
    /// Every tenant under `orgs/` when absent.
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    #[serde(default)]
    pub late_days: Option<u32>,
    /// Cap on raw records read per second over the whole run (a backfill next to live
    /// traffic); none by default.
    #[serde(default)]
    pub max_records_per_second: Option<u32>,
}

impl EtlRequest {
    pub fn for_date(run_date: NaiveDate) -> Self {
        Self { run_date, from: None, tenants: None, late_days: None, max_records_per_second: None }
    }

    /// The dates to load, oldest first (the trailing-median check of a day compares
    /// it with the days before, so those load first).
    pub fn dates(&self) -> Result<Vec<NaiveDate>, EtlError> {
        let first = match self.from {
            Some(from) if from > self.run_date => {
                return Err(EtlError::InvalidRequest(format!("from {from} is after {}: expected from <= the run date (to)", self.run_date)))
            }
            Some(from) => from,
            None => {
                let late = self.late_days.unwrap_or(DEFAULT_LATE_DAYS);
                self.run_date.checked_sub_days(Days::new(u64::from(late))).ok_or_else(|| EtlError::InvalidRequest(format!("late_days {late} reaches before the calendar")))?
            }
        };
        let count = (self.run_date - first).num_days() as usize + 1;
        if count > MAX_DATES {
            return Err(EtlError::InvalidRequest(format!("{count} dates ({first}..={}): expected at most {MAX_DATES}; split the backfill", self.run_date)));
        }
        Ok(first.iter_days().take(count).collect())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("tenant {tenant:?} is not a document id ({problem}): expected a Firestore document id such as `acme`")]
    InvalidTenant { tenant: String, problem: &'static str },
    #[error("ETL of tenant {tenant:?} on {date} failed, its old slice is unchanged; run it again (same batch): {source}")]
    Store { tenant: String, date: NaiveDate, source: StoreError },
    #[error("listing tenants under `{TENANT_ROOT}` failed: {0}")]
    Tenants(StoreError),
    #[error("reading the tenants' known events (`{TENANT_ROOT}/{{tenant}}/known_events`) failed, nothing was loaded; run it again: {0}")]
    KnownEvents(StoreError),
    #[error("ETL slice committed (batch {batch_id}): its rows are visible, but its run record could not be stored: {source}; running it again is safe")]
    NotRecorded { batch_id: String, source: StoreError },
}

impl EtlError {
    /// What a caller can do about it (the HTTP status follows from the kind alone, in
    /// `converge_function::answer`): a wrong request is `InvalidInput` (400); a store failure
    /// keeps its kind when transient (503, same batch ids) or refused for its input (400),
    /// and is `Permanent` (500) otherwise — a store's `NotFound` included, as before
    /// the errors shared one kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EtlError::InvalidRequest(_) | EtlError::InvalidTenant { .. } => ErrorKind::InvalidInput,
            EtlError::Store { source, .. } | EtlError::NotRecorded { source, .. }
            | EtlError::Tenants(source)
            | EtlError::KnownEvents(source) => match source.kind {
                ErrorKind::Retryable => ErrorKind::Retryable,
                ErrorKind::InvalidInput => ErrorKind::InvalidInput,
                _ => ErrorKind::Permanent,
            },
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// Live counters of a running ETL, for a progress bar or a log line.
#[derive(Debug, Default)]
pub struct EtlProgress {
    pub slices_total: AtomicU64,
    pub slices_done: AtomicU64,
    pub records: AtomicU64,
}

/// What one collection's read saw: the slice's source watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub collection: String,
    pub docs_read: u64,
    /// The latest `update_time` among the documents read (none read: absent).
    pub max_update_time: Option<String>,
    /// The snapshot the collection's day was read at.
    pub read_time: String,
}

/// One (tenant, date) slice's report; stored (as JSON) in its run record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SliceReport {
    pub batch_id: String,
    pub run_id: String,
    pub tenant: String,
    pub date: String,
    /// `ok`, `partial` (loaded; some records quarantined) or `failed` (not loaded:
    /// a quality check failed or a backend did; the old slice stays).
    pub outcome: RunOutcome,
    /// Valid raw records read (quarantined ones excluded).
    pub rows_in: u64,
    /// `daily_entity_metrics` rows of the slice.
    pub rows_out: u64,
    pub entities: u64,
    pub entity_map_rows: u64,
    pub quarantined: u64,
    pub quarantined_docs: Vec<String>,
    pub watermarks: Vec<Watermark>,
    pub checks: Vec<CheckResult>,
    pub millis: u64,
    /// What the slice cost: one read per raw document its date's queries returned (one
    /// per collection at least: an empty answer is billed one), and the warehouse
    /// bytes of the trailing loads' lookup and the slice's replacement.
    #[serde(default)]
    pub cost: RunCost,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One pass: every slice's run record, and totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtlRun {
    /// Always `etl`.
    pub kind: String,
    /// The slice's batch id (`batch_id("etl", tenant, date)`) when the pass is one
    /// slice, so a one-day run prints its run record's id at the top; else the run id.
    pub batch_id: String,
    /// Identifies this pass in logs: `batch_id("etl", tenants, "from..=to")`.
    pub run_id: String,
    pub from: String,
    pub to: String,
    pub tenants: Vec<String>,
    /// `ok`, `partial` (every slice loaded, some records quarantined) or `failed`
    /// (at least one slice failed a quality check and was not loaded).
    pub outcome: RunOutcome,
    pub slices: u64,
    pub failed_slices: u64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub quarantined: u64,
    pub millis: u64,
    pub max_records_per_second: Option<u32>,
    pub code_version: String,
    /// The slices' costs summed, plus listing the tenants when the request named none
    /// (one read per tenant id returned).
    #[serde(default)]
    pub cost: RunCost,
    /// One run record per slice, in the order loaded.
    pub runs: Vec<RunRecord>,
}

/// The stores an ETL runs on.
#[derive(Clone)]
pub struct EtlBackends {
    pub raw: Arc<dyn RawSource>,
    /// Lists tenants (`orgs/*`).
    pub source: Arc<dyn SourceStore>,
    /// Where quarantined records go.
    pub errors: Arc<dyn ErrorLog>,
    /// Run records.
    pub warehouse: Arc<dyn Warehouse>,
    pub metrics: Arc<dyn MetricsWarehouse>,
}

pub struct EtlRunner {
    backends: EtlBackends,
    clock: Arc<dyn Clock>,
    policy: CheckPolicy,
    prices: PriceTable,
}

impl EtlRunner {
    pub fn new(backends: EtlBackends, clock: Arc<dyn Clock>) -> Self {
        Self { backends, clock, policy: CheckPolicy::default(), prices: PriceTable::default() }
    }

    /// Prices slices' costs with `prices` instead of the list prices.
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    pub fn with_policy(mut self, policy: CheckPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Creates the metrics tables if missing (the runs table is the warehouse's).
    pub async fn ensure_tables(&self) -> Result<(), StoreError> {
        self.backends.metrics.ensure_metrics_tables().await
    }

    pub async fn run(&self, request: EtlRequest) -> Result<EtlRun, EtlError> {
        self.run_with_progress(request, Arc::new(EtlProgress::default())).await
    }

    /// Loads every (tenant, date) of `request`, dates oldest first. A slice that
    /// fails a quality check is recorded as failed and the run goes on; a backend
    /// failure stops the run (the slices before it are loaded and recorded; running
    /// the same request again redoes them to the same end state).
    pub async fn run_with_progress(&self, request: EtlRequest, progress: Arc<EtlProgress>) -> Result<EtlRun, EtlError> {
        // Every line of the run carries its id and kind (`converge_function::telemetry`).
        let span = tracing::info_span!("run", kind = "etl", run_id = tracing::field::Empty);
        async move {
        let dates = request.dates()?;
        let mut cost = RunCost::default();
        let tenants = match &request.tenants {
            Some(tenants) => {
                for tenant in tenants {
                    path::check_id(tenant).map_err(|problem| EtlError::InvalidTenant { tenant: tenant.clone(), problem })?;
                }
                tenants.clone()
            }
            None => {
                let tenants = self.backends.source.list_document_ids(TENANT_ROOT).await.map_err(EtlError::Tenants)?;
                cost.docs_read(tenants.len() as u64);
                tenants
            }
        };
        // Declared days (a holiday, an outage) are neither checked nor part of the
        // baseline: read once for the run, not per slice.
        let known = load_known_events(self.backends.source.as_ref(), Some(&tenants)).await.map_err(EtlError::KnownEvents)?;
        cost.docs_read(known.documents_billed);
        let (from, to) = (dates[0], dates[dates.len() - 1]);
        let run_id = batch_id("etl", &tenants.join(","), &format!("{from}..={to}"));
        tracing::Span::current().record("run_id", run_id.as_str());
        let started = Instant::now();
        progress.slices_total.store((dates.len() * tenants.len()) as u64, Ordering::Relaxed);
        tracing::info!(run_id, %from, %to, tenants = tenants.len(), max_records_per_second = request.max_records_per_second, "etl started");
        let mut throttle = Throttle::new(request.max_records_per_second);
        let mut run = EtlRun {
            kind: "etl".into(),
            batch_id: run_id.clone(),
            run_id: run_id.clone(),
            from: from.to_string(),
            to: to.to_string(),
            tenants: tenants.clone(),
            outcome: RunOutcome::Ok,
            slices: 0,
            failed_slices: 0,
            rows_in: 0,
            rows_out: 0,
            quarantined: 0,
            millis: 0,
            max_records_per_second: request.max_records_per_second,
            code_version: CODE_VERSION.into(),
            cost: RunCost::default(),
            runs: Vec::new(),
        };
        for date in &dates {
            for tenant in &tenants {
                let record = self.slice(&run_id, tenant, *date, &known, &mut throttle, &progress).await?;
                let report: SliceReport = serde_json::from_value(record.report.clone()).expect("the report was written from a SliceReport");
                run.slices += 1;
                run.rows_in += report.rows_in;
                run.rows_out += report.rows_out;
                run.quarantined += report.quarantined;
                cost.add(&report.cost);
                if report.outcome == RunOutcome::Failed {
                    run.failed_slices += 1;
                }
                run.outcome = run.outcome.combine(report.outcome);
                run.runs.push(record);
                progress.slices_done.fetch_add(1, Ordering::Relaxed);
            }
        }
        run.millis = started.elapsed().as_millis() as u64;
        // Priced once from the summed counts (the same as summing the slices' prices
        // and the listing's, without rounding twice).
        run.cost = cost.priced(&self.prices);
        if let [only] = run.runs.as_slice() {
            run.batch_id = only.batch_id.clone();
        }
        tracing::info!(run_id, outcome = %run.outcome, slices = run.slices, failed_slices = run.failed_slices, rows_in = run.rows_in,
            rows_out = run.rows_out, quarantined = run.quarantined, millis = run.millis, source_reads = run.cost.source_reads,
            warehouse_bytes = run.cost.warehouse_bytes, estimated_usd = run.cost.estimated_usd, "etl finished");
        Ok(run)
        }
        .instrument(span)
        .await
    }

    /// One (tenant, date): read, validate, roll up, check, replace, record.
    async fn slice(
        &self,
        run_id: &str,
        tenant: &str,
        date: NaiveDate,
        known: &KnownEvents,
        throttle: &mut Throttle,
        progress: &EtlProgress,
    ) -> Result<RunRecord, EtlError> {
        let started = Instant::now();
        let started_at = self.clock.now();
        let batch = batch_id("etl", tenant, &date.to_string());
        let mut report = SliceReport { batch_id: batch.clone(), run_id: run_id.into(), tenant: tenant.into(), date: date.to_string(), ..SliceReport::default() };
        let bytes_before = self.backends.warehouse.bytes_processed();
        let result = self.load(tenant, date, known, &mut report, throttle, progress).await;
        report.millis = started.elapsed().as_millis() as u64;
        // Failed slices too: what was read and queried was billed.
        report.cost.warehouse(bytes_before, self.backends.warehouse.bytes_processed());
        report.cost = report.cost.priced(&self.prices);
        let loaded = match result {
            Ok(loaded) => loaded,
            Err(source) => {
                report.outcome = RunOutcome::Failed;
                report.error = Some(source.to_string());
                let record = self.record(started_at, &report);
                // Best effort: the warehouse may be what failed.
                if let Err(record_error) = self.backends.warehouse.record_run(record).await {
                    tracing::warn!(batch_id = batch, %record_error, "the failed slice's run record could not be stored");
                }
                tracing::error!(run_id, batch_id = batch, tenant, %date, error = %source, retryable = source.is_retryable(), "etl slice failed; its old slice is unchanged");
                return Err(EtlError::Store { tenant: tenant.into(), date, source });
            }
        };
        let record = self.record(started_at, &report);
        let stored = self.backends.warehouse.record_run(record.clone()).await;
        match (loaded, stored) {
            (true, Err(source)) => return Err(EtlError::NotRecorded { batch_id: batch, source }),
            (false, Err(source)) => return Err(EtlError::Store { tenant: tenant.into(), date, source }),
            _ => {}
        }
        if report.outcome == RunOutcome::Failed {
            let failed: Vec<&str> = report.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
            tracing::error!(run_id, batch_id = batch, tenant, %date, checks = ?failed, rows_in = report.rows_in, "etl slice failed its quality checks; the old slice stays");
        } else {
            tracing::info!(run_id, batch_id = batch, tenant, %date, outcome = %report.outcome, rows_in = report.rows_in, rows_out = report.rows_out,
                quarantined = report.quarantined, millis = report.millis, "etl slice loaded");
        }
        Ok(record)
    }

    fn record(&self, started_at: Timestamp, report: &SliceReport) -> RunRecord {
        RunRecord::new(report.batch_id.clone(), "etl", report.tenant.clone(), started_at, self.clock.now(), report.outcome, report)
    }

    /// Fills `report`; returns whether the slice was replaced (false: a check failed).
    async fn load(
        &self,
        tenant: &str,
        date: NaiveDate,
        known: &KnownEvents,
        report: &mut SliceReport,
        throttle: &mut Throttle,
        progress: &EtlProgress,
    ) -> Result<bool, StoreError> {
        let mut slice = SliceBuilder::default();
        let mut last_log = Instant::now();
        for collection in RAW_COLLECTIONS {
            let scan = self.backends.raw.scan_by_date(&collection.path(tenant), DATE_FIELD, date, date).await?;
            let mut watermark = Watermark { collection: collection.name.into(), docs_read: 0, max_update_time: None, read_time: scan.read_time.to_rfc3339() };
            let mut max_update: Option<Timestamp> = None;
            let mut items = scan.items;
            let read: Result<(), StoreError> = async {
                while let Some(doc) = items.next().await {
                    let doc = doc?;
                    throttle.admit().await;
                    progress.records.fetch_add(1, Ordering::Relaxed);
                    watermark.docs_read += 1;
                    max_update = max_update.max(Some(doc.update_time));
                    match validate(collection, date, &doc.fields) {
                        Ok(record) => slice.add(collection, &doc.path, record),
                        Err(problems) => {
                            self.quarantine(collection, tenant, date, &report.batch_id, &doc, &problems).await?;
                            report.quarantined += 1;
                            if report.quarantined_docs.len() < NAMED_DOCS {
                                report.quarantined_docs.push(doc.path.clone());
                            }
                        }
                    }
                    if last_log.elapsed() >= PROGRESS_LOG_EVERY {
                        last_log = Instant::now();
                        tracing::info!(run_id = report.run_id, tenant, %date, collection = collection.name, records = progress.records.load(Ordering::Relaxed), "etl progress");
                    }
                }
                Ok(())
            }
            .await;
            // Counted however the read ended: a query cut short was billed what it returned.
            report.cost.docs_read(watermark.docs_read);
            read?;
            watermark.max_update_time = max_update.map(|t| t.to_rfc3339());
            report.watermarks.push(watermark);
        }
        report.rows_in = slice.rows_in;
        let earlier: Vec<u64> = self
            .backends
            .metrics
            .loads_before(tenant, date, self.policy.trailing_loads * 2)
            .await?
            .into_iter()
            .filter(|load| !known.contains(tenant, load.date))
            .map(|load| load.rows_in)
            .collect();
        let volume = match known.reason(tenant, date) {
            Some(reason) => declared_day_check(slice.rows_in, reason),
            None => rows_in_check(slice.rows_in, &earlier, &self.policy),
        };
        report.checks = vec![volume, duplicate_keys_check(&slice), empty_ids_check(&slice)];
        if report.checks.iter().any(|check| !check.passed) {
            report.outcome = RunOutcome::Failed;
            return Ok(false);
        }
        let (metrics, entities) = slice.into_rows(tenant, date);
        report.rows_out = metrics.len() as u64;
        report.entity_map_rows = entities.len() as u64;
        report.entities = {
            let mut ids: Vec<(&str, &str)> = metrics.iter().map(|m| (m.entity_type.as_str(), m.entity_id.as_str())).collect();
            ids.dedup();
            ids.len() as u64
        };
        let load = SliceLoad {
            tenant: tenant.into(),
            date,
            batch_id: report.batch_id.clone(),
            rows_in: report.rows_in,
            rows_out: report.rows_out,
            loaded_at: self.clock.now(),
        };
        let rows = metrics.into_iter().map(SliceRow::Metric).chain(entities.into_iter().map(SliceRow::Entity)).map(Ok);
        self.backends.metrics.replace_slice(load, futures::stream::iter(rows).boxed()).await?;
        report.outcome = if report.quarantined == 0 { RunOutcome::Ok } else { RunOutcome::Partial };
        Ok(true)
    }

    /// Quarantines one record that breaks its collection's contract. The record's id
    /// is a function of its path, so the same bad document found again (a re-run, the
    /// next night's late window) merges into the same record.
    async fn quarantine(
        &self,
        collection: &RawCollection,
        tenant: &str,
        date: NaiveDate,
        batch: &str,
        doc: &converge_core::Document,
        problems: &[String],
    ) -> Result<(), StoreError> {
        let payload = converge_core::value::fields_to_json_string(&doc.fields).into_bytes();
        let detail = format!("{} record {} breaks the raw schema contract: {}", collection.name, doc.path, problems.join("; "));
        tracing::warn!(tenant, %date, doc_path = doc.path, detail, "raw record quarantined");
        let headers = serde_json::json!({
            "doc_path": doc.path, "collection": collection.name, "tenant": tenant, "date": date.to_string(),
            "batch_id": batch, "update_time": doc.update_time.to_rfc3339(),
        });
        self.backends
            .errors
            .quarantine(QuarantineRecord {
                id: quarantine_id(&doc.path),
                reason: QuarantineReason::SchemaViolation,
                detail,
                event_id: None,
                event_type: Some(RAW_RECORD_TYPE.into()),
                content_type: Some("application/json".into()),
                headers_json: headers.to_string(),
                payload_bytes: payload.len() as u64,
                payload: payload[..payload.len().min(QUARANTINE_PAYLOAD_LIMIT)].to_vec(),
                received_at: self.clock.now(),
                attempts: 1,
                replays: 0,
                last_replay: None,
            })
            .await
    }
}

/// The `event_type` of a quarantined raw record (not an event: a document the ETL read;
/// core's, where replay refuses it).
pub const RAW_RECORD_TYPE: &str = converge_core::error_log::RAW_RECORD_TYPE;

/// The quarantine id of a raw document: `etl_` and a hash of its path.
pub fn quarantine_id(doc_path: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("etl_{}", hex::encode(&Sha256::digest(doc_path.as_bytes())[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 3, d).unwrap()
    }

    #[test]
    fn dates_cover_the_late_window_or_the_backfill_oldest_first() {
        let mut request = EtlRequest::for_date(day(10));
        assert_eq!(request.dates().unwrap(), vec![day(7), day(8), day(9), day(10)]);
        request.late_days = Some(0);
        assert_eq!(request.dates().unwrap(), vec![day(10)]);
        request.from = Some(day(1));
        assert_eq!(request.dates().unwrap().len(), 10, "from overrides the late window");
        request.from = Some(day(11));
        assert!(matches!(request.dates(), Err(EtlError::InvalidRequest(_))));
        request.from = NaiveDate::from_ymd_opt(2020, 1, 1);
        assert!(request.dates().unwrap_err().to_string().contains("split the backfill"));
    }

    #[test]
    fn batch_and_quarantine_ids_are_deterministic() {
        assert_eq!(batch_id("etl", "acme", "2025-03-10"), batch_id("etl", "acme", "2025-03-10"));
        assert_ne!(batch_id("etl", "acme", "2025-03-10"), batch_id("etl", "acme", "2025-03-11"));
        assert_eq!(quarantine_id("orgs/a/ga4_pages/x"), quarantine_id("orgs/a/ga4_pages/x"));
        assert!(!quarantine_id("orgs/a/ga4_pages/x").contains('/'), "a Firestore document id");
    }

    #[test]
    fn error_kinds() {
        let store = |kind| EtlError::Store { tenant: "a".into(), date: day(1), source: StoreError::new(kind, "t", "m") };
        assert_eq!(store(ErrorKind::Retryable).kind(), ErrorKind::Retryable);
        assert_eq!(store(ErrorKind::Permanent).kind(), ErrorKind::Permanent);
        assert_eq!(EtlError::InvalidRequest("x".into()).kind(), ErrorKind::InvalidInput);
    }
}
