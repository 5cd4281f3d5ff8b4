//! `converge bench compact`: compaction of one tenant of N documents, each with one
//! superseded version, on the embedded default; and the demo's report over that tenant
//! on the latest view and on the current table.
//!
//! The data: N bookkeeping records written twice (a create, then an update with other
//! content a minute later), 2N changelog rows appended in one atomic append. Then
//! `converge compact --retain-days 0 --json` in a child process, so its peak resident
//! memory (VmHWM) is its own: it must prune exactly N rows and leave the latest view as
//! it was (checked by a content digest before and after), and its full refresh of the
//! current table is part of its time.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context};
use converge_backends::EmbeddedBackends;
use converge_core::{ChangeRow, Clock, Document, MirrorConfig, Op, RowContext, StoreError, SystemClock, Timestamp, Value, Warehouse};
use futures::StreamExt;
use serde::Serialize;

use converge_scenarios::bookkeeping_records;

const TENANT: &str = "bench";
const SEED: u64 = 17;

#[derive(Debug, Clone, Serialize)]
pub struct CompactBenchSize {
    pub documents: u64,
    pub generate_ms: u64,
    /// `converge compact --json` as the child printed it.
    pub compact: serde_json::Value,
    pub peak_rss_mb: f64,
    /// The demo's report (account × fund × month for one label) on this tenant, median
    /// of five runs, on the latest view and on the current table, after compaction.
    pub report_latest_ms: f64,
    pub report_current_ms: f64,
}

pub async fn run(records: &[u64], keep: bool) -> anyhow::Result<Vec<CompactBenchSize>> {
    super::measure::each_size(records, keep, "compact", |n, data_dir| async move { one_size(n, &data_dir).await }).await
}

/// Every document's latest state, as one digest (order-independent sums of hashes).
const LATEST_DIGEST: &str = "SELECT count(*) AS n, sum(hash(doc_path || coalesce(content_hash, ''))) AS digest FROM records_latest";

async fn one_size(records: u64, data_dir: &Path) -> anyhow::Result<CompactBenchSize> {
    eprintln!("compact bench, {records} documents with one superseded version each: generating in {}…", data_dir.display());
    let started = Instant::now();
    let config = MirrorConfig::default();
    let backends = EmbeddedBackends::open(data_dir, Arc::new(SystemClock)).context("opening the embedded stores")?;
    backends.warehouse.ensure_tables(&config).await?;
    let now = SystemClock.now();
    // Two versions of each record, a minute apart, ingested a second after each.
    let shared = Arc::new(config.clone());
    let rows = futures::stream::iter((0..records).flat_map(|index| [(index, 2), (index, 1)])).map(move |(index, minutes_ago)| {
        let at = now.as_micros() - minutes_ago * 60_000_000;
        let path = format!("orgs/{TENANT}/records/{}", bookkeeping_records::doc_id(index));
        let routed = shared.route(&path).expect("the default route matches");
        let mut fields = bookkeeping_records::record(SEED, index, Timestamp::from_micros(at));
        if let Some(Value::Double(amount)) = fields.get("amount").cloned() {
            fields.insert("amount".into(), Value::Double(amount * (3 - minutes_ago) as f64));
        }
        let time = Timestamp::from_micros(at);
        let doc = Document { path: path.clone(), fields, create_time: time, update_time: time };
        let ctx = RowContext { ingested_at: Timestamp::from_micros(at + 1_000_000), run_id: "bench-compact".into(), code_version: env!("CARGO_PKG_VERSION").into() };
        let op = if minutes_ago == 2 { Op::Create } else { Op::Update };
        ChangeRow::live(&routed, op, &doc, &format!("bench-{index}-{at}"), &ctx).map_err(|e| StoreError::permanent("bench", e.to_string()))
    });
    let receipt = backends.warehouse.append_atomic(rows.boxed()).await?;
    ensure!(receipt.written == 2 * records, "generated {} rows, expected {}", receipt.written, 2 * records);
    let before = backends.warehouse.query_json(LATEST_DIGEST).await?;
    let generate_ms = started.elapsed().as_millis() as u64;
    eprintln!("  {} changelog rows in {generate_ms} ms", receipt.written);
    drop(backends);

    let compact = super::measure::child_json(&["compact", "--retain-days", "0", "--json"], data_dir, "converge compact --json").await?;
    let peak_rss_mb = compact["peak_rss_mb"].as_f64().unwrap_or(0.0);
    ensure!(compact["rows_before"].as_u64() == Some(2 * records), "rows before: {}", compact["rows_before"]);
    ensure!(compact["superseded_pruned"].as_u64() == Some(records), "pruned {} rows; {records} were superseded", compact["superseded_pruned"]);

    let backends = EmbeddedBackends::open(data_dir, Arc::new(SystemClock))?;
    backends.warehouse.ensure_tables(&config).await?;
    let after = backends.warehouse.query_json(LATEST_DIGEST).await?;
    ensure!(before == after, "compaction changed the latest view: {before:?} then {after:?}");
    let current = backends.warehouse.query_json(&LATEST_DIGEST.replace("records_latest", "records_current")).await?;
    ensure!(current == after, "the current table differs from the latest view: {current:?} vs {after:?}");
    let report_latest_ms = report_ms(&backends, "records_latest").await?;
    let report_current_ms = report_ms(&backends, "records_current").await?;
    eprintln!(
        "  compacted {} → {} rows in {} ms (peak RSS {peak_rss_mb:.0} MB); report {report_latest_ms:.1} ms on the latest view, {report_current_ms:.1} ms on the current table",
        compact["rows_before"], compact["rows_after"], compact["millis"]
    );
    Ok(CompactBenchSize { documents: records, generate_ms, compact, peak_rss_mb, report_latest_ms, report_current_ms })
}

/// The demo's report on `table` for the bench tenant: the median of five runs, ms.
async fn report_ms(backends: &EmbeddedBackends, table: &str) -> anyhow::Result<f64> {
    let sql = converge_scenarios::demo::REPORT_SQL.replace("FROM records_latest", &format!("FROM {table}"));
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let rows = backends.warehouse.query_json_with(&sql, vec![TENANT.to_owned(), bookkeeping_records::REPORT_LABEL.to_owned()]).await?;
        ensure!(!rows.is_empty(), "the report on {table} is empty");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[2] * 10.0).round() / 10.0)
}

/// Replaces the compaction section of the results file.
pub fn write_results(path: &Path, sizes: &[CompactBenchSize]) -> anyhow::Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let mut lines = vec![
        "| documents | rows before | rows after | pruned | compaction + full refresh ms | peak RSS MB | report on records_latest ms | report on records_current ms |".to_owned(),
        "|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    for size in sizes {
        lines.push(format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.1} |",
            size.documents,
            size.compact["rows_before"],
            size.compact["rows_after"],
            size.compact["superseded_pruned"],
            size.compact["millis"],
            size.peak_rss_mb,
            size.report_latest_ms,
            size.report_current_ms
        ));
    }
    let section = format!(
        "<!-- bench:compact:start -->\n## Compaction and the current table\n\n{}\n\nMeasured {} on {}.\nCommand: `{}` (via `make bench`).\n\n{}\n<!-- bench:compact:end -->",
        "One tenant of N bookkeeping records on the embedded default, each written twice (a create, then an update a minute later): 2N changelog rows. `converge compact --retain-days 0` in its own process (its peak resident memory is its own) prunes the N superseded rows in one DuckDB transaction, then refreshes `records_current` in full; the latest view must be unchanged (a digest of every document's path and content hash before and after) and equal the current table. Then the demo's report (account × fund × month for one label) over the tenant, median of five runs, on the latest view (which ranks every version at each read) and on the current table. Target: under 300 MB at 1,000,000.",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        super::measure::machine(),
        command.join(" "),
        lines.join("\n")
    );
    super::measure::replace_section(path, "compact", &section)
}
