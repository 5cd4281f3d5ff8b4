//! Detector queries on the embedded warehouse: [`FindingsWarehouse`] for
//! [`DuckWarehouse`].
//!
//! Each query runs on its own reader connection on the blocking pool, so queries run
//! in parallel with each other and with appends. Rows go to the caller in chunks over
//! a bounded channel. A watchdog interrupts the connection when the timeout passes or
//! the caller drops the stream: DuckDB stops the query at its next check, so a
//! runaway detector cannot hold a core after it was given up on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use converge_core::findings::check_finding_columns;
use converge_core::{ErrorKind, FindingRow, FindingsParamValue, FindingsQuery, FindingsWarehouse, QueryDialect, StoreError};
use duckdb::types::Value;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, oneshot};

use crate::DuckWarehouse;

const BACKEND: &str = "duckdb";
/// Rows per channel message.
const CHUNK: usize = 256;

#[async_trait]
impl FindingsWarehouse for DuckWarehouse {
    fn dialect(&self) -> QueryDialect {
        QueryDialect::DuckDb
    }

    async fn query_findings(&self, query: FindingsQuery) -> Result<BoxStream<'static, Result<FindingRow, StoreError>>, StoreError> {
        let connection = self.reader()?;
        let interrupt = connection.interrupt_handle();
        let timed_out = Arc::new(AtomicBool::new(false));
        let (chunks, mut receiver) = mpsc::channel::<Result<Vec<FindingRow>, StoreError>>(4);
        let (finished, finished_rx) = oneshot::channel::<()>();

        // The watchdog: interrupts on timeout or when the consumer is gone.
        let watch_closed = chunks.clone();
        let watch_timed_out = timed_out.clone();
        let timeout = query.timeout;
        tokio::spawn(async move {
            tokio::select! {
                _ = finished_rx => {}
                _ = tokio::time::sleep(timeout) => {
                    watch_timed_out.store(true, Ordering::SeqCst);
                    interrupt.interrupt();
                }
                _ = watch_closed.closed() => interrupt.interrupt(),
            }
        });

        tokio::task::spawn_blocking(move || {
            let label = query.label.clone();
            if let Err(mut error) = run_blocking(&connection, &query, &chunks) {
                if timed_out.load(Ordering::SeqCst) {
                    error = StoreError::retryable(
                        BACKEND,
                        format!("query `{label}` was cancelled after its timeout of {:?}; make it cheaper or raise the timeout", query.timeout),
                    );
                }
                let _ = chunks.blocking_send(Err(error));
            }
            let _ = finished.send(());
        });
        Ok(converge_core::flatten_chunks(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))))
    }
}

fn run_blocking(
    connection: &duckdb::Connection,
    query: &FindingsQuery,
    chunks: &mpsc::Sender<Result<Vec<FindingRow>, StoreError>>,
) -> Result<(), StoreError> {
    let label = &query.label;
    let error = |e: duckdb::Error| query_error(label, e);
    let values: Vec<Value> = query
        .params
        .iter()
        .map(|param| match &param.value {
            FindingsParamValue::Date(date) => Value::Text(date.to_string()),
            FindingsParamValue::String(Some(text)) => Value::Text(text.clone()),
            FindingsParamValue::String(None) => Value::Null,
        })
        .collect();
    let mut statement = connection.prepare(&query.sql).map_err(error)?;
    let mut rows = statement.query(duckdb::params_from_iter(values)).map_err(error)?;
    let columns = rows.as_ref().map(|statement| statement.column_names()).unwrap_or_default();
    check_finding_columns(BACKEND, label, &columns)?;
    let mut chunk = Vec::with_capacity(CHUNK);
    while let Some(row) = rows.next().map_err(error)? {
        chunk.push(FindingRow {
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
        });
        if chunk.len() == CHUNK && chunks.blocking_send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))).is_err() {
            return Ok(());
        }
    }
    if !chunk.is_empty() {
        let _ = chunks.blocking_send(Ok(chunk));
    }
    Ok(())
}

/// A detector's SQL that DuckDB refuses (binder, parser, type errors) will be refused
/// again: permanent. Lock and I/O trouble may pass, and so may running out of memory:
/// the memory limit is shared by the queries in flight, and one that failed beside
/// others can run alone (the detector runner does).
fn query_error(label: &str, error: duckdb::Error) -> StoreError {
    let text = error.to_string();
    let passing = ["Could not set lock", "IO Error", "Out of Memory"];
    let kind = if passing.iter().any(|p| text.contains(p)) { ErrorKind::Retryable } else { ErrorKind::Permanent };
    StoreError::new(kind, BACKEND, format!("query `{label}`: {text}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use converge_core::{FindingsParam, FindingsParamValue};
    use futures::StreamExt;

    use super::*;

    fn query(sql: &str, timeout: Duration) -> FindingsQuery {
        FindingsQuery {
            label: "probe".into(),
            // Every parameter must be used: DuckDB refuses unused ones.
            sql: format!("SELECT * FROM ({sql}) WHERE CAST($1 AS DATE) IS NOT NULL AND (CAST($2 AS VARCHAR) IS NULL OR true)"),
            params: vec![
                FindingsParam { name: "as_of".into(), value: FindingsParamValue::Date(chrono::NaiveDate::from_ymd_opt(2025, 3, 31).unwrap()) },
                FindingsParam { name: "tenant".into(), value: FindingsParamValue::String(None) },
            ],
            timeout,
        }
    }

    async fn collect(warehouse: &DuckWarehouse, q: FindingsQuery) -> Result<Vec<FindingRow>, StoreError> {
        warehouse.query_findings(q).await?.collect::<Vec<_>>().await.into_iter().collect()
    }

    #[tokio::test]
    async fn rows_come_back_typed_across_chunks() {
        let warehouse = DuckWarehouse::open_in_memory().unwrap();
        let sql = "SELECT 'all' AS tenant, 'page' AS entity_type, '2025-03-31' AS entity_id, \
                   1.5::DOUBLE AS recent_value, NULL::DOUBLE AS baseline_value, 10::DOUBLE AS volume, 2.0::DOUBLE AS reference_value, \
                   20::DOUBLE AS baseline_volume, -3.5::DOUBLE AS statistic, 0.0002::DOUBLE AS p_value, 0.004::DOUBLE AS q_value \
                   FROM range(600)";
        let rows = collect(&warehouse, query(sql, Duration::from_secs(30))).await.unwrap();
        assert_eq!(rows.len(), 600, "more rows than one chunk");
        assert_eq!(
            rows[0],
            FindingRow {
                tenant: "all".into(),
                entity_type: "page".into(),
                entity_id: "2025-03-31".into(),
                recent_value: Some(1.5),
                baseline_value: None,
                volume: Some(10.0),
                reference_value: Some(2.0),
                baseline_volume: Some(20.0),
                statistic: Some(-3.5),
                p_value: Some(0.0002),
                q_value: Some(0.004),
            }
        );
    }

    #[tokio::test]
    async fn wrong_columns_and_bad_sql_are_permanent_errors_naming_the_query() {
        let warehouse = DuckWarehouse::open_in_memory().unwrap();
        let error = collect(&warehouse, query("SELECT 1 AS tenant", Duration::from_secs(30))).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Permanent);
        assert!(error.message.contains("expected the columns"), "{error}");
        let error = collect(&warehouse, query("SELECT no_such_column FROM range(1)", Duration::from_secs(30))).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Permanent);
        assert!(error.message.contains("query `probe`") && error.message.contains("no_such_column"), "{error}");
    }

    #[tokio::test]
    async fn a_query_past_its_timeout_is_interrupted_and_retryable() {
        let warehouse = DuckWarehouse::open_in_memory().unwrap();
        // A cross join of 10^12 rows: minutes of work unless interrupted.
        let sql = "SELECT 't' AS tenant, 'page' AS entity_type, 'x' AS entity_id, sum(a.range * b.range)::DOUBLE AS recent_value, \
                   NULL::DOUBLE AS baseline_value, NULL::DOUBLE AS volume, NULL::DOUBLE AS reference_value, NULL::DOUBLE AS baseline_volume, NULL::DOUBLE AS statistic, NULL::DOUBLE AS p_value, NULL::DOUBLE AS q_value \
                   FROM range(1000000) a, range(1000000) b";
        let started = std::time::Instant::now();
        let error = collect(&warehouse, query(sql, Duration::from_millis(300))).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
        assert!(error.message.contains("timeout"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(20), "interrupted, not run to the end: {:?}", started.elapsed());
    }
}
