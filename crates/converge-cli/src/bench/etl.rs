//! `converge bench etl`: the nightly ETL on the embedded default, on one tenant of a
//! real account's size (~6,090 raw rows a day, 90 days seeded by the ops dataset):
//! the ETL of one day, and the 90-day backfill, each in a fresh pass over the same
//! data directory. Also times the seeding itself (raw rows/s written to SQLite).

use converge_core::RunOutcome;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::NaiveDate;
use converge_backends::EmbeddedBackends;
use converge_core::{MirrorConfig, SystemClock, Warehouse};
use converge_etl::EtlRequest;
use converge_scenarios::raw_exports::{self, OpsOptions};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct EtlBenchReport {
    pub days: u32,
    pub raw_rows: u64,
    pub seed_millis: u64,
    pub seed_rows_per_second: f64,
    pub one_day_millis: u64,
    pub one_day_rows_in: u64,
    pub one_day_rows_out: u64,
    pub backfill_millis: u64,
    pub backfill_rows_in: u64,
    pub backfill_rows_out: u64,
    pub backfill_rows_per_second: f64,
    pub rerun_one_day_millis: u64,
    pub peak_rss_mb: f64,
}

pub struct EtlBenchOptions {
    pub days: u32,
    pub data_dir: Option<PathBuf>,
    pub results: Option<PathBuf>,
}

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).expect("a date")
}

pub async fn run(options: EtlBenchOptions) -> anyhow::Result<EtlBenchReport> {
    let data_dir = options.data_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("converge-bench-etl"));
    // A fresh directory: the seeding and the ETL are what is measured.
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).with_context(|| format!("removing the old {}", data_dir.display()))?;
    }
    let mirror = MirrorConfig::default();
    let backends = EmbeddedBackends::open_for(&data_dir, Arc::new(SystemClock), &mirror)?;
    backends.warehouse.ensure_tables(&mirror).await?;
    let ops = OpsOptions { batch: 5_000, ..OpsOptions::new(vec!["acme".into()], first_day(), options.days) };
    let seeded = raw_exports::seed(&backends.source, &ops).await.context("seeding the raw collections")?;
    eprintln!("seeded {} raw rows in {} ms", seeded.rows, seeded.millis);
    let runner = converge_scenarios::embedded_etl::runner(&backends, Arc::new(SystemClock));
    runner.ensure_tables().await?;
    let last = ops.last_day();

    let started = Instant::now();
    let one = runner.run(EtlRequest { late_days: Some(0), ..EtlRequest::for_date(last) }).await?;
    let one_day_millis = started.elapsed().as_millis() as u64;
    anyhow::ensure!(one.outcome == RunOutcome::Ok, "the one-day ETL did not load: {}", serde_json::to_string(&one)?);

    let started = Instant::now();
    let all = runner.run(EtlRequest { from: Some(first_day()), ..EtlRequest::for_date(last) }).await?;
    let backfill_millis = started.elapsed().as_millis() as u64;
    anyhow::ensure!(all.outcome == RunOutcome::Ok, "the backfill did not load everything: {} failed slices", all.failed_slices);

    let before = converge_core::MetricsWarehouse::slice_metrics(&backends.warehouse, "acme", last).await?;
    let started = Instant::now();
    runner.run(EtlRequest { late_days: Some(0), ..EtlRequest::for_date(last) }).await?;
    let rerun_one_day_millis = started.elapsed().as_millis() as u64;
    let after = converge_core::MetricsWarehouse::slice_metrics(&backends.warehouse, "acme", last).await?;
    anyhow::ensure!(before == after, "re-running the ETL of {last} changed its slice");

    let report = EtlBenchReport {
        days: options.days,
        raw_rows: seeded.rows,
        seed_millis: seeded.millis,
        seed_rows_per_second: seeded.rows as f64 / (seeded.millis.max(1) as f64 / 1000.0),
        one_day_millis,
        one_day_rows_in: one.rows_in,
        one_day_rows_out: one.rows_out,
        backfill_millis,
        backfill_rows_in: all.rows_in,
        backfill_rows_out: all.rows_out,
        backfill_rows_per_second: all.rows_in as f64 / (backfill_millis.max(1) as f64 / 1000.0),
        rerun_one_day_millis,
        peak_rss_mb: super::measure::memory_kib().1 as f64 / 1024.0,
    };
    if let Some(path) = &options.results {
        super::measure::replace_section(path, "etl", &render_results(&report))?;
    }
    Ok(report)
}

fn render_results(r: &EtlBenchReport) -> String {
    format!(
        "<!-- bench:etl:start -->\n## Nightly ETL\n\n\
         `converge bench etl` (`make bench-etl`), {date}: one tenant of a real account's size on the embedded default \
         (SQLite raw collections with the date index, DuckDB metrics tables), {days} days of raw rows from the ops dataset \
         (`crates/converge-scenarios/src/raw_exports.rs`, seed 42). Each ETL reads the day's seven raw collections by date, \
         validates every record, rolls them up to every vocabulary metric, runs the quality checks and replaces the slice \
         in one DuckDB transaction, with a run record per slice.\n\n\
         | step | raw rows | metric rows out | time | raw rows/s |\n|---|---|---|---|---|\n\
         | seed the raw collections | {raw} | – | {seed} ms | {seed_rate:.0} |\n\
         | ETL of one day | {one_in} | {one_out} | {one} ms | {one_rate:.0} |\n\
         | ETL of one day again (re-run; the slice compared: unchanged) | {one_in} | {one_out} | {rerun} ms | – |\n\
         | ETL of all {days} days (backfill, no cap) | {all_in} | {all_out} | {all} ms | {all_rate:.0} |\n\n\
         Peak RSS of the whole run: {rss:.0} MB. Measured on {machine}.\nCommand: `{command}` (via `make bench`).\n<!-- bench:etl:end -->",
        date = chrono::Utc::now().format("%Y-%m-%d"),
        days = r.days,
        raw = r.raw_rows,
        seed = r.seed_millis,
        seed_rate = r.seed_rows_per_second,
        one_in = r.one_day_rows_in,
        one_out = r.one_day_rows_out,
        one = r.one_day_millis,
        one_rate = r.one_day_rows_in as f64 / (r.one_day_millis.max(1) as f64 / 1000.0),
        rerun = r.rerun_one_day_millis,
        all_in = r.backfill_rows_in,
        all_out = r.backfill_rows_out,
        all = r.backfill_millis,
        all_rate = r.backfill_rows_per_second,
        rss = r.peak_rss_mb,
        machine = super::measure::machine(),
        command = std::env::args().collect::<Vec<_>>().join(" "),
    )
}
