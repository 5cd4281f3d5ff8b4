//! [`DetectorSpec`]: one detector as data (TOML or JSON), and its validation.
//!
//! A detector is either **declarative** — a [`Measure`] over [`Windows`] checked by a
//! [`Comparison`], gated by a [`MinVolume`] — or **raw SQL** per dialect ([`RawSql`]) for
//! what the declarative form cannot say. Validation is what makes compiling safe:
//! everything the compiler inlines into SQL (entity type, metric names, numbers) is
//! checked here against the vocabulary and finite ranges; the rest is bound as
//! parameters.

use converge_core::QueryDialect;
use serde::{Deserialize, Serialize};

use crate::dialect::DialectSql;
use crate::error::{SpecError, SpecProblem};
use crate::message_template;
use crate::vocabulary::EntityType;

/// The longest window any detector may read, in days (two years): a bound on scans.
pub const MAX_WINDOW_DAYS: u32 = 730;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    /// `[a-z0-9_]+`, unique within a pack; part of each finding's deterministic id.
    pub id: String,
    pub title: String,
    pub entity_type: EntityType,
    pub severity: Severity,
    /// Rendered per finding; placeholders are listed in [`message_template::PLACEHOLDERS`].
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<Measure>,
    /// Required by the declarative form; optional (informational, for the message) with
    /// raw SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<Windows>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_volume: Option<MinVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_filter: Option<EntityFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_sql: Option<RawSql>,
    /// How a declarative finding is told from noise ([`Significance`]); absent = the
    /// default test at a false-discovery rate of [`DEFAULT_FDR`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub significance: Option<Significance>,
}

/// The false-discovery rate a detector keeps across the entities it tests for one
/// tenant in one run, unless its spec says otherwise.
pub const DEFAULT_FDR: f64 = 0.01;

/// A declarative detector's test. By default every comparison that can be tested is:
/// a finding fires only when its effect reaches the threshold *and* its test says it is
/// unlikely to be noise, with the false-discovery rate kept at `fdr` (Benjamini–Hochberg)
/// across the entities the detector tests for one tenant in one run. The tests, by
/// measure and comparison, are described in [`crate::compile`]. `off = true` makes the
/// threshold decide alone (a business rule, e.g. "any spend without a conversion").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Significance {
    #[serde(default = "default_fdr")]
    pub fdr: f64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub off: bool,
}

fn default_fdr() -> f64 {
    DEFAULT_FDR
}

impl Default for Significance {
    fn default() -> Self {
        Significance { fdr: DEFAULT_FDR, off: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What is measured per entity and window, from daily sums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Measure {
    /// `SUM(metric) * scale`. Compared with a baseline, the baseline sum is first
    /// rescaled to the recent window's length (a 28-day baseline becomes "an average
    /// 7 days" against a 7-day recent window).
    Sum {
        metric: String,
        #[serde(default = "one")]
        scale: f64,
    },
    /// `SUM(numerator) / SUM(denominator) * scale`; NULL (never firing) when the
    /// denominator's sum is 0, so 0/0 is "no data", not 0.
    Ratio {
        numerator: String,
        denominator: String,
        #[serde(default = "one")]
        scale: f64,
    },
}

fn one() -> f64 {
    1.0
}

impl Measure {
    /// The metrics the measure reads, numerator first.
    pub fn metrics(&self) -> Vec<&str> {
        match self {
            Measure::Sum { metric, .. } => vec![metric],
            Measure::Ratio { numerator, denominator, .. } => vec![numerator, denominator],
        }
    }

    pub fn scale(&self) -> f64 {
        match self {
            Measure::Sum { scale, .. } | Measure::Ratio { scale, .. } => *scale,
        }
    }
}

/// The recent window ends on the run date (`as_of`, inclusive) and spans `recent_days`;
/// the baseline spans `baseline_days` and ends `gap_days` before the recent window starts
/// (0 = immediately preceding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Windows {
    pub recent_days: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_days: Option<u32>,
    #[serde(default)]
    pub gap_days: u32,
}

impl Windows {
    /// Days before `as_of` of the recent window's first day (0 = `as_of` itself).
    pub fn recent_start_offset(&self) -> u32 {
        self.recent_days - 1
    }

    /// Days before `as_of` of the baseline window's (first, last) day.
    pub fn baseline_offsets(&self) -> Option<(u32, u32)> {
        let baseline_days = self.baseline_days?;
        let last = self.recent_days + self.gap_days;
        Some((last + baseline_days - 1, last))
    }

    /// Days before `as_of` of the earliest day read.
    pub fn scan_start_offset(&self) -> u32 {
        self.baseline_offsets().map_or(self.recent_start_offset(), |(first, _)| first)
    }
}

/// How the entity's recent value is judged. `reference_value` in the result row is what
/// it was compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Comparison {
    /// Fires when `recent < baseline * fraction` (0 < fraction < 1), baseline > 0.
    BelowFractionOfBaseline { fraction: f64 },
    /// Fires when `recent > baseline * fraction` (fraction > 1), baseline > 0: a relative
    /// change from a zero baseline is undefined, so it never fires.
    AboveFractionOfBaseline { fraction: f64 },
    /// Fires when `recent < threshold`.
    AbsoluteBelow { threshold: f64 },
    /// Fires when `recent > threshold`.
    AbsoluteAbove { threshold: f64 },
    /// Fires when `recent < factor * p-th percentile` of the recent values of all the
    /// tenant's entities of this type that pass the volume gate. `factor` (default 1)
    /// keeps healthy tenants quiet: without it a percentile always has entities below.
    PercentileBelow {
        percentile: f64,
        #[serde(default = "one")]
        factor: f64,
    },
    /// Fires when `recent > factor * p-th percentile` (see [`Comparison::PercentileBelow`]).
    PercentileAbove {
        percentile: f64,
        #[serde(default = "one")]
        factor: f64,
    },
    /// Fires when the baseline was > 0 and the recent value is exactly 0 (a sum with no
    /// rows in the recent window counts as 0; a ratio needs a non-zero denominator).
    DropToZero,
}

impl Comparison {
    pub fn kind(&self) -> &'static str {
        match self {
            Comparison::BelowFractionOfBaseline { .. } => "below_fraction_of_baseline",
            Comparison::AboveFractionOfBaseline { .. } => "above_fraction_of_baseline",
            Comparison::AbsoluteBelow { .. } => "absolute_below",
            Comparison::AbsoluteAbove { .. } => "absolute_above",
            Comparison::PercentileBelow { .. } => "percentile_below",
            Comparison::PercentileAbove { .. } => "percentile_above",
            Comparison::DropToZero => "drop_to_zero",
        }
    }

    /// Whether the comparison reads the baseline window.
    pub fn needs_baseline(&self) -> bool {
        matches!(
            self,
            Comparison::BelowFractionOfBaseline { .. }
                | Comparison::AboveFractionOfBaseline { .. }
                | Comparison::DropToZero
        )
    }
}

/// Entities are considered only when `SUM(metric)` reaches `recent` over the recent
/// window and/or `baseline` over the baseline window (at least one is required).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinVolume {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
}

/// SQL `LIKE` patterns on `entity_id` (`%` any run, `_` one character), bound as
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub like: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_like: Option<String>,
}

/// Hand-written SQL per dialect. It must return exactly [`crate::RESULT_COLUMNS`], one row
/// per firing entity, and take the run date and tenant as parameters: DuckDB `$1` (DATE)
/// and `$2` (VARCHAR, NULL = every tenant); BigQuery `@as_of` and `@tenant`. It reads
/// `daily_entity_metrics` unqualified (BigQuery: the runner sets the default dataset).
/// A dialect left out is reported as not runnable there, never skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSql {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duckdb: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bigquery: Option<String>,
}

impl RawSql {
    pub fn for_dialect(&self, dialect: QueryDialect) -> Option<&str> {
        match dialect {
            QueryDialect::DuckDb => self.duckdb.as_deref(),
            QueryDialect::BigQuery => self.bigquery.as_deref(),
        }
    }
}

/// A validated detector's form, borrowed from its spec.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Form<'a> {
    Declarative {
        measure: &'a Measure,
        windows: &'a Windows,
        comparison: &'a Comparison,
        min_volume: Option<&'a MinVolume>,
        entity_filter: Option<&'a EntityFilter>,
        significance: Significance,
    },
    Raw(&'a RawSql),
}

impl DetectorSpec {
    pub fn from_toml(text: &str) -> Result<DetectorSpec, crate::error::ParseError> {
        let spec: DetectorSpec = toml::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn from_json(text: &str) -> Result<DetectorSpec, crate::error::ParseError> {
        let spec: DetectorSpec = serde_json::from_str(text)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Whether the detector has SQL for `dialect` (declarative detectors run everywhere).
    pub fn runs_on(&self, dialect: QueryDialect) -> bool {
        match &self.raw_sql {
            Some(raw) => raw.for_dialect(dialect).is_some(),
            None => true,
        }
    }

    /// Checks everything the compiler relies on; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.form().map(|_| ())
    }

    pub(crate) fn form(&self) -> Result<Form<'_>, SpecError> {
        let fail = |problem| SpecError { detector: self.id.clone(), problem };
        if !is_valid_id(&self.id) {
            return Err(fail(SpecProblem::InvalidId { got: self.id.clone() }));
        }
        if self.title.trim().is_empty() {
            return Err(fail(SpecProblem::Empty { field: "title" }));
        }
        if self.message.trim().is_empty() {
            return Err(fail(SpecProblem::Empty { field: "message" }));
        }
        message_template::check_template(&self.message).map_err(fail)?;
        if let Some(windows) = &self.windows {
            check_windows(windows).map_err(fail)?;
        }

        let declarative_fields: Vec<&str> = [
            ("measure", self.measure.is_some()),
            ("comparison", self.comparison.is_some()),
            ("min_volume", self.min_volume.is_some()),
            ("entity_filter", self.entity_filter.is_some()),
            ("significance", self.significance.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();

        if let Some(raw) = &self.raw_sql {
            if !declarative_fields.is_empty() {
                return Err(fail(SpecProblem::MixedForms { declarative_fields: declarative_fields.join(", ") }));
            }
            check_raw_sql(raw).map_err(fail)?;
            return Ok(Form::Raw(raw));
        }

        let missing = |field: &'static str| {
            fail(SpecProblem::MissingField {
                field,
                because: "a declarative detector needs measure, windows and comparison (or give raw_sql instead)",
            })
        };
        let measure = self.measure.as_ref().ok_or_else(|| missing("measure"))?;
        let windows = self.windows.as_ref().ok_or_else(|| missing("windows"))?;
        let comparison = self.comparison.as_ref().ok_or_else(|| missing("comparison"))?;

        for (field, metric) in measure_metric_fields(measure) {
            self.check_metric(field, metric).map_err(fail)?;
        }
        check_number("measure.scale", measure.scale(), "finite and greater than 0", |v| v > 0.0).map_err(fail)?;
        check_comparison(comparison).map_err(fail)?;
        if comparison.needs_baseline() && windows.baseline_days.is_none() {
            return Err(fail(SpecProblem::MissingField {
                field: "windows.baseline_days",
                because: comparison_needs_baseline(comparison),
            }));
        }

        if let Some(min_volume) = &self.min_volume {
            self.check_metric("min_volume.metric", &min_volume.metric).map_err(fail)?;
            if min_volume.recent.is_none() && min_volume.baseline.is_none() {
                return Err(fail(SpecProblem::MissingField {
                    field: "min_volume.recent or min_volume.baseline",
                    because: "a volume gate needs a minimum for at least one window",
                }));
            }
            for (field, value) in
                [("min_volume.recent", min_volume.recent), ("min_volume.baseline", min_volume.baseline)]
            {
                if let Some(value) = value {
                    check_number(field, value, "finite and at least 0", |v| v >= 0.0).map_err(fail)?;
                }
            }
            if min_volume.baseline.is_some() && windows.baseline_days.is_none() {
                return Err(fail(SpecProblem::MissingField {
                    field: "windows.baseline_days",
                    because: "min_volume.baseline gates on the baseline window",
                }));
            }
        }

        if let Some(significance) = &self.significance {
            check_number("significance.fdr", significance.fdr, "finite, between 0 and 0.5 (0.05 = 5% of findings may be noise)", |v| {
                v > 0.0 && v <= 0.5
            })
            .map_err(fail)?;
        }

        if let Some(filter) = &self.entity_filter {
            if filter.like.is_none() && filter.not_like.is_none() {
                return Err(fail(SpecProblem::MissingField {
                    field: "entity_filter.like or entity_filter.not_like",
                    because: "an entity filter needs at least one pattern",
                }));
            }
            for (field, pattern) in [("entity_filter.like", &filter.like), ("entity_filter.not_like", &filter.not_like)]
            {
                if let Some(pattern) = pattern {
                    if pattern.is_empty() || pattern.len() > 200 || pattern.chars().any(char::is_control) {
                        return Err(fail(SpecProblem::BadPattern { field, got: pattern.clone() }));
                    }
                }
            }
        }

        Ok(Form::Declarative {
            measure,
            windows,
            comparison,
            min_volume: self.min_volume.as_ref(),
            entity_filter: self.entity_filter.as_ref(),
            significance: self.significance.unwrap_or_default(),
        })
    }

    fn check_metric(&self, field: &'static str, metric: &str) -> Result<(), SpecProblem> {
        if self.entity_type.has_metric(metric) {
            Ok(())
        } else {
            Err(SpecProblem::UnknownMetric {
                field,
                entity_type: self.entity_type,
                got: metric.to_string(),
                expected: self.entity_type.metric_names().join(", "),
            })
        }
    }
}

fn measure_metric_fields(measure: &Measure) -> Vec<(&'static str, &str)> {
    match measure {
        Measure::Sum { metric, .. } => vec![("measure.metric", metric.as_str())],
        Measure::Ratio { numerator, denominator, .. } => {
            vec![("measure.numerator", numerator.as_str()), ("measure.denominator", denominator.as_str())]
        }
    }
}

fn comparison_needs_baseline(comparison: &Comparison) -> &'static str {
    match comparison {
        Comparison::BelowFractionOfBaseline { .. } => "below_fraction_of_baseline compares with the baseline window",
        Comparison::AboveFractionOfBaseline { .. } => "above_fraction_of_baseline compares with the baseline window",
        _ => "drop_to_zero needs a baseline window in which the value was above zero",
    }
}

pub(crate) fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_windows(windows: &Windows) -> Result<(), SpecProblem> {
    let day_fields =
        [("windows.recent_days", Some(windows.recent_days)), ("windows.baseline_days", windows.baseline_days)];
    for (field, days) in day_fields {
        if let Some(days) = days {
            if days == 0 {
                return Err(SpecProblem::BadWindow { field, expected: "at least 1 day", got: days });
            }
        }
    }
    let total = windows.recent_days as u64 + windows.gap_days as u64 + windows.baseline_days.unwrap_or(0) as u64;
    if total > MAX_WINDOW_DAYS as u64 {
        return Err(SpecProblem::BadWindow {
            field: "windows (recent_days + gap_days + baseline_days)",
            expected: "at most 730 days in all",
            got: total.min(u32::MAX as u64) as u32,
        });
    }
    Ok(())
}

fn check_number(
    field: &'static str,
    value: f64,
    expected: &'static str,
    in_range: impl Fn(f64) -> bool,
) -> Result<(), SpecProblem> {
    if value.is_finite() && in_range(value) {
        Ok(())
    } else {
        Err(SpecProblem::BadNumber { field, expected, got: value })
    }
}

fn check_comparison(comparison: &Comparison) -> Result<(), SpecProblem> {
    match *comparison {
        Comparison::BelowFractionOfBaseline { fraction } => check_number(
            "comparison.fraction",
            fraction,
            "finite, between 0 and 1 exclusive (0.7 = below 70% of the baseline)",
            |v| v > 0.0 && v < 1.0,
        ),
        Comparison::AboveFractionOfBaseline { fraction } => check_number(
            "comparison.fraction",
            fraction,
            "finite and greater than 1 (1.5 = above 150% of the baseline)",
            |v| v > 1.0,
        ),
        Comparison::AbsoluteBelow { threshold } | Comparison::AbsoluteAbove { threshold } => {
            check_number("comparison.threshold", threshold, "finite", |_| true)
        }
        Comparison::PercentileBelow { percentile, factor } | Comparison::PercentileAbove { percentile, factor } => {
            check_number(
                "comparison.percentile",
                percentile,
                "finite, between 0 and 1 exclusive (0.9 = the 90th percentile)",
                |v| v > 0.0 && v < 1.0,
            )?;
            check_number("comparison.factor", factor, "finite and greater than 0", |v| v > 0.0)
        }
        Comparison::DropToZero => Ok(()),
    }
}

fn check_raw_sql(raw: &RawSql) -> Result<(), SpecProblem> {
    if raw.duckdb.is_none() && raw.bigquery.is_none() {
        return Err(SpecProblem::MissingField {
            field: "raw_sql.duckdb or raw_sql.bigquery",
            because: "a raw-SQL detector needs SQL for at least one dialect",
        });
    }
    for dialect in [QueryDialect::DuckDb, QueryDialect::BigQuery] {
        let Some(sql) = raw.for_dialect(dialect) else {
            continue;
        };
        if sql.trim().is_empty() {
            return Err(SpecProblem::Empty { field: dialect.raw_sql_field() });
        }
        for placeholder in dialect.raw_sql_placeholders() {
            if !sql.contains(placeholder) {
                return Err(SpecProblem::RawSqlParameter { dialect, placeholder });
            }
        }
        if dialect == QueryDialect::DuckDb && sql.contains("$3") {
            return Err(SpecProblem::RawSqlParameter { dialect, placeholder: "only $1 and $2" });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_offsets_count_back_from_as_of() {
        let windows = Windows { recent_days: 7, baseline_days: Some(28), gap_days: 0 };
        assert_eq!(windows.recent_start_offset(), 6);
        assert_eq!(windows.baseline_offsets(), Some((34, 7)));
        assert_eq!(windows.scan_start_offset(), 34);

        let gapped = Windows { recent_days: 7, baseline_days: Some(28), gap_days: 7 };
        assert_eq!(gapped.baseline_offsets(), Some((41, 14)));

        let recent_only = Windows { recent_days: 14, baseline_days: None, gap_days: 0 };
        assert_eq!(recent_only.baseline_offsets(), None);
        assert_eq!(recent_only.scan_start_offset(), 13);
    }

    #[test]
    fn ids_are_lowercase_digits_and_underscores() {
        assert!(is_valid_id("page_cvr_drop_2"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("Page"));
        assert!(!is_valid_id("page-cvr"));
        assert!(!is_valid_id("x'; drop table t; --"));
        assert!(!is_valid_id(&"a".repeat(65)));
    }
}
