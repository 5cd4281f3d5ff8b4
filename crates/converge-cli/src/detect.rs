//! `converge detect`: one detector pass, through the same runner the detector-runner
//! function uses: on a data directory (DuckDB warehouse, SQLite opportunities) by
//! default, or with `--backend cloud` on BigQuery and Firestore (or their emulators)
//! as the environment names them (`GOOGLE_CLOUD_PROJECT`, `CONVERGE_BIGQUERY_DATASET`,
//! `FIRESTORE_EMULATOR_HOST`, …, see the README's configuration table).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use converge_backends::{CloudBackends, EmbeddedBackends};
use converge_core::{Clock, FindingsWarehouse, OpportunityStore, SourceStore, SystemClock, Warehouse};
use converge_detect::Pack;
use converge_detector_runner::{DetectRequest, DetectRun, DetectorRunner, RunnerOptions};

/// Where the pass runs.
pub enum DetectTarget {
    /// DuckDB and SQLite in this data directory.
    Embedded(PathBuf),
    /// BigQuery and Firestore (or their emulators).
    Cloud(converge_function::CloudSettings),
}

pub struct DetectOptions {
    pub target: DetectTarget,
    /// The run date; the latest date in `daily_entity_metrics` when absent.
    pub as_of: Option<NaiveDate>,
    pub tenants: Option<Vec<String>>,
    pub concurrency: usize,
}

const NO_METRICS: &str = "daily_entity_metrics is empty: run `converge etl` (or the nightly-etl function) first, or pass --as-of YYYY-MM-DD";

/// Runs one pass and returns its report (also recorded in `converge_runs`).
pub async fn run(options: DetectOptions) -> anyhow::Result<DetectRun> {
    let prices = converge_function::env::prices_from_env()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The source store holds both the opportunities and the tenants' known events.
    #[allow(clippy::type_complexity)]
    let (findings, runs, opportunities, source, latest): (
        Arc<dyn FindingsWarehouse>,
        Arc<dyn Warehouse>,
        Arc<dyn OpportunityStore>,
        Arc<dyn SourceStore>,
        Option<String>,
    ) =
        match options.target {
            DetectTarget::Embedded(data_dir) => {
                let backends = EmbeddedBackends::open(&data_dir, clock.clone()).context("opening the data directory")?;
                let warehouse = backends.warehouse.clone();
                warehouse.ensure_tables(&converge_core::MirrorConfig::default()).await?;
                let latest = match options.as_of {
                    Some(_) => None,
                    None => latest_date(
                        warehouse
                            .query_json("SELECT CAST(max(date) AS VARCHAR) AS latest FROM daily_entity_metrics")
                            .await
                            .context("reading the latest date of daily_entity_metrics (has `converge etl` run? or pass --as-of YYYY-MM-DD)")?,
                    ),
                };
                (Arc::new(warehouse.clone()), Arc::new(warehouse), Arc::new(backends.source.clone()), Arc::new(backends.source.clone()), latest)
            }
            DetectTarget::Cloud(settings) => {
                let backends = CloudBackends::open(&settings).await.context("connecting to BigQuery and Firestore")?;
                let warehouse = backends.warehouse.clone();
                warehouse.ensure_tables(&converge_core::MirrorConfig::default()).await?;
                let latest = match options.as_of {
                    Some(_) => None,
                    None => {
                        let config = warehouse.config();
                        let sql = format!(
                            "SELECT CAST(MAX(date) AS STRING) AS latest FROM `{}.{}.daily_entity_metrics`",
                            config.project, config.dataset
                        );
                        latest_date(warehouse.query_json(&sql, &[]).await.context(
                            "reading the latest date of daily_entity_metrics in BigQuery (has the nightly ETL run? or pass --as-of YYYY-MM-DD)",
                        )?)
                    }
                };
                (Arc::new(warehouse.clone()), Arc::new(warehouse), Arc::new(backends.source.clone()), Arc::new(backends.source.clone()), latest)
            }
        };
    let as_of = match options.as_of {
        Some(date) => date,
        None => {
            let latest = latest.context(NO_METRICS)?;
            NaiveDate::parse_from_str(&latest, "%Y-%m-%d").with_context(|| format!("latest date {latest:?} is not YYYY-MM-DD"))?
        }
    };
    let runner = DetectorRunner::new(
        Pack::shipped()?,
        findings,
        runs,
        opportunities,
        clock,
        RunnerOptions { concurrency: options.concurrency, ..RunnerOptions::default() },
    )
    .with_prices(prices)
    .with_known_events(source);
    Ok(runner.run(DetectRequest { as_of, tenants: options.tenants, detectors: None }).await?)
}

/// The newest day the nightly ETL has loaded (what a pass usually means), from the
/// one-row answer of a `MAX(date)` query; `None` when the table is empty.
fn latest_date(rows: Vec<serde_json::Value>) -> Option<String> {
    rows.first().and_then(|row| row["latest"].as_str()).map(str::to_owned)
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
    out.push_str(&format!("{}\n", crate::render::cost(&run.cost)));
    out
}
