//! DuckDB plumbing the warehouse's modules share: DuckDB's errors as core's
//! [`StoreError`] (retryable or not), queries whose rows stream, ad-hoc SQL as JSON,
//! and feeding an all-or-nothing write from an async stream to a blocking writer.

use converge_core::{ErrorKind, StoreError};
use duckdb::types::Value as DuckValue;
use duckdb::Connection;
use futures::stream::{BoxStream, StreamExt};

/// The backend's name in errors.
pub(crate) const BACKEND: &str = "duckdb";

pub(crate) fn db_error(context: &str, error: duckdb::Error) -> StoreError {
    let text = error.to_string();
    // Lock and I/O trouble may pass; anything else (constraint, type, syntax) will not.
    let kind = if text.contains("Could not set lock") || text.contains("IO Error") || text.contains("Conflict") {
        ErrorKind::Retryable
    } else {
        ErrorKind::Permanent
    };
    StoreError::new(kind, BACKEND, format!("{context}: {text}"))
}

pub(crate) fn join_error(error: tokio::task::JoinError) -> StoreError {
    StoreError::permanent(BACKEND, format!("warehouse task failed: {error}"))
}

/// Rows per chunk handed to a blocking writer: bounded memory whatever the stream's length.
const WRITER_CHUNK: usize = 4096;

/// What the async side of an all-or-nothing write (an atomic append, a slice
/// replace) hands its blocking writer.
pub(crate) enum WriterChunk<T> {
    Rows(Vec<T>),
    Commit,
}

/// Feeds `rows` in chunks of [`WRITER_CHUNK`] to `writer`, run on a blocking thread
/// with its own transaction, then [`WriterChunk::Commit`]. An error in the stream stops
/// the feed without a Commit: the writer sees its sender dropped and rolls back. The
/// stream's own error comes first: the writer only saw an abandoned write.
pub(crate) async fn feed_blocking_writer<T: Send + 'static, R: Send + 'static>(
    mut rows: BoxStream<'static, Result<T, StoreError>>,
    writer: impl FnOnce(tokio::sync::mpsc::Receiver<WriterChunk<T>>) -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    let writer = tokio::task::spawn_blocking(move || writer(receiver));
    let mut chunk = Vec::with_capacity(WRITER_CHUNK);
    let mut outcome = Ok(());
    while let Some(item) = rows.next().await {
        match item {
            Ok(row) => chunk.push(row),
            Err(error) => {
                outcome = Err(error);
                break;
            }
        }
        if chunk.len() == WRITER_CHUNK && sender.send(WriterChunk::Rows(std::mem::take(&mut chunk))).await.is_err() {
            break; // the writer failed; its error is returned below
        }
    }
    if outcome.is_ok() {
        if !chunk.is_empty() {
            let _ = sender.send(WriterChunk::Rows(chunk)).await;
        }
        let _ = sender.send(WriterChunk::Commit).await;
    }
    // Without a Commit, dropping the sender makes the writer roll back.
    drop(sender);
    let written = writer.await.map_err(join_error)?;
    outcome?;
    written
}

/// Runs `statement` so that its rows are produced as they are read, not all at once.
///
/// `Statement::query` materializes the whole result first, outside DuckDB's memory
/// limit: the sorted latest states of a 1,000,000-document tenant held ~100 MB there
/// for as long as a rebuild or a reconciliation read them. Executed for streaming,
/// the result stays in DuckDB's buffer-managed (capped, spillable) operators and is
/// fetched a chunk at a time. `stream_arrow` is the crate's one streaming entry point;
/// its iterator panics on a fetch error, so it is dropped unread and the rows are read
/// through `raw_query`, which returns fetch errors as errors.
pub(crate) fn query_streaming<'s>(statement: &'s mut duckdb::Statement<'_>, params: impl duckdb::Params) -> duckdb::Result<duckdb::Rows<'s>> {
    drop(statement.stream_arrow(params)?);
    Ok(statement.raw_query())
}

pub(crate) fn query_json_blocking(connection: &Connection, sql: &str) -> Result<Vec<serde_json::Value>, StoreError> {
    let first_word = sql.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
    let returns_rows = matches!(first_word.as_str(), "select" | "with" | "from" | "values" | "table" | "(");
    if !returns_rows {
        // DESCRIBE, SHOW, PRAGMA… cannot be wrapped in a subquery; run them as they are
        // and render their text columns.
        let mut statement = connection.prepare(sql).map_err(|e| db_error("query", e))?;
        let mut rows = statement.query([]).map_err(|e| db_error("query", e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| db_error("query", e))? {
            let names = row.as_ref().column_names();
            let mut object = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let value: Option<String> = row.get::<_, DuckValue>(i).ok().and_then(|v| match v {
                    DuckValue::Null => None,
                    DuckValue::Text(s) => Some(s),
                    other => Some(format!("{other:?}")),
                });
                object.insert(name.clone(), value.map_or(serde_json::Value::Null, serde_json::Value::String));
            }
            out.push(serde_json::Value::Object(object));
        }
        return Ok(out);
    }
    let wrapped = format!("SELECT to_json(_row)::VARCHAR FROM ({sql}) AS _row");
    let mut statement = connection.prepare(&wrapped).map_err(|e| db_error("query", e))?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0)).map_err(|e| db_error("query", e))?;
    rows.map(|text| {
        let text = text.map_err(|e| db_error("query", e))?;
        serde_json::from_str(&text).map_err(|e| StoreError::permanent(BACKEND, format!("row is not JSON: {e}")))
    })
    .collect()
}
