//! Human-readable output of the commands.

use std::fmt::Write;

use converge_core::RunCost;
use converge_reconcile::ReconcileRun;
use converge_scenarios::demo::DemoSummary;
use converge_scenarios::drill::{self, DrillSummary};

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
    if let Some(found) = summary.reconcile_findings {
        let _ = writeln!(out, "  a full reconcile run found {found} differences (recorded in converge_runs: the status page's last reconcile)");
    }
    let report = &summary.report;
    let _ = writeln!(
        out,
        "\n  Report: tenant {} by account × fund × month, label = {:?}: {} rows in {:.1} ms on records_current, {:.1} ms on the records_latest view (median of 5){}",
        report.tenant,
        report.label,
        report.rows,
        report.current_millis,
        report.millis,
        if report.current_equals_latest { "" } else { " — THE TWO DIFFER" }
    );
    if let (Some(current), Some(latest)) = (report.current_bytes_processed, report.bytes_processed) {
        let _ = writeln!(out, "    bytes processed: {current} on records_current, {latest} on records_latest");
    }
    for row in &report.sample {
        let _ = writeln!(out, "    {row}");
    }
    if report.rows > report.sample.len() {
        let _ = writeln!(out, "    … {} more rows", report.rows - report.sample.len());
    }
    if let (Some(ops), Some(etl), Some(detectors)) = (&summary.ops, &summary.etl, &summary.detectors) {
        let _ = writeln!(out, "\n  Operational data: {} raw rows (GA4, ads, email exports; {}..={}) seeded in {} ms", ops.raw_rows, ops.first_day, ops.as_of, ops.seed_millis);
        let _ = writeln!(out, "  etl                 {} rows in, {} rows out of daily_entity_metrics in {} ms", etl.rows_in, etl.rows_out, etl.millis);
        let _ = writeln!(
            out,
            "  detectors           {} run as of {}, {} fired, {} failed in {} ms; planted found {}/{}, unexpected {}; {} declared known-event day(s) left out",
            detectors.run, ops.as_of, detectors.fired, detectors.failed, detectors.millis, detectors.planted_found, detectors.planted_total, detectors.unexpected,
            detectors.known_event_days
        );
        let _ = writeln!(out, "\n  Opportunities ({}):", ops.opportunities.len());
        for o in &ops.opportunities {
            let mark = if o.planted { "" } else { "  [NOT PLANTED]" };
            let _ = writeln!(out, "    {:<8} {:<9} {:<36} {:<28} {}{mark}", o.severity, o.tenant, o.detector, o.entity_id, o.message);
        }
        for missed in &ops.missed {
            let _ = writeln!(out, "    MISSED   {:<9} {:<36} {:<28} (planted, not found)", missed.tenant, missed.detector, missed.entity_id);
        }
    }
    let _ = writeln!(out, "\n  total {:.1} s", summary.total_millis as f64 / 1000.0);
    status_line(&mut out, &summary.data_dir);
    out
}

/// The port the demo's closing line suggests for `converge serve` (its default).
pub const STATUS_PORT: u16 = 8080;

/// The closing line of the demo and the drill: where the status page is, once served.
fn status_line(out: &mut String, data_dir: &str) {
    let _ = writeln!(
        out,
        "\n  Status page: http://127.0.0.1:{port}{path} once `converge serve --data-dir {data_dir} --port {port}` runs (it serves the sync too; Ctrl-C stops it)",
        port = STATUS_PORT,
        path = converge_status::STATUS_PATH
    );
}

pub fn reconcile(run: &ReconcileRun) -> String {
    let mut out = String::new();
    let dry = if run.dry_run { " (dry run: nothing written)" } else { "" };
    let _ = writeln!(out, "\nReconcile {} ({}) — batch {}{dry}", run.scope, run.mode, run.batch_id);
    let _ = writeln!(
        out,
        "  {:<10} {:<10} {:>11} {:>8} {:>10} {:>7} {:>6} {:>7} {:>9}",
        "tenant", "table", "source docs", "missing", "different", "orphan", "known", "silent", "repaired"
    );
    for t in &run.tenants {
        let _ = writeln!(
            out,
            "  {:<10} {:<10} {:>11} {:>8} {:>10} {:>7} {:>6} {:>7} {:>9}",
            t.tenant, t.table, t.source_docs_read, t.missing, t.different, t.orphan, t.known, t.silent, t.repaired
        );
    }
    let _ = writeln!(
        out,
        "  {:<21} {:>11} {:>8} {:>10} {:>7} {:>6} {:>7} {:>9}",
        "total", run.source_docs_read, run.missing, run.different, run.orphan, run.known, run.silent, run.repaired
    );
    for t in run.tenants.iter().filter(|t| !t.silent_docs.is_empty()) {
        let _ = writeln!(out, "  SILENT drift in {} (no error record): {}", t.tenant, t.silent_docs.join(", "));
    }
    for t in run.tenants.iter().filter(|t| t.full_because.is_some()) {
        let _ = writeln!(out, "  {} ({}) read in full: {}", t.tenant, t.table, t.full_because.as_deref().unwrap_or_default());
    }
    let _ = writeln!(out, "  {}", cost(&run.cost));
    let _ = writeln!(
        out,
        "  errors resolved {}, repair failures {}, outcome {}, {} derived rows read, {} ms",
        run.errors_resolved, run.repair_failures, run.outcome, run.derived_rows_read, run.millis
    );
    for refused in &run.refused {
        let _ = writeln!(
            out,
            "  REFUSED tombstoning {} of {} documents of {} ({}): {}",
            refused.orphans, refused.derived_docs, refused.tenant, refused.table, refused.how_to_override
        );
    }
    out
}

/// A run's cost on one line (the `cost` of its run record and `--json`): billed source
/// reads, warehouse bytes billed, and the estimate under the price table in use.
pub fn cost(cost: &RunCost) -> String {
    let counts = if cost.source_index_entries > 0 { format!(" (counts over {} index entries among them)", cost.source_index_entries) } else { String::new() };
    format!(
        "cost: {} source reads{counts}, {} warehouse bytes billed ({} processed), estimated ${:.6}",
        cost.source_reads,
        bytes(cost.warehouse_bytes_billed),
        bytes(cost.warehouse_bytes),
        cost.estimated_usd
    )
}

/// `n` bytes in binary units, as BigQuery bills them (MiB, GiB, TiB).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn retry_errors(run: &converge_reconcile::RetryRun) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nSync error retry ({}) — batch {} — {}", run.scope, run.batch_id, run.outcome);
    let _ = writeln!(
        out,
        "  {} open records naming {} documents: {} rows appended ({} tombstones), {} records resolved, {} ms",
        run.open_errors, run.documents, run.rows_appended, run.tombstones, run.errors_resolved, run.millis
    );
    let open = run.recorded_after_read + run.unroutable + run.unmirrorable;
    if open > 0 {
        let _ = writeln!(
            out,
            "  left open: {} recorded after the read (the next pass takes them), {} of paths no route matches, {} not mirrorable as they are (see the log)",
            run.recorded_after_read, run.unroutable, run.unmirrorable
        );
    }
    let _ = writeln!(out, "  {}", cost(&run.cost));
    out
}

pub fn drill(summary: &DrillSummary) -> String {
    let mut out = String::new();
    let pipeline = if summary.backend == "cloud" { "the cloud pipeline (Firestore and BigQuery emulators)" } else { "the embedded pipeline" };
    let _ = writeln!(out, "\nConverge drill — faults injected into {pipeline}, then the reconciler");
    let _ = writeln!(out, "  data directory      {}", summary.data_dir);
    let _ = writeln!(out, "  events delivered    {} (large tenant {} records)", summary.events_delivered, summary.records);
    let f = &summary.no_drift_faults;
    let _ = writeln!(
        out,
        "  no-drift faults     {} duplicates, {} reordered, {} transient append failures, {} sync kill(s) mid group commit, {} relay kill(s) mid-batch (pending at kills: {:?}, answered in the killed batches: {:?}); {} delivery retries, {} redeliveries skipped",
        f.duplicates, f.reordered, f.transient_failures, f.sync_kills, f.relay_kills, f.pending_at_relay_kills, f.answered_in_killed_batches, f.delivery_retries, f.redeliveries_skipped
    );
    let _ = writeln!(
        out,
        "\n  {:<10} {:>8} {:>10} {:>7} {:>6} {:>7} {:>14} {:>16} {:>12}",
        "", "missing", "different", "orphan", "known", "silent", "wrong content", "wrong tombstone", "mass orphan"
    );
    for (name, c) in [("injected", &summary.injected), ("found", &summary.found)] {
        let _ = writeln!(
            out,
            "  {:<10} {:>8} {:>10} {:>7} {:>6} {:>7} {:>14} {:>16} {:>12}",
            name, c.missing, c.different, c.orphan, c.known, c.silent, c.wrong_content_same_version, c.wrong_tombstone, c.mass_orphan_refused
        );
    }
    let _ = writeln!(out, "\n  repaired {}, errors resolved {}", summary.repaired, summary.errors_resolved);
    let _ = writeln!(out, "  drift after repair  {}", summary.drift_after_repair);
    let _ = writeln!(out, "  second run findings {}", summary.second_run_findings);
    let _ = writeln!(out, "  open sync errors    {}", summary.open_sync_errors);
    let inc = &summary.incremental;
    let counts = |c: &drill::IncrementalCounts| format!("{} missing, {} different, {} orphan", c.missing, c.different, c.orphan);
    let _ = writeln!(
        out,
        "\n  incremental run     tenant {} ({}): injected {}; found {}",
        inc.tenant,
        inc.mode,
        counts(&inc.injected),
        counts(&inc.found)
    );
    let _ = writeln!(
        out,
        "                      read {} of {} source documents ({} changed, {} ranges counted, {} leaves read); {} repaired, drift after repair {}",
        inc.source_docs_read, inc.source_docs, inc.changed_docs, inc.ranges_counted, inc.leaves_read, inc.repaired, inc.drift_after_repair
    );
    let problems = drill::mismatches(summary);
    if problems.is_empty() {
        let _ = writeln!(
            out,
            "\n  PASS: every injected loss found and classified as injected; derived == source after repair; the incremental run found its drift reading a fraction of the tenant"
        );
    } else {
        for problem in problems {
            let _ = writeln!(out, "\n  FAIL: {problem}");
        }
    }
    let _ = writeln!(out, "\n  total {:.1} s", summary.total_millis as f64 / 1000.0);
    status_line(&mut out, &summary.data_dir);
    out
}

pub fn rebuild(summary: &crate::rebuild::RebuildSummary) -> String {
    let run = &summary.run;
    let mut out = String::new();
    let _ = writeln!(out, "\nRebuild {} — batch {} — {}", run.tenant, run.batch_id, run.outcome);
    let _ = writeln!(out, "  {:<12} {:>10} {:>10} {:>11} {:>8}  {}", "table", "documents", "unchanged", "tombstones", "skipped", "source read at");
    for t in &run.tables {
        let _ = writeln!(out, "  {:<12} {:>10} {:>10} {:>11} {:>8}  {}", t.table, t.documents, t.unchanged, t.tombstones, t.skipped, t.source_read_time);
    }
    if let Some(hint) = &run.how_to_override {
        let _ = writeln!(out, "  REFUSED: {hint}");
    }
    let rate = run.documents as f64 * 1000.0 / run.millis.max(1) as f64;
    let _ = writeln!(
        out,
        "  {} rows written ({} already stored), {} ms, {:.0} documents/s, peak RSS {:.0} MB",
        run.rows_written, run.duplicates, run.millis, rate, summary.peak_rss_mb
    );
    if !run.skipped_docs.is_empty() {
        let _ = writeln!(out, "  NOT rebuilt (cannot be mirrored as they are): {}", run.skipped_docs.join(", "));
    }
    let _ = writeln!(out, "  {}", cost(&run.cost));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_line_shows_reads_bytes_and_the_estimate() {
        let run = RunCost { source_reads: 40, warehouse_bytes: 3 << 20, warehouse_bytes_billed: 30 << 20, ..RunCost::default() }
            .priced(&converge_core::PriceTable::default());
        assert_eq!(cost(&run), format!("cost: 40 source reads, 30.0 MiB warehouse bytes billed (3.0 MiB processed), estimated ${:.6}", run.estimated_usd));
        let counted = RunCost { source_reads: 12, source_index_entries: 10_500, ..RunCost::default() };
        assert_eq!(cost(&counted), "cost: 12 source reads (counts over 10500 index entries among them), 0 B warehouse bytes billed (0 B processed), estimated $0.000000");
    }
}
