//! The error log's own retry: a pass much cheaper than a reconcile, over only the
//! documents an open `sync_errors` record names.
//!
//! Each named document is read again from the source, at one read time per chunk, and
//! its state then is appended as a REPAIR row (a tombstone when the document is gone),
//! versioned at that read time like every repair (ARCHITECTURE.md, "The ordering
//! rule"): it outranks whatever was stored before the read, and a live write committed
//! after it still wins. A record is then resolved, unless it was recorded after the
//! read (its failure may concern a commit the read cannot see: the next pass takes it).
//! Records of paths no route matches stay open and are counted: only a configuration
//! change settles them. A warehouse that refuses the append after the reconciler's
//! retries ends the pass with that error; nothing is resolved for what was not written.
//!
//! What it cannot find: drift no error record names (silent drift). That is the full
//! reconcile's job, on its own schedule.

use std::collections::BTreeMap;
use std::time::Instant;

use converge_core::{batch_id, ChangeRow, Op, RowContext, RunCost, RunOutcome, RunRecord, SyncErrorRecord, CODE_VERSION};
use serde::Serialize;
use tracing::Instrument;

use crate::run::{ReconcileError, Reconciler, REPAIR_CHUNK};

/// The run kind in `converge_runs`.
pub const RETRY_KIND: &str = "retry_errors";

/// Which records a pass takes, and what makes it this pass.
#[derive(Debug, Clone, Default)]
pub struct RetryOptions {
    /// One tenant's records; every tenant's when `None`.
    pub tenant: Option<String>,
    /// What makes this pass this pass, for its batch id: a scheduler's schedule time or a
    /// Pub/Sub message id, so a retried tick is the same batch. Without one, the start time.
    pub key: Option<String>,
}

/// The report of one pass; also stored (as its JSON) in the runs table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryRun {
    pub batch_id: String,
    /// A tenant, or `*`.
    pub scope: String,
    /// `ok`, or `partial` when some records stay open (unroutable, unmirrorable, or
    /// recorded after the read).
    pub outcome: RunOutcome,
    /// Open records found.
    pub open_errors: u64,
    /// Documents they name (several records may name one document).
    pub documents: u64,
    /// REPAIR rows appended (live states and tombstones).
    pub rows_appended: u64,
    pub tombstones: u64,
    pub errors_resolved: u64,
    /// Records left open because they were recorded after the document was read.
    pub recorded_after_read: u64,
    /// Records of paths no route of the mirror configuration matches.
    pub unroutable: u64,
    /// Records of documents that cannot be mirrored as they are (a promoted value of the
    /// wrong type): the reason is logged, the record stays open.
    pub unmirrorable: u64,
    pub millis: u64,
    /// What the pass cost: the open records read (one read each, one for an empty
    /// answer), the documents re-read (one per path asked for, found or not), each
    /// record resolved (read before its conditional update), and the warehouse bytes of
    /// the appends and the refresh. With nothing open, a pass costs one read.
    pub cost: RunCost,
}

impl Reconciler {
    /// One retry pass over the open sync errors of `tenant` (or of every tenant).
    pub async fn retry_errors(&self, tenant: Option<&str>) -> Result<RetryRun, ReconcileError> {
        self.retry_errors_with(RetryOptions { tenant: tenant.map(str::to_owned), key: None }).await
    }

    /// One retry pass as `options` say.
    pub async fn retry_errors_with(&self, options: RetryOptions) -> Result<RetryRun, ReconcileError> {
        // Every line of the run carries its id and kind (`converge_function::telemetry`).
        let span = tracing::info_span!("run", kind = "retry_errors", run_id = tracing::field::Empty);
        async move {
        let started = Instant::now();
        let started_at = self.clock.now();
        let tenant = options.tenant.as_deref();
        let scope = tenant.unwrap_or("*").to_owned();
        let key = options.key.unwrap_or_else(|| started_at.as_micros().to_string());
        let mut run = RetryRun {
            batch_id: batch_id(RETRY_KIND, &scope, &key),
            scope: scope.clone(),
            ..RetryRun::default()
        };
        tracing::Span::current().record("run_id", run.batch_id.as_str());
        let bytes_before = self.warehouse.bytes_processed();
        let open = self.errors.open_sync_errors(tenant).await?;
        run.open_errors = open.len() as u64;
        run.cost.docs_read(run.open_errors);
        let mut by_path: BTreeMap<String, Vec<SyncErrorRecord>> = BTreeMap::new();
        for record in open {
            by_path.entry(record.doc_path.clone()).or_default().push(record);
        }
        run.documents = by_path.len() as u64;
        let ctx = RowContext { ingested_at: started_at, run_id: run.batch_id.clone(), code_version: CODE_VERSION.into() };
        let paths: Vec<String> = by_path.keys().cloned().collect();
        for chunk in paths.chunks(REPAIR_CHUNK) {
            let read = self.source.get_all(chunk).await?;
            run.cost.docs_read(chunk.len() as u64);
            let mut rows = Vec::with_capacity(chunk.len());
            let mut written = Vec::with_capacity(chunk.len());
            for (path, doc) in chunk.iter().zip(&read.value) {
                let records = by_path[path].len() as u64;
                let Some(routed) = self.config.route(path) else {
                    tracing::warn!(doc_path = path, "open sync error for a path no route matches; left open");
                    run.unroutable += records;
                    continue;
                };
                let row = match doc {
                    Some(doc) => match ChangeRow::source_read(&routed, Op::Repair, doc, read.read_time, &ctx) {
                        Ok(row) => row,
                        Err(error) => {
                            tracing::warn!(doc_path = path, %error, "document cannot be mirrored as it is; its sync error stays open");
                            run.unmirrorable += records;
                            continue;
                        }
                    },
                    None => {
                        run.tombstones += 1;
                        ChangeRow::source_read_tombstone(&routed, Op::Repair, path, read.read_time, &ctx)
                    }
                };
                rows.push(row);
                written.push(path);
            }
            if rows.is_empty() {
                continue;
            }
            run.rows_appended += rows.len() as u64;
            self.append_with_retry(rows).await?;
            for path in written {
                for record in &by_path[path] {
                    if record.last_seen > read.read_time {
                        run.recorded_after_read += 1;
                        continue;
                    }
                    run.cost.docs_read(1);
                    if self.errors.resolve_sync_error(&record.id).await? {
                        run.errors_resolved += 1;
                    }
                }
            }
        }
        if run.rows_appended > 0 {
            let tables: Vec<&str> = self.config.routes.iter().map(|route| route.table.as_str()).collect();
            if let Err(error) = converge_core::retention::refresh_after_run(&*self.warehouse, tables).await {
                tracing::warn!(%error, "the current tables were not refreshed after the retry; the next scheduled refresh takes its rows");
            }
        }
        let left_open = run.recorded_after_read + run.unroutable + run.unmirrorable;
        run.outcome = if left_open == 0 { RunOutcome::Ok } else { RunOutcome::Partial };
        run.millis = started.elapsed().as_millis() as u64;
        run.cost.warehouse(bytes_before, self.warehouse.bytes_processed());
        run.cost = run.cost.priced(&self.prices);
        let record = RunRecord::new(run.batch_id.clone(), RETRY_KIND, scope, started_at, self.clock.now(), run.outcome, &run);
        self.warehouse.record_run(record).await?;
        tracing::info!(
            batch_id = run.batch_id, scope = run.scope, outcome = %run.outcome, open_errors = run.open_errors, rows_appended = run.rows_appended,
            errors_resolved = run.errors_resolved, left_open, millis = run.millis, source_reads = run.cost.source_reads,
            warehouse_bytes = run.cost.warehouse_bytes, estimated_usd = run.cost.estimated_usd, "sync error retry pass finished"
        );
        Ok(run)
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use converge_core::value::fields_from_json;
    use converge_core::{DocWrite, ErrorLog, MirrorConfig, SourceStore, SyncErrorRecord, SystemClock, Timestamp, Warehouse};
    use converge_duckdb::DuckWarehouse;
    use converge_events::EventSource;
    use converge_sqlite::SqliteStore;

    use super::RETRY_KIND;
    use crate::Reconciler;

    fn open_error(path: &str) -> SyncErrorRecord {
        let doc_id = path.rsplit('/').next().unwrap();
        SyncErrorRecord {
            id: format!("error-{doc_id}"),
            tenant: "acme".into(),
            doc_id: doc_id.into(),
            doc_path: path.into(),
            action: "update".into(),
            event_id: "lost".into(),
            error: "warehouse unavailable".into(),
            attempts: 1,
            first_seen: Timestamp::new(1, 0),
            last_seen: Timestamp::new(1, 0),
            resolved: false,
        }
    }

    #[tokio::test]
    async fn a_pass_costs_the_records_the_documents_and_the_resolutions_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        let source = SqliteStore::open(&dir.path().join("source.sqlite"), Arc::new(SystemClock), EventSource::local()).unwrap();
        let warehouse = DuckWarehouse::open_in_memory().unwrap();
        let config = MirrorConfig::default();
        warehouse.ensure_tables(&config).await.unwrap();
        let fields = fields_from_json(&serde_json::json!({"amount": 1})).unwrap();
        source
            .apply(["r1", "r2"].map(|id| DocWrite::Set { path: format!("orgs/acme/records/{id}"), fields: fields.clone() }).to_vec())
            .await
            .unwrap();
        let reconciler = Reconciler::new(Arc::new(source.clone()), Arc::new(source.clone()), Arc::new(warehouse.clone()), config, Arc::new(SystemClock));

        // Nothing open: the query for open records, answered empty, is the one read.
        let idle = reconciler.retry_errors(None).await.unwrap();
        assert_eq!((idle.open_errors, idle.cost.source_reads), (0, 1), "{:?}", idle.cost);
        assert!(idle.cost.estimated_usd > 0.0, "{:?}", idle.cost);

        // Two live documents, one gone (a tombstone), one of a path no route matches.
        for path in ["orgs/acme/records/r1", "orgs/acme/records/r2", "orgs/acme/records/gone", "elsewhere/acme/things/t1"] {
            source.record_sync_error(open_error(path)).await.unwrap();
        }
        let pass = reconciler.retry_errors(None).await.unwrap();
        assert_eq!((pass.open_errors, pass.documents, pass.rows_appended, pass.errors_resolved, pass.unroutable), (4, 4, 3, 3, 1), "{pass:#?}");
        // 4 records read; 4 documents asked for, the gone and the unroutable one too;
        // each of the 3 resolved records read again before its update.
        assert_eq!(pass.cost.source_reads, 4 + 4 + 3, "{:?}", pass.cost);
        let stored = warehouse.runs(RETRY_KIND, 1).await.unwrap();
        assert_eq!(stored[0].report["cost"]["source_reads"], 11, "{}", stored[0].report);
    }
}
