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

use converge_core::{batch_id, ChangeRow, Op, RowContext, RunOutcome, RunRecord, SyncErrorRecord, CODE_VERSION};
use serde::Serialize;

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
}

impl Reconciler {
    /// One retry pass over the open sync errors of `tenant` (or of every tenant).
    pub async fn retry_errors(&self, tenant: Option<&str>) -> Result<RetryRun, ReconcileError> {
        self.retry_errors_with(RetryOptions { tenant: tenant.map(str::to_owned), key: None }).await
    }

    /// One retry pass as `options` say.
    pub async fn retry_errors_with(&self, options: RetryOptions) -> Result<RetryRun, ReconcileError> {
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
        let open = self.errors.open_sync_errors(tenant).await?;
        run.open_errors = open.len() as u64;
        let mut by_path: BTreeMap<String, Vec<SyncErrorRecord>> = BTreeMap::new();
        for record in open {
            by_path.entry(record.doc_path.clone()).or_default().push(record);
        }
        run.documents = by_path.len() as u64;
        let ctx = RowContext { ingested_at: started_at, run_id: run.batch_id.clone(), code_version: CODE_VERSION.into() };
        let paths: Vec<String> = by_path.keys().cloned().collect();
        for chunk in paths.chunks(REPAIR_CHUNK) {
            let read = self.source.get_all(chunk).await?;
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
                    } else if self.errors.resolve_sync_error(&record.id).await? {
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
        let record = RunRecord::new(run.batch_id.clone(), RETRY_KIND, scope, started_at, self.clock.now(), run.outcome, &run);
        self.warehouse.record_run(record).await?;
        tracing::info!(
            batch_id = run.batch_id, scope = run.scope, outcome = %run.outcome, open_errors = run.open_errors, rows_appended = run.rows_appended,
            errors_resolved = run.errors_resolved, left_open, millis = run.millis, "sync error retry pass finished"
        );
        Ok(run)
    }
}
