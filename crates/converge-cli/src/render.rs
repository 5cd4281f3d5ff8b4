//! Human-readable output of the commands.

use std::fmt::Write;

use crate::demo::DemoSummary;

pub fn demo(summary: &DemoSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nConverge demo — embedded pipeline (SQLite source → relay → on-write sync → DuckDB)");
    let _ = writeln!(out, "  data directory      {}", summary.data_dir);
    let _ = writeln!(out, "  documents loaded    {} in {} ms", summary.documents_loaded, summary.load_millis);
    let live = &summary.live;
    let _ = writeln!(
        out,
        "  live changes        {} edits, {} old records re-categorized, {} deletes, {} created-then-deleted, {} burst creates",
        live.edits, live.recategorized_old_records, live.deletes, live.created_then_deleted, live.burst_creates
    );
    let _ = writeln!(
        out,
        "  events delivered    {} ({} rejected, {} delivery retries), drained {} ms after the last write",
        summary.events_delivered, summary.events_rejected, summary.delivery_retries, summary.drain_millis
    );
    let _ = writeln!(out, "  rows written        {} (changelog holds {})", summary.rows_written, summary.changelog_rows);
    let _ = writeln!(out, "  quarantined         {}   open sync errors {}", summary.quarantined, summary.open_sync_errors);
    let _ = writeln!(out, "\n  {:<10} {:>12} {:>12} {:>8} {:>10} {:>7}  ", "tenant", "source docs", "latest rows", "missing", "different", "orphan");
    for t in &summary.tenants {
        let _ = writeln!(out, "  {:<10} {:>12} {:>12} {:>8} {:>10} {:>7}", t.tenant, t.source_docs, t.latest_rows, t.missing, t.different, t.orphan);
    }
    let verdict = if summary.derived_equals_source { "derived == source for every tenant" } else { "DRIFT: derived differs from source (see above)" };
    let _ = writeln!(out, "\n  {verdict}");
    let report = &summary.report;
    let _ = writeln!(
        out,
        "\n  Report: tenant {} by account × fund × month, label = {:?}: {} rows in {:.1} ms (DuckDB, records_latest)",
        report.tenant, report.label, report.rows, report.millis
    );
    for row in &report.sample {
        let _ = writeln!(out, "    {row}");
    }
    if report.rows > report.sample.len() {
        let _ = writeln!(out, "    … {} more rows", report.rows - report.sample.len());
    }
    let _ = writeln!(out, "\n  total {:.1} s", summary.total_millis as f64 / 1000.0);
    out
}
