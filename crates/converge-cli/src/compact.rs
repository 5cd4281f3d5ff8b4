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
    let prices = converge_function::env::prices_from_env()?;
    if !EmbeddedBackends::warehouse_path(data_dir).exists() {
        anyhow::bail!("no warehouse in {}; run `converge demo --data-dir {}` first, or pass the right --data-dir", data_dir.display(), data_dir.display());
    }
    let backends = EmbeddedBackends::open(data_dir, Arc::new(SystemClock)).with_context(|| format!("opening {}", data_dir.display()))?;
    backends.warehouse.ensure_tables(&mirror).await?;
    Ok(Retention::new(backends.warehouse(), mirror, Arc::new(SystemClock)).with_prices(prices))
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
    let _ = writeln!(out, "  {}", crate::render::cost(&run.cost));
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
    let _ = writeln!(out, "  {}", crate::render::cost(&run.cost));
    out
}

#[cfg(test)]
mod tests {
    use converge_core::value::fields_from_json;
    use converge_core::{ChangeRow, Document, Op, RowContext, Timestamp};

    use super::*;

    /// A data directory whose changelog holds two versions of one record.
    async fn data_dir(mirror: &MirrorConfig) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let backends = EmbeddedBackends::open(dir.path(), Arc::new(SystemClock)).unwrap();
        backends.warehouse.ensure_tables(mirror).await.unwrap();
        let route = mirror.route("orgs/acme/records/r1").unwrap();
        let ctx = RowContext { ingested_at: Timestamp::new(1_700_000_000, 0), run_id: "setup".into(), code_version: "test".into() };
        let rows = (1..=2)
            .map(|version| {
                let doc = Document {
                    path: "orgs/acme/records/r1".into(),
                    fields: fields_from_json(&serde_json::json!({"amount": version})).unwrap(),
                    create_time: Timestamp::new(1_600_000_000, 0),
                    update_time: Timestamp::new(1_600_000_000 + version, 0),
                };
                ChangeRow::live(&route, Op::Update, &doc, &format!("event-{version}"), &ctx).unwrap()
            })
            .collect();
        backends.warehouse.append(rows).await.unwrap();
        dir
    }

    #[tokio::test]
    async fn compaction_and_refresh_carry_their_cost_in_the_json_the_text_and_the_run_record() {
        let mirror = MirrorConfig::default();
        let dir = data_dir(&mirror).await;
        let prices = converge_function::env::prices_from_env().unwrap();

        let summary = compact(dir.path(), mirror.clone(), 0).await.unwrap();
        let cost = summary.run.cost;
        assert_eq!(cost.source_reads, 0, "compaction reads the warehouse only: {cost:?}");
        assert_eq!(cost.estimated_usd, prices.usd(&cost), "priced with the configured table: {cost:?}");
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["cost"], serde_json::to_value(cost).unwrap(), "{json}");
        assert!(render_compact(&summary).contains("\n  cost: 0 source reads, "), "{}", render_compact(&summary));

        let refreshed = refresh(dir.path(), mirror.clone(), true).await.unwrap();
        assert_eq!(refreshed.cost.source_reads, 0);
        assert!(render_refresh(&refreshed).contains("\n  cost: 0 source reads, "), "{}", render_refresh(&refreshed));

        // The run records carry what the commands printed.
        let backends = EmbeddedBackends::open(dir.path(), Arc::new(SystemClock)).unwrap();
        backends.warehouse.ensure_tables(&mirror).await.unwrap();
        for (kind, printed) in [(converge_retention::COMPACT_KIND, cost), (converge_retention::REFRESH_KIND, refreshed.cost)] {
            let records = backends.warehouse.runs(kind, 1).await.unwrap();
            let stored: converge_core::RunCost = serde_json::from_value(records[0].report["cost"].clone()).unwrap();
            assert_eq!(stored, printed, "{kind}");
        }
    }
}
