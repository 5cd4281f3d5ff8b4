//! The status page as one HTML document: styles inline, charts inline SVG
//! (`crate::svg`), no script, nothing fetched from elsewhere (the favicon is a data
//! URL, so a browser asks for nothing after the page). Narrow screens stack the
//! summary cards and scroll wide tables sideways.

use crate::report::{Listing, ReconcileSummary, StatusReport, TenantStatus};
use crate::svg::{format_number, stacked_bars, Bar};

/// Text safe inside HTML elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; padding: 1rem; color: #1f2328; max-width: 72rem; margin-inline: auto; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
p.meta { color: var(--muted); margin: 0 0 1rem; font-size: .9rem; }
.badge { display: inline-block; padding: .1rem .5rem; border-radius: 1rem; font-size: .85rem; font-weight: 600; color: #fff; }
.badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); } .badge.warn { background: var(--warn); }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; }
.card { flex: 1 1 14rem; border: 1px solid var(--line); border-radius: .5rem; padding: .75rem; min-width: 0; }
.card .big { font-size: 1.5rem; font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: .85rem; background: #f6f8fa; padding: .1rem .3rem; border-radius: .25rem; word-break: break-all; }
.chart { display: block; width: 100%; max-width: 48rem; height: auto; }
.chart .axis { stroke: var(--line); } .chart .tick, .chart .empty { font-size: 11px; fill: var(--muted); }
.chart .missing { fill: #cf222e; } .chart .different { fill: #bf8700; } .chart .orphan { fill: #8250df; }
.chart .events { fill: #0969da; } .chart .lag { fill: #bf8700; } .chart .zero { fill: #1a7f37; }
.legend span { margin-right: 1rem; font-size: .85rem; } .legend i { display: inline-block; width: .8rem; height: .8rem; margin-right: .25rem; vertical-align: -1px; }
"#;

/// The whole page.
pub fn render(report: &StatusReport) -> String {
    let mut html = String::with_capacity(16 * 1024);
    html.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    html.push_str("<link rel=\"icon\" href=\"data:,\"><title>Converge status</title><style>");
    html.push_str(STYLE);
    html.push_str("</style></head><body>");
    let (badge, verdict) = if report.equal {
        ("ok", "Every tenant's copy equals its source".to_owned())
    } else {
        let differing = report.tenants.iter().filter(|t| !t.equal).count();
        ("bad", format!("{differing} of {} tenants differ from their source", report.tenants.len()))
    };
    html.push_str(&format!(
        "<header><h1>Converge status <span class=\"badge {badge}\" id=\"verdict\">{}</span></h1><p class=\"meta\">Generated {} in {} ms · data as JSON at <a href=\"status.json\">status.json</a></p></header>",
        escape(&verdict),
        escape(&report.generated_at),
        report.millis
    ));
    summary_cards(&mut html, report);
    tenants(&mut html, &report.tenants);
    drift_chart(&mut html, &report.reconciles);
    sync(&mut html, report);
    errors(&mut html, report);
    runs(&mut html, report);
    opportunities(&mut html, &report.opportunities);
    html.push_str("</body></html>");
    html
}

fn summary_cards(html: &mut String, report: &StatusReport) {
    let last = report.reconciles.last();
    let cards = [
        ("Tenants", format_number(report.tenants.len() as f64), format!("{} equal to source", report.tenants.iter().filter(|t| t.equal).count())),
        (
            "Last reconcile",
            last.map_or("never".into(), |r| format_number(r.findings() as f64) + " found"),
            last.map_or("no run recorded".into(), |r| format!("{} · {} silent · {} repaired · ${:.4}", short_time(&r.at), r.silent, r.repaired, r.estimated_usd)),
        ),
        (
            "Sync, last hour",
            format_number(report.sync.events_last_hour as f64) + " events",
            format!("lag p50 {} ms · max {} ms", report.sync.lag_ms_p50, report.sync.lag_ms_max),
        ),
        ("Open sync errors", format_number(report.sync_errors.total as f64), format!("{} quarantined", report.quarantine.total)),
    ];
    html.push_str("<section class=\"cards\">");
    for (name, big, detail) in cards {
        html.push_str(&format!("<div class=\"card\"><div>{}</div><div class=\"big\">{}</div><div class=\"meta\">{}</div></div>", escape(name), escape(&big), escape(&detail)));
    }
    html.push_str("</section>");
}

fn tenants(html: &mut String, tenants: &[TenantStatus]) {
    html.push_str("<h2>Tenants</h2><div class=\"scroll\"><table id=\"tenants\"><thead><tr><th>Tenant</th><th>State</th><th class=\"n\">Source documents</th><th class=\"n\">Current rows</th><th>Last reconcile</th><th class=\"n\">Missing</th><th class=\"n\">Different</th><th class=\"n\">Orphan</th><th class=\"n\">Known / silent</th><th class=\"n\">Repaired</th><th class=\"n\">Source reads</th></tr></thead><tbody>");
    if tenants.is_empty() {
        html.push_str("<tr><td colspan=\"11\">No tenant in the source or the warehouse yet.</td></tr>");
    }
    for t in tenants {
        let state = if t.equal { "<span class=\"badge ok\">equal</span>" } else { "<span class=\"badge bad\">differs</span>" };
        let by_route: Vec<String> = t.routes.iter().map(|r| format!("{}: {} / {}", r.table, format_number(r.source_docs as f64), format_number(r.current_rows as f64))).collect();
        let r = t.last_reconcile.clone().unwrap_or_default();
        let when = t.last_reconcile.as_ref().map_or("never".to_owned(), |r| format!("{} ({}, {})", short_time(&r.at), r.mode, r.outcome));
        html.push_str(&format!(
            "<tr data-tenant=\"{tenant}\"><td><strong>{tenant}</strong></td><td>{state}</td><td class=\"n\" title=\"{routes}\">{}</td><td class=\"n\" title=\"{routes}\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            format_number(t.source_docs as f64),
            format_number(t.current_rows as f64),
            escape(&when),
            r.missing,
            r.different,
            r.orphan,
            r.known,
            r.silent,
            r.repaired,
            format_number(r.source_reads as f64),
            tenant = escape(&t.tenant),
            routes = escape(&by_route.join("; ")),
        ));
    }
    html.push_str("</tbody></table></div>");
}

fn drift_chart(html: &mut String, reconciles: &[ReconcileSummary]) {
    html.push_str("<h2>Drift found by the recent reconcile runs</h2>");
    let bars: Vec<Bar> = reconciles
        .iter()
        .map(|r| Bar {
            label: format!("{} {}", short_time(&r.at), r.mode),
            segments: vec![(r.missing as f64, "missing"), (r.different as f64, "different"), (r.orphan as f64, "orphan")],
        })
        .collect();
    html.push_str(&stacked_bars("Drift found per reconcile run, oldest first", "found", &bars));
    html.push_str("<p class=\"legend\"><span><i style=\"background:#cf222e\"></i>missing</span><span><i style=\"background:#bf8700\"></i>different</span><span><i style=\"background:#8250df\"></i>orphan</span><span><i style=\"background:#1a7f37\"></i>nothing found</span></p>");
}

fn sync(html: &mut String, report: &StatusReport) {
    html.push_str("<h2>Sync throughput and lag, last hour</h2>");
    let events: Vec<Bar> = report.sync.minutes.iter().map(|m| Bar { label: short_time(&m.minute), segments: vec![(m.events as f64, "events")] }).collect();
    html.push_str(&stacked_bars("Events made durable per minute", "events", &events));
    let lag: Vec<Bar> = report.sync.minutes.iter().map(|m| Bar { label: short_time(&m.minute), segments: vec![(m.lag_ms_max as f64, "lag")] }).collect();
    html.push_str(&stacked_bars("Largest lag per minute, source commit to durable", "ms", &lag));
    html.push_str("<div class=\"scroll\"><table id=\"freshness\"><thead><tr><th>Current table</th><th>Refreshed</th><th class=\"n\">Age (s)</th><th class=\"n\">Rows</th></tr></thead><tbody>");
    if report.freshness.is_empty() {
        html.push_str("<tr><td colspan=\"4\">No refresh of the current tables recorded yet.</td></tr>");
    }
    for f in &report.freshness {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&f.table),
            escape(&short_time(&f.refreshed_at)),
            f.age_seconds,
            format_number(f.current_rows as f64)
        ));
    }
    html.push_str("</tbody></table></div>");
}

fn listing_header<T>(html: &mut String, title: &str, listing: &Listing<T>, what_to_do: &str) {
    html.push_str(&format!("<h2>{} <span class=\"badge {}\">{}</span></h2>", escape(title), if listing.total == 0 { "ok" } else { "warn" }, listing.total));
    if listing.total > 0 && !what_to_do.is_empty() {
        html.push_str(&format!("<p>{what_to_do}</p>"));
    }
}

fn errors(html: &mut String, report: &StatusReport) {
    let errors = &report.sync_errors;
    listing_header(
        html,
        "Open sync errors",
        errors,
        &format!("Each names a document the sync could not write. The next reconcile re-reads them from the source, repairs them and resolves the record: <code>{}</code>", escape(&errors.command)),
    );
    if errors.total > 0 {
        html.push_str("<div class=\"scroll\"><table id=\"sync-errors\"><thead><tr><th>Tenant</th><th>Document</th><th>Action</th><th>Error</th><th class=\"n\">Attempts</th><th>Last seen</th></tr></thead><tbody>");
        for e in &errors.shown {
            html.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&e.tenant),
                escape(&e.doc_path),
                escape(&e.action),
                escape(&e.error),
                e.attempts,
                escape(&short_time(&e.last_seen))
            ));
        }
        more(html, errors.total, errors.shown.len());
        html.push_str("</tbody></table></div>");
    }
    let quarantine = &report.quarantine;
    listing_header(html, "Quarantined events", quarantine, "Events refused as they arrived (malformed, oversized, unroutable). Fix the cause, then replay each:");
    if quarantine.total > 0 {
        html.push_str("<div class=\"scroll\"><table id=\"quarantine\"><thead><tr><th>Received</th><th>Reason</th><th>Detail</th><th>Command</th></tr></thead><tbody>");
        for q in &quarantine.shown {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                escape(&short_time(&q.received_at)),
                escape(&q.reason),
                escape(&q.detail),
                escape(&q.command)
            ));
        }
        more(html, quarantine.total, quarantine.shown.len());
        html.push_str("</tbody></table></div>");
    }
}

fn more(html: &mut String, total: usize, shown: usize) {
    if total > shown {
        html.push_str(&format!("<tr><td colspan=\"6\">and {} more (status.json lists the first {shown})</td></tr>", format_number((total - shown) as f64)));
    }
}

fn runs(html: &mut String, report: &StatusReport) {
    html.push_str("<h2>Run history: ETL, detectors, rebuilds, compactions, error retries</h2><div class=\"scroll\"><table id=\"runs\"><thead><tr><th>Finished</th><th>Kind</th><th>Scope</th><th>Outcome</th><th class=\"n\">Seconds</th><th class=\"n\">Cost</th></tr></thead><tbody>");
    if report.runs.is_empty() {
        html.push_str("<tr><td colspan=\"6\">No run recorded yet.</td></tr>");
    }
    for r in &report.runs {
        let class = match r.outcome.as_str() {
            "ok" | "dry_run" => "ok",
            "failed" => "bad",
            _ => "warn",
        };
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><span class=\"badge {class}\">{}</span></td><td class=\"n\">{:.1}</td><td class=\"n\">${:.4}</td></tr>",
            escape(&short_time(&r.finished_at)),
            escape(&r.kind),
            escape(&r.scope),
            escape(&r.outcome),
            r.seconds,
            r.estimated_usd
        ));
    }
    html.push_str("</tbody></table></div>");
}

fn opportunities(html: &mut String, listing: &Listing<crate::report::OpportunityRow>) {
    listing_header(html, "Open opportunities", listing, "");
    if listing.total > 0 {
        html.push_str("<div class=\"scroll\"><table id=\"opportunities\"><thead><tr><th>Tenant</th><th>Detector</th><th>Entity</th><th>What</th><th>Last seen</th></tr></thead><tbody>");
        for o in &listing.shown {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><strong>{}</strong><br>{}</td><td>{}</td></tr>",
                escape(&o.tenant),
                escape(&o.detector),
                escape(&o.entity),
                escape(&o.title),
                escape(&o.message),
                escape(&short_time(&o.last_seen))
            ));
        }
        more(html, listing.total, listing.shown.len());
        html.push_str("</tbody></table></div>");
    }
}

/// `2026-12-07T10:15:00.123456Z` as `2026-12-07 10:15:00 UTC`.
fn short_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => rfc3339.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn times_are_shortened() {
        assert_eq!(short_time("2026-12-07T10:15:00.123456Z"), "2026-12-07 10:15:00 UTC");
        assert_eq!(short_time("soon"), "soon");
    }
}
