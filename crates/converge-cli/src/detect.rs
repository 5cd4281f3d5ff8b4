//! `converge detect`: one detector pass on a data directory (DuckDB warehouse, SQLite
//! opportunities), through the same runner the detector-runner function uses.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use converge_backends::EmbeddedBackends;
use converge_core::{Clock, SystemClock};
use converge_detect::Pack;
use converge_detector_runner::{DetectRequest, DetectRun, DetectorRunner, RunnerOptions};

pub struct DetectOptions {
    pub data_dir: PathBuf,
    /// The run date; the latest date in `daily_entity_metrics` when absent.
    pub as_of: Option<NaiveDate>,
    pub tenants: Option<Vec<String>>,
    pub concurrency: usize,
}

/// Runs one pass and returns its report (also recorded in `converge_runs`).
pub async fn run(options: DetectOptions) -> anyhow::Result<DetectRun> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let backends = EmbeddedBackends::open(&options.data_dir, clock.clone()).context("opening the data directory")?;
    let warehouse = backends.warehouse.clone();
    converge_core::Warehouse::ensure_tables(&warehouse, &converge_core::MirrorConfig::default()).await?;
    let as_of = match options.as_of {
        Some(date) => date,
        None => latest_metrics_date(&warehouse).await?,
    };
    let runner = DetectorRunner::new(
        Pack::shipped()?,
        Arc::new(warehouse.clone()),
        Arc::new(warehouse),
        Arc::new(backends.source.clone()),
        clock,
        RunnerOptions { concurrency: options.concurrency, ..RunnerOptions::default() },
    );
    Ok(runner.run(DetectRequest { as_of, tenants: options.tenants, detectors: None }).await?)
}

/// The newest day the nightly ETL has loaded: what a pass on a laptop usually means.
async fn latest_metrics_date(warehouse: &converge_duckdb::DuckWarehouse) -> anyhow::Result<NaiveDate> {
    let rows = warehouse
        .query_json("SELECT CAST(max(date) AS VARCHAR) AS latest FROM daily_entity_metrics")
        .await
        .context("reading the latest date of daily_entity_metrics (has `converge etl` run? or pass --as-of YYYY-MM-DD)")?;
    let latest = rows.first().and_then(|row| row["latest"].as_str()).context(
        "daily_entity_metrics is empty: run `converge etl` first, or pass --as-of YYYY-MM-DD",
    )?;
    NaiveDate::parse_from_str(latest, "%Y-%m-%d").with_context(|| format!("latest date {latest:?} is not YYYY-MM-DD"))
}

/// The pass as a short table: one line per finding, then the counts.
pub fn render(run: &DetectRun) -> String {
    let mut out = String::new();
    for f in &run.findings {
        out.push_str(&format!("{:<9} {:<12} {:<36} {}\n", f.severity, f.tenant, f.detector, f.message));
    }
    for failure in &run.failures {
        out.push_str(&format!("FAILED    {:<12} {:<36} {}\n", failure.tenant.as_deref().unwrap_or("*"), failure.detector, failure.error));
    }
    out.push_str(&format!(
        "as of {}: {} detectors, {} findings, {} failed; opportunities {} opened, {} updated, {} resolved; {} ms ({}, batch {})\n",
        run.as_of, run.run, run.fired, run.failed, run.opportunities.opened, run.opportunities.updated, run.opportunities.resolved,
        run.millis, run.outcome, run.batch_id
    ));
    out
}
