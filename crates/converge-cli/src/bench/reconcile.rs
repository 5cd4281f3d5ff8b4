//! `converge bench reconcile`: the reconciler measured on the embedded default
//! (SQLite source, DuckDB warehouse), beside the general-purpose diff tool reladiff on
//! the same data.
//!
//! For each size N:
//!
//! 1. **Data**, streamed in batches (never a whole tenant in memory): N documents
//!    written through the source store; the matching changelog rows appended straight
//!    to the warehouse (no HTTP), each versioned at the commit time the source
//!    answered. Then 0.1% of N of each kind of drift, deterministic: *missing*
//!    (a source document whose row was never appended), *different* (a row of an
//!    older version, half of them with other content too), *orphan* (a row for a
//!    document the source never had). Half of each kind gets a matching open sync
//!    error (known), the other half none (silent).
//! 2. **reladiff**: the source's states and the latest view's states exported into
//!    their own DuckDB file (`source_states`, `derived_states`: doc_id, doc_path,
//!    version, content_hash) and diffed by reladiff keyed on doc_id (reladiff takes
//!    text keys only of letters, digits, space, `-` and `_`, so not paths), with both of its
//!    algorithms; the diff alone is timed, the export separately.
//! 3. **Ours**: the reconciler run in a child process (so its peak resident memory,
//!    VmHWM, is its own): a dry run, a repairing run, then a dry run that must find
//!    nothing. Every count must equal what was injected, or the benchmark fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use converge_backends::EmbeddedBackends;
use converge_core::{Clock, MirrorConfig, ReconcileMode, SourceStore, SystemClock, Warehouse};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::drifted_tenant::{generate, DriftCounts, Generated, TENANT};
use super::measure::memory_kib;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildRun {
    pub dry_run: bool,
    pub found: DriftCounts,
    pub repaired: u64,
    pub source_docs_read: u64,
    /// The reconciler's own duration.
    pub millis: u64,
    /// Wall clock around `Reconciler::run` in the child.
    pub wall_millis: u64,
    /// Resident memory before the run and at its peak (VmHWM), KiB.
    pub rss_before_kib: u64,
    pub peak_rss_kib: u64,
    /// The run as the reconciler reported it.
    pub report: serde_json::Value,
}

/// reladiff's figures for one algorithm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReladiffRun {
    pub algorithm: String,
    pub millis: f64,
    pub missing: u64,
    pub different: u64,
    pub orphan: u64,
    pub diff_rows: u64,
    #[serde(default)]
    pub peak_rss_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reladiff {
    pub version: String,
    pub duckdb_version: String,
    /// Our export of both sides' states into reladiff's DuckDB file.
    pub export_millis: u64,
    pub runs: Vec<ReladiffRun>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub generated: Generated,
    pub dry_run: ChildRun,
    pub repair: ChildRun,
    pub after_repair: ChildRun,
    pub reladiff: Option<Reladiff>,
}

impl SizeResult {
    pub fn docs_per_second(run: &ChildRun) -> f64 {
        run.source_docs_read as f64 / (run.millis.max(1) as f64 / 1000.0)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileBenchResult {
    pub sizes: Vec<SizeResult>,
}

/// Options of `converge bench reconcile`.
#[derive(Debug, Clone)]
pub struct ReconcileBenchOptions {
    pub records: Vec<u64>,
    /// Python of the venv where reladiff is installed; `None` skips reladiff.
    pub reladiff_python: Option<PathBuf>,
    /// reladiff's driver script.
    pub reladiff_script: PathBuf,
    /// Keep the data directories (for inspection).
    pub keep: bool,
}

pub async fn run(options: &ReconcileBenchOptions) -> anyhow::Result<ReconcileBenchResult> {
    let mut sizes = Vec::new();
    for &records in &options.records {
        let data_dir = std::env::temp_dir().join(format!("converge-bench-reconcile-{records}-{}", uuid::Uuid::new_v4()));
        let result = one_size(records, &data_dir, options).await;
        if options.keep {
            eprintln!("kept {}", data_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
        sizes.push(result?);
    }
    Ok(ReconcileBenchResult { sizes })
}

async fn one_size(records: u64, data_dir: &Path, options: &ReconcileBenchOptions) -> anyhow::Result<SizeResult> {
    eprintln!("reconcile bench, {records} documents: generating in {}…", data_dir.display());
    let generated = generate(data_dir, records).await?;
    let injected = generated.injected;
    eprintln!(
        "  {} source documents, {} changelog rows, drift injected: {} missing, {} different, {} orphan ({} known, {} silent) in {} ms",
        generated.source_docs, generated.changelog_rows, injected.missing, injected.different, injected.orphan, injected.known, injected.silent, generated.millis
    );

    let reladiff = match &options.reladiff_python {
        Some(python) => {
            let export_started = Instant::now();
            let file = data_dir.join("reladiff.duckdb");
            export_states(data_dir, &file).await.context("exporting states for reladiff")?;
            let export_millis = export_started.elapsed().as_millis() as u64;
            eprintln!("  exported states for reladiff in {export_millis} ms");
            let mut runs = Vec::new();
            let mut versions = (String::new(), String::new());
            for algorithm in ["joindiff", "hashdiff"] {
                let (run, reladiff_version, duckdb_version) = run_reladiff(python, &options.reladiff_script, &file, algorithm)?;
                eprintln!(
                    "  reladiff {algorithm}: {:.0} ms, {} missing, {} different, {} orphan",
                    run.millis, run.missing, run.different, run.orphan
                );
                ensure!(
                    (run.missing, run.different, run.orphan) == (injected.missing, injected.different, injected.orphan),
                    "reladiff ({algorithm}) found {} missing, {} different, {} orphan; injected {} / {} / {}",
                    run.missing,
                    run.different,
                    run.orphan,
                    injected.missing,
                    injected.different,
                    injected.orphan
                );
                versions = (reladiff_version, duckdb_version);
                runs.push(run);
            }
            let _ = std::fs::remove_file(&file);
            Some(Reladiff { version: versions.0, duckdb_version: versions.1, export_millis, runs })
        }
        None => None,
    };

    let dry_run = child_run(data_dir, true).await?;
    report_run("dry run", &dry_run);
    check_found("dry run", &dry_run, &injected, 0)?;
    let repair = child_run(data_dir, false).await?;
    report_run("repairing run", &repair);
    check_found("repairing run", &repair, &injected, injected.total())?;
    let after_repair = child_run(data_dir, true).await?;
    report_run("after repair", &after_repair);
    check_found("the run after repair", &after_repair, &DriftCounts::default(), 0)?;
    Ok(SizeResult { generated, dry_run, repair, after_repair, reladiff })
}

fn report_run(name: &str, run: &ChildRun) {
    eprintln!(
        "  {name}: {} ms ({:.0} docs/s), found {} missing, {} different, {} orphan ({} known, {} silent), repaired {}, peak RSS {:.0} MB",
        run.millis,
        SizeResult::docs_per_second(run),
        run.found.missing,
        run.found.different,
        run.found.orphan,
        run.found.known,
        run.found.silent,
        run.repaired,
        run.peak_rss_kib as f64 / 1024.0
    );
}

fn check_found(name: &str, run: &ChildRun, expected: &DriftCounts, repaired: u64) -> anyhow::Result<()> {
    if run.found != *expected || run.repaired != repaired {
        bail!(
            "{name}: the reconciler found {:?} and repaired {}; expected {:?} and {} repairs",
            run.found,
            run.repaired,
            expected,
            repaired
        );
    }
    Ok(())
}

/// Exports the source's document states and the latest view's into their own DuckDB
/// file, as tables `source_states` and `derived_states` (doc_id, doc_path, version,
/// content_hash). One tenant, so doc_id is a key.
pub async fn export_states(data_dir: &Path, file: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(file);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let source = converge_sqlite::SqliteStore::open(&EmbeddedBackends::source_path(data_dir), clock, converge_events::EventSource::local())?;
    let scope = MirrorConfig::default().routes[0].pattern.tenant_scope(TENANT).expect("a valid tenant id");
    let mut scan = source.scan_states(&scope).await?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<converge_core::DocState>>(4);
    let file_owned = file.to_owned();
    let warehouse_path = EmbeddedBackends::warehouse_path(data_dir);
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let connection = duckdb::Connection::open(&file_owned)?;
        connection.execute_batch(
            "CREATE TABLE source_states (doc_id VARCHAR NOT NULL, doc_path VARCHAR NOT NULL, version TIMESTAMP NOT NULL, content_hash VARCHAR NOT NULL)",
        )?;
        {
            let mut appender = connection.appender("source_states")?;
            while let Some(chunk) = receiver.blocking_recv() {
                for state in chunk {
                    let doc_id = state.doc_path.rsplit('/').next().unwrap_or_default().to_owned();
                    appender.append_row(duckdb::params![
                        doc_id,
                        state.doc_path,
                        duckdb::types::Value::Timestamp(duckdb::types::TimeUnit::Microsecond, state.version),
                        state.content_hash
                    ])?;
                }
            }
            appender.flush()?;
        }
        let warehouse = warehouse_path.to_str().context("warehouse path is not UTF-8")?.replace('\'', "''");
        connection.execute_batch(&format!("ATTACH '{warehouse}' AS wh (READ_ONLY)"))?;
        connection.execute(
            "CREATE TABLE derived_states AS SELECT doc_id, doc_path, version, content_hash FROM wh.records_latest WHERE tenant = ?",
            duckdb::params![TENANT],
        )?;
        connection.execute_batch("DETACH wh; CHECKPOINT")?;
        Ok(())
    });
    let mut chunk = Vec::with_capacity(4096);
    while let Some(state) = scan.items.next().await {
        chunk.push(state?);
        if chunk.len() == 4096 && sender.send(std::mem::take(&mut chunk)).await.is_err() {
            break;
        }
    }
    if !chunk.is_empty() {
        let _ = sender.send(chunk).await;
    }
    drop(sender);
    writer.await??;
    Ok(())
}

/// Runs reladiff's driver script on `file` with one algorithm; returns its figures and
/// the versions of reladiff and DuckDB it ran.
pub fn run_reladiff(python: &Path, script: &Path, file: &Path, algorithm: &str) -> anyhow::Result<(ReladiffRun, String, String)> {
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(file)
        .arg(algorithm)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !output.status.success() {
        bail!("reladiff ({algorithm}) failed: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().context("reladiff's driver printed nothing")?;
    let value: serde_json::Value = serde_json::from_str(line).with_context(|| format!("reladiff's driver printed {line}"))?;
    let run: ReladiffRun = serde_json::from_value(value.clone())?;
    let version = value["reladiff_version"].as_str().unwrap_or("?").to_owned();
    let duckdb_version = value["duckdb_version"].as_str().unwrap_or("?").to_owned();
    Ok((run, version, duckdb_version))
}

/// Runs `converge bench reconcile-one` on `data_dir` in a child process.
async fn child_run(data_dir: &Path, dry_run: bool) -> anyhow::Result<ChildRun> {
    child_run_mode(data_dir, dry_run, ReconcileMode::Full).await
}

/// [`child_run`] in either mode.
pub async fn child_run_mode(data_dir: &Path, dry_run: bool, mode: ReconcileMode) -> anyhow::Result<ChildRun> {
    let me = std::env::current_exe()?;
    let mut command = tokio::process::Command::new(me);
    command.args(["bench", "reconcile-one", "--tenant", TENANT, "--mode", mode.as_str(), "--data-dir"]).arg(data_dir);
    if dry_run {
        command.arg("--dry-run");
    }
    let output = command.stderr(std::process::Stdio::inherit()).output().await.context("starting the reconciler's child process")?;
    if !output.status.success() {
        bail!("the reconciler's child process failed: {}", output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().context("the reconciler's child process printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("the reconciler's child process printed {line}"))
}

/// The child's side: one reconciler run on `data_dir`, printed as one JSON line.
pub async fn reconcile_one(data_dir: &Path, tenant: &str, dry_run: bool, mode: ReconcileMode) -> anyhow::Result<ChildRun> {
    let (rss_before_kib, _) = memory_kib();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = MirrorConfig::default();
    let backends = EmbeddedBackends::open(data_dir, clock.clone()).context("opening the embedded stores")?;
    backends.warehouse.ensure_tables(&config).await?;
    let started = Instant::now();
    let report = run_reconciler(&backends, config, clock, tenant, dry_run, mode).await?;
    let wall_millis = started.elapsed().as_millis() as u64;
    let (_, peak_rss_kib) = memory_kib();
    let count = |name: &str| report[name].as_u64().unwrap_or(0);
    Ok(ChildRun {
        dry_run,
        found: DriftCounts {
            missing: count("missing"),
            different: count("different"),
            orphan: count("orphan"),
            known: count("known"),
            silent: count("silent"),
        },
        repaired: count("repaired"),
        source_docs_read: count("source_docs_read"),
        millis: count("millis"),
        wall_millis,
        rss_before_kib,
        peak_rss_kib,
        report,
    })
}

async fn run_reconciler(
    backends: &EmbeddedBackends,
    config: MirrorConfig,
    clock: Arc<dyn Clock>,
    tenant: &str,
    dry_run: bool,
    mode: ReconcileMode,
) -> anyhow::Result<serde_json::Value> {
    let reconciler = converge_reconcile::Reconciler::new(backends.source_store(), backends.error_log(), backends.warehouse(), config, clock);
    let options = converge_reconcile::RunOptions { tenant: Some(tenant.to_owned()), dry_run, mode, ..Default::default() };
    let run = reconciler.run_with(options).await?;
    let mut report = serde_json::to_value(&run)?;
    // The silent documents are named in the reconciler's log; the figures need only counts.
    if let Some(tenants) = report["tenants"].as_array_mut() {
        for t in tenants {
            if let Some(object) = t.as_object_mut() {
                object.remove("silent_docs");
            }
        }
    }
    Ok(report)
}

/// The results as a Markdown table.
pub fn markdown(result: &ReconcileBenchResult) -> String {
    let mut lines = vec![
        "| documents | drift injected: missing / different / orphan (known / silent) | found (dry run) | dry run ms | repairing run ms | docs/s (dry run) | peak RSS MB | reladiff joindiff ms | reladiff hashdiff ms |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for size in &result.sizes {
        let i = &size.generated.injected;
        let f = &size.dry_run.found;
        let reladiff = |algorithm: &str| {
            size.reladiff
                .as_ref()
                .and_then(|r| r.runs.iter().find(|run| run.algorithm == algorithm))
                .map_or("—".to_owned(), |run| format!("{:.0}", run.millis))
        };
        let peak = size.dry_run.peak_rss_kib.max(size.repair.peak_rss_kib) as f64 / 1024.0;
        lines.push(format!(
            "| {} | {} / {} / {} ({} / {}) | {} / {} / {} ({} / {}) | {} | {} | {:.0} | {:.0} | {} | {} |",
            thousands(size.generated.records),
            i.missing,
            i.different,
            i.orphan,
            i.known,
            i.silent,
            f.missing,
            f.different,
            f.orphan,
            f.known,
            f.silent,
            size.dry_run.millis,
            size.repair.millis,
            SizeResult::docs_per_second(&size.dry_run),
            peak,
            reladiff("joindiff"),
            reladiff("hashdiff"),
        ));
    }
    let mut notes = Vec::new();
    for size in &result.sizes {
        let mut note = format!(
            "- {} documents: data generated in {} ms ({} changelog rows); the repairing run appended {} repairs; the run after it found nothing",
            thousands(size.generated.records),
            size.generated.millis,
            size.generated.changelog_rows,
            size.repair.repaired
        );
        if let Some(r) = &size.reladiff {
            note.push_str(&format!("; our export of both sides' states for reladiff took {} ms (not counted in its figures)", r.export_millis));
        }
        note.push('.');
        notes.push(note);
    }
    lines.join("\n") + "\n\n" + &notes.join("\n")
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Replaces the reconcile section of the results file.
pub fn write_results(path: &Path, result: &ReconcileBenchResult) -> anyhow::Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let reladiff_about = result
        .sizes
        .iter()
        .find_map(|s| s.reladiff.as_ref())
        .map_or("reladiff was not run (no `--reladiff-python`).".to_owned(), |r| {
            format!(
                "reladiff {} (PyPI, with the `duckdb` Python package {}) diffs the same states, exported by us into their own DuckDB file as `source_states` and `derived_states` (doc_id, doc_path, version, content_hash), keyed on doc_id (one tenant; reladiff refuses text keys with characters other than letters, digits, space, `-` and `_`, so not the path), comparing version and content_hash: **joindiff** is its algorithm for two tables in one database (one outer join), **hashdiff** its algorithm across databases (checksums of key ranges, bisected down to rows), the one that applies when the source is Firestore and the warehouse BigQuery. Its figures are the diff alone, timed inside Python from the first query to the last difference, excluding the export and Python's start-up; it finds exactly what was injected.",
                r.version, r.duckdb_version
            )
        });
    let section = format!(
        "<!-- bench:reconcile:start -->\n## Reconciliation\n\n{}\n\n{}\n\nMeasured {} on {}.\nCommand: `{}` (via `make bench`).\n\n{}\n<!-- bench:reconcile:end -->",
        "One tenant of N documents on the embedded default (SQLite source, DuckDB warehouse) with 0.1% of N drifted of each kind: missing (a source document without its row), different (a row of an older version, half of them with other content too), orphan (a live row for a document the source does not have); half of each kind has an open sync error (known), half none (silent). `converge reconcile` compares the source's (path, version, content hash) with the latest view's, streamed and merged in path order. Each run is its own process, so its peak resident memory (VmHWM) is its own: a dry run, a repairing run (REPAIR rows and tombstones appended, errors resolved), and a dry run after it that must find nothing; the benchmark fails if any count differs from what was injected.",
        reladiff_about,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        super::measure::machine(),
        command.join(" "),
        markdown(result)
    );
    super::measure::replace_section(path, "reconcile", &section)
}
