//! `converge bench status`: the status page's server time over the demo's workspace
//! (300,000 records and the rest of the demo's data): the report collected from every
//! store and rendered to HTML, as `GET /status` does, repeated; median, p95 and the
//! slowest. The target is a page in under 200 ms of server time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use converge_backends::EmbeddedBackends;
use converge_core::{SystemClock, Warehouse};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct StatusBench {
    pub data_dir: String,
    pub demo_millis: Option<u64>,
    pub tenants: usize,
    pub source_docs: u64,
    pub loads: usize,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
    pub page_bytes: usize,
}

/// Uses the workspace in `data_dir` (after `make demo`), or makes one there with the
/// demo when it has none; then `loads` page loads after one to warm up.
pub async fn run(data_dir: Option<PathBuf>, records: u64, loads: usize) -> anyhow::Result<StatusBench> {
    let (data_dir, made_here) = match data_dir {
        Some(dir) => (dir, false),
        None => (std::env::temp_dir().join(format!("converge-bench-status-{}", uuid::Uuid::new_v4())), true),
    };
    let result = measure(&data_dir, records, loads).await;
    if made_here {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    result
}

async fn measure(data_dir: &Path, records: u64, loads: usize) -> anyhow::Result<StatusBench> {
    let data_dir = data_dir.to_owned();
    let mut demo_millis = None;
    if !EmbeddedBackends::warehouse_path(&data_dir).exists() {
        eprintln!("status bench: making the demo's workspace ({records} records) in {}…", data_dir.display());
        let started = Instant::now();
        let summary = converge_scenarios::demo::run(converge_scenarios::demo::DemoOptions { data_dir: data_dir.clone(), records, progress: false, ops_scale: 1.0 }).await?;
        anyhow::ensure!(summary.derived_equals_source, "the demo's copy differs from its source");
        demo_millis = Some(started.elapsed().as_millis() as u64);
    }
    let mirror = crate::mirror_for(&data_dir, converge_core::MirrorConfig::default())?;
    let backends = EmbeddedBackends::open_for(&data_dir, Arc::new(SystemClock), &mirror).context("opening the workspace")?;
    backends.warehouse.ensure_tables(&mirror).await?;
    let sources = converge_status::StatusSources::new(
        &backends.backends(),
        mirror,
        Arc::new(SystemClock),
        converge_status::Commands::Embedded { data_dir: data_dir.display().to_string() },
    );
    let load = || async {
        let started = Instant::now();
        let report = converge_status::collect(&sources).await?;
        let page = converge_status::page::render(&report);
        anyhow::Ok((started.elapsed().as_secs_f64() * 1000.0, report, page.len()))
    };
    let (_, report, page_bytes) = load().await?;
    let mut times = Vec::with_capacity(loads);
    for _ in 0..loads.max(1) {
        times.push(load().await?.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(StatusBench {
        data_dir: data_dir.display().to_string(),
        demo_millis,
        tenants: report.tenants.len(),
        source_docs: report.tenants.iter().map(|t| t.source_docs).sum(),
        loads: times.len(),
        median_ms: at(0.5),
        p95_ms: at(0.95),
        max_ms: *times.last().expect("at least one load"),
        page_bytes,
    })
}

/// Replaces the status section of the results file.
pub fn write_results(path: &Path, result: &StatusBench) -> anyhow::Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let section = format!(
        "<!-- bench:status:start -->\n## Status page\n\nServer time of one page (`converge_status::collect` over every store, then the HTML with its charts), as `GET /status` spends it, over the demo's workspace: {} tenants, {} source documents on every route. {} loads after one to warm up.\n\n| median | p95 | slowest | page |\n|---|---|---|---|\n| {:.1} ms | {:.1} ms | {:.1} ms | {} KiB |\n\nMeasured {} on {}.\nCommand: `{}` (via `make bench`).\n<!-- bench:status:end -->",
        result.tenants,
        super::reconcile::thousands(result.source_docs),
        result.loads,
        result.median_ms,
        result.p95_ms,
        result.max_ms,
        result.page_bytes / 1024,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        super::measure::machine(),
        command.join(" ")
    );
    super::measure::replace_section(path, "status", &section)
}
