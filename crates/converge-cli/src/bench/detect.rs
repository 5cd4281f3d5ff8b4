//! `converge bench detect`: the whole shipped pack over 90 days of
//! `daily_entity_metrics` at the demo's scale, on the embedded default.
//!
//! The metric rows are generated directly (by one DuckDB query), not through the ETL:
//! this measures the detectors. Several tenants, each with the entity counts a real
//! account has (hundreds of keywords and pages, tens of campaigns), every metric of
//! the vocabulary every day, seeded noise around a steady level: about 1.9 million
//! rows. Rows are inserted sorted by (entity_type, metric, date), so DuckDB's zone
//! maps skip most row groups for each detector's entity type, metrics and dates.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{Days, NaiveDate};
use converge_core::{MetricsWarehouse, MirrorConfig, SystemClock, Warehouse};
use converge_detect::{EntityType, Pack};
use converge_detector_runner::{DetectRequest, DetectRun, DetectorRunner, RunnerOptions};
use converge_duckdb::DuckWarehouse;
use serde::Serialize;

pub const DAYS: u64 = 90;

/// Entities per tenant, by type: the scale of one real account.
const ENTITIES: [(EntityType, u32); 7] = [
    (EntityType::Keyword, 400),
    (EntityType::Page, 250),
    (EntityType::Campaign, 60),
    (EntityType::Email, 20),
    (EntityType::FunnelStep, 10),
    (EntityType::Device, 3),
    (EntityType::TrafficSource, 30),
];

/// A metric's typical daily value per entity: counts that nest (sessions > entries >
/// conversions) so rates stay plausible.
fn level(metric: &str) -> f64 {
    match metric {
        "impressions" | "sent" | "delivered" | "load_time_ms_sum" => 5000.0,
        "sessions" | "pageviews" | "opens" | "entries" => 400.0,
        "unique_opens" | "engaged_sessions" | "clicks" | "exits" | "step_completions" | "cost" | "load_time_samples" | "position_sum" => 150.0,
        "bounces" | "email_clicks" | "revenue" => 60.0,
        "conversions" => 12.0,
        _ => 3.0,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectorTiming {
    pub id: String,
    pub p50_ms: u64,
    pub max_ms: u64,
    pub findings: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectBenchResult {
    pub tenants: usize,
    pub metric_rows: u64,
    pub generate_ms: u64,
    pub passes: usize,
    pub pack_ms: Vec<u64>,
    pub pack_p50_ms: u64,
    pub pack_max_ms: u64,
    pub detectors: Vec<DetectorTiming>,
    pub findings: u64,
    pub failed: u64,
    pub concurrency: usize,
}

/// Generates the dataset in `data_dir` and runs the pack `passes` times.
pub async fn run(data_dir: &Path, tenants: usize, passes: usize, concurrency: usize) -> anyhow::Result<DetectBenchResult> {
    if data_dir.exists() {
        std::fs::remove_dir_all(data_dir).with_context(|| format!("clearing {}", data_dir.display()))?;
    }
    let clock = Arc::new(SystemClock);
    let backends = converge_backends::EmbeddedBackends::open(data_dir, clock.clone())?;
    let warehouse = backends.warehouse.clone();
    warehouse.ensure_tables(&MirrorConfig::default()).await?;
    warehouse.ensure_metrics_tables().await?;
    let as_of = NaiveDate::from_ymd_opt(2025, 3, 31).expect("a date");
    let started = Instant::now();
    let metric_rows = generate(&warehouse, tenants, as_of).await?;
    let generate_ms = started.elapsed().as_millis() as u64;

    let runner = DetectorRunner::new(
        Pack::shipped()?,
        Arc::new(warehouse.clone()),
        Arc::new(warehouse.clone()),
        Arc::new(backends.source.clone()),
        clock,
        RunnerOptions { concurrency, ..RunnerOptions::default() },
    );
    let mut runs: Vec<DetectRun> = Vec::new();
    for _ in 0..passes.max(1) {
        runs.push(runner.run(DetectRequest::all(as_of)).await?);
    }
    let mut pack_ms: Vec<u64> = runs.iter().map(|r| r.millis).collect();
    let detectors = runs[0]
        .detectors
        .iter()
        .enumerate()
        .map(|(i, first)| {
            let mut times: Vec<u64> = runs.iter().map(|r| r.detectors[i].millis).collect();
            times.sort_unstable();
            DetectorTiming { id: first.id.clone(), p50_ms: times[times.len() / 2], max_ms: *times.last().unwrap_or(&0), findings: first.findings }
        })
        .collect();
    let result = DetectBenchResult {
        tenants,
        metric_rows,
        generate_ms,
        passes: runs.len(),
        pack_p50_ms: { let mut s = pack_ms.clone(); s.sort_unstable(); s[s.len() / 2] },
        pack_max_ms: *pack_ms.iter().max().unwrap_or(&0),
        pack_ms: std::mem::take(&mut pack_ms),
        detectors,
        findings: runs[0].fired,
        failed: runs.iter().map(|r| r.failed).max().unwrap_or(0),
        concurrency,
    };
    Ok(result)
}

/// One INSERT … SELECT over generated ranges, sorted on the way in.
async fn generate(warehouse: &DuckWarehouse, tenants: usize, as_of: NaiveDate) -> anyhow::Result<u64> {
    let first_day = as_of - Days::new(DAYS - 1);
    let mut kinds = Vec::new();
    for (entity_type, count) in ENTITIES {
        for metric in entity_type.metrics() {
            kinds.push(format!("('{}', '{}', {count}, {})", entity_type.as_str(), metric.name, level(metric.name)));
        }
    }
    let tenant_list: Vec<String> = (0..tenants).map(|i| format!("('tenant{i:02}')")).collect();
    // Noise: a hash of (tenant, entity, day) shared by every metric of the entity-day
    // (so rates between its metrics stay steady), plus a small per-metric wobble.
    let sql = format!(
        "INSERT INTO daily_entity_metrics (date, tenant, entity_type, entity_id, metric, value)
         WITH kinds(entity_type, metric, entities, level) AS (VALUES {kinds}),
              tenants(tenant) AS (VALUES {tenant_list}),
              days AS (SELECT CAST('{first_day}' AS DATE) + CAST(d AS INTEGER) AS date FROM range({DAYS}) t(d))
         SELECT date, tenant, entity_type, entity_type || '_' || CAST(e AS VARCHAR) AS entity_id, metric,
                round(level * (1 + e % 7) / 4.0
                      * (0.8 + 0.4 * (hash(tenant, e, date) % 1000) / 1000.0)
                      * (0.97 + 0.06 * (hash(tenant, e, date, metric) % 1000) / 1000.0), 2) AS value
         FROM kinds, tenants, days, range(entities) r(e)
         ORDER BY entity_type, metric, date, tenant",
        kinds = kinds.join(", "),
        tenant_list = tenant_list.join(", "),
    );
    let connection = warehouse.reader()?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let rows = connection.execute(&sql, []).context("generating daily_entity_metrics")?;
        connection.execute_batch("CHECKPOINT").context("checkpoint after generating")?;
        Ok(rows as u64)
    })
    .await?
}

/// Replaces the detect section of the results file.
pub fn write_results(path: &Path, result: &DetectBenchResult) -> anyhow::Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let mut lines = vec!["| detector | p50 ms | max ms | findings |".to_owned(), "|---|---|---|---|".to_owned()];
    for d in &result.detectors {
        lines.push(format!("| {} | {} | {} | {} |", d.id, d.p50_ms, d.max_ms, d.findings));
    }
    let section = format!(
        "<!-- bench:detect:start -->\n## Detectors\n\n{}\n\n| metric rows | tenants | passes | whole pack p50 ms | whole pack max ms | per pass ms | concurrency | failed |\n|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {:?} | {} | {} |\n\nPer detector (query and row reading, wall time, over the passes):\n\n{}\n\nMeasured {} on {}.\nCommand: `{}` (via `make bench`).\n<!-- bench:detect:end -->",
        "The shipped pack (34 detectors) over 90 days of `daily_entity_metrics` on the embedded default (DuckDB, memory capped as in production), generated directly at a real account's scale per tenant (400 keywords, 250 pages, 60 campaigns, 20 emails, 10 funnel steps, 3 devices, 30 traffic sources, every metric every day), inserted sorted by (entity_type, metric, date). A pass is `DetectorRunner::run` for all tenants: every detector compiled and queried (4 at a time), findings upserted into SQLite, stale ones resolved, the run recorded. Target: the whole pack in under 5 s.",
        result.metric_rows,
        result.tenants,
        result.passes,
        result.pack_p50_ms,
        result.pack_max_ms,
        result.pack_ms,
        result.concurrency,
        result.failed,
        lines.join("\n"),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        super::measure::machine(),
        command.join(" "),
    );
    super::measure::replace_section(path, "detect", &section)
}

/// Where the bench keeps its data directory by default.
pub fn default_data_dir() -> PathBuf {
    std::env::temp_dir().join("converge-bench-detect")
}
