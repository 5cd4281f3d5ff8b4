//! `converge bench rebuild`: rebuilds of one tenant of N documents on the embedded
//! default, end to end through the rebuild function (HTTP, a local ID token).
//!
//! For each size N: the reconcile benchmark's data (N source documents, their rows in
//! the warehouse with 0.1% of N drifted of each kind: missing, different, orphan);
//! then `converge rebuild --json` in a child process, so its peak resident memory
//! (VmHWM) is its own; then a reconciler dry run that must find nothing, or the
//! benchmark fails. Documents/s is documents rebuilt (read from the source, compared
//! with the warehouse's latest state, and written when they differ) over the
//! rebuild's own duration.

use std::path::Path;
use std::sync::Arc;

use anyhow::ensure;
use converge_backends::EmbeddedBackends;
use converge_core::{MirrorConfig, SystemClock, Warehouse};
use converge_reconcile::Reconciler;
use serde::Serialize;

use super::drifted_tenant::{generate, Generated, TENANT};

#[derive(Debug, Clone, Serialize)]
pub struct RebuildBenchSize {
    pub generated: Generated,
    /// `converge rebuild --json` as the child printed it.
    pub rebuild: serde_json::Value,
    pub docs_per_second: f64,
    pub peak_rss_mb: f64,
    /// What a reconciler dry run found right after (must be 0).
    pub drift_after: u64,
    /// The same source rebuilt into an empty warehouse (an import: every document
    /// written), as the child printed it.
    pub import: serde_json::Value,
    pub import_docs_per_second: f64,
    pub import_peak_rss_mb: f64,
}

pub async fn run(records: &[u64], keep: bool) -> anyhow::Result<Vec<RebuildBenchSize>> {
    super::measure::each_size(records, keep, "rebuild", |n, data_dir| async move { one_size(n, &data_dir).await }).await
}

async fn one_size(records: u64, data_dir: &Path) -> anyhow::Result<RebuildBenchSize> {
    eprintln!("rebuild bench, {records} documents: generating in {}…", data_dir.display());
    let generated = generate(data_dir, records).await?;
    let injected = generated.injected;
    eprintln!(
        "  {} source documents, {} changelog rows ({} missing, {} different, {} orphan) in {} ms",
        generated.source_docs, generated.changelog_rows, injected.missing, injected.different, injected.orphan, generated.millis
    );
    let rebuild = super::measure::child_json(&["rebuild", "--json", "--tenant", TENANT], data_dir, "converge rebuild --json").await?;
    let written = rebuild["documents"].as_u64().unwrap_or(0);
    let documents = written + rebuild["unchanged"].as_u64().unwrap_or(0);
    let millis = rebuild["millis"].as_u64().unwrap_or(0).max(1);
    let peak_rss_mb = rebuild["peak_rss_mb"].as_f64().unwrap_or(0.0);
    ensure!(documents == generated.source_docs, "rebuilt {documents} documents; the source has {}", generated.source_docs);
    ensure!(
        written == injected.missing + injected.different,
        "rebuild wrote {written} documents; {} missing and {} different were injected",
        injected.missing,
        injected.different
    );
    ensure!(rebuild["tombstones"].as_u64() == Some(injected.orphan), "rebuild wrote {} tombstones; {} orphans were injected", rebuild["tombstones"], injected.orphan);

    let backends = EmbeddedBackends::open(data_dir, Arc::new(SystemClock))?;
    let config = MirrorConfig::default();
    backends.warehouse.ensure_tables(&config).await?;
    let reconciler = Reconciler::new(backends.source_store(), backends.error_log(), backends.warehouse(), config, Arc::new(SystemClock));
    let after = reconciler.run(Some(TENANT), true).await?;
    ensure!(after.findings() == 0, "after the rebuild the reconciler still finds {} differences", after.findings());
    let docs_per_second = documents as f64 * 1000.0 / millis as f64;
    eprintln!("  rebuilt {documents} documents in {millis} ms: {docs_per_second:.0} docs/s, peak RSS {peak_rss_mb:.0} MB; no drift after");
    drop((reconciler, backends));

    // The import: the same source into an empty warehouse, every document written.
    for file in ["warehouse.duckdb", "warehouse.duckdb.wal", "warehouse.duckdb.journal"] {
        let _ = std::fs::remove_file(data_dir.join(file));
    }
    let import = super::measure::child_json(&["rebuild", "--json", "--tenant", TENANT], data_dir, "converge rebuild --json").await?;
    let imported = import["documents"].as_u64().unwrap_or(0);
    ensure!(imported == generated.source_docs, "the import wrote {imported} documents; the source has {}", generated.source_docs);
    let import_millis = import["millis"].as_u64().unwrap_or(0).max(1);
    let import_docs_per_second = imported as f64 * 1000.0 / import_millis as f64;
    let import_peak_rss_mb = import["peak_rss_mb"].as_f64().unwrap_or(0.0);
    eprintln!("  imported {imported} documents into an empty warehouse in {import_millis} ms: {import_docs_per_second:.0} docs/s, peak RSS {import_peak_rss_mb:.0} MB");
    Ok(RebuildBenchSize { generated, rebuild, docs_per_second, peak_rss_mb, drift_after: after.findings(), import, import_docs_per_second, import_peak_rss_mb })
}

/// Replaces the rebuild section of the results file.
pub fn write_results(path: &Path, sizes: &[RebuildBenchSize]) -> anyhow::Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let mut lines = vec![
        "| documents | rows written | tombstones | rebuild ms | docs/s | peak RSS MB | drift after | import: rows written | import ms | import docs/s | import peak RSS MB |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for size in sizes {
        lines.push(format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {:.0} | {:.0} |",
            size.generated.records,
            size.rebuild["rows_written"],
            size.rebuild["tombstones"],
            size.rebuild["millis"],
            size.docs_per_second,
            size.peak_rss_mb,
            size.drift_after,
            size.import["rows_written"],
            size.import["millis"],
            size.import_docs_per_second,
            size.import_peak_rss_mb
        ));
    }
    let section = format!(
        "<!-- bench:rebuild:start -->\n## Rebuild\n\n{}\n\nMeasured {} on {}.\nCommand: `{}` (via `make bench`).\n\n{}\n<!-- bench:rebuild:end -->",
        "One tenant of N documents on the embedded default, its warehouse rows drifted (0.1% of N each missing, different, orphan), rebuilt by `converge rebuild` through the rebuild function (in-process HTTP server, local ID token): every source document read and compared with the warehouse's latest state, a REBUILD row for each that differs (the missing and different ones), a tombstone for every orphan, one DuckDB transaction; docs/s counts every document rebuilt (compared, and written where it differs). Then the import: the same source rebuilt into an empty warehouse (its files removed), every document written. Each rebuild is its own process, so its peak resident memory (VmHWM) is its own; a reconciler dry run afterwards must find nothing. Target: at least 100,000 documents/s and under 300 MB at 1,000,000.",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        super::measure::machine(),
        command.join(" "),
        lines.join("\n")
    );
    super::measure::replace_section(path, "rebuild", &section)
}
