//! Changelog rows into a DuckDB table: the check that every row fits its table, and
//! the appender fed with values borrowed from each [`ChangeRow`].

use converge_core::{ChangeRow, MirrorConfig, PromotedValue, StoreError};
use duckdb::appender_params_from_iter;
use duckdb::types::{TimeUnit, ToSqlOutput, ValueRef};
use duckdb::ToSql;

use crate::db::{db_error, BACKEND};

/// Refuses rows no table of `config` can take, before anything is written: the
/// journal must hold only rows the loader can append.
pub(crate) fn check_rows<'r>(config: &MirrorConfig, rows: impl Iterator<Item = &'r ChangeRow>) -> Result<(), StoreError> {
    for row in rows {
        let table = row.table.as_str();
        let route = config.table(table).ok_or_else(|| {
            StoreError::permanent(BACKEND, format!("row for unknown table `{table}`; is the mirror configuration the same everywhere?"))
        })?;
        if row.promoted.len() != route.promoted.len() {
            return Err(StoreError::permanent(
                BACKEND,
                format!("row has {} promoted values, table `{table}` has {} promoted columns", row.promoted.len(), route.promoted.len()),
            ));
        }
    }
    Ok(())
}

/// Appends one table's rows (checked by [`check_rows`]) inside `transaction`;
/// returns how many.
pub(crate) fn append_rows(transaction: &duckdb::Transaction<'_>, table: &str, rows: &[&ChangeRow]) -> Result<u64, StoreError> {
    let mut appender = transaction.appender(table).map_err(|e| db_error("open appender", e))?;
    for row in rows {
        appender.append_row(appender_params_from_iter(row_cells(row))).map_err(|e| db_error("append row", e))?;
    }
    appender.flush().map_err(|e| db_error("flush appender", e))?;
    Ok(rows.len() as u64)
}

/// One appended value, borrowed from its row: the appender copies text straight out
/// of the [`ChangeRow`], with no owned copy per value (a row has ~15 of them, and the
/// group commit and rebuilds append them by the hundred thousand).
#[derive(Debug, Clone, Copy)]
enum Cell<'a> {
    Null,
    Text(&'a str),
    Boolean(bool),
    BigInt(i64),
    Double(f64),
    Micros(i64),
    Date(i32),
}

impl ToSql for Cell<'_> {
    fn to_sql(&self) -> duckdb::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Cell::Null => ValueRef::Null,
            Cell::Text(text) => ValueRef::Text(text.as_bytes()),
            Cell::Boolean(b) => ValueRef::Boolean(b),
            Cell::BigInt(i) => ValueRef::BigInt(i),
            Cell::Double(f) => ValueRef::Double(f),
            Cell::Micros(us) => ValueRef::Timestamp(TimeUnit::Microsecond, us),
            Cell::Date(days) => ValueRef::Date32(days),
        }))
    }
}

fn optional_text(text: &Option<String>) -> Cell<'_> {
    text.as_deref().map_or(Cell::Null, Cell::Text)
}

fn row_cells(row: &ChangeRow) -> Vec<Cell<'_>> {
    let mut cells = Vec::with_capacity(16 + row.promoted.len());
    cells.extend([
        Cell::Text(&row.tenant),
        Cell::Text(&row.collection),
        Cell::Text(&row.doc_id),
        Cell::Text(&row.doc_path),
        Cell::Text(row.op.as_str()),
        Cell::Boolean(row.is_deleted),
        Cell::Micros(row.version),
        Cell::Text(&row.event_id),
        optional_text(&row.content_hash),
        optional_text(&row.data),
    ]);
    cells.extend(row.promoted.iter().map(|p| match p {
        None => Cell::Null,
        Some(PromotedValue::String(s)) => Cell::Text(s),
        Some(PromotedValue::Int64(i)) => Cell::BigInt(*i),
        Some(PromotedValue::Float64(f)) => Cell::Double(*f),
        Some(PromotedValue::Bool(b)) => Cell::Boolean(*b),
        Some(PromotedValue::Timestamp(us)) => Cell::Micros(*us),
        Some(PromotedValue::Date(days)) => Cell::Date(*days),
    }));
    cells.extend([Cell::Micros(row.ingested_at), Cell::Text(&row.run_id), Cell::Text(&row.code_version)]);
    cells.extend([optional_micros(row.update_time), optional_micros(row.create_time)]);
    cells.push(Cell::BigInt(crate::schema::content_rank(row.content_hash.as_deref())));
    cells
}

fn optional_micros(micros: Option<i64>) -> Cell<'static> {
    micros.map_or(Cell::Null, Cell::Micros)
}
