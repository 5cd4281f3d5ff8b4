//! Changelog rows into a DuckDB table: the check that every row fits its table, and
//! the appender fed with values borrowed from each [`ChangeRow`].

use converge_core::{ChangeRow, MirrorConfig, PromotedValue, StoreError};
use duckdb::appender_params_from_iter;
use duckdb::types::{TimeUnit, ToSqlOutput, ValueRef};
use duckdb::ToSql;

use crate::db::{db_error, BACKEND};
use crate::schema::{ADDED_COLUMNS, LEADING_COLUMNS, TRAILING_COLUMNS};

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

/// What each `ChangeRow::promoted` entry of a table's rows is: the promoted column
/// names of the configuration the rows were made with, per table.
pub(crate) type PromotedNames = Vec<(String, Vec<String>)>;

/// The promoted column names of every table of `config`.
pub(crate) fn promoted_names(config: &MirrorConfig) -> PromotedNames {
    config.routes.iter().map(|route| (route.table.clone(), route.promoted.iter().map(|c| c.column.clone()).collect())).collect()
}

/// The names `names` gives `table`'s promoted values, if it knows the table.
pub(crate) fn names_of<'n>(names: Option<&'n PromotedNames>, table: &str) -> Option<&'n [String]> {
    names?.iter().find(|(t, _)| t == table).map(|(_, columns)| columns.as_slice())
}

/// Appends one table's rows (checked by [`check_rows`]) inside `transaction`;
/// returns how many. `names` says which column each promoted value is; `None` (rows
/// from a journal written before it recorded them) means the table's promoted columns
/// in table order, the only layout such a table could have.
///
/// By name, in the table's own column order, read from the catalog inside the
/// transaction: a promoted column added to an existing table comes last (after
/// `ADDED_COLUMNS`), one in a table created with it comes among the promoted ones, and
/// rows journaled before the column was added have no value for it (NULL).
pub(crate) fn append_rows(transaction: &duckdb::Transaction<'_>, table: &str, rows: &[&ChangeRow], names: Option<&[String]>) -> Result<u64, StoreError> {
    let columns: Vec<String> = crate::schema::table_columns(transaction, table)?.into_iter().map(|c| c.name).collect();
    let table_promoted: Vec<String>;
    let promoted: &[String] = match names {
        Some(names) => names,
        None => {
            table_promoted = columns.iter().filter(|c| !crate::schema::is_fixed_column(c)).cloned().collect();
            &table_promoted
        }
    };
    // The order `row_cells` produces.
    let produced: Vec<&str> = LEADING_COLUMNS
        .iter()
        .map(|(name, _)| *name)
        .chain(promoted.iter().map(String::as_str))
        .chain(TRAILING_COLUMNS.iter().chain(ADDED_COLUMNS).map(|(name, _)| *name))
        .collect();
    if let Some(lacking) = produced.iter().find(|name| !columns.iter().any(|c| c == *name)) {
        return Err(StoreError::permanent(
            BACKEND,
            format!("table `{table}` has no column `{lacking}` for the rows appended; run setup (`converge setup`) with the configuration that wrote them"),
        ));
    }
    if let Some(row) = rows.iter().find(|row| row.promoted.len() != promoted.len()) {
        return Err(StoreError::permanent(
            BACKEND,
            format!("row has {} promoted values, table `{table}` has {} promoted columns", row.promoted.len(), promoted.len()),
        ));
    }
    // For each table column, which produced cell goes there (`None`: NULL).
    let plan: Vec<Option<usize>> = columns.iter().map(|c| produced.iter().position(|p| p == c)).collect();
    let in_order = plan.len() == produced.len() && plan.iter().enumerate().all(|(i, p)| *p == Some(i));
    let mut appender = transaction.appender(table).map_err(|e| db_error("open appender", e))?;
    for row in rows {
        let cells = row_cells(row);
        let appended = if in_order {
            appender.append_row(appender_params_from_iter(cells))
        } else {
            appender.append_row(appender_params_from_iter(plan.iter().map(|p| p.map_or(Cell::Null, |i| cells[i]))))
        };
        appended.map_err(|e| db_error("append row", e))?;
    }
    appender.flush().map_err(|e| db_error("flush appender", e))?;
    Ok(rows.len() as u64)
}

/// One appended value, borrowed from its row: the appender copies text straight out
/// of the [`ChangeRow`], with no owned copy per value (a row has ~15 of them, and the
/// group commit and rebuilds append them by the hundred thousand).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
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
    cells.extend(row.promoted.iter().map(promoted_cell));
    cells.extend([Cell::Micros(row.ingested_at), Cell::Text(&row.run_id), Cell::Text(&row.code_version)]);
    cells.extend([optional_micros(row.update_time), optional_micros(row.create_time)]);
    cells.push(Cell::BigInt(crate::schema::content_rank(row.content_hash.as_deref())));
    cells
}

/// A promoted value as appended.
pub(crate) fn promoted_cell(value: &Option<PromotedValue>) -> Cell<'_> {
    match value {
        None => Cell::Null,
        Some(PromotedValue::String(s)) => Cell::Text(s),
        Some(PromotedValue::Int64(i)) => Cell::BigInt(*i),
        Some(PromotedValue::Float64(f)) => Cell::Double(*f),
        Some(PromotedValue::Bool(b)) => Cell::Boolean(*b),
        Some(PromotedValue::Timestamp(us)) => Cell::Micros(*us),
        Some(PromotedValue::Date(days)) => Cell::Date(*days),
    }
}

fn optional_micros(micros: Option<i64>) -> Cell<'static> {
    micros.map_or(Cell::Null, Cell::Micros)
}
