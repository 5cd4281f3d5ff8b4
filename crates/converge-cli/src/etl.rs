//! `converge etl`: one nightly-ETL pass on a data directory (SQLite raw collections →
//! DuckDB `daily_entity_metrics` / `entity_map`), through the same runner the
//! nightly-etl function uses.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use converge_backends::EmbeddedBackends;
use converge_core::{Clock, MirrorConfig, SystemClock, Warehouse};
use converge_etl::{EtlProgress, EtlRequest, EtlRun, SliceReport};
use converge_scenarios::embedded_etl::runner;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct EtlOptions {
    pub data_dir: PathBuf,
    pub mirror: MirrorConfig,
    pub request: EtlRequest,
    /// Draw a progress bar on stderr (backfills).
    pub progress: bool,
}

/// Runs one pass; its run records are in `converge_runs` (kind `etl`).
pub async fn run(options: EtlOptions) -> anyhow::Result<EtlRun> {
    let prices = converge_function::env::prices_from_env()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let backends = EmbeddedBackends::open_for(&options.data_dir, clock.clone(), &options.mirror)
        .with_context(|| format!("opening {}", options.data_dir.display()))?;
    backends.warehouse.ensure_tables(&options.mirror).await.context("creating the runs table")?;
    let runner = runner(&backends, clock).with_prices(prices);
    runner.ensure_tables().await.context("creating daily_entity_metrics, entity_map and etl_loads")?;
    let progress = Arc::new(EtlProgress::default());
    let slices = options.request.dates().map(|d| d.len()).unwrap_or(1);
    let bar = if options.progress && slices > 1 {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos:>5}/{len:5} slices {msg} {elapsed_precise}").expect("valid template").progress_chars("=> "));
        bar.set_prefix("etl");
        Some(bar)
    } else {
        None
    };
    let ticker = bar.clone().map(|bar| {
        let progress = progress.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            loop {
                bar.set_length(progress.slices_total.load(Ordering::Relaxed));
                bar.set_position(progress.slices_done.load(Ordering::Relaxed));
                let records = progress.records.load(Ordering::Relaxed);
                bar.set_message(format!("{records} records, {:.0}/s", records as f64 / started.elapsed().as_secs_f64().max(0.001)));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let result = runner.run_with_progress(options.request, progress).await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(result?)
}

/// The pass as text: one line per slice, then the totals.
pub fn render(run: &EtlRun) -> String {
    let mut out = String::new();
    for record in &run.runs {
        let Ok(report) = serde_json::from_value::<SliceReport>(record.report.clone()) else { continue };
        let failed: Vec<String> = report.checks.iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.detail)).collect();
        out.push_str(&format!(
            "{} {:<12} {:<8} rows in {:>7}  rows out {:>7}  entities {:>6}  quarantined {:>4}  {:>6} ms  batch {}\n",
            report.date, report.tenant, report.outcome, report.rows_in, report.rows_out, report.entities, report.quarantined, report.millis, report.batch_id
        ));
        for line in failed {
            out.push_str(&format!("    check failed: {line}\n"));
        }
    }
    out.push_str(&format!(
        "{}..={}: {} slices ({} failed), {} rows in, {} rows out, {} quarantined, {} ms ({}, run {})\n",
        run.from, run.to, run.slices, run.failed_slices, run.rows_in, run.rows_out, run.quarantined, run.millis, run.outcome, run.run_id
    ));
    out.push_str(&format!("{}\n", crate::render::cost(&run.cost)));
    out
}

/// The request the command's flags describe: `--date` alone is that one day (no late
/// window unless `--late-days`); `--from`/`--to` a backfill.
pub fn request(date: Option<NaiveDate>, from: Option<NaiveDate>, to: Option<NaiveDate>, tenants: Vec<String>, late_days: Option<u32>, max_records_per_second: Option<u32>) -> anyhow::Result<EtlRequest> {
    let run_date = match (date, to) {
        (Some(d), Some(t)) if d != t => anyhow::bail!("--date {d} and --to {t} differ: both name the last day to load, give one"),
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => anyhow::bail!("expected --date YYYY-MM-DD (one day) or --from D --to D (a backfill)"),
    };
    Ok(EtlRequest {
        run_date,
        from,
        tenants: if tenants.is_empty() { None } else { Some(tenants) },
        late_days: Some(late_days.unwrap_or(0)),
        max_records_per_second,
    })
}
