//! `converge bench …`: the benchmarks, one module each, and the command that picks one.
//!
//! # Layout
//!
//! - [`measure`]: what every benchmark measures and writes the same way: the machine's
//!   description, resident memory and CPU time from `/proc`, the results file's sections.
//! - [`sync`]: `converge bench sync`, the sync path measured over loopback HTTP.
//! - [`drifted_tenant`]: one tenant of N documents whose warehouse rows drifted 0.1% of
//!   each kind, the data of the reconcile and rebuild benchmarks.
//! - [`reconcile`]: `converge bench reconcile`, reconciliation beside reladiff.
//! - [`incremental`]: `converge bench incremental`, full and incremental
//!   reconciliation and rebuild of one tenant up to ten million documents, beside
//!   reladiff's joindiff.
//! - [`rebuild`]: `converge bench rebuild`, rebuild throughput and memory.
//! - [`compact`]: `converge bench compact`, compaction of one tenant with a superseded
//!   version per document, and its report on the latest view and the current table.
//! - [`etl`]: `converge bench etl`, the nightly ETL of one day and of 90 days.
//! - [`detect`]: `converge bench detect`, the whole pack over 90 days of metrics.
//! - [`detect_accuracy`]: the second part of `converge bench detect`, the pack's
//!   measured recall and false positives on synthetic data with planted effects, with
//!   its tests and without.
//! - [`status`]: `converge bench status`, the status page's server time over the demo's
//!   workspace.
//!
//! Dependencies point one way: this command → the benchmarks → `drifted_tenant` and
//! `measure`.

use std::path::PathBuf;

use clap::Subcommand;

pub mod compact;
pub mod detect;
pub mod detect_accuracy;
pub mod drifted_tenant;
pub mod etl;
pub mod incremental;
pub mod measure;
pub mod rebuild;
pub mod reconcile;
pub mod status;
pub mod sync;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The on-write sync path over loopback HTTP.
    Sync {
        /// Events sent in the saturation run.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Concurrent connections in the saturation run. 1000 is the most requests one
        /// Cloud Run instance accepts at once, i.e. how Eventarc can load one instance.
        #[arg(long, default_value_t = 1000)]
        concurrency: usize,
        /// Offered load of the fixed-rate run, events/s.
        #[arg(long, default_value_t = 5_000)]
        rate: u64,
        /// Duration of the fixed-rate run, seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Duration of the sustained run at the same rate, seconds (0 skips it). Long
        /// enough by default that DuckDB checkpoints its WAL during it, which the short
        /// run never sees.
        #[arg(long, default_value_t = 120)]
        sustained_seconds: u64,
        /// The on-write-sync binary (default: next to this one).
        #[arg(long)]
        server_bin: Option<PathBuf>,
        /// Update this results file's sync section (e.g. bench/RESULTS.md).
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Reconciliation of one tenant with 0.1% drift of each kind, beside reladiff.
    Reconcile {
        /// Tenant sizes, documents (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [300_000u64, 1_000_000])]
        records: Vec<u64>,
        /// Python of the venv where reladiff is installed (`make reladiff`); without
        /// it, reladiff is skipped.
        #[arg(long)]
        reladiff_python: Option<PathBuf>,
        /// reladiff's driver script.
        #[arg(long, default_value = "tools/reladiff/diff.py")]
        reladiff_script: PathBuf,
        /// Update this results file's reconcile section (e.g. bench/RESULTS.md).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Keep the generated data directories.
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        json: bool,
    },
    /// Full and incremental reconciliation (after 0.1% of the tenant changed, with
    /// drift among changed and untouched documents) and rebuild, each run in its own
    /// process, beside reladiff's joindiff.
    Incremental {
        /// Tenant sizes, documents (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [1_000_000u64, 10_000_000])]
        records: Vec<u64>,
        /// Python of the venv where reladiff is installed; without it, reladiff is skipped.
        #[arg(long)]
        reladiff_python: Option<PathBuf>,
        #[arg(long, default_value = "tools/reladiff/diff.py")]
        reladiff_script: PathBuf,
        /// Update this results file's incremental section (e.g. bench/RESULTS.md).
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long)]
        keep: bool,
        /// Stop once the documents are changed, before any incremental run, keeping the
        /// data directory: to profile incremental runs on it (`bench reconcile-one
        /// --mode incremental --dry-run --data-dir …`). Implies --keep.
        #[arg(long, hide = true)]
        stop_after_changes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild of one tenant of N documents on the embedded default: documents/s and
    /// peak memory, each size in its own process.
    Rebuild {
        /// Tenant sizes, documents (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [300_000u64, 1_000_000])]
        records: Vec<u64>,
        /// Update this results file's rebuild section (e.g. bench/RESULTS.md).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Keep the generated data directories.
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        json: bool,
    },
    /// The status page's server time over the demo's workspace (made by the demo in a
    /// temporary directory unless --data-dir names one that has it).
    Status {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Records of the demo's large tenant, when the bench makes the workspace.
        #[arg(long, default_value_t = 300_000)]
        records: u64,
        /// Page loads measured.
        #[arg(long, default_value_t = 20)]
        loads: usize,
        /// Update this results file's status section (e.g. bench/RESULTS.md).
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Compaction of one tenant of N documents with one superseded version each, in a
    /// child process (time, peak memory), and the report on the current table.
    Compact {
        /// Tenant sizes, documents (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [1_000_000u64])]
        records: Vec<u64>,
        /// Update this results file's compaction section (e.g. bench/RESULTS.md).
        #[arg(long)]
        results: Option<PathBuf>,
        /// Keep the generated data directories.
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        json: bool,
    },
    /// The whole detector pack over 90 days of metrics at the demo's scale (DuckDB):
    /// wall time of the pack and per detector; then its recall and false positives on
    /// synthetic data with planted effects (its own section, `detect-accuracy`).
    Detect {
        /// Tenants, each at one real account's scale.
        #[arg(long, default_value_t = 4)]
        tenants: usize,
        /// Passes of the whole pack (the first opens opportunities, the rest update).
        #[arg(long, default_value_t = 5)]
        passes: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Data directory (replaced; the accuracy part uses a sibling, `…-accuracy`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Update this results file's detect and detect-accuracy sections (e.g.
        /// bench/RESULTS.md).
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The nightly ETL on one tenant of a real account's size: one day, and a backfill
    /// of every seeded day (90 by default), on the embedded default.
    Etl {
        /// Days of raw data seeded (and backfilled).
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Data directory (replaced; default: converge-bench-etl in the temp directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Update this results file's etl section (e.g. bench/RESULTS.md).
        #[arg(long)]
        results: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// One reconciler run in this process, printed as one JSON line with its peak
    /// resident memory (the reconcile benchmark runs each in its own process).
    #[command(hide = true)]
    ReconcileOne {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = drifted_tenant::TENANT)]
        tenant: String,
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "full")]
        mode: converge_core::ReconcileMode,
    },
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Sync { events, concurrency, rate, seconds, sustained_seconds, server_bin, results, json } => {
            let server_bin = match server_bin {
                Some(path) => path,
                None => sync::sibling_binary("on-write-sync")?,
            };
            let result = sync::run(events, concurrency, rate, seconds, sustained_seconds, &server_bin).await?;
            report(&result, results.as_deref(), sync::write_results, json, |result| println!("{}", sync::markdown(result)))
        }
        BenchCommand::Reconcile { records, reladiff_python, reladiff_script, results, keep, json } => {
            let options = reconcile::ReconcileBenchOptions { records, reladiff_python, reladiff_script, keep };
            let result = reconcile::run(&options).await?;
            report(&result, results.as_deref(), reconcile::write_results, json, |result| println!("{}", reconcile::markdown(result)))
        }
        BenchCommand::Incremental { records, reladiff_python, reladiff_script, results, keep, stop_after_changes, json } => {
            let options = incremental::IncrementalBenchOptions { records, reladiff_python, reladiff_script, keep: keep || stop_after_changes, stop_after_changes };
            let sizes = incremental::run(&options).await?;
            report(&sizes, results.as_deref(), |path, sizes| incremental::write_results(path, sizes), json, |sizes| println!("{}", incremental::markdown(sizes)))
        }
        BenchCommand::Rebuild { records, results, keep, json } => {
            let sizes = rebuild::run(&records, keep).await?;
            report(&sizes, results.as_deref(), |path, sizes| rebuild::write_results(path, sizes), json, |_| {})
        }
        BenchCommand::Status { data_dir, records, loads, results, json } => {
            let result = status::run(data_dir, records, loads).await?;
            report(&result, results.as_deref(), status::write_results, json, |result| {
                eprintln!("status page over {} tenants, {} source documents: median {:.1} ms, p95 {:.1} ms, slowest {:.1} ms", result.tenants, result.source_docs, result.median_ms, result.p95_ms, result.max_ms)
            })
        }
        BenchCommand::Compact { records, results, keep, json } => {
            let sizes = compact::run(&records, keep).await?;
            report(&sizes, results.as_deref(), |path, sizes| compact::write_results(path, sizes), json, |_| {})
        }
        BenchCommand::Detect { tenants, passes, concurrency, data_dir, results, json } => {
            let data_dir = data_dir.unwrap_or_else(detect::default_data_dir);
            let result = detect::run(&data_dir, tenants, passes, concurrency).await?;
            report(&result, results.as_deref(), detect::write_results, json, |result| {
                eprintln!(
                    "{} metric rows ({} tenants, generated in {} ms); whole pack p50 {} ms, max {} ms over {} passes; {} findings, {} failed",
                    result.metric_rows, result.tenants, result.generate_ms, result.pack_p50_ms, result.pack_max_ms, result.passes, result.findings, result.failed
                )
            })?;
            // Then the pack's accuracy, on its own data (a second JSON line with --json).
            let accuracy = detect_accuracy::run(&detect_accuracy::data_dir_beside(&data_dir)).await?;
            report(&accuracy, results.as_deref(), detect_accuracy::write_results, json, |accuracy| {
                for line in detect_accuracy::summary_lines(accuracy) {
                    eprintln!("{line}");
                }
            })
        }
        BenchCommand::Etl { days, data_dir, results, json } => {
            // The ETL benchmark writes its own section as it goes (it needs the seed's figures first).
            let result = etl::run(etl::EtlBenchOptions { days, data_dir, results: results.clone() }).await?;
            report(&result, results.as_deref(), |_, _| Ok(()), json, |report| {
                eprintln!(
                    "{} raw rows seeded in {} ms; ETL of one day {} ms ({} rows in, {} out); {} days {} ms ({:.0} raw rows/s); peak RSS {:.0} MB",
                    report.raw_rows, report.seed_millis, report.one_day_millis, report.one_day_rows_in, report.one_day_rows_out, report.days,
                    report.backfill_millis, report.backfill_rows_per_second, report.peak_rss_mb
                )
            })
        }
        BenchCommand::ReconcileOne { data_dir, tenant, dry_run, mode } => {
            let run = reconcile::reconcile_one(&data_dir, &tenant, dry_run, mode).await?;
            println!("{}", serde_json::to_string(&run)?);
            Ok(())
        }
    }
}

/// What every benchmark does with its result: replaces its section of the results file
/// (when asked), then prints its JSON (`--json`) or its text.
fn report<T: serde::Serialize>(
    result: &T,
    results: Option<&std::path::Path>,
    write_results: impl FnOnce(&std::path::Path, &T) -> anyhow::Result<()>,
    json: bool,
    text: impl FnOnce(&T),
) -> anyhow::Result<()> {
    if let Some(path) = results {
        write_results(path, result)?;
        eprintln!("wrote {}", path.display());
    }
    if json {
        println!("{}", serde_json::to_string(result)?);
    } else {
        text(result);
    }
    Ok(())
}
