//! The tested form of a declarative detector: a finding fires only when its effect
//! reaches the detector's threshold *and* a test says it is unlikely to be noise, with
//! the false-discovery rate kept across the entities the detector tests.
//!
//! # The tests
//!
//! Every window is a set of calendar days: the recent window's and the baseline's, less
//! the tenant's known events ([`converge_core::KnownEvents`]), so a declared holiday
//! counts in neither. Per entity and day the metrics are summed (`daily`), then:
//!
//! - **A count or sum against its baseline** (`kind = "sum"`: sessions, entries,
//!   conversions, impressions): the expected recent sum is the baseline's, rescaled by
//!   the tenant's **weekday profile** — each weekday's mean site-wide total over the
//!   baseline's mean day, for this entity type and metric — so a recent window holding
//!   one weekend more than its baseline expects less. The day-to-day spread is
//!   estimated from the baseline's days, not assumed Poisson: the dispersion
//!   φ = Pearson χ² / (days − 1) of the baseline days against their weekday-adjusted
//!   mean, at least 1 (quasi-Poisson). z = (recent − expected) / √(φ·(expected +
//!   expected²/baseline)): the second term is the baseline's own uncertainty.
//! - **A rate against its baseline** (`kind = "ratio"`: conversion, bounce, click, open
//!   rates; revenue per session, cost per click, load time): the two windows' rates,
//!   z = (r − b) / √(σ²·(1/n_recent + 1/n_baseline)) with σ² the per-unit variance
//!   estimated from the baseline's days — the ratio estimator's variance by days (delta
//!   method): Σ (x_d − b·n_d)² · k / ((k − 1) · n_baseline), every day with a row, so a
//!   day of spend with no conversion counts and day-to-day changes of the rate itself
//!   are in it; for a proportion of counts (conversions of sessions) at least the
//!   binomial p(1 − p) at the two windows' pooled rate. This is the test for two
//!   proportions with the variance taken from the data.
//! - **A rate against a fixed reference** (an absolute threshold, or a factor of the
//!   tenant's percentile): z = (r − reference) / √(σ²/n_recent), σ² from the recent
//!   window's days.
//!
//! The p-value is one-sided, in the detector's direction (a drop detector tests for a
//! drop), from the normal distribution (Abramowitz & Stegun 26.2.17, |error| < 7.5e-8:
//! neither DuckDB nor BigQuery has a normal CDF). The p-values of the entities tested
//! for one tenant — every entity through the volume gate — are adjusted by
//! Benjamini–Hochberg (q-values); a finding needs q ≤ the detector's `fdr`.
//!
//! **The effect** must reach the threshold within the estimate's precision: for
//! `below_fraction_of_baseline` with fraction f, the data must be consistent with
//! recent ≤ f·baseline (its one-sided z no higher than [`EFFECT_Z`], the 99% bound), so a
//! change exactly at the threshold is found as often as the test allows, and a small
//! significant change at high volume (a 5% dip) is not. `drop_to_zero` needs recent = 0
//! and the test; a comparison with a fixed reference needs the rate beyond it and the
//! test.
//!
//! Absolute and percentile comparisons on a plain sum stay rules (no spread to test
//! against: "spent 200 with no conversion" is a business rule), as does any detector
//! with `significance.off`; raw SQL returns what it returns.

use std::fmt::Write as _;

use converge_core::{FindingsParamValue, KnownEvents, QueryDialect};

use crate::compile::{quote, DeclarativeQuery, Params};
use crate::dialect::{number, DialectSql};
use crate::spec::{Comparison, DetectorSpec, EntityFilter, Form, Measure, Significance};
use crate::vocabulary::is_amount;

/// The effect's one-sided bound (z of the 99th percentile).
pub const EFFECT_Z: f64 = 2.326;

/// How a detector decides, in a word: `tested` (its threshold and a test against
/// noise), `rule` (the threshold alone) or `raw_sql` (its own conditions).
pub fn decision(spec: &DetectorSpec) -> &'static str {
    match spec.form() {
        Ok(Form::Declarative { measure, comparison, significance, .. }) => {
            let nothing_to_test = matches!(measure, Measure::Sum { .. }) && !comparison.needs_baseline();
            if significance.off || nothing_to_test {
                "rule"
            } else {
                "tested"
            }
        }
        _ => "raw_sql",
    }
}

/// How `spec` decides, in words, for a finding's evidence.
pub fn test_description(spec: &DetectorSpec) -> String {
    let Ok(Form::Declarative { measure, comparison, significance, .. }) = spec.form() else {
        return "raw SQL: its own conditions".into();
    };
    let fdr = format!("{}%", significance.fdr * 100.0);
    if significance.off {
        return "rule: the threshold alone (tests off)".into();
    }
    match (measure, comparison.needs_baseline()) {
        (Measure::Sum { .. }, true) => format!(
            "count against its weekday-adjusted baseline: z with the baseline's own day-to-day spread (quasi-Poisson), one-sided, Benjamini–Hochberg at {fdr}"
        ),
        (Measure::Sum { .. }, false) => "rule: the threshold alone (a sum with nothing to test against)".into(),
        (Measure::Ratio { numerator, denominator, .. }, true) => {
            let kind = if is_amount(numerator) || is_amount(denominator) { "rate" } else { "proportion" };
            format!("{kind} against its baseline: two-window z with the baseline days' spread, one-sided, Benjamini–Hochberg at {fdr}")
        }
        (Measure::Ratio { .. }, false) => {
            format!("rate against the reference: z with the recent days' spread, one-sided, Benjamini–Hochberg at {fdr}")
        }
    }
}

/// `sums`: each metric's sum per window and entity, over `daily`.
fn sums_cte(sql: &mut String, window_sums: &[String]) {
    let _ = writeln!(sql, "sums AS (");
    let _ = writeln!(sql, "  SELECT d.tenant, d.entity_id,");
    let _ = writeln!(sql, "{}", window_sums.join(",\n"));
    let _ = writeln!(sql, "  FROM daily AS d");
    let _ = writeln!(sql, "  GROUP BY d.tenant, d.entity_id");
    let _ = writeln!(sql, "),");
}

/// Which test a detector's comparison gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    CountAgainstBaseline,
    RateAgainstBaseline,
    RateAgainstReference,
}

pub(crate) struct TestedQuery<'q, 'a> {
    query: &'q DeclarativeQuery<'a>,
    fdr: f64,
    test: Test,
}

impl<'q, 'a> TestedQuery<'q, 'a> {
    /// `None` when the detector is a rule (tests off, or nothing to test).
    pub(crate) fn new(query: &'q DeclarativeQuery<'a>, significance: Significance) -> Option<Self> {
        if significance.off {
            return None;
        }
        let against_baseline = query.comparison.needs_baseline();
        let test = match (query.measure, against_baseline) {
            (Measure::Sum { .. }, true) => Test::CountAgainstBaseline,
            (Measure::Sum { .. }, false) => return None,
            (Measure::Ratio { .. }, true) => Test::RateAgainstBaseline,
            (Measure::Ratio { .. }, false) => Test::RateAgainstReference,
        };
        Some(TestedQuery { query, fdr: significance.fdr, test })
    }

    /// `numerator / denominator`, NULL unless the denominator is positive (the dialect's
    /// guarded division, with each side parenthesised when it is an expression).
    fn div(&self, numerator: &str, denominator: &str) -> String {
        let operand = |expr: &str| if expr.contains(' ') { format!("({expr})") } else { expr.to_string() };
        self.query.dialect.ratio(&operand(numerator), &operand(denominator))
    }

    pub(crate) fn sql(
        &self,
        params: &mut Params,
        entity_filter: Option<&EntityFilter>,
        known: &KnownEvents,
    ) -> String {
        let q = self.query;
        let dialect = q.dialect;
        let windows = q.windows;
        let mut sql = String::new();
        q.scoped_cte(&mut sql, params, entity_filter);

        // The calendar: every day of both windows per tenant, less its known events.
        let scan_days = windows.scan_start_offset() + 1;
        let recent_first = scan_days - windows.recent_days;
        let baseline_days = windows.baseline_days.unwrap_or(0);
        let scan_start = q.day(params, windows.scan_start_offset());
        let (days_source, index) = match dialect {
            QueryDialect::DuckDb => (format!("range({scan_days}) AS d(i)"), "d.i"),
            QueryDialect::BigQuery => (format!("UNNEST(GENERATE_ARRAY(0, {})) AS i", scan_days - 1), "i"),
        };
        let date = match dialect {
            QueryDialect::DuckDb => format!("{scan_start} + CAST({index} AS INTEGER)"),
            QueryDialect::BigQuery => format!("DATE_ADD({scan_start}, INTERVAL {index} DAY)"),
        };
        let weekday = match dialect {
            QueryDialect::DuckDb => format!("dayofweek({date})"),
            QueryDialect::BigQuery => format!("EXTRACT(DAYOFWEEK FROM {date})"),
        };
        let _ = writeln!(sql, "-- Each window's calendar days per tenant, with their weekday, less known events.");
        let _ = writeln!(sql, "calendar AS (");
        let _ = writeln!(sql, "  SELECT t.tenant, {date} AS date, {weekday} AS dow,");
        let _ = writeln!(sql, "    CASE WHEN {index} >= {recent_first} THEN 'recent' ELSE 'baseline' END AS win");
        let _ = writeln!(sql, "  FROM (SELECT DISTINCT tenant FROM scoped) AS t");
        let _ = writeln!(sql, "  CROSS JOIN {days_source}");
        let mut filters = Vec::new();
        if windows.gap_days > 0 {
            filters.push(format!("({index} >= {recent_first} OR {index} < {baseline_days})"));
        }
        for (n, (tenant, days)) in known.by_tenant().enumerate() {
            let param = params.push(&format!("known_tenant_{n}"), FindingsParamValue::String(Some(tenant.to_string())));
            let dates: Vec<String> = days.iter().map(|day| format!("DATE '{day}'")).collect();
            filters.push(format!("NOT (t.tenant = {param} AND {date} IN ({}))", dates.join(", ")));
        }
        if !filters.is_empty() {
            let _ = writeln!(sql, "  WHERE {}", filters.join("\n    AND "));
        }
        let _ = writeln!(sql, "),");

        // Per entity and day: the metrics side by side.
        let metrics = q.metrics_read();
        let _ = writeln!(sql, "daily AS (");
        let _ = writeln!(sql, "  SELECT s.tenant, s.entity_id, c.date, c.dow, c.win,");
        let day_columns: Vec<String> = metrics
            .iter()
            .map(|m| format!("    SUM(CASE WHEN s.metric = {} THEN s.value ELSE 0.0 END) AS day_{m}", quote(m)))
            .collect();
        let _ = writeln!(sql, "{}", day_columns.join(",\n"));
        let _ = writeln!(sql, "  FROM scoped AS s");
        let _ = writeln!(sql, "  JOIN calendar AS c ON c.tenant = s.tenant AND c.date = s.date");
        let _ = writeln!(sql, "  GROUP BY s.tenant, s.entity_id, c.date, c.dow, c.win");
        let _ = writeln!(sql, "),");

        let has_baseline = windows.baseline_days.is_some();
        let mut window_sums = Vec::new();
        for m in &metrics {
            window_sums.push(format!("    COALESCE(SUM(CASE WHEN d.win = 'recent' THEN d.day_{m} END), 0.0) AS recent_{m}"));
            if has_baseline {
                window_sums.push(format!("    COALESCE(SUM(CASE WHEN d.win = 'baseline' THEN d.day_{m} END), 0.0) AS baseline_{m}"));
            }
        }
        // `TestedQuery::new` pairs sums with the count test and ratios with the rate tests.
        match q.measure {
            Measure::Sum { metric, scale } => self.count_ctes(&mut sql, metric, *scale, &window_sums),
            Measure::Ratio { numerator, denominator, scale } => {
                self.rate_ctes(&mut sql, numerator, denominator, *scale, &window_sums)
            }
        }
        self.decision_ctes(&mut sql);
        sql
    }

    /// `sums` → `measured` for a sum against its weekday-adjusted baseline.
    fn count_ctes(&self, sql: &mut String, metric: &str, scale: f64, window_sums: &[String]) {
        let q = self.query;
        let _ = writeln!(sql, "-- The site's weekday profile over the baseline: each weekday's mean day over the mean day.");
        let _ = writeln!(sql, "site_days AS (");
        let _ = writeln!(sql, "  SELECT c.tenant, c.date, c.dow, c.win, COALESCE(SUM(d.day_{metric}), 0.0) AS total");
        let _ = writeln!(sql, "  FROM calendar AS c LEFT JOIN daily AS d ON d.tenant = c.tenant AND d.date = c.date");
        let _ = writeln!(sql, "  GROUP BY c.tenant, c.date, c.dow, c.win");
        let _ = writeln!(sql, "),");
        let _ = writeln!(sql, "weekday_means AS (");
        let _ = writeln!(sql, "  SELECT tenant, dow, AVG(CASE WHEN win = 'baseline' THEN total END) AS dow_mean FROM site_days GROUP BY tenant, dow");
        let _ = writeln!(sql, "),");
        let _ = writeln!(sql, "day_means AS (");
        let _ = writeln!(sql, "  SELECT tenant, AVG(CASE WHEN win = 'baseline' THEN total END) AS day_mean FROM site_days GROUP BY tenant");
        let _ = writeln!(sql, "),");
        let _ = writeln!(sql, "weekday_factors AS (");
        let _ = writeln!(sql, "  SELECT w.tenant, w.dow,");
        let _ = writeln!(
            sql,
            "    CASE WHEN w.dow_mean IS NULL OR NOT (m.day_mean > 0) THEN 1.0 ELSE GREATEST({}, 0.01) END AS factor",
            self.div("w.dow_mean", "m.day_mean")
        );
        let _ = writeln!(sql, "  FROM weekday_means AS w JOIN day_means AS m ON m.tenant = w.tenant");
        let _ = writeln!(sql, "),");
        let _ = writeln!(sql, "weights AS (");
        let _ = writeln!(sql, "  SELECT c.tenant,");
        let _ = writeln!(sql, "    SUM(CASE WHEN c.win = 'recent' THEN f.factor ELSE 0.0 END) AS recent_weight,");
        let _ = writeln!(sql, "    SUM(CASE WHEN c.win = 'baseline' THEN f.factor ELSE 0.0 END) AS baseline_weight,");
        let _ = writeln!(sql, "    SUM(CASE WHEN c.win = 'baseline' THEN 1 ELSE 0 END) AS baseline_days");
        let _ = writeln!(sql, "  FROM calendar AS c JOIN weekday_factors AS f ON f.tenant = c.tenant AND f.dow = c.dow");
        let _ = writeln!(sql, "  GROUP BY c.tenant");
        let _ = writeln!(sql, "),");
        sums_cte(sql, window_sums);
        let _ = writeln!(sql, "estimated AS (");
        let _ = writeln!(sql, "  SELECT s.*, w.baseline_days,");
        let _ = writeln!(sql, "    {} AS expected,", self.div(&format!("s.baseline_{metric} * w.recent_weight"), "w.baseline_weight"));
        let _ = writeln!(sql, "    {} AS day_level", self.div(&format!("s.baseline_{metric}"), "w.baseline_weight"));
        let _ = writeln!(sql, "  FROM sums AS s JOIN weights AS w ON w.tenant = s.tenant");
        let _ = writeln!(sql, "),");
        // Pearson's χ² of the baseline days against their weekday-adjusted level, in two
        // passes (the level first): Σ (c − e)² / e over the days with rows, plus e for
        // each day without (a day of 0), which is the baseline's sum less Σ e over the
        // days with rows.
        let expected_day = "e.day_level * f.factor";
        let _ = writeln!(sql, "spread AS (");
        let _ = writeln!(sql, "  SELECT d.tenant, d.entity_id,");
        let _ = writeln!(
            sql,
            "    SUM({} - {expected_day}) AS pearson_present",
            self.div(&format!("(d.day_{metric} - {expected_day}) * (d.day_{metric} - {expected_day})"), expected_day)
        );
        let _ = writeln!(sql, "  FROM daily AS d");
        let _ = writeln!(sql, "  JOIN estimated AS e ON e.tenant = d.tenant AND e.entity_id = d.entity_id");
        let _ = writeln!(sql, "  JOIN weekday_factors AS f ON f.tenant = d.tenant AND f.dow = d.dow");
        let _ = writeln!(sql, "  WHERE d.win = 'baseline' AND e.day_level > 0");
        let _ = writeln!(sql, "  GROUP BY d.tenant, d.entity_id");
        let _ = writeln!(sql, "),");
        let _ = writeln!(sql, "dispersed AS (");
        let _ = writeln!(sql, "  SELECT e.*,");
        let _ = writeln!(
            sql,
            "    CASE WHEN e.baseline_{metric} > 0 AND e.baseline_days > 1 THEN GREATEST(1.0, (COALESCE(p.pearson_present, 0.0) + e.baseline_{metric}) / (e.baseline_days - 1)) END AS dispersion"
        );
        let _ = writeln!(sql, "  FROM estimated AS e LEFT JOIN spread AS p ON p.tenant = e.tenant AND p.entity_id = e.entity_id");
        let _ = writeln!(sql, "),");
        let volume = q.volume_metric();
        let scaled = |expr: &str| if scale == 1.0 { expr.to_string() } else { format!("{expr} * {}", number(scale)) };
        let _ = writeln!(sql, "measured AS (");
        let _ = writeln!(sql, "  SELECT tenant, entity_id,");
        let _ = writeln!(sql, "    {} AS recent_value,", scaled(&format!("recent_{metric}")));
        let _ = writeln!(sql, "    {} AS baseline_value,", scaled("expected"));
        let _ = writeln!(sql, "    recent_{volume} AS volume,");
        let _ = writeln!(sql, "    baseline_{volume} AS baseline_volume,");
        let _ = writeln!(sql, "    recent_{metric} AS recent_count, baseline_{metric} AS baseline_count, expected, dispersion");
        let _ = writeln!(sql, "  FROM dispersed");
        let _ = writeln!(sql, "),");
    }

    /// `sums` → `measured` for a ratio, with its per-unit variance from the variance
    /// window's days (the baseline when there is one, else the recent window).
    fn rate_ctes(&self, sql: &mut String, numerator: &str, denominator: &str, scale: f64, window_sums: &[String]) {
        let q = self.query;
        let spread_window = if self.test == Test::RateAgainstBaseline { "baseline" } else { "recent" };
        let proportion = !is_amount(numerator) && !is_amount(denominator);
        sums_cte(sql, window_sums);
        let _ = writeln!(sql, "estimated AS (");
        let _ = writeln!(sql, "  SELECT s.*,");
        let _ = writeln!(sql, "    {} AS recent_rate,", self.div(&format!("recent_{numerator}"), &format!("recent_{denominator}")));
        let baseline_rate = if self.test == Test::RateAgainstBaseline {
            self.div(&format!("baseline_{numerator}"), &format!("baseline_{denominator}"))
        } else {
            format!("CAST(NULL AS {})", q.dialect.double_type())
        };
        let _ = writeln!(sql, "    {baseline_rate} AS baseline_rate,");
        let _ = writeln!(
            sql,
            "    {} AS spread_rate,",
            self.div(&format!("{spread_window}_{numerator}"), &format!("{spread_window}_{denominator}"))
        );
        // Under "no change" both windows share one rate: the binomial floor uses it.
        let pooled = if self.test == Test::RateAgainstBaseline {
            self.div(&format!("recent_{numerator} + baseline_{numerator}"), &format!("recent_{denominator} + baseline_{denominator}"))
        } else {
            self.div(&format!("recent_{numerator}"), &format!("recent_{denominator}"))
        };
        let _ = writeln!(sql, "    {pooled} AS pooled_rate");
        let _ = writeln!(sql, "  FROM sums AS s");
        let _ = writeln!(sql, "),");
        // The days' spread around the window's rate, in two passes (the rate first): the
        // ratio estimator's variance by days (delta method), Σ (x_d − r·n_d)² over every
        // day with a row — a day of cost and no conversion counts — per unit of the
        // window's mean day: σ² = Σ res² · k / ((k − 1) · N).
        let residual = format!("d.day_{numerator} - e.spread_rate * d.day_{denominator}");
        let _ = writeln!(sql, "spread AS (");
        let _ = writeln!(sql, "  SELECT d.tenant, d.entity_id,");
        let _ = writeln!(sql, "    SUM(({residual}) * ({residual})) AS spread_sq,");
        let _ = writeln!(sql, "    COUNT(*) AS spread_days");
        let _ = writeln!(sql, "  FROM daily AS d");
        let _ = writeln!(sql, "  JOIN estimated AS e ON e.tenant = d.tenant AND e.entity_id = d.entity_id");
        let _ = writeln!(sql, "  WHERE d.win = '{spread_window}'");
        let _ = writeln!(sql, "  GROUP BY d.tenant, d.entity_id");
        let _ = writeln!(sql, "),");
        // The binomial floor for a proportion; an amount's spread is only what the days show.
        let floor = if proportion { "CASE WHEN pooled_rate < 1 THEN pooled_rate * (1.0 - pooled_rate) ELSE 0.0 END" } else { "0.0" };
        let without_days = if proportion { floor.to_string() } else { format!("CAST(NULL AS {})", q.dialect.double_type()) };
        let volume = q.volume_metric();
        let baseline_volume = if q.windows.baseline_days.is_some() {
            format!("baseline_{volume}")
        } else {
            format!("CAST(NULL AS {})", q.dialect.double_type())
        };
        let baseline_trials = if self.test == Test::RateAgainstBaseline {
            format!("baseline_{denominator}")
        } else {
            format!("CAST(NULL AS {})", q.dialect.double_type())
        };
        let scaled = |expr: &str| if scale == 1.0 { expr.to_string() } else { format!("({expr}) * {}", number(scale)) };
        let _ = writeln!(sql, "measured AS (");
        let _ = writeln!(sql, "  SELECT e.tenant, e.entity_id,");
        let _ = writeln!(sql, "    {} AS recent_value,", scaled("recent_rate"));
        let _ = writeln!(sql, "    {} AS baseline_value,", scaled("baseline_rate"));
        let _ = writeln!(sql, "    recent_{volume} AS volume,");
        let _ = writeln!(sql, "    {baseline_volume} AS baseline_volume,");
        let _ = writeln!(sql, "    recent_rate, baseline_rate, recent_{denominator} AS recent_trials, {baseline_trials} AS baseline_trials,");
        let _ = writeln!(
            sql,
            "    CASE WHEN p.spread_days > 1 THEN GREATEST({floor}, {}) ELSE {without_days} END AS unit_variance",
            self.div("p.spread_sq * p.spread_days", &format!("(p.spread_days - 1) * e.{spread_window}_{denominator}"))
        );
        let _ = writeln!(sql, "  FROM estimated AS e LEFT JOIN spread AS p ON p.tenant = e.tenant AND p.entity_id = e.entity_id");
        let _ = writeln!(sql, "),");
    }

    /// `measured` → gate → reference → statistic → p-value → q-value → the findings.
    fn decision_ctes(&self, sql: &mut String) {
        let q = self.query;
        let dialect = q.dialect;
        q.gated_and_compared_ctes(sql);
        let _ = writeln!(sql, "),");

        // The statistic (z), and how far the data are from the threshold's effect.
        let scale = q.measure.scale();
        let unscaled = |expr: &str| if scale == 1.0 { expr.to_string() } else { format!("{expr} / {}", number(scale)) };
        let fraction = match *q.comparison {
            Comparison::BelowFractionOfBaseline { fraction } | Comparison::AboveFractionOfBaseline { fraction } => Some(fraction),
            _ => None,
        };
        let (statistic, effect) = match self.test {
            Test::CountAgainstBaseline => {
                let statistic = self.div(
                    "recent_count - expected",
                    &format!("SQRT(dispersion * (expected + {}))", self.div("expected * expected", "baseline_count")),
                );
                let effect = fraction.map(|f| {
                    let f = number(f);
                    self.div(
                        &format!("recent_count - {f} * expected"),
                        &format!("SQRT(dispersion * ({f} * expected + {f} * {f} * {}))", self.div("expected * expected", "baseline_count")),
                    )
                });
                (statistic, effect)
            }
            Test::RateAgainstBaseline => {
                let statistic = self.div(
                    "recent_rate - baseline_rate",
                    &format!(
                        "SQRT(unit_variance * ({} + {}))",
                        self.div("1.0", "recent_trials"),
                        self.div("1.0", "baseline_trials")
                    ),
                );
                let effect = fraction.map(|f| {
                    let f = number(f);
                    self.div(
                        &format!("recent_rate - {f} * baseline_rate"),
                        &format!(
                            "SQRT(unit_variance * ({} + {f} * {f} * {}))",
                            self.div("1.0", "recent_trials"),
                            self.div("1.0", "baseline_trials")
                        ),
                    )
                });
                (statistic, effect)
            }
            Test::RateAgainstReference => {
                let statistic = self.div(
                    &format!("recent_rate - {}", unscaled("reference_value")),
                    &format!("SQRT(unit_variance * {})", self.div("1.0", "recent_trials")),
                );
                (statistic, None)
            }
        };
        let null_double = format!("CAST(NULL AS {})", dialect.double_type());
        let drop = matches!(
            q.comparison,
            Comparison::BelowFractionOfBaseline { .. }
                | Comparison::DropToZero
                | Comparison::AbsoluteBelow { .. }
                | Comparison::PercentileBelow { .. }
        );
        let _ = writeln!(sql, "tested AS (");
        let _ = writeln!(sql, "  SELECT *, {statistic} AS statistic,");
        let _ = writeln!(sql, "    {} AS effect_z", effect.clone().unwrap_or_else(|| null_double.clone()));
        let _ = writeln!(sql, "  FROM compared");
        let _ = writeln!(sql, "),");
        // One-sided: the statistic turned so that the detector's direction is positive.
        let _ = writeln!(sql, "alarms AS (");
        let _ = writeln!(sql, "  SELECT *, {}statistic AS alarm FROM tested", if drop { "-" } else { "" });
        let _ = writeln!(sql, "),");
        let _ = writeln!(sql, "tails AS (");
        let _ = writeln!(sql, "  SELECT *, 1.0 / (1.0 + 0.2316419 * ABS(alarm)) AS tail_k FROM alarms");
        let _ = writeln!(sql, "),");
        // Q(t), the upper tail of the standard normal at t = |alarm| (A&S 26.2.17).
        let upper = "0.3989422804014327 * EXP(-LEAST(alarm * alarm, 1400.0) / 2.0) \
                     * tail_k * (0.319381530 + tail_k * (-0.356563782 + tail_k * (1.781477937 + tail_k * (-1.821255978 + tail_k * 1.330274429))))";
        let _ = writeln!(sql, "scored AS (");
        let _ = writeln!(sql, "  SELECT *, CASE WHEN alarm IS NULL THEN NULL");
        let _ = writeln!(sql, "    WHEN alarm >= 0 THEN {upper}");
        let _ = writeln!(sql, "    ELSE 1.0 - {upper} END AS p_value");
        let _ = writeln!(sql, "  FROM tails");
        let _ = writeln!(sql, "),");
        // Benjamini–Hochberg over the tenant's tested entities: q = min over ranks ≥ i of p·m/rank.
        let _ = writeln!(sql, "ranked AS (");
        let _ = writeln!(sql, "  SELECT *, ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY p_value, entity_id) AS p_rank,");
        let _ = writeln!(sql, "    COUNT(*) OVER (PARTITION BY tenant) AS tested_entities");
        let _ = writeln!(sql, "  FROM scored WHERE p_value IS NOT NULL");
        let _ = writeln!(sql, "),");
        let _ = writeln!(sql, "adjusted AS (");
        let _ = writeln!(
            sql,
            "  SELECT *, MIN(LEAST(1.0, p_value * tested_entities / p_rank)) OVER (PARTITION BY tenant ORDER BY p_rank DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS q_value"
        );
        let _ = writeln!(sql, "  FROM ranked");
        let _ = writeln!(sql, ")");
        let _ = writeln!(
            sql,
            "SELECT tenant, CAST({} AS {}) AS entity_type, entity_id, recent_value, baseline_value, volume, reference_value,",
            quote(q.spec.entity_type.as_str()),
            dialect.string_type()
        );
        let _ = writeln!(sql, "  baseline_volume, statistic, p_value, q_value");
        let _ = writeln!(sql, "FROM adjusted");
        let mut conditions = vec![format!("q_value <= {}", number(self.fdr))];
        match *q.comparison {
            Comparison::BelowFractionOfBaseline { .. } => {
                conditions.insert(0, "baseline_value > 0".into());
                conditions.push(format!("effect_z <= {}", number(EFFECT_Z)));
            }
            Comparison::AboveFractionOfBaseline { .. } => {
                conditions.insert(0, "baseline_value > 0".into());
                conditions.push(format!("effect_z >= {}", number(-EFFECT_Z)));
            }
            Comparison::DropToZero => conditions.insert(0, "baseline_value > 0 AND recent_value = 0".into()),
            Comparison::AbsoluteBelow { .. } | Comparison::PercentileBelow { .. } => {
                conditions.insert(0, "recent_value < reference_value".into())
            }
            Comparison::AbsoluteAbove { .. } | Comparison::PercentileAbove { .. } => {
                conditions.insert(0, "recent_value > reference_value".into())
            }
        }
        let _ = writeln!(sql, "WHERE {}", conditions.join(" AND "));
        let _ = write!(sql, "ORDER BY tenant, entity_id");
    }
}
