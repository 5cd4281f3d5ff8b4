//! Running detector queries on the warehouse: SQL with typed parameters in, rows of
//! the eleven finding columns out.
//!
//! The detector compiler (`converge-detect`) produces the SQL and its parameters for
//! one [`QueryDialect`] in these types; the warehouse runs it. This trait knows
//! nothing about detectors beyond the shape of their result, so the core stays free
//! of the compiler and the compiler free of databases. The types are the compiler's
//! own (it has no twins of them), so the runner passes a compiled query to the
//! warehouse and a row back to the message template without translating.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use futures::stream::BoxStream;

use crate::error::StoreError;

/// The columns every findings query returns, in order (every detector's query, raw
/// SQL included).
pub const FINDING_COLUMNS: [&str; 11] = [
    "tenant",
    "entity_type",
    "entity_id",
    "recent_value",
    "baseline_value",
    "volume",
    "reference_value",
    "baseline_volume",
    "statistic",
    "p_value",
    "q_value",
];

/// The SQL dialect a warehouse runs, so a caller compiles for the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryDialect {
    /// Positional parameters: `$1` is the first of [`FindingsQuery::params`].
    DuckDb,
    /// Named parameters: `@name`.
    BigQuery,
}

impl QueryDialect {
    /// Both dialects, DuckDB first.
    pub const ALL: [QueryDialect; 2] = [QueryDialect::DuckDb, QueryDialect::BigQuery];

    /// The dialect's name in specs, messages and `converge detectors list`: `duckdb`,
    /// `bigquery` (the keys of a detector's `raw_sql`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueryDialect::DuckDb => "duckdb",
            QueryDialect::BigQuery => "bigquery",
        }
    }
}

impl fmt::Display for QueryDialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingsParamValue {
    Date(NaiveDate),
    /// `None` binds a typed NULL string (BigQuery STRING, DuckDB VARCHAR).
    String(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingsParam {
    /// BigQuery binds by this name; DuckDB by position.
    pub name: String,
    pub value: FindingsParamValue,
}

/// One query to run: the SQL, its parameters, and how long it may take.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingsQuery {
    /// Names the query in errors and logs (the detector id).
    pub label: String,
    pub sql: String,
    pub params: Vec<FindingsParam>,
    /// The whole query, rows included, must finish within this; past it the query is
    /// cancelled on the backend and the stream ends with a retryable error.
    pub timeout: Duration,
}

/// One row of [`FINDING_COLUMNS`]: one firing entity, as read from either backend.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingRow {
    pub tenant: String,
    pub entity_type: String,
    pub entity_id: String,
    /// The measure over the recent window (NULL only for raw SQL that allows it).
    pub recent_value: Option<f64>,
    /// The measure over the baseline window (sums rescaled to the recent window's
    /// length); NULL without a baseline window or with a zero denominator.
    pub baseline_value: Option<f64>,
    /// Recent-window sum of the gating metric (`min_volume.metric`, else the ratio's
    /// denominator, else the summed metric).
    pub volume: Option<f64>,
    /// What `recent_value` was compared with (baseline × fraction, factor × percentile,
    /// the threshold, or 0).
    pub reference_value: Option<f64>,
    /// Baseline-window sum of the gating metric (NULL without a baseline window).
    pub baseline_volume: Option<f64>,
    /// The test's statistic (a z score: the change in standard errors, negative for a
    /// drop); NULL when the comparison was not tested (a rule, or raw SQL).
    pub statistic: Option<f64>,
    /// The one-sided p-value of the change in the detector's direction.
    pub p_value: Option<f64>,
    /// The p-value adjusted for the entities tested with it (Benjamini–Hochberg): a
    /// finding fires only when this is within the detector's false-discovery rate.
    pub q_value: Option<f64>,
}

/// `x` to `digits` significant digits (at least one).
pub fn round_significant(x: f64, digits: usize) -> f64 {
    format!("{x:.prec$e}", prec = digits.saturating_sub(1)).parse::<f64>().expect("a formatted number parses")
}

impl FindingRow {
    /// A copy with every number to `digits` significant digits, for comparing two runs
    /// of one query: the warehouse sums in parallel, so they agree only to ~12 digits
    /// (see [`crate::Opportunity::with_numbers_rounded`]).
    pub fn with_numbers_rounded(&self, digits: usize) -> FindingRow {
        let round = |x: Option<f64>| x.map(|x| round_significant(x, digits));
        FindingRow {
            recent_value: round(self.recent_value),
            baseline_value: round(self.baseline_value),
            volume: round(self.volume),
            reference_value: round(self.reference_value),
            baseline_volume: round(self.baseline_volume),
            statistic: round(self.statistic),
            p_value: round(self.p_value),
            q_value: round(self.q_value),
            ..self.clone()
        }
    }

    /// Relative change of the recent value against the baseline, in percent; `None`
    /// without a non-zero baseline.
    pub fn change_pct(&self) -> Option<f64> {
        match (self.recent_value, self.baseline_value) {
            (Some(recent), Some(baseline)) if baseline != 0.0 => Some((recent - baseline) / baseline.abs() * 100.0),
            _ => None,
        }
    }
}

/// The warehouse side of the detector runner: BigQuery in the cloud, DuckDB embedded.
///
/// A query whose result does not have exactly [`FINDING_COLUMNS`] (names and order) is
/// an error, not a guess. Dropping the stream cancels the query.
#[async_trait]
pub trait FindingsWarehouse: Send + Sync + 'static {
    /// The dialect queries must be written in.
    fn dialect(&self) -> QueryDialect;

    /// Starts `query` and streams its rows. Errors of the SQL itself (a missing column,
    /// a type error) are [`ErrorKind::Permanent`](crate::ErrorKind::Permanent); a
    /// timeout or an unavailable backend is retryable.
    async fn query_findings(&self, query: FindingsQuery) -> Result<BoxStream<'static, Result<FindingRow, StoreError>>, StoreError>;
}

/// Checks a result's column names against [`FINDING_COLUMNS`]; the error says what was
/// expected and what arrived.
pub fn check_finding_columns(backend: &'static str, label: &str, columns: &[String]) -> Result<(), StoreError> {
    if columns.len() == FINDING_COLUMNS.len() && columns.iter().zip(FINDING_COLUMNS).all(|(got, want)| got.eq_ignore_ascii_case(want)) {
        return Ok(());
    }
    Err(StoreError::permanent(
        backend,
        format!("query `{label}`: expected the columns {FINDING_COLUMNS:?} in that order, got {columns:?}; fix the detector's SQL"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_columns_must_match_in_order() {
        let good: Vec<String> = FINDING_COLUMNS.iter().map(|c| c.to_string()).collect();
        assert!(check_finding_columns("test", "d", &good).is_ok());
        let mut swapped = good.clone();
        swapped.swap(3, 4);
        let error = check_finding_columns("test", "d", &swapped).unwrap_err().to_string();
        assert!(error.contains("query `d`") && error.contains("baseline_value"), "{error}");
        assert!(check_finding_columns("test", "d", &good[..6]).is_err());
    }

    #[test]
    fn change_pct_needs_a_non_zero_baseline() {
        let mut row = FindingRow {
            tenant: "t".into(),
            entity_type: "page".into(),
            entity_id: "/".into(),
            recent_value: Some(3.0),
            baseline_value: Some(4.0),
            volume: None,
            reference_value: None,
            baseline_volume: None,
            statistic: None,
            p_value: None,
            q_value: None,
        };
        assert_eq!(row.change_pct(), Some(-25.0));
        row.baseline_value = Some(0.0);
        assert_eq!(row.change_pct(), None);
        row.baseline_value = None;
        assert_eq!(row.change_pct(), None);
    }

    #[test]
    fn dialects_are_named_as_in_raw_sql() {
        assert_eq!(QueryDialect::ALL.map(|d| d.to_string()), ["duckdb", "bigquery"]);
    }
}
