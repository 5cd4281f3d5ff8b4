//! What the compiler ([`crate::compile`]) and the validation ([`crate::spec`]) need to
//! know of a dialect beyond core's [`QueryDialect`]: where its raw SQL sits in a spec,
//! the parameters that SQL must use, and its spellings of types, division, percentiles
//! and number literals.

use converge_core::QueryDialect;

/// What the compiler and the validation need to know of a dialect beyond core's
/// [`QueryDialect`]: its spellings of types, division and percentiles, and what a raw-SQL
/// query must look like. A trait, because the dialect is core's type and these are this
/// crate's concerns.
pub(crate) trait DialectSql: Copy {
    fn raw_sql_field(self) -> &'static str;
    /// The parameters a raw-SQL query must use: run date, then tenant.
    fn raw_sql_placeholders(self) -> [&'static str; 2];
    fn double_type(self) -> &'static str;
    fn string_type(self) -> &'static str;
    /// `numerator / denominator`, NULL unless the denominator is positive.
    fn ratio(self, numerator: &str, denominator: &str) -> String;
    fn percentile_over_tenant(self, expr: &str, percentile: f64) -> String;
}

impl DialectSql for QueryDialect {
    fn raw_sql_field(self) -> &'static str {
        match self {
            QueryDialect::DuckDb => "raw_sql.duckdb",
            QueryDialect::BigQuery => "raw_sql.bigquery",
        }
    }

    fn raw_sql_placeholders(self) -> [&'static str; 2] {
        match self {
            QueryDialect::DuckDb => ["$1", "$2"],
            QueryDialect::BigQuery => ["@as_of", "@tenant"],
        }
    }

    fn double_type(self) -> &'static str {
        match self {
            QueryDialect::DuckDb => "DOUBLE",
            QueryDialect::BigQuery => "FLOAT64",
        }
    }

    fn string_type(self) -> &'static str {
        match self {
            QueryDialect::DuckDb => "VARCHAR",
            QueryDialect::BigQuery => "STRING",
        }
    }

    /// BigQuery gets SAFE_DIVIDE as well: its CASE is not documented to short-circuit
    /// errors.
    fn ratio(self, numerator: &str, denominator: &str) -> String {
        match self {
            QueryDialect::DuckDb => {
                format!("CASE WHEN {denominator} > 0 THEN {numerator} / {denominator} END")
            }
            QueryDialect::BigQuery => {
                format!("CASE WHEN {denominator} > 0 THEN SAFE_DIVIDE({numerator}, {denominator}) END")
            }
        }
    }

    fn percentile_over_tenant(self, expr: &str, percentile: f64) -> String {
        let p = number(percentile);
        match self {
            QueryDialect::DuckDb => format!("quantile_cont({expr}, {p}) OVER (PARTITION BY tenant)"),
            QueryDialect::BigQuery => format!("PERCENTILE_CONT({expr}, {p}) OVER (PARTITION BY tenant)"),
        }
    }
}

/// A finite f64 as an SQL literal both dialects read as a floating-point number.
pub(crate) fn number(value: f64) -> String {
    debug_assert!(value.is_finite(), "validated specs carry finite numbers only");
    let text = format!("{value:?}");
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_float_literals() {
        assert_eq!(number(100.0), "100.0");
        assert_eq!(number(0.7), "0.7");
        assert_eq!(number(-2.5), "-2.5");
        assert_eq!(number(0.25), "0.25");
    }
}
