//! [`Reconciler`]: one run over one tenant or all, with its [`ReconcileRun`] report.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_core::incremental::CHANGE_FIELD_OVERLAP;
use converge_core::{
    batch_id, drift::OrphanGuard, error_log::FailedWrite, ChangeRow, Clock, ErrorKind, ErrorLog, MirrorConfig, Op, PriceTable, ReconcileMode, RefreshFrom, Route,
    RowContext, RunCost, RunOutcome, RunRecord, SourceStore, StoreError, SyncErrorRecord, Timestamp, VerifiedPoint, Warehouse, CODE_VERSION,
};
use futures::StreamExt;
use serde::Serialize;
use tracing::Instrument;

use converge_core::drift::{diff, Difference, DifferenceKind};

/// Rows per repair append.
pub(crate) const REPAIR_CHUNK: usize = 1_000;
/// Attempts per repair append before the failure is recorded, and the first backoff.
const REPAIR_ATTEMPTS: u32 = 3;
const REPAIR_BACKOFF: Duration = Duration::from_millis(100);
/// Documents named per kind in logs and reports.
const NAMED_DOCS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("tenant {tenant:?} is not a document id ({problem}): expected a Firestore document id such as `acme`")]
    InvalidTenant { tenant: String, problem: &'static str },
}

impl ReconcileError {
    /// What a caller can do about it (the HTTP status follows from the kind alone, in
    /// `converge_function::answer`): a transient store failure is `Retryable` (the scheduler
    /// or Pub/Sub tries again, same key, same batch); anything else would fail again.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReconcileError::Store(e) if e.kind == ErrorKind::Retryable => ErrorKind::Retryable,
            ReconcileError::InvalidTenant { .. } => ErrorKind::InvalidInput,
            ReconcileError::Store(_) => ErrorKind::Permanent,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// What to reconcile and how.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// One tenant, or every tenant found in the source or the warehouse.
    pub tenant: Option<String>,
    /// Report without writing anything (no repairs, no resolutions, no run record).
    pub dry_run: bool,
    /// What makes this run this run, for its batch id: a scheduler's schedule time.
    /// Without one, the run's start time.
    pub key: Option<String>,
    /// The mass-tombstoning guard; `None`: [`OrphanGuard::default`].
    pub orphan_guard: Option<OrphanGuard>,
    /// Every document ([`ReconcileMode::Full`], the default) or what may have changed
    /// since each tenant's verified point ([`ReconcileMode::Incremental`]).
    pub mode: ReconcileMode,
}

/// A tenant whose orphans the guard refused to tombstone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefusedTenant {
    pub tenant: String,
    pub table: String,
    pub orphans: u64,
    pub derived_docs: u64,
    pub max_share: f64,
    pub how_to_override: String,
}

/// One tenant's findings under one route.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantReconcile {
    pub tenant: String,
    pub table: String,
    /// How this tenant was reconciled: an incremental run falls back to a full one for
    /// a tenant without a verified point or a route without a change field.
    pub mode: ReconcileMode,
    /// Why an incremental run read this tenant in full, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_because: Option<String>,
    pub missing: u64,
    pub different: u64,
    pub orphan: u64,
    pub known: u64,
    pub silent: u64,
    pub repaired: u64,
    pub source_docs_read: u64,
    pub derived_rows_read: u64,
    /// Incremental: documents the change-field query returned, ranges counted, leaves read.
    pub changed_docs: u64,
    pub ranges_counted: u64,
    pub leaves_read: u64,
    /// The source read time this tenant was verified at (its new verified point when
    /// the run repaired everything it found).
    pub read_time: Option<Timestamp>,
    /// Source reads as billed (the warehouse's bytes are the run's, not per tenant).
    pub cost: RunCost,
    /// Documents whose drift no error record explains (the first few).
    pub silent_docs: Vec<String>,
}

/// The report of one run; also stored (as its JSON) in the runs table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileRun {
    pub batch_id: String,
    pub scope: String,
    pub mode: ReconcileMode,
    pub dry_run: bool,
    pub outcome: RunOutcome,
    pub missing: u64,
    pub different: u64,
    pub orphan: u64,
    pub known: u64,
    pub silent: u64,
    pub repaired: u64,
    /// Repairs that failed every attempt; each left an open `sync_errors` record.
    pub repair_failures: u64,
    /// Open error records closed: their document was repaired, or had converged.
    pub errors_resolved: u64,
    pub source_docs_read: u64,
    pub derived_rows_read: u64,
    /// Derived states written after the snapshot, left to the next run.
    pub in_flight: u64,
    pub tenants: Vec<TenantReconcile>,
    /// Tenants whose orphans were not tombstoned: too many at once (see [`OrphanGuard`]).
    pub refused: Vec<RefusedTenant>,
    /// Billed source reads, warehouse bytes and their price (`converge_core::cost`).
    pub cost: RunCost,
    pub millis: u64,
}

impl ReconcileRun {
    pub fn findings(&self) -> u64 {
        self.missing + self.different + self.orphan
    }
}

pub struct Reconciler {
    pub(crate) source: Arc<dyn SourceStore>,
    pub(crate) errors: Arc<dyn ErrorLog>,
    pub(crate) warehouse: Arc<dyn Warehouse>,
    pub(crate) config: MirrorConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) prices: PriceTable,
}

impl Reconciler {
    pub fn new(
        source: Arc<dyn SourceStore>,
        errors: Arc<dyn ErrorLog>,
        warehouse: Arc<dyn Warehouse>,
        config: MirrorConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { source, errors, warehouse, config, clock, prices: PriceTable::default() }
    }

    /// Prices runs' costs with `prices` instead of the default list prices.
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// The price table its runs' costs are estimated with (the reconciler function's
    /// other modes price with it too).
    pub fn prices(&self) -> PriceTable {
        self.prices
    }

    /// The warehouse it repairs (the reconciler function's other modes run on it too).
    pub fn warehouse(&self) -> Arc<dyn Warehouse> {
        self.warehouse.clone()
    }

    pub fn config(&self) -> &MirrorConfig {
        &self.config
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// One run over `tenant` (or every tenant when `None`).
    pub async fn run(&self, tenant: Option<&str>, dry_run: bool) -> Result<ReconcileRun, ReconcileError> {
        self.run_with(RunOptions { tenant: tenant.map(str::to_owned), dry_run, ..RunOptions::default() }).await
    }

    pub async fn run_with(&self, options: RunOptions) -> Result<ReconcileRun, ReconcileError> {
        // Every line of the run carries its id and kind (`converge_function::telemetry`).
        let span = tracing::info_span!("run", kind = "reconcile", run_id = tracing::field::Empty);
        async move {
        let started = Instant::now();
        let started_at = self.clock.now();
        let scope = options.tenant.clone().unwrap_or_else(|| "*".into());
        let key = options.key.clone().unwrap_or_else(|| started_at.to_rfc3339());
        let bytes_before = self.warehouse.bytes_processed();
        // A full run keeps the batch id it always had; an incremental one is its own work.
        let kind = match options.mode {
            ReconcileMode::Full => "reconcile".to_owned(),
            ReconcileMode::Incremental => "reconcile-incremental".to_owned(),
        };
        let mut run = ReconcileRun {
            batch_id: batch_id(&kind, &scope, &key),
            scope: scope.clone(),
            mode: options.mode,
            dry_run: options.dry_run,
            ..ReconcileRun::default()
        };
        tracing::Span::current().record("run_id", run.batch_id.as_str());
        // Open error records, by document: what makes a difference "known".
        let open = self.errors.open_sync_errors(options.tenant.as_deref()).await?;
        let mut open_by_path: HashMap<String, Vec<SyncErrorRecord>> = HashMap::new();
        for record in open {
            open_by_path.entry(record.doc_path.clone()).or_default().push(record);
        }
        let batch = run.batch_id.clone();
        let mut points = Vec::new();
        for route in &self.config.routes {
            let tenants = match &options.tenant {
                Some(tenant) => vec![tenant.clone()],
                None => self.tenants(route).await?,
            };
            let verified: HashMap<String, Timestamp> = match options.mode {
                ReconcileMode::Full => {
                    // The warehouse reads the current tables plus the changelog since their
                    // watermark where it can (DuckDB: a sort that stays within its memory
                    // cap, where the latest view's aggregate does not): the less has come
                    // since, the less it sorts. From the watermark only — a first, full
                    // refresh is the schedule's — and the answer is exact either way, so a
                    // failure here is only a slower read.
                    let timer = Instant::now();
                    match self
                        .warehouse
                        .refresh_current(&route.table, RefreshFrom::Started)
                        .await
                    {
                        Ok(refresh) => tracing::info!(
                            table = route.table,
                            rows_read = refresh.rows_read,
                            millis = timer.elapsed().as_millis() as u64,
                            "full: current table refreshed"
                        ),
                        Err(error) => {
                            tracing::warn!(table = route.table, %error, "full: the current table was not refreshed; the warehouse reads more")
                        }
                    }
                    HashMap::new()
                }
                ReconcileMode::Incremental => {
                    // The counts are compared with the current table: bring it up to date
                    // first (from its watermark; maintenance, so a dry run does it too).
                    let timer = Instant::now();
                    let refresh = self.warehouse.refresh_current(&route.table, RefreshFrom::Watermark).await?;
                    tracing::info!(table = route.table, full = refresh.full, rows_read = refresh.rows_read, millis = timer.elapsed().as_millis() as u64, "incremental: current table refreshed");
                    self.warehouse.verified_points(&route.table).await?.into_iter().map(|p| (p.tenant, p.read_time)).collect()
                }
            };
            for tenant in tenants {
                let failures_before = run.repair_failures;
                let refused_before = run.refused.len();
                let found = self.reconcile_tenant(route, &tenant, &batch, &options, &open_by_path, verified.get(&tenant).copied(), started_at, &mut run).await?;
                // Verified: everything found was repaired (a dry run verifies nothing).
                if !options.dry_run && run.repair_failures == failures_before && run.refused.len() == refused_before {
                    if let Some(read_time) = found.read_time {
                        points.push(VerifiedPoint { table: route.table.clone(), tenant: tenant.clone(), read_time, batch_id: batch.clone(), mode: found.mode });
                    }
                }
                run.cost.add(&found.cost);
                run.tenants.push(found);
            }
        }
        if !points.is_empty() {
            self.warehouse.record_verified_points(points).await?;
        }
        run.outcome = match (options.dry_run, run.refused.is_empty(), run.repair_failures) {
            (true, _, _) => RunOutcome::DryRun,
            (false, false, _) => RunOutcome::Refused,
            (false, true, 0) => RunOutcome::Ok,
            (false, true, _) => RunOutcome::Partial,
        };
        if !options.dry_run && run.repaired > 0 {
            let repaired: BTreeSet<&str> = run.tenants.iter().filter(|t| t.repaired > 0).map(|t| t.table.as_str()).collect();
            if let Err(error) = converge_core::retention::refresh_after_run(&*self.warehouse, repaired).await {
                tracing::warn!(%error, "the current tables were not refreshed after the repairs; the next scheduled refresh takes them");
            }
        }
        run.cost.warehouse(bytes_before, self.warehouse.bytes_processed());
        run.cost = run.cost.priced(&self.prices);
        run.millis = started.elapsed().as_millis() as u64;
        if !options.dry_run {
            let record = RunRecord::new(run.batch_id.clone(), "reconcile", scope, started_at, self.clock.now(), run.outcome, &run);
            self.warehouse.record_run(record).await?;
        }
        tracing::info!(
            batch_id = run.batch_id, scope = run.scope, mode = %run.mode, dry_run = run.dry_run, source_reads = run.cost.source_reads, missing = run.missing, different = run.different,
            orphan = run.orphan, known = run.known, silent = run.silent, repaired = run.repaired, millis = run.millis,
            "reconcile run finished"
        );
        Ok(run)
        }
        .instrument(span)
        .await
    }

    /// Tenants of `route` in the source (`SourceStore::list_tenants`: at any depth, and
    /// on Firestore also tenants whose own document was never written) or in the
    /// warehouse (a tenant deleted from the source entirely still has rows to tombstone).
    async fn tenants(&self, route: &Route) -> Result<Vec<String>, ReconcileError> {
        let mut tenants: BTreeSet<String> = self.source.list_tenants(&route.pattern).await?.into_iter().collect();
        tenants.extend(self.warehouse.tenants(&route.table).await?);
        Ok(tenants.into_iter().collect())
    }

    #[allow(clippy::too_many_arguments)]
    async fn reconcile_tenant(
        &self,
        route: &Route,
        tenant: &str,
        batch_id: &str,
        options: &RunOptions,
        open_by_path: &HashMap<String, Vec<SyncErrorRecord>>,
        verified_at: Option<Timestamp>,
        started_at: Timestamp,
        run: &mut ReconcileRun,
    ) -> Result<TenantReconcile, ReconcileError> {
        let scope = route
            .pattern
            .tenant_scope(tenant)
            .map_err(|problem| ReconcileError::InvalidTenant { tenant: tenant.into(), problem })?;
        let mut report = TenantReconcile { tenant: tenant.into(), table: route.table.clone(), mode: ReconcileMode::Full, ..TenantReconcile::default() };
        let full_because = match (options.mode, &route.change_field, verified_at) {
            (ReconcileMode::Full, _, _) => None,
            (ReconcileMode::Incremental, None, _) => Some(format!("table `{}` has no change_field: only a full read can compare it", route.table)),
            (ReconcileMode::Incremental, Some(_), None) => Some("no verified point yet: this full run records the first".to_owned()),
            (ReconcileMode::Incremental, Some(_), Some(_)) => None,
        };
        // Every difference with the read time that proved it, and what the guard needs.
        let (found, derived_docs, in_flight): (Vec<(Timestamp, Difference)>, u64, u64) =
            match (options.mode, &route.change_field, verified_at) {
                (ReconcileMode::Incremental, Some(field), Some(verified_at)) => {
                    report.mode = ReconcileMode::Incremental;
                    let since = Timestamp::from_micros(verified_at.as_micros() - CHANGE_FIELD_OVERLAP.as_micros() as i64);
                    let open = crate::incremental::open_paths_in(
                        open_by_path.keys().filter(|path| self.config.routes_to(path, &route.table)),
                        &scope,
                    );
                    let pass = self.find_incremental(route, tenant, &scope, field, since, open).await?;
                    report.source_docs_read = pass.source_docs;
                    report.derived_rows_read = pass.derived_rows;
                    report.changed_docs = pass.changed_docs;
                    report.ranges_counted = pass.ranges_counted;
                    report.leaves_read = pass.leaves_read;
                    report.read_time = pass.read_time;
                    report.cost = pass.cost;
                    (pass.found, pass.derived_docs, pass.in_flight)
                }
                _ => {
                    report.full_because = full_because;
                    let source_scan = self.source.scan_states(&scope).await?;
                    let read_time = source_scan.read_time;
                    let (config, table) = (self.config.clone(), route.table.clone());
                    let source_items = source_scan.items.filter(move |item| {
                        std::future::ready(item.as_ref().map_or(true, |state| config.routes_to(&state.doc_path, &table)))
                    });
                    let derived_scan = self.warehouse.latest_states(&route.table, tenant).await?;
                    let found = diff(source_items, derived_scan.items, read_time.as_micros()).await?;
                    report.source_docs_read = found.source_docs;
                    report.derived_rows_read = found.derived_rows;
                    report.read_time = Some(read_time);
                    report.cost.docs_read(found.source_docs);
                    (found.differences.into_iter().map(|d| (read_time, d)).collect(), found.derived_rows, found.in_flight)
                }
            };
        let differences: Vec<&Difference> = found.iter().map(|(_, d)| d).collect();

        let mut named: HashMap<DifferenceKind, Vec<&str>> = HashMap::new();
        for difference in &differences {
            match difference.kind {
                DifferenceKind::Missing => report.missing += 1,
                DifferenceKind::Different => report.different += 1,
                DifferenceKind::Orphan => report.orphan += 1,
            }
            if open_by_path.contains_key(&difference.doc_path) {
                report.known += 1;
            } else {
                report.silent += 1;
                if report.silent_docs.len() < NAMED_DOCS {
                    report.silent_docs.push(difference.doc_path.clone());
                }
                named.entry(difference.kind).or_default().push(&difference.doc_path);
            }
        }
        if report.silent > 0 {
            // A hole in error capture: the pipeline lost something without a trace.
            tracing::error!(
                tenant, table = route.table, batch_id, silent = report.silent,
                missing = ?named.get(&DifferenceKind::Missing).map(|v| &v[..v.len().min(NAMED_DOCS)]),
                different = ?named.get(&DifferenceKind::Different).map(|v| &v[..v.len().min(NAMED_DOCS)]),
                orphan = ?named.get(&DifferenceKind::Orphan).map(|v| &v[..v.len().min(NAMED_DOCS)]),
                "silent drift: differences no sync error record explains"
            );
        }
        run.missing += report.missing;
        run.different += report.different;
        run.orphan += report.orphan;
        run.known += report.known;
        run.silent += report.silent;
        run.source_docs_read += report.source_docs_read;
        run.derived_rows_read += report.derived_rows_read;
        run.in_flight += in_flight;

        let guard = options.orphan_guard.unwrap_or_default();
        let refused = guard.refuses(report.orphan, derived_docs);
        if refused {
            tracing::error!(
                tenant, table = route.table, batch_id, orphans = report.orphan, derived_docs,
                max_share = guard.max_share, "mass tombstoning refused: {}", guard.override_hint()
            );
            run.refused.push(RefusedTenant {
                tenant: tenant.into(),
                table: route.table.clone(),
                orphans: report.orphan,
                derived_docs,
                max_share: guard.max_share,
                how_to_override: guard.override_hint(),
            });
        }
        if !options.dry_run {
            let drifting: BTreeSet<&str> = differences.iter().map(|d| d.doc_path.as_str()).collect();
            // Repaired per read: an orphan's tombstone is versioned with the read that
            // proved it absent.
            let mut by_read: std::collections::BTreeMap<Timestamp, Vec<Difference>> = Default::default();
            for (read_time, difference) in &found {
                if !(refused && difference.kind == DifferenceKind::Orphan) {
                    by_read.entry(*read_time).or_default().push(difference.clone());
                }
            }
            let mut repaired = BTreeSet::new();
            for (read_time, to_repair) in by_read {
                repaired.extend(self.repair(tenant, batch_id, read_time, &to_repair, run).await?);
            }
            report.repaired = repaired.len() as u64;
            run.repaired += report.repaired;
            // Close the records whose document is now right: repaired here, or not
            // drifting at a snapshot taken after the failure was recorded (its change
            // landed after all, by a redelivery). A failure recorded after the run
            // began may concern a commit the snapshot cannot see: left open.
            for (path, records) in open_by_path.iter().filter(|(path, _)| scope.matches(path) && self.config.routes_to(path, &route.table)) {
                let was_repaired = repaired.contains(path.as_str());
                let converged = !drifting.contains(path.as_str());
                for record in records.iter().filter(|r| was_repaired || (converged && r.last_seen <= started_at)) {
                    if self.errors.resolve_sync_error(&record.id).await? {
                        run.errors_resolved += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Appends the repairs of `differences`; returns the paths repaired. A chunk that
    /// fails every attempt is recorded in the error log, one record per document.
    async fn repair(
        &self,
        tenant: &str,
        batch_id: &str,
        read_time: Timestamp,
        differences: &[Difference],
        run: &mut ReconcileRun,
    ) -> Result<BTreeSet<String>, ReconcileError> {
        let ctx = RowContext { ingested_at: self.clock.now(), run_id: batch_id.into(), code_version: CODE_VERSION.into() };
        let mut repaired = BTreeSet::new();
        for chunk in differences.chunks(REPAIR_CHUNK) {
            // Missing and different documents are read again, at one read time: their
            // repair rows are versioned with it (converge_core::version), so a live
            // write committed after it wins, and every row stored before it loses.
            let to_read: Vec<String> = chunk
                .iter()
                .filter(|d| matches!(d.kind, DifferenceKind::Missing | DifferenceKind::Different))
                .map(|d| d.doc_path.clone())
                .collect();
            let reread = if to_read.is_empty() { None } else { Some(self.source.get_all(&to_read).await?) };
            let mut reread_docs = reread.as_ref().map(|r| r.value.iter()).into_iter().flatten();
            let mut rows = Vec::with_capacity(chunk.len());
            for difference in chunk {
                let routed = self.config.route(&difference.doc_path);
                let row = match difference.kind {
                    DifferenceKind::Missing | DifferenceKind::Different => {
                        let doc = reread_docs.next().expect("one read per missing or different document");
                        let (Some(routed), Some(doc), Some(read)) = (routed, doc, reread.as_ref()) else {
                            // Deleted since the scan: its delete (or the next run) settles it.
                            continue;
                        };
                        match ChangeRow::source_read(&routed, Op::Repair, doc, read.read_time, &ctx) {
                            Ok(row) => row,
                            Err(error) => {
                                tracing::warn!(doc_path = difference.doc_path, %error, "document cannot be mirrored as it is; not repaired");
                                continue;
                            }
                        }
                    }
                    // Versioned at the snapshot that proved the document absent.
                    DifferenceKind::Orphan => {
                        let Some(routed) = routed else { continue };
                        ChangeRow::source_read_tombstone(&routed, Op::Repair, &difference.doc_path, read_time, &ctx)
                    }
                };
                rows.push(row);
            }
            if rows.is_empty() {
                continue;
            }
            match self.append_with_retry(rows.clone()).await {
                Ok(()) => repaired.extend(rows.into_iter().map(|row| row.doc_path)),
                Err(error) => {
                    tracing::error!(tenant, batch_id, rows = rows.len(), %error, "repair append failed every attempt; recorded in the error log");
                    let now = self.clock.now();
                    for row in rows {
                        run.repair_failures += 1;
                        let record = FailedWrite::of_row(&row).record(&error, REPAIR_ATTEMPTS, now);
                        self.errors.record_sync_error(record).await?;
                    }
                }
            }
        }
        Ok(repaired)
    }

    pub(crate) async fn append_with_retry(&self, rows: Vec<ChangeRow>) -> Result<(), StoreError> {
        let mut backoff = REPAIR_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.warehouse.append(rows.clone()).await {
                Ok(_) => return Ok(()),
                Err(error) if error.is_retryable() && attempt < REPAIR_ATTEMPTS => {
                    tracing::warn!(attempt, %error, ?backoff, "repair append failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}
