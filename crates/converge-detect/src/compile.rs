//! The compiler: one validated [`DetectorSpec`] → one SQL query for one dialect.
//!
//! Every query returns [`FINDING_COLUMNS`](converge_core::FINDING_COLUMNS), one row per
//! firing entity, ordered by tenant and entity id. The run date and tenant are bound parameters (DuckDB `$1`/`$2`,
//! BigQuery `@as_of`/`@tenant`), as are entity-id patterns; what is inlined — the
//! entity type, metric names, numbers — comes from a validated spec only.
//!
//! Shape of a declarative query: one scan of `daily_entity_metrics` restricted to the
//! entity type, the metrics read and the dates of both windows (partition and cluster
//! pruning on BigQuery, zone maps on DuckDB), then one `GROUP BY` that sums each metric
//! per window with conditional aggregates, then the measure, the volume gate and the
//! comparison.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::NaiveDate;
use converge_core::business_metrics::METRICS_TABLE;
use converge_core::{FindingsParam, FindingsParamValue, FindingsQuery, KnownEvents, QueryDialect};

use crate::dialect::{number, DialectSql};
use crate::error::CompileError;
use crate::spec::{Comparison, DetectorSpec, EntityFilter, Form, Measure, MinVolume, Windows};
use crate::tested::TestedQuery;

/// One detector compiled for one dialect. Its parameters are the warehouse's own
/// ([`FindingsParam`]): BigQuery binds each by `@name`; DuckDB by position (`$1` is
/// the first of `params`).
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledDetector {
    pub detector_id: String,
    pub dialect: QueryDialect,
    pub sql: String,
    pub params: Vec<FindingsParam>,
}

impl CompiledDetector {
    /// The query to hand to [`converge_core::FindingsWarehouse::query_findings`],
    /// labelled with the detector's id.
    pub fn into_query(self, timeout: Duration) -> FindingsQuery {
        FindingsQuery { label: self.detector_id, sql: self.sql, params: self.params, timeout }
    }
}

/// Compiles `spec` for `dialect`, bound to the run date `as_of` (the last day of the
/// recent window, inclusive) and one tenant, or every tenant with `None`. A tested
/// declarative detector leaves out the days in `known` (its tenants' declared events);
/// rules and raw SQL read every day.
pub fn compile(
    spec: &DetectorSpec,
    dialect: QueryDialect,
    as_of: NaiveDate,
    tenant: Option<&str>,
    known: &KnownEvents,
) -> Result<CompiledDetector, CompileError> {
    let mut params = Params::new(dialect);
    params.push("as_of", FindingsParamValue::Date(as_of));
    params.push("tenant", FindingsParamValue::String(tenant.map(str::to_string)));

    let sql = match spec.form()? {
        Form::Raw(raw) => raw
            .for_dialect(dialect)
            .ok_or_else(|| CompileError::NotRunnable { detector: spec.id.clone(), dialect })?
            .trim()
            .to_string(),
        Form::Declarative { measure, windows, comparison, min_volume, entity_filter, significance } => {
            let query = DeclarativeQuery { spec, measure, windows, comparison, min_volume, dialect };
            match TestedQuery::new(&query, significance) {
                Some(tested) => tested.sql(&mut params, entity_filter, &known.for_tenant(tenant)),
                None => query.sql(&mut params, entity_filter),
            }
        }
    };
    Ok(CompiledDetector { detector_id: spec.id.clone(), dialect, sql, params: params.into_vec() })
}

pub(crate) struct Params {
    dialect: QueryDialect,
    params: Vec<FindingsParam>,
}

impl Params {
    fn new(dialect: QueryDialect) -> Params {
        Params { dialect, params: Vec::new() }
    }

    /// Adds a parameter and returns the SQL that reads it, typed.
    pub(crate) fn push(&mut self, name: &str, value: FindingsParamValue) -> String {
        self.params.push(FindingsParam { name: name.to_owned(), value });
        self.reference(self.params.len() - 1)
    }

    fn reference(&self, index: usize) -> String {
        let param = &self.params[index];
        match self.dialect {
            // DuckDB infers a parameter's type from its first use; casting makes the type
            // explicit wherever it is read (a NULL tenant included).
            QueryDialect::DuckDb => match param.value {
                FindingsParamValue::Date(_) => format!("CAST(${} AS DATE)", index + 1),
                FindingsParamValue::String(_) => format!("CAST(${} AS VARCHAR)", index + 1),
            },
            QueryDialect::BigQuery => format!("@{}", param.name),
        }
    }

    pub(crate) fn get(&self, name: &str) -> String {
        let index = self.params.iter().position(|p| p.name == name).expect("parameter registered before use");
        self.reference(index)
    }

    fn into_vec(self) -> Vec<FindingsParam> {
        self.params
    }
}

pub(crate) fn quote(literal: &str) -> String {
    debug_assert!(literal.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    format!("'{literal}'")
}

pub(crate) struct DeclarativeQuery<'a> {
    pub(crate) spec: &'a DetectorSpec,
    pub(crate) measure: &'a Measure,
    pub(crate) windows: &'a Windows,
    pub(crate) comparison: &'a Comparison,
    pub(crate) min_volume: Option<&'a MinVolume>,
    pub(crate) dialect: QueryDialect,
}

impl DeclarativeQuery<'_> {
    /// The SQL of the day `offset` days before the run date.
    pub(crate) fn day(&self, params: &Params, offset: u32) -> String {
        let as_of = params.get("as_of");
        match (self.dialect, offset) {
            (_, 0) => as_of,
            (QueryDialect::DuckDb, n) => format!("{as_of} - {n}"),
            (QueryDialect::BigQuery, n) => format!("DATE_SUB({as_of}, INTERVAL {n} DAY)"),
        }
    }

    /// The query's first lines: its label and the `scoped` CTE (the entity type, the
    /// metrics read and the dates of both windows, one tenant or all, entity filters).
    pub(crate) fn scoped_cte(&self, sql: &mut String, params: &mut Params, entity_filter: Option<&EntityFilter>) {
        let dialect = self.dialect;
        let as_of = params.get("as_of");
        let tenant = params.get("tenant");
        let metric_list = self.metrics_read().iter().map(|m| quote(m)).collect::<Vec<_>>().join(", ");
        let _ = writeln!(sql, "-- converge-detect: {} ({}, {})", self.spec.id, self.spec.entity_type, dialect);
        let _ = writeln!(sql, "WITH scoped AS (");
        let _ = writeln!(sql, "  SELECT tenant, entity_id, metric, date, value");
        let _ = writeln!(sql, "  FROM {METRICS_TABLE}");
        let _ = writeln!(sql, "  WHERE entity_type = {}", quote(self.spec.entity_type.as_str()));
        let _ = writeln!(sql, "    AND metric IN ({metric_list})");
        let _ = writeln!(sql, "    AND date BETWEEN {} AND {as_of}", self.day(params, self.windows.scan_start_offset()));
        let _ = writeln!(sql, "    AND ({tenant} IS NULL OR tenant = {tenant})");
        if let Some(filter) = entity_filter {
            if let Some(like) = &filter.like {
                let pattern = params.push("entity_like", FindingsParamValue::String(Some(like.clone())));
                let _ = writeln!(sql, "    AND entity_id LIKE {pattern}");
            }
            if let Some(not_like) = &filter.not_like {
                let pattern = params.push("entity_not_like", FindingsParamValue::String(Some(not_like.clone())));
                let _ = writeln!(sql, "    AND entity_id NOT LIKE {pattern}");
            }
        }
        let _ = writeln!(sql, "),");
    }

    /// A rule: the threshold decides alone (`significance.off`, and comparisons with
    /// nothing to test, e.g. an absolute threshold on a sum).
    fn sql(&self, params: &mut Params, entity_filter: Option<&EntityFilter>) -> String {
        let dialect = self.dialect;
        let metrics = self.metrics_read();
        let recent_start = self.day(params, self.windows.recent_start_offset());
        let baseline = self.windows.baseline_offsets().map(|(first, last)| (self.day(params, first), self.day(params, last)));
        let mut sql = String::new();
        self.scoped_cte(&mut sql, params, entity_filter);

        // One pass: every metric summed per window with conditional aggregates.
        let _ = writeln!(sql, "sums AS (");
        let _ = writeln!(sql, "  SELECT tenant, entity_id,");
        let mut sum_columns = Vec::new();
        for metric in &metrics {
            sum_columns.push(format!(
                "    COALESCE(SUM(CASE WHEN metric = {} AND date >= {recent_start} THEN value END), 0.0) AS recent_{metric}",
                quote(metric)
            ));
            if let Some((first, last)) = &baseline {
                sum_columns.push(format!(
                    "    COALESCE(SUM(CASE WHEN metric = {} AND date BETWEEN {first} AND {last} THEN value END), 0.0) AS baseline_{metric}",
                    quote(metric)
                ));
            }
        }
        let _ = writeln!(sql, "{}", sum_columns.join(",\n"));
        let _ = writeln!(sql, "  FROM scoped");
        let _ = writeln!(sql, "  GROUP BY tenant, entity_id");
        let _ = writeln!(sql, "),");

        let null_double = format!("CAST(NULL AS {})", dialect.double_type());
        let volume_metric = self.volume_metric();
        let _ = writeln!(sql, "measured AS (");
        let _ = writeln!(sql, "  SELECT tenant, entity_id,");
        let _ = writeln!(sql, "    {} AS recent_value,", self.measure_expr("recent", 1.0));
        let baseline_value = match self.windows.baseline_days {
            Some(baseline_days) => {
                // A sum over a longer baseline is rescaled to the recent window's length.
                let rescale = f64::from(self.windows.recent_days) / f64::from(baseline_days);
                self.measure_expr("baseline", rescale)
            }
            None => null_double.clone(),
        };
        let _ = writeln!(sql, "    {baseline_value} AS baseline_value,");
        let _ = writeln!(sql, "    recent_{volume_metric} AS volume,");
        let baseline_volume =
            if baseline.is_some() { format!("baseline_{volume_metric}") } else { null_double.clone() };
        let _ = writeln!(sql, "    {baseline_volume} AS baseline_volume");
        let _ = writeln!(sql, "  FROM sums");
        let _ = writeln!(sql, "),");

        self.gated_and_compared_ctes(&mut sql);
        let _ = writeln!(sql, ")");
        let (_, condition) = self.comparison_sql();
        let _ = writeln!(
            sql,
            "SELECT tenant, CAST({} AS {}) AS entity_type, entity_id, recent_value, baseline_value, volume, reference_value,",
            quote(self.spec.entity_type.as_str()),
            dialect.string_type()
        );
        let _ = writeln!(
            sql,
            "  baseline_volume, {null_double} AS statistic, {null_double} AS p_value, {null_double} AS q_value"
        );
        let _ = writeln!(sql, "FROM compared");
        let _ = writeln!(sql, "WHERE {condition}");
        let _ = write!(sql, "ORDER BY tenant, entity_id");
        sql
    }

    /// `gated` (the volume gate over `measured`) and `compared` (with `reference_value`),
    /// the last CTE left open for the caller to close with `)` or `),`.
    pub(crate) fn gated_and_compared_ctes(&self, sql: &mut String) {
        let mut gates = Vec::new();
        if let Some(min_volume) = self.min_volume {
            if let Some(recent) = min_volume.recent {
                gates.push(format!("volume >= {}", number(recent)));
            }
            if let Some(minimum) = min_volume.baseline {
                gates.push(format!("baseline_volume >= {}", number(minimum)));
            }
        }
        let _ = writeln!(sql, "gated AS (");
        let _ = writeln!(sql, "  SELECT * FROM measured");
        if !gates.is_empty() {
            let _ = writeln!(sql, "  WHERE {}", gates.join(" AND "));
        }
        let _ = writeln!(sql, "),");
        let (reference, _) = self.comparison_sql();
        let _ = writeln!(sql, "compared AS (");
        let _ = writeln!(sql, "  SELECT *, {reference} AS reference_value");
        let _ = writeln!(sql, "  FROM gated");
    }

    /// Metrics read, without repeats, in the order the spec names them.
    pub(crate) fn metrics_read(&self) -> Vec<&str> {
        let mut metrics: Vec<&str> = Vec::new();
        let gate = self.min_volume.map(|g| g.metric.as_str());
        for metric in self.measure.metrics().into_iter().chain(gate) {
            if !metrics.contains(&metric) {
                metrics.push(metric);
            }
        }
        metrics
    }

    pub(crate) fn volume_metric(&self) -> &str {
        match (self.min_volume, self.measure) {
            (Some(gate), _) => &gate.metric,
            (None, Measure::Ratio { denominator, .. }) => denominator,
            (None, Measure::Sum { metric, .. }) => metric,
        }
    }

    /// The measure over one window's sums; `rescale` applies to sums only (a ratio of
    /// two sums does not depend on the window's length).
    fn measure_expr(&self, window: &str, rescale: f64) -> String {
        match self.measure {
            Measure::Sum { metric, scale } => {
                let factor = scale * rescale;
                if factor == 1.0 {
                    format!("{window}_{metric}")
                } else {
                    format!("{window}_{metric} * {}", number(factor))
                }
            }
            Measure::Ratio { numerator, denominator, scale } => {
                let ratio = self.dialect.ratio(&format!("{window}_{numerator}"), &format!("{window}_{denominator}"));
                if *scale == 1.0 {
                    ratio
                } else {
                    format!("({ratio}) * {}", number(*scale))
                }
            }
        }
    }

    /// (reference_value expression, firing condition). NULL recent values never fire:
    /// every condition is a comparison, and comparisons with NULL are not true.
    pub(crate) fn comparison_sql(&self) -> (String, String) {
        match *self.comparison {
            Comparison::BelowFractionOfBaseline { fraction } => (
                format!("baseline_value * {}", number(fraction)),
                "baseline_value > 0 AND recent_value < reference_value".to_string(),
            ),
            Comparison::AboveFractionOfBaseline { fraction } => (
                format!("baseline_value * {}", number(fraction)),
                "baseline_value > 0 AND recent_value > reference_value".to_string(),
            ),
            Comparison::AbsoluteBelow { threshold } => {
                (number(threshold), "recent_value < reference_value".to_string())
            }
            Comparison::AbsoluteAbove { threshold } => {
                (number(threshold), "recent_value > reference_value".to_string())
            }
            Comparison::PercentileBelow { percentile, factor } => (
                format!("{} * {}", self.dialect.percentile_over_tenant("recent_value", percentile), number(factor)),
                "recent_value < reference_value".to_string(),
            ),
            Comparison::PercentileAbove { percentile, factor } => (
                format!("{} * {}", self.dialect.percentile_over_tenant("recent_value", percentile), number(factor)),
                "recent_value > reference_value".to_string(),
            ),
            Comparison::DropToZero => {
                ("0.0".to_string(), "baseline_value > 0 AND recent_value = reference_value".to_string())
            }
        }
    }
}
