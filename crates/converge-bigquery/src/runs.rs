//! Run records in `converge_runs`: inserted by a DML job, read back newest first, one
//! per batch id (the last recorded wins).

use futures::StreamExt;
use google_cloud_bigquery::query::Row;

use converge_core::{RunRecord, StoreError, Timestamp, RUNS_TABLE};

use crate::error::BACKEND;
use crate::query::{row_error, QueryParam};
use crate::schema::qualified;
use crate::warehouse::BigQueryWarehouse;

impl BigQueryWarehouse {
    /// Appends one run record (the newest record of a batch id wins when read).
    pub(crate) async fn insert_run(&self, run: RunRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {} (batch_id, kind, scope, started_at, finished_at, outcome, report, code_version, recorded_at) \
             VALUES (@batch_id, @kind, @scope, @started_at, @finished_at, @outcome, @report, @code_version, CURRENT_TIMESTAMP())",
            qualified(self.config(), RUNS_TABLE)
        );
        let params = [
            ("batch_id", QueryParam::String(run.batch_id)),
            ("kind", QueryParam::String(run.kind)),
            ("scope", QueryParam::String(run.scope)),
            ("started_at", QueryParam::Timestamp(run.started_at.as_micros())),
            ("finished_at", QueryParam::Timestamp(run.finished_at.as_micros())),
            ("outcome", QueryParam::String(run.outcome.as_str().to_owned())),
            ("report", QueryParam::String(run.report.to_string())),
            ("code_version", QueryParam::String(run.code_version)),
        ];
        self.run("record run", sql, &params).await.map(|_| ())
    }

    /// The newest `limit` runs of `kind`, one per batch id.
    pub(crate) async fn read_runs(&self, kind: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        // `limit` is a number from code, never input text.
        let sql = format!(
            "SELECT batch_id, kind, scope, UNIX_MICROS(started_at), UNIX_MICROS(finished_at), outcome, report, code_version \
             FROM {} WHERE kind = @kind \
             QUALIFY ROW_NUMBER() OVER (PARTITION BY batch_id ORDER BY recorded_at DESC, finished_at DESC) = 1 \
             ORDER BY finished_at DESC, batch_id LIMIT {limit}",
            qualified(self.config(), RUNS_TABLE)
        );
        let done = self.run("read runs", sql, &[("kind", QueryParam::String(kind.to_owned()))]).await?;
        let rows: Vec<Result<Row, StoreError>> = self.rows("read runs", done).collect().await;
        rows.into_iter()
            .map(|row| {
                let row = row?;
                let error = |e: google_cloud_bigquery::error::RowError| row_error("read runs", &e);
                let report: String = row.get(6).map_err(error)?;
                Ok(RunRecord {
                    batch_id: row.get(0).map_err(error)?,
                    kind: row.get(1).map_err(error)?,
                    scope: row.get(2).map_err(error)?,
                    started_at: Timestamp::from_micros(row.get(3).map_err(error)?),
                    finished_at: Timestamp::from_micros(row.get(4).map_err(error)?),
                    outcome: row
                        .get::<String>(5)
                        .map_err(error)?
                        .parse()
                        .map_err(|e: converge_core::run::UnknownRunOutcome| StoreError::permanent(BACKEND, format!("run record: {e}")))?,
                    report: serde_json::from_str(&report)
                        .map_err(|e| StoreError::permanent(BACKEND, format!("run report is not JSON: {e}")))?,
                    code_version: row.get(7).map_err(error)?,
                })
            })
            .collect()
    }
}
