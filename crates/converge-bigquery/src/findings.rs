//! Detector queries on BigQuery: [`FindingsWarehouse`] for [`BigQueryWarehouse`].
//!
//! - Parameters are named and typed: `@as_of` DATE, `@tenant` STRING, which may be a
//!   typed NULL (every tenant). Nothing is spliced into the SQL but the dataset's own
//!   (validated) name, see below.
//! - The query's `timeout` bounds the whole query, rows included: BigQuery is asked to
//!   cancel the job past it (`jobTimeoutMs`), and the client stops waiting at the same
//!   deadline, whichever comes first, with a retryable error. (The official client has
//!   no jobs.cancel: dropping the stream stops reading pages; the job itself then ends
//!   at its `jobTimeoutMs` at the latest. A findings query is a read, so nothing it
//!   leaves behind matters.)
//! - Rows arrive page by page ([`BigQueryConfig::page_size`](crate::BigQueryConfig)),
//!   each page fetched when the previous one is consumed.
//!
//! # Table names
//!
//! Detector SQL names `daily_entity_metrics` (and may name `entity_map`) without a
//! dataset, so one pack runs on any dataset. Real BigQuery resolves such names in the
//! request's `defaultDataset`, which is set. `bqemulator` 1.4 honours
//! `defaultDataset` only for jobs.insert, not for jobs.query (the call the client
//! makes), and answers "Table daily_entity_metrics was not found". So the known
//! metrics tables are also qualified in the SQL text ([`qualify_tables`]) — on every
//! backend, so the emulator runs the same SQL production does. Only a bare table
//! reference right after `FROM` or `JOIN`, outside literals and comments, is
//! rewritten; a CTE of the same name would be rewritten too, so the pack must not
//! shadow these names (none does).

use std::time::Duration;

use async_trait::async_trait;
use converge_core::findings::check_finding_columns;
use converge_core::business_metrics::{ENTITY_MAP_TABLE, METRICS_TABLE};
use converge_core::{FindingRow, FindingsParamValue, FindingsQuery, FindingsWarehouse, QueryDialect, StoreError};
use futures::stream::{BoxStream, StreamExt};
use google_cloud_bigquery::query::Row;
use google_cloud_bigquery_v2::model::{DatasetReference, QueryParameter, QueryParameterType, QueryParameterValue};

use crate::error::{from_query, BACKEND};
use crate::schema::qualified;
use crate::query::row_error;
use crate::warehouse::BigQueryWarehouse;

/// The tables a findings query may read, qualified with the dataset in its SQL.
const READABLE_TABLES: [&str; 2] = [METRICS_TABLE, ENTITY_MAP_TABLE];

#[async_trait]
impl FindingsWarehouse for BigQueryWarehouse {
    fn dialect(&self) -> QueryDialect {
        QueryDialect::BigQuery
    }

    async fn query_findings(&self, query: FindingsQuery) -> Result<BoxStream<'static, Result<FindingRow, StoreError>>, StoreError> {
        let deadline = tokio::time::Instant::now() + query.timeout;
        let config = self.config();
        let label = query.label.clone();
        let sql = qualify_tables(&query.sql, &READABLE_TABLES, |table| qualified(config, table));
        let mut request = self
            .query_client()
            .query(sql)
            .set_page_size(config.page_size)
            .set_default_dataset(DatasetReference::new().set_project_id(&config.project).set_dataset_id(&config.dataset))
            .set_job_timeout_ms(i64::try_from(query.timeout.as_millis()).unwrap_or(i64::MAX).max(1));
        if !query.params.is_empty() {
            request = request.set_parameter_mode("NAMED").set_query_parameters(query.params.iter().map(|p| parameter(&p.name, &p.value)));
        }
        if let Some(location) = &config.location {
            request = request.set_location(location);
        }
        let context = format!("query `{label}`");
        let done = match tokio::time::timeout_at(deadline, request.until_done()).await {
            Err(_) => return Err(deadline_passed(&label, query.timeout)),
            Ok(Err(e)) => return Err(sql_error(&context, &e)),
            Ok(Ok(done)) => done,
        };
        self.count_job(&done).await;
        let columns: Vec<String> =
            done.metadata().schema.as_ref().map(|s| s.fields.iter().map(|f| f.name.clone()).collect()).unwrap_or_default();
        check_finding_columns(BACKEND, &label, &columns)?;

        let timeout = query.timeout;
        let rows = self.rows("findings query", done);
        Ok(Box::pin(futures::stream::unfold(Some(rows), move |state| {
            let label = label.clone();
            async move {
                let mut rows = state?;
                match tokio::time::timeout_at(deadline, rows.next()).await {
                    Err(_) => Some((Err(deadline_passed(&label, timeout)), None)),
                    Ok(None) => None,
                    Ok(Some(Ok(row))) => match finding_row(&row, &label) {
                        Ok(finding) => Some((Ok(finding), Some(rows))),
                        Err(e) => Some((Err(e), None)),
                    },
                    Ok(Some(Err(e))) => Some((Err(StoreError { message: format!("query `{label}`: {}", e.message), ..e }), None)),
                }
            }
        })))
    }
}

/// A typed named parameter; a NULL string has a type and no value.
fn parameter(name: &str, value: &FindingsParamValue) -> QueryParameter {
    let (ty, value) = match value {
        FindingsParamValue::Date(date) => ("DATE", Some(date.to_string())),
        FindingsParamValue::String(text) => ("STRING", text.clone()),
    };
    let mut parameter_value = QueryParameterValue::new();
    if let Some(value) = value {
        parameter_value = parameter_value.set_value(value);
    }
    QueryParameter::new()
        .set_name(name)
        .set_parameter_type(QueryParameterType::new().set_type(ty))
        .set_parameter_value(parameter_value)
}

/// A failed findings query. A job BigQuery ran and refused (syntax, a missing column,
/// a type error) fails the same way next time: permanent, whatever generic reason the
/// service gives (`invalidQuery`, or `notFound` for a column or table), so a broken
/// detector is reported as such rather than retried. Transport and service trouble
/// keeps its own kind.
fn sql_error(context: &str, error: &google_cloud_bigquery::error::QueryError) -> StoreError {
    let mapped = from_query(context, error);
    match error {
        google_cloud_bigquery::error::QueryError::JobFailed { .. } if mapped.kind == converge_core::ErrorKind::NotFound => {
            StoreError::permanent(BACKEND, format!("{} — fix the detector's SQL, or run the ETL that creates the table", mapped.message))
        }
        _ => mapped,
    }
}

fn deadline_passed(label: &str, timeout: Duration) -> StoreError {
    StoreError::retryable(
        BACKEND,
        format!("query `{label}` did not finish within its timeout of {timeout:?} (BigQuery cancels the job at that point); make it cheaper or raise the timeout"),
    )
}

fn finding_row(row: &Row, label: &str) -> Result<FindingRow, StoreError> {
    let context = format!("query `{label}`");
    let error = |e: google_cloud_bigquery::error::RowError| row_error(&context, &e);
    Ok(FindingRow {
        tenant: row.get(0).map_err(error)?,
        entity_type: row.get(1).map_err(error)?,
        entity_id: row.get(2).map_err(error)?,
        recent_value: row.get(3).map_err(error)?,
        baseline_value: row.get(4).map_err(error)?,
        volume: row.get(5).map_err(error)?,
        reference_value: row.get(6).map_err(error)?,
        baseline_volume: row.get(7).map_err(error)?,
        statistic: row.get(8).map_err(error)?,
        p_value: row.get(9).map_err(error)?,
        q_value: row.get(10).map_err(error)?,
    })
}

/// Rewrites each bare reference to one of `tables` that directly follows `FROM` or
/// `JOIN` (any case, any whitespace) into `qualify(table)`. String literals, quoted
/// identifiers and comments are copied untouched; a name already qualified
/// (`x.daily_entity_metrics`, `` `p.d.daily_entity_metrics` ``) is not a bare name.
pub fn qualify_tables(sql: &str, tables: &[&str], qualify: impl Fn(&str) -> String) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 64);
    // The last keyword-or-identifier token seen, upper-cased, if nothing but
    // whitespace or comments followed it.
    let mut previous: Option<String> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'"' | b'`' => {
                let end = quoted_end(bytes, i);
                out.push_str(&sql[i..end]);
                previous = None;
                i = end;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'#' => {
                let end = sql[i..].find('\n').map_or(bytes.len(), |n| i + n);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let end = sql[i + 2..].find("*/").map_or(bytes.len(), |n| i + 2 + n + 2);
                out.push_str(&sql[i..end]);
                i = end;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                let word = &sql[start..i];
                let after_keyword = matches!(previous.as_deref(), Some("FROM" | "JOIN"));
                let dotted = start > 0 && bytes[start - 1] == b'.' || bytes.get(i) == Some(&b'.');
                if after_keyword && !dotted && tables.contains(&word) {
                    out.push_str(&qualify(word));
                } else {
                    out.push_str(word);
                }
                previous = Some(word.to_ascii_uppercase());
            }
            c if c.is_ascii_whitespace() => {
                out.push(c as char);
                i += 1;
            }
            _ => {
                // Copy one whole character (SQL text may hold any UTF-8 in literals,
                // but those are handled above; this keeps other bytes intact too).
                let width = sql[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&sql[i..i + width]);
                previous = None;
                i += width;
            }
        }
    }
    out
}

/// The index just past the literal or quoted identifier opening at `start`
/// (backslash escapes and doubled quotes both stay inside).
fn quoted_end(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(sql: &str) -> String {
        qualify_tables(sql, &READABLE_TABLES, |t| format!("`p.d.{t}`"))
    }

    #[test]
    fn bare_table_references_after_from_and_join_are_qualified() {
        assert_eq!(q("SELECT * FROM daily_entity_metrics WHERE x"), "SELECT * FROM `p.d.daily_entity_metrics` WHERE x");
        assert_eq!(
            q("select 1 from\n  daily_entity_metrics AS m join entity_map e ON true"),
            "select 1 from\n  `p.d.daily_entity_metrics` AS m join `p.d.entity_map` e ON true"
        );
        assert_eq!(q("FROM -- why\n daily_entity_metrics"), "FROM -- why\n `p.d.daily_entity_metrics`");
    }

    #[test]
    fn everything_else_is_left_alone() {
        for sql in [
            "SELECT daily_entity_metrics FROM t",
            "SELECT 'FROM daily_entity_metrics' FROM t",
            "SELECT * FROM `other.daily_entity_metrics`",
            "SELECT * FROM other.daily_entity_metrics",
            "SELECT * FROM daily_entity_metrics_latest",
            "SELECT * FROM scoped -- FROM daily_entity_metrics",
            "SELECT * FROM scoped /* FROM daily_entity_metrics */",
            "SELECT 'it''s', \"a\\\"b\" FROM x, daily_entity_metrics",
            "SELECT 'é' FROM t",
        ] {
            assert_eq!(q(sql), sql);
        }
    }

    #[test]
    fn parameters_are_typed_and_a_null_tenant_has_no_value() {
        let date = parameter("as_of", &FindingsParamValue::Date("2025-03-31".parse().unwrap()));
        assert_eq!(date.parameter_type.unwrap().r#type, "DATE");
        assert_eq!(date.parameter_value.unwrap().value.as_deref(), Some("2025-03-31"));
        let null = parameter("tenant", &FindingsParamValue::String(None));
        assert_eq!((null.name.as_str(), null.parameter_type.unwrap().r#type.as_str()), ("tenant", "STRING"));
        assert_eq!(null.parameter_value.unwrap().value, None);
        let some = parameter("tenant", &FindingsParamValue::String(Some("acme".into())));
        assert_eq!(some.parameter_value.unwrap().value.as_deref(), Some("acme"));
    }
}
