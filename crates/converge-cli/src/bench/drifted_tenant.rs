//! The data of the reconcile and rebuild benchmarks: one tenant of N documents written
//! through the source store, their changelog rows appended straight to the warehouse
//! (no HTTP), then 0.1% of N drifted of each kind — *missing* (a source document whose
//! row was never appended), *different* (a row of an older version, half of them with
//! other content too), *orphan* (a row for a document the source never had) — half of
//! each kind with a matching open sync error (known), half without (silent).
//! Streamed in batches: never a whole tenant in memory.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use converge_backends::EmbeddedBackends;
use converge_core::change::error_id;
use converge_core::{ChangeRow, Clock, DocWrite, Document, ErrorLog, MirrorConfig, Op, RowContext, SourceStore, SyncErrorRecord, SystemClock, Timestamp, Value, Warehouse};
use converge_scenarios::bookkeeping_records;
use serde::{Deserialize, Serialize};

/// The benchmark's tenant.
pub const TENANT: &str = "bench";
const SEED: u64 = 11;
/// Documents per source commit and per warehouse append.
const BATCH: u64 = 10_000;
/// One document in this many is drifted, of each kind (0.1%).
const DRIFT_EVERY: u64 = 1_000;

/// What kind of drift, if any, document `index` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drift {
    None,
    Missing,
    Different,
    Orphan,
}

fn drift_of(index: u64) -> Drift {
    match index % DRIFT_EVERY {
        101 => Drift::Missing,
        457 => Drift::Different,
        803 => Drift::Orphan,
        _ => Drift::None,
    }
}

/// Counts per kind: what was injected, or what a run found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftCounts {
    pub missing: u64,
    pub different: u64,
    pub orphan: u64,
    pub known: u64,
    pub silent: u64,
}

impl DriftCounts {
    pub fn total(&self) -> u64 {
        self.missing + self.different + self.orphan
    }
}

/// What data generation made.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    pub records: u64,
    pub source_docs: u64,
    pub changelog_rows: u64,
    pub injected: DriftCounts,
    pub millis: u64,
}

/// One reconciler run, as its child process reported it.
/// Writes the dataset with its drift into a fresh `data_dir`.
pub async fn generate(data_dir: &Path, records: u64) -> anyhow::Result<Generated> {
    let started = Instant::now();
    if data_dir.exists() {
        std::fs::remove_dir_all(data_dir).with_context(|| format!("removing {}", data_dir.display()))?;
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = MirrorConfig::default();
    let backends = EmbeddedBackends::open(data_dir, clock.clone()).context("opening the embedded stores")?;
    backends.warehouse.ensure_tables(&config).await?;
    let source: Arc<dyn SourceStore> = backends.source_store();
    let errors: Arc<dyn ErrorLog> = backends.error_log();
    let warehouse: Arc<dyn Warehouse> = backends.warehouse();
    let pattern = config.routes[0].pattern.clone();
    let now = clock.now();
    // Ingested over the thirty days up to yesterday, as an established tenant's rows
    // were: the current tables' watermark is then a day old and the rows within the
    // refresh's overlap before it are few, so a refresh from the watermark, and a full
    // run's read of the current tables plus the changelog since it, see only what came
    // since (all at one time, every row would be "since").
    let ingested_at = |start: u64| {
        let span = 30 * 86_400_000_000i64;
        Timestamp::from_micros(now.as_micros() - 86_400_000_000 - span + (span as f64 * start as f64 / records as f64) as i64)
    };
    let run_id = format!("bench-reconcile-{records}");

    let mut injected = DriftCounts::default();
    let mut source_docs = 0u64;
    let mut changelog_rows = 0u64;
    // Each kind's k-th drifted document is known when k is even.
    let mut seen = DriftCounts::default();
    let mut pending_append: Option<tokio::task::JoinHandle<Result<converge_core::AppendReceipt, converge_core::StoreError>>> = None;
    let mut start = 0;
    while start < records {
        let end = (start + BATCH).min(records);
        let ctx = RowContext { ingested_at: ingested_at(start), run_id: run_id.clone(), code_version: env!("CARGO_PKG_VERSION").into() };
        let mut writes = Vec::with_capacity((end - start) as usize);
        // Rows whose version is the batch's commit time, and rows with a version of their own.
        let mut rows_at_commit = Vec::with_capacity((end - start) as usize);
        let mut rows_older: Vec<(ChangeRow, i64)> = Vec::new();
        let mut sync_errors = Vec::new();
        for index in start..end {
            let doc_id = bookkeeping_records::doc_id(index);
            let path = pattern.document_path(TENANT, &doc_id).expect("the default route has a plain pattern");
            let mut fields = bookkeeping_records::record(SEED, index, now);
            // Written a day ago, as far as the app's change field says: an incremental
            // reconcile after a verified run reads none of these.
            fields.insert(converge_core::config::DEFAULT_CHANGE_FIELD.into(), Value::Timestamp(Timestamp::from_micros(now.as_micros() - 86_400_000_000)));
            let drift = drift_of(index);
            let known = |seen: &mut u64| {
                *seen += 1;
                *seen % 2 == 1
            };
            let routed = config.route(&path).expect("the default route matches");
            let doc = Document { path: path.clone(), fields, create_time: now, update_time: now };
            match drift {
                Drift::None => {
                    rows_at_commit.push(ChangeRow::live(&routed, Op::Create, &doc, &format!("bench-{index}"), &ctx)?);
                }
                Drift::Missing => {
                    injected.missing += 1;
                    if known(&mut seen.missing) {
                        sync_errors.push(sync_error(&doc_id, &path, "create", now));
                    }
                }
                Drift::Different => {
                    injected.different += 1;
                    // The write before the last one, whose update never arrived: an older
                    // version, and for every other document other content too.
                    let mut stale = doc.clone();
                    if injected.different % 2 == 0 {
                        stale.fields.insert("amount".into(), Value::Double(1.25));
                    }
                    let row = ChangeRow::live(&routed, Op::Create, &stale, &format!("bench-{index}"), &ctx)?;
                    rows_older.push((row, -1_000_000));
                    if known(&mut seen.different) {
                        sync_errors.push(sync_error(&doc_id, &path, "update", now));
                    }
                }
                Drift::Orphan => {
                    // A document the source deleted (it never had it here) whose
                    // tombstone never arrived; next to a live one in path order.
                    injected.orphan += 1;
                    let orphan_id = format!("{doc_id}-gone");
                    let orphan_path = pattern.document_path(TENANT, &orphan_id).expect("plain pattern");
                    let orphan_routed = config.route(&orphan_path).expect("the default route matches");
                    let orphan = Document { path: orphan_path.clone(), fields: bookkeeping_records::record(SEED, records + index, now), create_time: now, update_time: now };
                    let row = ChangeRow::live(&orphan_routed, Op::Create, &orphan, &format!("bench-{orphan_id}"), &ctx)?;
                    rows_older.push((row, -2_000_000));
                    if known(&mut seen.orphan) {
                        sync_errors.push(sync_error(&orphan_id, &orphan_path, "delete", now));
                    }
                    rows_at_commit.push(ChangeRow::live(&routed, Op::Create, &doc, &format!("bench-{index}"), &ctx)?);
                }
            }
            writes.push(DocWrite::Set { path, fields: doc.fields });
        }
        source_docs += writes.len() as u64;
        let commit = source.apply(writes).await.context("writing the source")?.as_micros();
        let mut rows = rows_at_commit;
        // Event rows: their version is the document's commit time.
        for row in &mut rows {
            (row.version, row.update_time, row.create_time) = (commit, Some(commit), Some(commit));
        }
        for (mut row, offset) in rows_older {
            (row.version, row.update_time, row.create_time) = (commit + offset, Some(commit + offset), Some(commit + offset));
            rows.push(row);
        }
        changelog_rows += rows.len() as u64;
        for record in sync_errors {
            errors.record_sync_error(record).await?;
        }
        // The warehouse appends one batch while the source commits the next.
        if let Some(previous) = pending_append.take() {
            previous.await??;
        }
        let warehouse = warehouse.clone();
        pending_append = Some(tokio::spawn(async move { warehouse.append(rows).await }));
        start = end;
    }
    if let Some(previous) = pending_append.take() {
        previous.await??;
    }
    injected.known = seen.missing.div_ceil(2) + seen.different.div_ceil(2) + seen.orphan.div_ceil(2);
    injected.silent = injected.total() - injected.known;
    drop((source, errors, warehouse));
    drop(backends);
    Ok(Generated { records, source_docs, changelog_rows, injected, millis: started.elapsed().as_millis() as u64 })
}

fn sync_error(doc_id: &str, doc_path: &str, action: &str, now: Timestamp) -> SyncErrorRecord {
    SyncErrorRecord {
        id: error_id("records", TENANT, doc_id, action),
        tenant: TENANT.into(),
        doc_id: doc_id.into(),
        doc_path: doc_path.into(),
        action: action.into(),
        event_id: format!("bench-error-{doc_id}-{action}"),
        error: "bench: injected warehouse failure".into(),
        attempts: 1,
        first_seen: now,
        last_seen: now,
        resolved: false,
    }
}
