//! Run records in `converge_runs`: written by the writer connection, read back
//! newest first, one per batch id (the last recorded wins).

use converge_core::{RunRecord, StoreError, Timestamp};
use duckdb::{params, Connection};

use crate::db::{db_error, BACKEND};

pub(crate) fn record(connection: &Connection, run: &RunRecord) -> Result<(), StoreError> {
    connection
        .execute(
            "INSERT INTO converge_runs (batch_id, kind, scope, started_at, finished_at, outcome, report, code_version) \
             VALUES (?, ?, ?, make_timestamp(?), make_timestamp(?), ?, ?, ?)",
            params![
                run.batch_id,
                run.kind,
                run.scope,
                run.started_at.as_micros(),
                run.finished_at.as_micros(),
                run.outcome.as_str(),
                run.report.to_string(),
                run.code_version
            ],
        )
        .map(|_| ())
        .map_err(|e| db_error("record run", e))
}

pub(crate) fn read(connection: &Connection, kind: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
    let mut statement = connection
        .prepare(
            "SELECT batch_id, kind, scope, epoch_us(started_at), epoch_us(finished_at), outcome, report::VARCHAR, code_version \
             FROM converge_runs WHERE kind = ? \
             QUALIFY row_number() OVER (PARTITION BY batch_id ORDER BY recorded_at DESC, finished_at DESC) = 1 \
             ORDER BY finished_at DESC, batch_id LIMIT ?",
        )
        .map_err(|e| db_error("read runs", e))?;
    let rows = statement.query_map(params![kind, limit as i64], run_from_row).map_err(|e| db_error("read runs", e))?;
    rows.map(|row| {
        let (mut run, report) = row.map_err(|e| db_error("read runs", e))?;
        run.report = serde_json::from_str(&report).map_err(|e| StoreError::permanent(BACKEND, format!("run report is not JSON: {e}")))?;
        Ok(run)
    })
    .collect()
}

fn run_from_row(row: &duckdb::Row<'_>) -> duckdb::Result<(RunRecord, String)> {
    let micros = |i| row.get::<_, i64>(i).map(Timestamp::from_micros);
    Ok((
        RunRecord {
            batch_id: row.get(0)?,
            kind: row.get(1)?,
            scope: row.get(2)?,
            started_at: micros(3)?,
            finished_at: micros(4)?,
            outcome: row.get::<_, String>(5)?.parse().map_err(|e| duckdb::Error::FromSqlConversionFailure(5, duckdb::types::Type::Text, Box::new(e)))?,
            report: serde_json::Value::Null,
            code_version: row.get(7)?,
        },
        row.get::<_, String>(6)?,
    ))
}
