//! [`Rebuilder`]: one tenant's rows re-derived from the source in one atomic append.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use converge_core::{
    batch_id, drift::OrphanGuard, path, ChangeRow, Clock, ErrorKind, MirrorConfig, Op, PriceTable,
    RefreshFrom, Route, RowContext, RunCost, RunOutcome, RunRecord, SourceStore, StoreError,
    Timestamp, Warehouse, CODE_VERSION,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::merge::{MergeJoin, Rebuilt};
use crate::throttle::Throttle;

/// Rows per chunk handed from the scan to the warehouse writer (one wake-up per
/// chunk), and chunks in flight between them.
const ROW_CHUNK: usize = 1024;
const CHUNKS_AHEAD: usize = 4;
/// How often a running rebuild logs its progress.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);
/// Documents named in the report when they cannot be mirrored.
const NAMED_DOCS: usize = 20;

/// What to rebuild.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebuildRequest {
    pub tenant: String,
    /// Changelog tables to rebuild; every mirrored table when absent.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// What makes this rebuild this rebuild, for its batch id. Default: the UTC date,
    /// so running a failed rebuild again the same day is the same batch.
    #[serde(default)]
    pub key: Option<String>,
    /// Cap on documents read per second (an initial import next to live sync).
    #[serde(default)]
    pub max_docs_per_second: Option<u32>,
    /// The largest share of a table's documents in the warehouse one rebuild may
    /// tombstone (see `converge_core::drift::OrphanGuard`); default 0.10.
    #[serde(default)]
    pub max_orphan_share: Option<f64>,
}

/// Live counters of a running rebuild, for a progress bar or a log line.
#[derive(Debug, Default)]
pub struct RebuildProgress {
    pub documents: AtomicU64,
    pub tombstones: AtomicU64,
    pub skipped: AtomicU64,
}

impl RebuildProgress {
    /// Rows handed to the warehouse so far (documents and tombstones).
    pub fn rows(&self) -> u64 {
        self.documents.load(Ordering::Relaxed) + self.tombstones.load(Ordering::Relaxed)
    }
}

/// One table's part of a rebuild.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRebuild {
    pub table: String,
    pub documents: u64,
    pub tombstones: u64,
    /// Documents that cannot be mirrored as they are (a promoted field of the wrong
    /// type): not written; named in `skipped_docs`.
    pub skipped: u64,
    /// Documents whose latest state in the warehouse already is the source's: not
    /// written again.
    #[serde(default)]
    pub unchanged: u64,
    /// Documents in the warehouse's latest view before the rebuild.
    #[serde(default)]
    pub derived_docs: u64,
    /// Whether the orphan guard refused this table's tombstones (nothing of the
    /// rebuild was then written).
    #[serde(default)]
    pub refused: bool,
    /// The snapshot the source was read at (every row's version).
    pub source_read_time: String,
}

/// The report of one rebuild; also stored (as its JSON) in the runs table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebuildRun {
    pub batch_id: String,
    pub tenant: String,
    /// `ok`, `partial` (some documents could not be mirrored), `refused` (the orphan
    /// guard: nothing written, see `how_to_override`) or `failed`.
    pub outcome: RunOutcome,
    /// Documents written (their latest state in the warehouse differed).
    pub documents: u64,
    /// Documents already right in the warehouse.
    #[serde(default)]
    pub unchanged: u64,
    /// Rows newly stored (documents and tombstones), duplicates of stored rows aside.
    pub rows_written: u64,
    pub duplicates: u64,
    pub tombstones: u64,
    pub skipped: u64,
    pub skipped_docs: Vec<String>,
    pub tables: Vec<TableRebuild>,
    pub max_docs_per_second: Option<u32>,
    pub millis: u64,
    /// What it cost: every source document scanned is one read (unchanged ones and
    /// those of other routes' tables included: the scan returned them), plus the
    /// warehouse bytes of reading the latest states, appending and refreshing. Failed
    /// and refused runs too: what was read was billed.
    #[serde(default)]
    pub cost: RunCost,
    /// Why a failed rebuild failed (nothing of it is visible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How to tombstone on purpose what the orphan guard refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how_to_override: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("tenant {tenant:?} is not a document id ({problem}): expected a Firestore document id such as `acme`")]
    InvalidTenant { tenant: String, problem: &'static str },
    #[error("no mirrored table named {table:?}; the mirrored tables are {known:?}")]
    UnknownTable { table: String, known: Vec<String> },
    #[error("a rebuild of tenant {tenant:?} is already running; wait for it to finish, then run again if still needed")]
    Busy { tenant: String },
    #[error("rebuild failed, nothing of it is visible; run it again (same batch): {0}")]
    Store(#[from] StoreError),
    #[error("rebuild committed (batch {batch_id}): its rows are visible, but its run record could not be stored: {source}; running it again is safe")]
    NotRecorded { batch_id: String, source: StoreError },
}

impl RebuildError {
    /// What a caller can do about it (the HTTP status follows from the kind alone, in
    /// `converge_function::answer`): a wrong request is `InvalidInput`, a running rebuild of
    /// the tenant a `Conflict`, a transient store failure `Retryable` (nothing of the
    /// attempt is visible); anything else `Permanent`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RebuildError::InvalidTenant { .. } | RebuildError::UnknownTable { .. } => ErrorKind::InvalidInput,
            RebuildError::Busy { .. } => ErrorKind::Conflict,
            RebuildError::Store(e) | RebuildError::NotRecorded { source: e, .. } if e.kind == ErrorKind::Retryable => ErrorKind::Retryable,
            RebuildError::Store(_) | RebuildError::NotRecorded { .. } => ErrorKind::Permanent,
        }
    }
}

/// Runs rebuilds, one per tenant at a time.
pub struct Rebuilder {
    source: Arc<dyn SourceStore>,
    warehouse: Arc<dyn Warehouse>,
    config: MirrorConfig,
    clock: Arc<dyn Clock>,
    prices: PriceTable,
    running: Mutex<HashMap<String, Arc<RebuildProgress>>>,
}

/// Holds a tenant's place in [`Rebuilder::running`]; released however the run ends
/// (success, error, or the request being dropped).
struct TenantLock<'a> {
    running: &'a Mutex<HashMap<String, Arc<RebuildProgress>>>,
    tenant: String,
}

impl Drop for TenantLock<'_> {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.tenant);
    }
}

impl Rebuilder {
    pub fn new(source: Arc<dyn SourceStore>, warehouse: Arc<dyn Warehouse>, config: MirrorConfig, clock: Arc<dyn Clock>) -> Self {
        Self { source, warehouse, config, clock, prices: PriceTable::default(), running: Mutex::new(HashMap::new()) }
    }

    /// Prices runs' costs with `prices` instead of the list prices.
    pub fn with_prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// The counters of `tenant`'s running rebuild, if one runs.
    pub fn progress(&self, tenant: &str) -> Option<Arc<RebuildProgress>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).get(tenant).cloned()
    }

    /// The routes `request` names, checked.
    fn routes(&self, request: &RebuildRequest) -> Result<Vec<Route>, RebuildError> {
        path::check_id(&request.tenant).map_err(|problem| RebuildError::InvalidTenant { tenant: request.tenant.clone(), problem })?;
        let routes: Vec<Route> = match &request.tables {
            None => self.config.routes.clone(),
            Some(tables) => tables
                .iter()
                .map(|table| {
                    self.config.table(table).cloned().ok_or_else(|| RebuildError::UnknownTable {
                        table: table.clone(),
                        known: self.config.routes.iter().map(|r| r.table.clone()).collect(),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(routes)
    }

    /// Rebuilds one tenant: every document of the selected tables as a REBUILD row,
    /// a tombstone for every derived document the source lacks, all in one atomic
    /// append. On error nothing is visible. The run is recorded either way.
    pub async fn run(&self, request: RebuildRequest) -> Result<RebuildRun, RebuildError> {
        // Every line of the run carries its id and kind (`converge_function::telemetry`).
        let span = tracing::info_span!("run", kind = "rebuild", run_id = tracing::field::Empty);
        async move {
        let routes = self.routes(&request)?;
        let progress = Arc::new(RebuildProgress::default());
        let _lock = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if running.contains_key(&request.tenant) {
                return Err(RebuildError::Busy { tenant: request.tenant.clone() });
            }
            running.insert(request.tenant.clone(), progress.clone());
            TenantLock { running: &self.running, tenant: request.tenant.clone() }
        };
        let started = Instant::now();
        let started_at = self.clock.now();
        let scope = match &request.tables {
            None => request.tenant.clone(),
            Some(tables) => format!("{}:{}", request.tenant, tables.join(",")),
        };
        let key = request.key.clone().unwrap_or_else(|| started_at.to_rfc3339()[..10].to_owned());
        let mut run = RebuildRun {
            batch_id: batch_id("rebuild", &scope, &key),
            tenant: request.tenant.clone(),
            max_docs_per_second: request.max_docs_per_second,
            ..RebuildRun::default()
        };
        tracing::Span::current().record("run_id", run.batch_id.as_str());
        tracing::info!(batch_id = run.batch_id, tenant = run.tenant, tables = ?routes.iter().map(|r| &r.table).collect::<Vec<_>>(),
            max_docs_per_second = request.max_docs_per_second, "rebuild started");
        let bytes_before = self.warehouse.bytes_processed();
        let reads = Arc::new(Mutex::new(RunCost::default()));

        // The merge reads the warehouse's latest states: from the current tables plus the
        // changelog since their watermark where it can (on DuckDB a sort within its memory
        // cap), so bring them up to date first — from the watermark only; exact either way.
        for route in &routes {
            if let Err(error) = self
                .warehouse
                .refresh_current(&route.table, RefreshFrom::Started)
                .await
            {
                tracing::warn!(batch_id = run.batch_id, table = route.table, %error, "the current table was not refreshed before the rebuild; the warehouse reads more");
            }
        }
        let (sender, mut receiver) =
            mpsc::channel::<Result<Vec<ChangeRow>, StoreError>>(CHUNKS_AHEAD);
        let scan = Scanner {
            source: self.source.clone(),
            config: self.config.clone(),
            warehouse: self.warehouse.clone(),
            tenant: request.tenant.clone(),
            ctx: RowContext { ingested_at: started_at, run_id: run.batch_id.clone(), code_version: CODE_VERSION.into() },
            throttle: Throttle::new(request.max_docs_per_second),
            progress: progress.clone(),
            guard: OrphanGuard { max_share: request.max_orphan_share.unwrap_or(OrphanGuard::default().max_share), ..OrphanGuard::default() },
            reads: reads.clone(),
        };
        let guard = scan.guard;
        let producer = tokio::spawn(scan.run(routes, sender));
        let rows = converge_core::flatten_chunks(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)));
        let appended = self.warehouse.append_atomic(rows).await;
        // The scan ends on its own once the append stops taking rows.
        let scanned = producer.await.map_err(|e| StoreError::permanent("rebuild", format!("the scan task failed: {e}")))?;

        run.millis = started.elapsed().as_millis() as u64;
        let outcome = match (scanned, appended) {
            // The scan aborted the append: nothing was written.
            (Ok(scanned), _) if scanned.tables.iter().any(|t| t.refused) => {
                for table in scanned.tables.iter().filter(|t| t.refused) {
                    tracing::error!(batch_id = run.batch_id, tenant = run.tenant, table = table.table, orphans = table.tombstones,
                        derived_docs = table.derived_docs, max_share = guard.max_share, "rebuild refused: {}", guard.override_hint());
                }
                for table in &scanned.tables {
                    run.tombstones += table.tombstones;
                }
                run.tables = scanned.tables;
                run.outcome = RunOutcome::Refused;
                run.how_to_override = Some(guard.override_hint());
                Ok(())
            }
            (Ok(scanned), Ok(receipt)) => {
                if receipt.written > 0 {
                    let tables: Vec<&str> = scanned.tables.iter().map(|t| t.table.as_str()).collect();
                    if let Err(error) = converge_core::retention::refresh_after_run(&*self.warehouse, tables).await {
                        tracing::warn!(batch_id = run.batch_id, %error, "the current tables were not refreshed after the rebuild; the next scheduled refresh takes its rows");
                    }
                }
                for table in &scanned.tables {
                    run.documents += table.documents;
                    run.unchanged += table.unchanged;
                    run.tombstones += table.tombstones;
                    run.skipped += table.skipped;
                }
                run.tables = scanned.tables;
                run.skipped_docs = scanned.skipped_docs;
                run.rows_written = receipt.written;
                run.duplicates = receipt.duplicates;
                run.outcome = if run.skipped == 0 { RunOutcome::Ok } else { RunOutcome::Partial };
                Ok(())
            }
            // The scan's own error first: the append only saw it as an aborted stream.
            (Err(error), _) | (Ok(_), Err(error)) => {
                run.outcome = RunOutcome::Failed;
                run.error = Some(error.to_string());
                Err(error)
            }
        };
        let mut cost = *reads.lock().unwrap_or_else(|p| p.into_inner());
        cost.warehouse(bytes_before, self.warehouse.bytes_processed());
        run.cost = cost.priced(&self.prices);
        let record = RunRecord::new(run.batch_id.clone(), "rebuild", scope, started_at, self.clock.now(), run.outcome, &run);
        match outcome {
            Ok(()) => {
                // The rows are committed: an error here must not say "nothing is visible".
                self.warehouse
                    .record_run(record)
                    .await
                    .map_err(|source| RebuildError::NotRecorded { batch_id: run.batch_id.clone(), source })?;
                tracing::info!(batch_id = run.batch_id, tenant = run.tenant, documents = run.documents, rows_written = run.rows_written,
                    tombstones = run.tombstones, skipped = run.skipped, millis = run.millis, source_reads = run.cost.source_reads,
                    warehouse_bytes = run.cost.warehouse_bytes, estimated_usd = run.cost.estimated_usd, "rebuild finished");
                Ok(run)
            }
            Err(error) => {
                // Best effort: the warehouse may be what failed.
                if let Err(record_error) = self.warehouse.record_run(record).await {
                    tracing::warn!(batch_id = run.batch_id, %record_error, "the failed rebuild's run record could not be stored");
                }
                tracing::error!(batch_id = run.batch_id, tenant = run.tenant, %error, retryable = error.is_retryable(),
                    "rebuild failed; nothing of it is visible");
                Err(RebuildError::Store(error))
            }
        }
        }
        .instrument(span)
        .await
    }
}

/// The reading half of a rebuild, on its own task: scans, merges, builds rows and
/// hands them to the warehouse's atomic append through a bounded channel.
struct Scanner {
    source: Arc<dyn SourceStore>,
    /// Every route: a path an earlier, overlapping route claims is that route's.
    config: MirrorConfig,
    warehouse: Arc<dyn Warehouse>,
    tenant: String,
    ctx: RowContext,
    throttle: Throttle,
    progress: Arc<RebuildProgress>,
    guard: OrphanGuard,
    /// The source reads of the scans, shared with the run: kept however the scan ends.
    reads: Arc<Mutex<RunCost>>,
}

/// Adds one scan's documents to the run's reads when dropped, so a scan that ends
/// early (an error, the append no longer taking rows) still counts what it read.
struct ScanReads {
    documents: Arc<AtomicU64>,
    reads: Arc<Mutex<RunCost>>,
}

impl Drop for ScanReads {
    fn drop(&mut self) {
        self.reads.lock().unwrap_or_else(|p| p.into_inner()).docs_read(self.documents.load(Ordering::Relaxed));
    }
}

struct Scanned {
    tables: Vec<TableRebuild>,
    skipped_docs: Vec<String>,
}

impl Scanner {
    async fn run(mut self, routes: Vec<Route>, sender: mpsc::Sender<Result<Vec<ChangeRow>, StoreError>>) -> Result<Scanned, StoreError> {
        let mut scanned = Scanned { tables: Vec::new(), skipped_docs: Vec::new() };
        for route in &routes {
            match self.table(route, &sender, &mut scanned).await {
                Ok(table) if table.refused => {
                    // Abort the append: nothing of this rebuild is committed.
                    scanned.tables.push(table);
                    let _ = sender.send(Err(StoreError::permanent("rebuild", "refused by the orphan guard"))).await;
                    return Ok(scanned);
                }
                Ok(table) => scanned.tables.push(table),
                Err(error) => {
                    // Abort the append: without its end, nothing is committed.
                    let _ = sender.send(Err(error.clone())).await;
                    return Err(error);
                }
            }
        }
        Ok(scanned)
    }

    async fn table(
        &mut self,
        route: &Route,
        sender: &mpsc::Sender<Result<Vec<ChangeRow>, StoreError>>,
        scanned: &mut Scanned,
    ) -> Result<TableRebuild, StoreError> {
        let scope = route
            .pattern
            .tenant_scope(&self.tenant)
            .map_err(|problem| StoreError::new(ErrorKind::InvalidInput, "rebuild", format!("tenant {:?}: {problem}", self.tenant)))?;
        let source = self.source.scan_documents(&scope).await?;
        let read_time: Timestamp = source.read_time;
        // Declared before the merge, so dropped after it: it counts the whole scan.
        let scan_reads = ScanReads { documents: Arc::new(AtomicU64::new(0)), reads: self.reads.clone() };
        let documents = scan_reads.documents.clone();
        let (every_route, table_name) = (self.config.clone(), route.table.clone());
        let source_items = source
            .items
            // Counted before the routing filter: a document of another route's table
            // under this scope was returned, so billed, all the same.
            .inspect(move |item| {
                if item.is_ok() {
                    documents.fetch_add(1, Ordering::Relaxed);
                }
            })
            .filter(move |item| std::future::ready(item.as_ref().map_or(true, |doc| every_route.routes_to(&doc.path, &table_name))))
            .boxed();
        let derived = self.warehouse.latest_states(&route.table, &self.tenant).await?;
        // Drained before the first append, so the warehouse's query is over while the
        // rebuild writes (see spool.rs).
        let derived = crate::spool::spool(derived.items).await?;
        let mut merge = MergeJoin::new(source_items, derived.states, read_time.as_micros());
        let mut table = TableRebuild {
            table: route.table.clone(),
            derived_docs: derived.count,
            source_read_time: read_time.to_rfc3339(),
            ..TableRebuild::default()
        };
        let config = MirrorConfig { routes: vec![route.clone()] };
        let mut last_log = Instant::now();
        let mut chunk = Vec::with_capacity(ROW_CHUNK);
        while let Some(item) = merge.next().await? {
            let row = match item {
                Rebuilt::Document(doc) => {
                    self.throttle.admit().await;
                    let Some(routed) = config.route(&doc.path) else { continue };
                    match ChangeRow::source_read(&routed, Op::Rebuild, &doc, read_time, &self.ctx) {
                        Ok(row) => {
                            table.documents += 1;
                            self.progress.documents.fetch_add(1, Ordering::Relaxed);
                            row
                        }
                        Err(error) => {
                            tracing::warn!(doc_path = doc.path, %error, run_id = self.ctx.run_id, "document cannot be mirrored as it is; not rebuilt");
                            table.skipped += 1;
                            self.progress.skipped.fetch_add(1, Ordering::Relaxed);
                            if scanned.skipped_docs.len() < NAMED_DOCS {
                                scanned.skipped_docs.push(doc.path);
                            }
                            continue;
                        }
                    }
                }
                Rebuilt::Unchanged => {
                    table.unchanged += 1;
                    continue;
                }
                Rebuilt::Absent { doc_path } => {
                    let Some(routed) = config.route(&doc_path) else { continue };
                    table.tombstones += 1;
                    self.progress.tombstones.fetch_add(1, Ordering::Relaxed);
                    ChangeRow::source_read_tombstone(&routed, Op::Rebuild, &doc_path, read_time, &self.ctx)
                }
            };
            if !table.refused && self.guard.refuses(table.tombstones, table.derived_docs) {
                // Counted to the end for the report; nothing more is handed over.
                table.refused = true;
            }
            if table.refused {
                continue;
            }
            chunk.push(row);
            if chunk.len() < ROW_CHUNK {
                continue;
            }
            if sender.send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(ROW_CHUNK)))).await.is_err() {
                // The append stopped taking rows (it failed): its error is the run's.
                return Ok(table);
            }
            if last_log.elapsed() >= PROGRESS_LOG_EVERY {
                last_log = Instant::now();
                tracing::info!(run_id = self.ctx.run_id, tenant = self.tenant, table = route.table,
                    documents = self.progress.documents.load(Ordering::Relaxed), rows = self.progress.rows(), "rebuild progress");
            }
        }
        if !chunk.is_empty() && !table.refused {
            let _ = sender.send(Ok(chunk)).await;
        }
        Ok(table)
    }
}
