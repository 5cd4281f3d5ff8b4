//! `converge bench incremental`: full and incremental reconciliation, and rebuild, of
//! one tenant at sizes up to 10,000,000 documents on the embedded default, beside
//! reladiff's joindiff on the same data in the same run.
//!
//! For each size N, in one fresh data directory:
//!
//! 1. **Data**: the reconcile benchmark's tenant (`drifted_tenant`: N documents whose
//!    change field says they were written a day ago, 0.1% of N drifted of each kind),
//!    its generation timed and its files measured on disk.
//! 2. **reladiff joindiff** on both sides' states, exported into its own DuckDB file.
//! 3. **Full reconcile**, each run its own process (peak resident memory its own): a dry
//!    run (found = injected), a repairing run (its read time becomes the tenant's
//!    verified point), a dry run that finds nothing.
//! 4. **0.1% of N change** through the source as the app writes them (the change field
//!    set): 80% updates, 10% creates, 10% deletes; the sync loses one in twenty of each
//!    (different, missing, orphan among changed documents). Among untouched documents:
//!    phantom rows (orphans), stray tombstones (missing), and rows corrupted in place
//!    (different — what only a full run can see), N/200,000 of each.
//! 5. **Incremental reconcile**: a dry run must find every drift among the changed
//!    documents and every phantom and stray tombstone, and none of the corrupted rows;
//!    its billed reads are compared with the full run's. Then a repairing incremental
//!    run, and a full dry run that finds exactly the corrupted rows.
//! 6. **Rebuild** (`converge rebuild --json`, its own process): the tenant rebuilt, the
//!    corrupted rows among what it writes.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use converge_backends::EmbeddedBackends;
use converge_core::{ChangeRow, Clock, DocWrite, Document, MirrorConfig, Op, ReconcileMode, RowContext, SourceStore, SystemClock, Timestamp, Value, Warehouse};
use converge_scenarios::bookkeeping_records;
use serde::Serialize;

use super::drifted_tenant::{generate, DriftCounts, Generated, TENANT};
use super::reconcile::{child_run_mode, export_states, run_reladiff, thousands, ChildRun, ReladiffRun};

/// Documents per source commit while changing (Firestore's limit is 500 writes).
const WRITE_BATCH: usize = 500;

/// Options of `converge bench incremental`.
#[derive(Debug, Clone)]
pub struct IncrementalBenchOptions {
    pub records: Vec<u64>,
    pub reladiff_python: Option<std::path::PathBuf>,
    pub reladiff_script: std::path::PathBuf,
    pub keep: bool,
    /// Stop after the changes (see `converge bench incremental --stop-after-changes`).
    pub stop_after_changes: bool,
}

/// What step 4 changed and lost.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Changes {
    pub updated: u64,
    pub created: u64,
    pub deleted: u64,
    pub lost_updates: u64,
    pub lost_creates: u64,
    pub lost_deletes: u64,
    pub phantoms: u64,
    pub stray_tombstones: u64,
    pub corrupted: u64,
    pub millis: u64,
}

impl Changes {
    pub fn changed(&self) -> u64 {
        self.updated + self.created + self.deleted
    }

    /// What an incremental run must find.
    pub fn visible(&self) -> DriftCounts {
        DriftCounts {
            missing: self.lost_creates + self.stray_tombstones,
            different: self.lost_updates,
            orphan: self.lost_deletes + self.phantoms,
            known: 0,
            silent: self.lost_creates + self.stray_tombstones + self.lost_updates + self.lost_deletes + self.phantoms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IncrementalBenchSize {
    pub generated: Generated,
    /// Bytes of the data directory after generation (SQLite and DuckDB files).
    pub disk_bytes: u64,
    /// The first, full refresh of the current tables after generation.
    pub initial_refresh_millis: u64,
    pub joindiff: Option<ReladiffRun>,
    pub full_dry_run: ChildRun,
    pub full_repair: ChildRun,
    pub changes: Changes,
    pub incremental_dry_run: ChildRun,
    pub incremental_repair: ChildRun,
    /// The full dry run after the incremental repair: the corrupted rows only.
    pub full_after: ChildRun,
    /// `converge rebuild --json` as the child printed it.
    pub rebuild: serde_json::Value,
    pub rebuild_docs_per_second: f64,
}

impl IncrementalBenchSize {
    fn reads(run: &ChildRun) -> u64 {
        run.report["cost"]["source_reads"].as_u64().unwrap_or(0)
    }

    /// The incremental run's billed reads as a share of the full run's.
    pub fn read_share(&self) -> f64 {
        Self::reads(&self.incremental_dry_run) as f64 / Self::reads(&self.full_dry_run).max(1) as f64
    }
}

/// DuckDB's memory limit for the first, full refresh after generation (every other
/// run has the default).
const INITIAL_REFRESH_MEMORY: &str = "1GB";

pub async fn run(options: &IncrementalBenchOptions) -> anyhow::Result<Vec<IncrementalBenchSize>> {
    super::measure::each_size(&options.records, options.keep, "incremental", |n, data_dir| async move { one_size(n, &data_dir, options).await }).await
}

async fn one_size(records: u64, data_dir: &Path, options: &IncrementalBenchOptions) -> anyhow::Result<IncrementalBenchSize> {
    eprintln!("incremental bench, {} documents: generating in {}…", thousands(records), data_dir.display());
    let generated = generate(data_dir, records).await?;
    let disk_bytes = directory_bytes(data_dir);
    eprintln!("  generated in {} ms ({} changelog rows, {:.1} GB on disk)", generated.millis, generated.changelog_rows, disk_bytes as f64 / 1e9);
    let injected = generated.injected;

    let joindiff = match &options.reladiff_python {
        Some(python) => {
            let file = data_dir.join("reladiff.duckdb");
            let started = Instant::now();
            export_states(data_dir, &file).await.context("exporting states for reladiff")?;
            eprintln!("  exported states for reladiff in {} ms", started.elapsed().as_millis());
            let (run, _, _) = run_reladiff(python, &options.reladiff_script, &file, "joindiff")?;
            eprintln!("  reladiff joindiff: {:.0} ms, {} missing, {} different, {} orphan", run.millis, run.missing, run.different, run.orphan);
            ensure!((run.missing, run.different, run.orphan) == (injected.missing, injected.different, injected.orphan), "joindiff found {run:?}; injected {injected:?}");
            let _ = std::fs::remove_file(&file);
            Some(run)
        }
        None => None,
    };

    // The current tables as the schedule keeps them (`/refresh-current` every 15
    // minutes), so the full runs read them and the changelog since their watermark. A
    // first, full refresh of ten million documents needs more than DuckDB's 96 MB
    // default (its aggregate holds every document), so this step alone runs with more.
    let initial_refresh = super::measure::child_json_env(
        &["refresh-current", "--json"],
        data_dir,
        "converge refresh-current --json",
        &[(converge_duckdb::warehouse::MEMORY_LIMIT_ENV, INITIAL_REFRESH_MEMORY)],
    )
    .await?;
    eprintln!("  initial full refresh of the current tables ({INITIAL_REFRESH_MEMORY} for DuckDB): {} ms", initial_refresh["millis"]);
    let full_dry_run = child_run_mode(data_dir, true, ReconcileMode::Full).await?;
    report("full dry run", &full_dry_run);
    ensure!(full_dry_run.found == injected, "the full dry run found {:?}; injected {injected:?}", full_dry_run.found);
    let full_repair = child_run_mode(data_dir, false, ReconcileMode::Full).await?;
    report("full repairing run", &full_repair);
    ensure!(full_repair.repaired == injected.total(), "the full run repaired {}; {} were injected", full_repair.repaired, injected.total());

    // The current tables as the schedule keeps them (`/refresh-current` every 15
    // minutes): the incremental run then refreshes from the watermark only.
    let refresh = super::measure::child_json(&["refresh-current", "--json"], data_dir, "converge refresh-current --json").await?;
    eprintln!("  current tables refreshed: {refresh}");
    let changes = change(data_dir, records).await?;
    eprintln!(
        "  changed {} documents ({} updated, {} created, {} deleted; lost {} / {} / {}) and drifted untouched ones ({} phantoms, {} stray tombstones, {} corrupted) in {} ms",
        changes.changed(), changes.updated, changes.created, changes.deleted, changes.lost_updates, changes.lost_creates, changes.lost_deletes,
        changes.phantoms, changes.stray_tombstones, changes.corrupted, changes.millis
    );
    if options.stop_after_changes {
        bail!("stopped after the changes, as asked: the data is kept in {} for incremental runs", data_dir.display());
    }
    let incremental_dry_run = child_run_mode(data_dir, true, ReconcileMode::Incremental).await?;
    report("incremental dry run", &incremental_dry_run);
    let expected = changes.visible();
    let found = incremental_dry_run.found;
    ensure!(
        (found.missing, found.different, found.orphan) == (expected.missing, expected.different, expected.orphan),
        "the incremental dry run found {found:?}; expected {expected:?} (the corrupted rows of untouched documents are for the full run)"
    );
    let incremental_repair = child_run_mode(data_dir, false, ReconcileMode::Incremental).await?;
    report("incremental repairing run", &incremental_repair);
    ensure!(incremental_repair.repaired == expected.total(), "the incremental run repaired {}; expected {}", incremental_repair.repaired, expected.total());
    let full_after = child_run_mode(data_dir, true, ReconcileMode::Full).await?;
    report("full dry run after it", &full_after);
    ensure!(
        (full_after.found.missing, full_after.found.different, full_after.found.orphan) == (0, changes.corrupted, 0),
        "after the incremental repair a full run found {:?}; expected only the {} corrupted rows",
        full_after.found,
        changes.corrupted
    );

    let rebuild = super::measure::child_json(&["rebuild", "--json", "--tenant", TENANT], data_dir, "converge rebuild --json").await?;
    let documents = rebuild["documents"].as_u64().unwrap_or(0) + rebuild["unchanged"].as_u64().unwrap_or(0);
    let rebuild_docs_per_second = documents as f64 * 1000.0 / rebuild["millis"].as_u64().unwrap_or(0).max(1) as f64;
    ensure!(rebuild["documents"].as_u64() == Some(changes.corrupted), "the rebuild wrote {}; the corrupted rows were {}", rebuild["documents"], changes.corrupted);
    eprintln!("  rebuild: {documents} documents in {} ms ({rebuild_docs_per_second:.0} docs/s), peak RSS {} MB", rebuild["millis"], rebuild["peak_rss_mb"]);
    let size = IncrementalBenchSize {
        generated,
        initial_refresh_millis: initial_refresh["millis"].as_u64().unwrap_or(0),
        disk_bytes,
        joindiff,
        full_dry_run,
        full_repair,
        changes,
        incremental_dry_run,
        incremental_repair,
        full_after,
        rebuild,
        rebuild_docs_per_second,
    };
    eprintln!("  the incremental run billed {:.3}% of the full run's reads", size.read_share() * 100.0);
    Ok(size)
}

fn report(name: &str, run: &ChildRun) {
    eprintln!(
        "  {name}: {} ms, found {} missing, {} different, {} orphan, repaired {}, {} source reads, peak RSS {:.0} MB",
        run.millis,
        run.found.missing,
        run.found.different,
        run.found.orphan,
        run.repaired,
        IncrementalBenchSize::reads(run),
        run.peak_rss_kib as f64 / 1024.0
    );
}

fn directory_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// Step 4: 0.1% of the tenant changed through the source as the app writes it, the
/// sync's rows appended for all but one in twenty; drift among untouched documents.
async fn change(data_dir: &Path, records: u64) -> anyhow::Result<Changes> {
    let started = Instant::now();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = MirrorConfig::default();
    let backends = EmbeddedBackends::open(data_dir, clock.clone())?;
    backends.warehouse.ensure_tables(&config).await?;
    let source: Arc<dyn SourceStore> = backends.source_store();
    let warehouse: Arc<dyn Warehouse> = backends.warehouse();
    let pattern = config.routes[0].pattern.clone();
    let path = |index: u64| pattern.document_path(TENANT, &bookkeeping_records::doc_id(index)).expect("a plain pattern");
    let ctx = RowContext { ingested_at: clock.now(), run_id: "bench-incremental-sync".into(), code_version: env!("CARGO_PKG_VERSION").into() };

    let changed = (records / 1_000).max(20);
    let (updates, creates) = (changed * 8 / 10, changed / 10);
    let deletes = changed - updates - creates;
    // Spread over the tenant, away from the generator's drifted indices (x01, x57, x03).
    let stride = (records / (updates + deletes)).max(1);
    let at = |i: u64| (i * stride + 29) % records;
    let updated: Vec<String> = (0..updates).map(|i| path(at(i))).collect();
    let deleted: Vec<String> = (updates..updates + deletes).map(|i| path(at(i))).collect();
    let created: Vec<String> = (0..creates).map(|i| pattern.document_path(TENANT, &format!("new-{i:08}")).expect("a plain pattern")).collect();
    let mut changes = Changes { updated: updates, created: creates, deleted: deletes, ..Changes::default() };

    let lost = |i: usize| i % 20 == 7;
    for (paths, kind) in [(&updated, "update"), (&created, "create"), (&deleted, "delete")] {
        for (batch, chunk) in paths.chunks(WRITE_BATCH).enumerate() {
            let writes: Vec<DocWrite> = chunk
                .iter()
                .enumerate()
                .map(|(i, p)| match kind {
                    "delete" => DocWrite::Delete { path: p.clone() },
                    _ => {
                        let n = (batch * WRITE_BATCH + i) as u64;
                        let mut fields = bookkeeping_records::record(23, records + n, clock.now());
                        fields.insert("amount".into(), Value::Double(n as f64 + 0.5));
                        DocWrite::Set { path: p.clone(), fields }
                    }
                })
                .collect();
            source.apply(bookkeeping_records::stamped(writes)).await?;
            // The sync's rows, except the lost ones.
            let synced: Vec<String> = chunk.iter().enumerate().filter(|(i, _)| !lost(batch * WRITE_BATCH + i)).map(|(_, p)| p.clone()).collect();
            let read = source.get_all(&synced).await?;
            let mut rows = Vec::with_capacity(synced.len());
            for (p, doc) in synced.iter().zip(read.value) {
                let routed = config.route(p).expect("the default route");
                rows.push(match doc {
                    Some(doc) => ChangeRow::live(&routed, Op::Update, &doc, &format!("bench-sync-{p}"), &ctx)?,
                    None => ChangeRow::tombstone(&routed, p, Op::Delete, read.read_time.as_micros(), &format!("bench-sync-delete-{p}"), &ctx),
                });
            }
            warehouse.append(rows).await?;
            let lost_here = (chunk.len() - synced.len()) as u64;
            match kind {
                "update" => changes.lost_updates += lost_here,
                "create" => changes.lost_creates += lost_here,
                _ => changes.lost_deletes += lost_here,
            }
        }
    }

    // Untouched documents, halfway between changed ones, each kind a third of the
    // tenant away from the others: a phantom and a stray tombstone in one range would
    // cancel in its count (what only a full run finds, `converge_core::incremental`).
    let untouched = ((records / 200_000).max(1)).min(records / 4);
    let pick = |i: u64, k: u64| (i * stride + 29 + stride / 2 + k * (records / 3)) % records;
    let mut rows = Vec::new();
    let now = clock.now();
    for i in 0..untouched {
        let phantom = pattern.document_path(TENANT, &format!("{}-phantom", bookkeeping_records::doc_id(pick(i, 0)))).expect("a plain pattern");
        let fields = bookkeeping_records::record(23, 3 * records + i, now);
        let doc = Document { path: phantom.clone(), fields, create_time: now, update_time: Timestamp::from_micros(now.as_micros() - 86_400_000_000) };
        rows.push(ChangeRow::live(&config.route(&phantom).expect("the default route"), Op::Create, &doc, &format!("bench-phantom-{i}"), &ctx)?);
        let stray = path(pick(i, 1));
        let doc = source.get(&stray).await?.context("an untouched document")?;
        rows.push(ChangeRow::tombstone(&config.route(&stray).expect("the default route"), &stray, Op::Delete, doc.update_time.as_micros() + 1, &format!("bench-stray-{i}"), &ctx));
        let corrupt = path(pick(i, 2));
        let mut doc = source.get(&corrupt).await?.context("an untouched document")?;
        doc.fields.insert("amount".into(), Value::Double(-1.0));
        doc.update_time = Timestamp::from_micros(doc.update_time.as_micros() + 1);
        rows.push(ChangeRow::live(&config.route(&corrupt).expect("the default route"), Op::Update, &doc, &format!("bench-corrupt-{i}"), &ctx)?);
    }
    warehouse.append(rows).await?;
    changes.phantoms = untouched;
    changes.stray_tombstones = untouched;
    changes.corrupted = untouched;
    changes.millis = started.elapsed().as_millis() as u64;
    Ok(changes)
}

/// The results as a Markdown table.
pub fn markdown(sizes: &[IncrementalBenchSize]) -> String {
    let mut lines = vec![
        "| documents | run | ms | peak RSS MB | found: missing / different / orphan | billed source reads | count() index entries |".to_owned(),
        "|---|---|---|---|---|---|---|".to_owned(),
    ];
    for size in sizes {
        let row = |name: &str, run: &ChildRun| {
            format!(
                "| {} | {name} | {} | {:.0} | {} / {} / {} | {} | {} |",
                thousands(size.generated.records),
                run.millis,
                run.peak_rss_kib as f64 / 1024.0,
                run.found.missing,
                run.found.different,
                run.found.orphan,
                thousands(IncrementalBenchSize::reads(run)),
                thousands(run.report["cost"]["source_index_entries"].as_u64().unwrap_or(0))
            )
        };
        lines.push(format!(
            "| {} | first full refresh of the current tables (DuckDB limit {INITIAL_REFRESH_MEMORY}) | {} | — | — | — | — |",
            thousands(size.generated.records),
            size.initial_refresh_millis
        ));
        lines.push(row("full, dry run", &size.full_dry_run));
        lines.push(row("full, repairing", &size.full_repair));
        lines.push(row("incremental, dry run", &size.incremental_dry_run));
        lines.push(row("incremental, repairing", &size.incremental_repair));
        lines.push(row("full, dry run after", &size.full_after));
        if let Some(joindiff) = &size.joindiff {
            lines.push(format!(
                "| {} | reladiff joindiff | {:.0} | {:.0} | {} / {} / {} | — | — |",
                thousands(size.generated.records),
                joindiff.millis,
                joindiff.peak_rss_kib as f64 / 1024.0,
                joindiff.missing,
                joindiff.different,
                joindiff.orphan
            ));
        }
        lines.push(format!(
            "| {} | rebuild | {} | {} | {} written | {} docs/s | — |",
            thousands(size.generated.records),
            size.rebuild["millis"],
            size.rebuild["peak_rss_mb"].as_f64().map_or("?".into(), |mb| format!("{mb:.0}")),
            size.rebuild["documents"],
            thousands(size.rebuild_docs_per_second as u64)
        ));
    }
    let mut notes = Vec::new();
    for size in sizes {
        let c = &size.changes;
        notes.push(format!(
            "- {} documents: generated in {:.0} s ({} changelog rows, {:.1} GB on disk); {} documents changed ({} updated, {} created, {} deleted; the sync lost {} / {} / {}); among untouched documents {} phantom rows, {} stray tombstones, {} corrupted rows. The incremental dry run read {} changed documents, counted {} ranges and read {} leaves: **{:.3}%** of the full run's billed reads.",
            thousands(size.generated.records),
            size.generated.millis as f64 / 1000.0,
            thousands(size.generated.changelog_rows),
            size.disk_bytes as f64 / 1e9,
            thousands(c.changed()),
            c.updated,
            c.created,
            c.deleted,
            c.lost_updates,
            c.lost_creates,
            c.lost_deletes,
            c.phantoms,
            c.stray_tombstones,
            c.corrupted,
            size.incremental_dry_run.report["tenants"][0]["changed_docs"],
            size.incremental_dry_run.report["tenants"][0]["ranges_counted"],
            size.incremental_dry_run.report["tenants"][0]["leaves_read"],
            size.read_share() * 100.0
        ));
    }
    lines.join("\n") + "\n\n" + &notes.join("\n")
}

/// Replaces the incremental section of the results file.
pub fn write_results(path: &Path, sizes: &[IncrementalBenchSize]) -> anyhow::Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let section = format!(
        "<!-- bench:incremental:start -->\n## Incremental reconciliation at ten million documents\n\n{}\n\nMeasured {} on {}.\nCommand: `{}` (via `make bench`).\n\n{}\n<!-- bench:incremental:end -->",
        "One tenant on the embedded default (SQLite source, DuckDB warehouse), in one run per size: the reconcile benchmark's data (0.1% of N drifted of each kind), reladiff's joindiff on it, a first full refresh of the current tables (the 15-minute schedule keeps them; it alone runs with DuckDB's limit raised, as a first full refresh of ten million documents needs), full reconcile runs at the default 96 MB (dry, repairing — its read time becomes the verified point — and dry again), then 0.1% of N documents changed as the app writes them (80% updates, 10% creates, 10% deletes; the sync loses one in twenty of each) with drift among untouched documents too (phantom rows, stray tombstones, rows corrupted in place), an incremental dry run (it must find every drift among the changed documents and every phantom and stray tombstone, and cannot see the corrupted rows), an incremental repairing run, a full dry run that must find exactly the corrupted rows, and a rebuild. Every run is its own process (peak resident memory, VmHWM, its own); source reads are counted as Firestore bills them (`converge_core::cost`).",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        super::measure::machine(),
        command.join(" "),
        markdown(sizes)
    );
    super::measure::replace_section(path, "incremental", &section)
}
