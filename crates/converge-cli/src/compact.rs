//! `converge compact` and `converge refresh-current`: compaction with a retention
//! horizon, and the current tables refreshed, on the embedded backends of a data
//! directory (the demo's, for instance). The rules are `converge_core::retention`'s;
//! the runs are `converge_retention`'s.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use converge_backends::EmbeddedBackends;
use converge_core::{MirrorConfig, RefreshFrom, SystemClock, Warehouse};
use converge_retention::{CompactRun, RefreshRun, Retention};

/// A compaction run as the command prints it: the run, and this process's peak
/// resident memory (compaction runs in the command's own process).
#[derive(Debug, serde::Serialize)]
pub struct CompactSummary {
    #[serde(flatten)]
    pub run: CompactRun,
    pub peak_rss_mb: f64,
}

pub async fn compact(data_dir: &Path, mirror: MirrorConfig, retain_days: u32) -> anyhow::Result<CompactSummary> {
    let run = open(data_dir, mirror).await?.compact(retain_days, None).await?;
    let (_, peak_kib) = crate::bench::measure::memory_kib();
    Ok(CompactSummary { run, peak_rss_mb: peak_kib as f64 / 1024.0 })
}

pub async fn refresh(data_dir: &Path, mirror: MirrorConfig, full: bool) -> anyhow::Result<RefreshRun> {
    let from = if full { RefreshFrom::Full } else { RefreshFrom::Watermark };
    Ok(open(data_dir, mirror).await?.refresh(from, None).await?)
}

async fn open(data_dir: &Path, mirror: MirrorConfig) -> anyhow::Result<Retention> {
    if !EmbeddedBackends::warehouse_path(data_dir).exists() {
        anyhow::bail!("no warehouse in {}; run `converge demo --data-dir {}` first, or pass the right --data-dir", data_dir.display(), data_dir.display());
    }
    let backends = EmbeddedBackends::open(data_dir, Arc::new(SystemClock)).with_context(|| format!("opening {}", data_dir.display()))?;
    backends.warehouse.ensure_tables(&mirror).await?;
    Ok(Retention::new(backends.warehouse(), mirror, Arc::new(SystemClock)))
}

pub fn render_compact(summary: &CompactSummary) -> String {
    let run = &summary.run;
    let mut out = String::new();
    let _ = writeln!(out, "\nCompaction — batch {} — {}", run.batch_id, run.outcome);
    let _ = writeln!(out, "  horizon {} (keep {} days); deletes older than {} may go", run.horizon, run.retain_days, run.tombstone_horizon);
    for table in &run.tables {
        let _ = writeln!(
            out,
            "  {:<24} {:>12} rows → {:>12}  ({} superseded, {} deletes pruned, {} ms)",
            table.table, table.rows_before, table.rows_after, table.superseded_pruned, table.tombstones_pruned, table.millis
        );
    }
    let _ = writeln!(out, "  current tables refreshed in full; {} ms in all, peak memory {:.0} MB", run.millis, summary.peak_rss_mb);
    out
}

pub fn render_refresh(run: &RefreshRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nCurrent tables refreshed — batch {} — {}", run.batch_id, run.outcome);
    for table in &run.tables {
        let how = if table.full { "in full" } else { "from the watermark" };
        let _ = writeln!(
            out,
            "  {:<24} {how}: {} rows read, {} documents merged, {} current rows, {} ms",
            converge_core::retention::current_table(&table.table), table.rows_read, table.documents_merged, table.current_rows, table.millis
        );
    }
    out
}
