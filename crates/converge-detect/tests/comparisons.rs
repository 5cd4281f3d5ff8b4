//! Each comparison kind, the volume gate, zero denominators, windows and filters, on
//! small hand-built tables in a real (in-memory) DuckDB — as rules (`significance =
//! { off = true }`: the threshold decides alone). The tests that tell noise from change
//! are in `significance.rs`.

mod common;

use common::{date, spec, MetricsDb};
use converge_core::{FindingRow, QueryDialect};
use converge_detect::{compile, render_message, CompileError};

const AS_OF: &str = "2025-03-31";

fn as_of() -> chrono::NaiveDate {
    date(AS_OF)
}

/// `baseline` for `baseline_days`, then `recent` for `recent_days`, ending on AS_OF.
fn windows_of(baseline: f64, baseline_days: usize, recent: f64, recent_days: usize) -> Vec<f64> {
    let mut values = vec![baseline; baseline_days];
    values.extend(std::iter::repeat_n(recent, recent_days));
    values
}

const CONVERSION_RATE_DROP: &str = r#"
id = "cvr_drop"
title = "Conversion rate dropped"
entity_type = "page"
severity = "warning"
message = "{entity_id}: {recent}% from {baseline}% ({change_pct}) on {volume} sessions"
measure = { kind = "ratio", numerator = "conversions", denominator = "sessions", scale = 100.0 }
windows = { recent_days = 7, baseline_days = 7 }
comparison = { kind = "below_fraction_of_baseline", fraction = 0.7 }
significance = { off = true }
"#;

#[test]
fn below_fraction_of_baseline_fires_under_the_fraction_only() {
    let db = MetricsDb::new();
    for (page, recent_conversions) in [("/halved", 5.0), ("/dipped", 8.0), ("/at_limit", 7.0)] {
        db.add_days("t", "page", page, "sessions", as_of(), &[100.0; 14]);
        db.add_days("t", "page", page, "conversions", as_of(), &windows_of(10.0, 7, recent_conversions, 7));
    }
    let rows = db.fire(&spec(CONVERSION_RATE_DROP), as_of(), Some("t"));
    assert_eq!(
        rows,
        vec![FindingRow {
            tenant: "t".into(),
            entity_type: "page".into(),
            entity_id: "/halved".into(),
            recent_value: Some(5.0),
            baseline_value: Some(10.0),
            volume: Some(700.0),
            reference_value: Some(7.0),
            baseline_volume: Some(700.0),
            statistic: None,
            p_value: None,
            q_value: None,
        }]
    );
}

#[test]
fn above_fraction_of_baseline_never_fires_from_a_zero_baseline() {
    let db = MetricsDb::new();
    for (page, baseline_bounces, recent_bounces) in
        [("/spiked", 30.0, 60.0), ("/steady", 30.0, 33.0), ("/from_zero", 0.0, 50.0)]
    {
        db.add_days("t", "page", page, "sessions", as_of(), &[100.0; 14]);
        db.add_days("t", "page", page, "bounces", as_of(), &windows_of(baseline_bounces, 7, recent_bounces, 7));
    }
    let spike = spec(
        r#"
        id = "bounce_spike"
        title = "Bounce spike"
        entity_type = "page"
        severity = "warning"
        message = "{entity_id}"
        measure = { kind = "ratio", numerator = "bounces", denominator = "sessions" }
        windows = { recent_days = 7, baseline_days = 7 }
        comparison = { kind = "above_fraction_of_baseline", fraction = 1.5 }
        significance = { off = true }
        "#,
    );
    assert_eq!(db.fired_ids(&spike, as_of(), None), ["/spiked"]);
}

#[test]
fn absolute_thresholds_are_strict() {
    let db = MetricsDb::new();
    for (email, spam) in [("over", 3.0), ("at", 2.0), ("under", 1.0)] {
        db.add_days("t", "email", email, "delivered", as_of(), &[1000.0; 2]);
        db.add_days("t", "email", email, "spam_reports", as_of(), &[spam; 2]);
    }
    let toml = |kind: &str, threshold: f64| {
        format!(
            r#"
            id = "spam_{kind}"
            title = "Spam"
            entity_type = "email"
            severity = "critical"
            message = "{{entity_id}} at {{recent}}% (limit {{reference}}%)"
            measure = {{ kind = "ratio", numerator = "spam_reports", denominator = "delivered", scale = 100.0 }}
            windows = {{ recent_days = 2 }}
            comparison = {{ kind = "{kind}", threshold = {threshold:?} }}
            significance = {{ off = true }}
            "#
        )
    };
    assert_eq!(db.fired_ids(&spec(&toml("absolute_above", 0.2)), as_of(), None), ["over"]);
    assert_eq!(db.fired_ids(&spec(&toml("absolute_below", 0.2)), as_of(), None), ["under"]);
}

#[test]
fn percentiles_are_per_tenant_over_the_entities_that_pass_the_volume_gate() {
    let db = MetricsDb::new();
    // Load times 1..4 and 10 seconds on pages with enough samples; three tiny pages at
    // 100 s would drag the median to 7 s (and the limit to 14 s) if they counted.
    for (page, seconds, samples) in [
        ("/a", 1.0, 100.0),
        ("/b", 2.0, 100.0),
        ("/c", 3.0, 100.0),
        ("/d", 4.0, 100.0),
        ("/slow", 10.0, 100.0),
        ("/tiny1", 100.0, 1.0),
        ("/tiny2", 100.0, 1.0),
        ("/tiny3", 100.0, 1.0),
    ] {
        db.add_days("t", "page", page, "load_time_samples", as_of(), &[samples]);
        db.add_days("t", "page", page, "load_time_ms_sum", as_of(), &[samples * seconds * 1000.0]);
    }
    // Another tenant whose pages are all slow does not move t's median, nor fire itself.
    for page in ["/a", "/b", "/c"] {
        db.add_days("other", "page", page, "load_time_samples", as_of(), &[100.0]);
        db.add_days("other", "page", page, "load_time_ms_sum", as_of(), &[100.0 * 50_000.0]);
    }
    let toml = |kind: &str, factor: f64| {
        format!(
            r#"
            id = "load_{kind}"
            title = "Load time against peers"
            entity_type = "page"
            severity = "warning"
            message = "{{entity_id}}: {{recent}} ms against a limit of {{reference}} ms"
            measure = {{ kind = "ratio", numerator = "load_time_ms_sum", denominator = "load_time_samples" }}
            windows = {{ recent_days = 1 }}
            comparison = {{ kind = "{kind}", percentile = 0.5, factor = {factor:?} }}
            significance = {{ off = true }}
            min_volume = {{ metric = "load_time_samples", recent = 50 }}
            "#
        )
    };
    let slow = db.fire(&spec(&toml("percentile_above", 2.0)), as_of(), None);
    assert_eq!(slow.iter().map(|r| (r.tenant.as_str(), r.entity_id.as_str())).collect::<Vec<_>>(), [("t", "/slow")]);
    assert_eq!(slow[0].reference_value, Some(6000.0), "2 × the median of 1, 2, 3, 4, 10 s");
    assert_eq!(slow[0].baseline_value, None, "no baseline window");

    let fast = db.fire(&spec(&toml("percentile_below", 0.5)), as_of(), Some("t"));
    assert_eq!(fast.iter().map(|r| r.entity_id.as_str()).collect::<Vec<_>>(), ["/a"]);
    assert_eq!(fast[0].reference_value, Some(1500.0));
}

const CONVERSIONS_STOPPED: &str = r#"
id = "conversions_stopped"
title = "Stopped converting"
entity_type = "page"
severity = "critical"
message = "{entity_id} had no conversions in {recent_days} days, after {baseline}"
measure = { kind = "sum", metric = "conversions" }
windows = { recent_days = 3, baseline_days = 6 }
comparison = { kind = "drop_to_zero" }
significance = { off = true }
"#;

#[test]
fn drop_to_zero_counts_missing_rows_as_zero_and_needs_a_baseline_above_zero() {
    let db = MetricsDb::new();
    db.add_days("t", "page", "/zero_rows", "conversions", as_of(), &windows_of(4.0, 6, 0.0, 3));
    // Rows stop three days before the run date: absent, not zero.
    db.add_days("t", "page", "/no_rows", "conversions", as_of() - chrono::Days::new(3), &[4.0; 6]);
    db.add_days("t", "page", "/never", "conversions", as_of(), &[0.0; 9]);
    db.add_days("t", "page", "/still", "conversions", as_of(), &windows_of(4.0, 6, 1.0, 3));
    let rows = db.fire(&spec(CONVERSIONS_STOPPED), as_of(), None);
    assert_eq!(rows.iter().map(|r| r.entity_id.as_str()).collect::<Vec<_>>(), ["/no_rows", "/zero_rows"]);
    // The baseline sum (24 over 6 days) rescaled to the 3-day recent window.
    assert_eq!(rows[0].baseline_value, Some(12.0));
    assert_eq!(rows[0].recent_value, Some(0.0));
    assert_eq!(rows[0].reference_value, Some(0.0));
}

#[test]
fn sums_compare_with_the_baseline_rescaled_to_the_recent_windows_length() {
    let db = MetricsDb::new();
    db.add_days("t", "traffic_source", "halved/ref", "sessions", as_of(), &windows_of(100.0, 28, 40.0, 7));
    db.add_days("t", "traffic_source", "steady/ref", "sessions", as_of(), &[100.0; 35]);
    let drop = spec(
        r#"
        id = "sessions_drop"
        title = "Sessions halved"
        entity_type = "traffic_source"
        severity = "warning"
        message = "{entity_id}: {recent} against {baseline}"
        measure = { kind = "sum", metric = "sessions" }
        windows = { recent_days = 7, baseline_days = 28 }
        comparison = { kind = "below_fraction_of_baseline", fraction = 0.5 }
        significance = { off = true }
        "#,
    );
    let rows = db.fire(&drop, as_of(), None);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].entity_id, "halved/ref");
    assert_eq!((rows[0].recent_value, rows[0].baseline_value), (Some(280.0), Some(700.0)));
}

#[test]
fn the_volume_gate_applies_to_each_window_given() {
    let db = MetricsDb::new();
    // (page, sessions per baseline day, per recent day); every page's rate halves.
    for (page, baseline_sessions, recent_sessions) in
        [("/both", 100.0, 100.0), ("/thin_recent", 100.0, 10.0), ("/thin_baseline", 10.0, 100.0)]
    {
        db.add_days("t", "page", page, "sessions", as_of(), &windows_of(baseline_sessions, 7, recent_sessions, 7));
        db.add_days(
            "t",
            "page",
            page,
            "conversions",
            as_of(),
            &windows_of(baseline_sessions * 0.1, 7, recent_sessions * 0.05, 7),
        );
    }
    let gated = |gate: &str| spec(&format!("{CONVERSION_RATE_DROP}\nmin_volume = {gate}\n"));
    let all = db.fired_ids(&spec(CONVERSION_RATE_DROP), as_of(), None);
    assert_eq!(all, ["/both", "/thin_baseline", "/thin_recent"]);
    let recent = db.fired_ids(&gated(r#"{ metric = "sessions", recent = 500 }"#), as_of(), None);
    assert_eq!(recent, ["/both", "/thin_baseline"]);
    let baseline = db.fired_ids(&gated(r#"{ metric = "sessions", baseline = 500 }"#), as_of(), None);
    assert_eq!(baseline, ["/both", "/thin_recent"]);
    let both = db.fired_ids(&gated(r#"{ metric = "sessions", recent = 500, baseline = 500 }"#), as_of(), None);
    assert_eq!(both, ["/both"]);
    // The gate may use a metric the measure does not read.
    db.add_days("t", "page", "/both", "pageviews", as_of(), &[1.0; 14]);
    let other_metric = db.fired_ids(&gated(r#"{ metric = "pageviews", recent = 5 }"#), as_of(), None);
    assert_eq!(other_metric, ["/both"]);
    let volume = db.fire(&gated(r#"{ metric = "pageviews", recent = 5 }"#), as_of(), None)[0].volume;
    assert_eq!(volume, Some(7.0), "volume is the gating metric's recent sum");
}

#[test]
fn zero_denominators_give_no_value_and_never_fire() {
    let db = MetricsDb::new();
    // 0/0 in the recent window, against a healthy baseline.
    db.add_days("t", "page", "/no_sessions", "sessions", as_of(), &windows_of(100.0, 7, 0.0, 7));
    db.add_days("t", "page", "/no_sessions", "conversions", as_of(), &[0.0; 14]);
    // Conversions reported without sessions (inconsistent source data): no division error.
    db.add_days("t", "page", "/orphan_conversions", "sessions", as_of(), &windows_of(100.0, 7, 0.0, 7));
    db.add_days("t", "page", "/orphan_conversions", "conversions", as_of(), &[5.0; 14]);
    // A zero baseline denominator: nothing to compare with.
    db.add_days("t", "page", "/new_page", "sessions", as_of(), &windows_of(0.0, 7, 100.0, 7));
    db.add_days("t", "page", "/new_page", "conversions", as_of(), &[0.0; 14]);
    // A real zero rate fires an absolute threshold; 0/0 must not.
    db.add_days("t", "page", "/zero_rate", "sessions", as_of(), &[100.0; 14]);
    db.add_days("t", "page", "/zero_rate", "conversions", as_of(), &[0.0; 14]);

    assert_eq!(db.fired_ids(&spec(CONVERSION_RATE_DROP), as_of(), None), Vec::<String>::new());
    let below = spec(
        r#"
        id = "cvr_low"
        title = "Conversion rate low"
        entity_type = "page"
        severity = "info"
        message = "{entity_id}"
        measure = { kind = "ratio", numerator = "conversions", denominator = "sessions" }
        windows = { recent_days = 7 }
        comparison = { kind = "absolute_below", threshold = 0.01 }
        significance = { off = true }
        "#,
    );
    assert_eq!(db.fired_ids(&below, as_of(), None), ["/new_page", "/zero_rate"]);
    let stopped = spec(
        r#"
        id = "cvr_zero"
        title = "Conversion rate fell to zero"
        entity_type = "page"
        severity = "info"
        message = "{entity_id}"
        measure = { kind = "ratio", numerator = "conversions", denominator = "sessions" }
        windows = { recent_days = 7, baseline_days = 7 }
        comparison = { kind = "drop_to_zero" }
        significance = { off = true }
        "#,
    );
    assert_eq!(db.fired_ids(&stopped, as_of(), None), Vec::<String>::new(), "0/0 is not a drop to zero");
}

#[test]
fn a_gap_separates_the_baseline_from_the_recent_window() {
    let db = MetricsDb::new();
    // 7 baseline days at 10%, 7 gap days at 1% (a known outage), 7 recent days at 6%.
    let conversions: Vec<f64> = [vec![10.0; 7], vec![1.0; 7], vec![6.0; 7]].into_iter().flatten().collect();
    db.add_days("t", "page", "/p", "sessions", as_of(), &[100.0; 21]);
    db.add_days("t", "page", "/p", "conversions", as_of(), &conversions);
    let adjacent = db.fire(&spec(CONVERSION_RATE_DROP), as_of(), None);
    assert!(adjacent.is_empty(), "against the outage week, 6% is a rise: {adjacent:?}");
    let gapped = spec(&CONVERSION_RATE_DROP.replace(
        "windows = { recent_days = 7, baseline_days = 7 }",
        "windows = { recent_days = 7, baseline_days = 7, gap_days = 7 }",
    ));
    let rows = db.fire(&gapped, as_of(), None);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].recent_value, rows[0].baseline_value), (Some(6.0), Some(10.0)));
}

#[test]
fn windows_end_on_the_run_date_and_ignore_later_days() {
    let db = MetricsDb::new();
    // The drop happens on the last 7 days; a run dated a week earlier must not see it,
    // and days after a run date never count.
    db.add_days("t", "page", "/p", "sessions", as_of(), &[100.0; 21]);
    db.add_days("t", "page", "/p", "conversions", as_of(), &windows_of(10.0, 14, 2.0, 7));
    assert_eq!(db.fired_ids(&spec(CONVERSION_RATE_DROP), as_of(), None), ["/p"]);
    assert!(db.fired_ids(&spec(CONVERSION_RATE_DROP), as_of() - chrono::Days::new(7), None).is_empty());
}

#[test]
fn entity_filters_are_like_patterns() {
    let db = MetricsDb::new();
    for page in ["/blog/a", "/blog/b", "/pricing", "/docs/blog"] {
        db.add_days("t", "page", page, "sessions", as_of(), &[100.0; 14]);
        db.add_days("t", "page", page, "conversions", as_of(), &windows_of(10.0, 7, 1.0, 7));
    }
    let filtered = |filter: &str| spec(&format!("{CONVERSION_RATE_DROP}\nentity_filter = {filter}\n"));
    assert_eq!(db.fired_ids(&filtered(r#"{ like = "/blog/%" }"#), as_of(), None), ["/blog/a", "/blog/b"]);
    assert_eq!(db.fired_ids(&filtered(r#"{ not_like = "/blog/%" }"#), as_of(), None), ["/docs/blog", "/pricing"]);
    assert_eq!(db.fired_ids(&filtered(r#"{ like = "/blog/%", not_like = "%/b" }"#), as_of(), None), ["/blog/a"]);
    // A quote in a pattern is data, not SQL: it is bound, and matches nothing here.
    assert!(db.fired_ids(&filtered(r#"{ like = "x' OR '1'='1" }"#), as_of(), None).is_empty());
}

#[test]
fn other_entity_types_and_metrics_are_not_read() {
    let db = MetricsDb::new();
    db.add_days("t", "page", "/p", "sessions", as_of(), &[100.0; 14]);
    db.add_days("t", "page", "/p", "conversions", as_of(), &[10.0; 14]);
    // Same entity id under another type, and a metric the detector does not read.
    db.add_days("t", "traffic_source", "/p", "conversions", as_of(), &windows_of(0.0, 7, 1000.0, 7));
    db.add_days("t", "page", "/p", "revenue", as_of(), &windows_of(0.0, 7, 1000.0, 7));
    let rise = spec(
        &CONVERSION_RATE_DROP
            .replace("below_fraction_of_baseline", "above_fraction_of_baseline")
            .replace("fraction = 0.7", "fraction = 1.1"),
    );
    assert!(db.fire(&rise, as_of(), None).is_empty());
}

const RAW_DUCKDB_ONLY: &str = r#"
id = "raw_duckdb_only"
title = "Pages with any sessions"
entity_type = "page"
severity = "info"
message = "{entity_id} had {recent} sessions"
windows = { recent_days = 1 }

[raw_sql]
duckdb = """
SELECT tenant, entity_type, entity_id, SUM(value) AS recent_value,
  CAST(NULL AS DOUBLE) AS baseline_value, SUM(value) AS volume, 0.0 AS reference_value,
  CAST(NULL AS DOUBLE) AS baseline_volume, CAST(NULL AS DOUBLE) AS statistic, CAST(NULL AS DOUBLE) AS p_value,
  CAST(NULL AS DOUBLE) AS q_value
FROM daily_entity_metrics
WHERE entity_type = 'page' AND metric = 'sessions' AND date = CAST($1 AS DATE)
  AND (CAST($2 AS VARCHAR) IS NULL OR tenant = CAST($2 AS VARCHAR))
GROUP BY tenant, entity_type, entity_id
ORDER BY tenant, entity_id
"""
"#;

#[test]
fn raw_sql_runs_where_it_has_sql_and_is_reported_not_runnable_elsewhere() {
    let db = MetricsDb::new();
    db.add_days("t", "page", "/p", "sessions", as_of(), &[5.0, 7.0]);
    db.add_days("u", "page", "/q", "sessions", as_of(), &[9.0]);
    let raw = spec(RAW_DUCKDB_ONLY);
    let rows = db.fire(&raw, as_of(), Some("t"));
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].entity_id.as_str(), rows[0].recent_value), ("/p", Some(7.0)));
    assert_eq!(render_message(&raw, &rows[0]), "/p had 7 sessions");
    assert_eq!(db.fired_ids(&raw, as_of(), None), ["/p", "/q"]);

    assert!(raw.runs_on(QueryDialect::DuckDb) && !raw.runs_on(QueryDialect::BigQuery));
    let error = compile(&raw, QueryDialect::BigQuery, as_of(), None, &converge_core::KnownEvents::default()).unwrap_err();
    assert!(matches!(error, CompileError::NotRunnable { dialect: QueryDialect::BigQuery, .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "detector \"raw_duckdb_only\" is not runnable on bigquery: expected raw_sql.bigquery, the spec has none"
    );
}

#[test]
fn the_message_template_renders_every_placeholder() {
    let db = MetricsDb::new();
    db.add_days("acme", "page", "/pricing", "sessions", as_of(), &[100.0; 14]);
    db.add_days("acme", "page", "/pricing", "conversions", as_of(), &windows_of(4.0, 7, 1.5, 7));
    let everything = spec(&CONVERSION_RATE_DROP.replace(
        r#"message = "{entity_id}: {recent}% from {baseline}% ({change_pct}) on {volume} sessions""#,
        r#"message = "[{tenant}/{entity_type}] {title}: {entity_id} {recent}% vs {baseline}% (limit {reference}%, {change_pct}) on {volume} sessions, {recent_days}d vs {baseline_days}d""#,
    ));
    let rows = db.fire(&everything, as_of(), None);
    assert_eq!(
        render_message(&everything, &rows[0]),
        "[acme/page] Conversion rate dropped: /pricing 1.5% vs 4% (limit 2.8%, -62.5%) on 700 sessions, 7d vs 7d"
    );
}
