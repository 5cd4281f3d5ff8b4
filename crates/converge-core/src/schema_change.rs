//! Schema changes: a route's promoted columns against the columns its warehouse tables
//! have, decided once for both warehouses.
//!
//! - A promoted column the configuration adds is added to the existing tables by setup
//!   (nullable, last: both warehouses append added columns at the end), new rows carry
//!   it, and `converge backfill` fills it in the rows written before
//!   ([`promoted_from_data`]).
//! - A promoted column the configuration no longer has, or whose type differs from the
//!   table's, is refused at start ([`compare_promoted`]): Converge never drops or
//!   retypes a column itself. A column kept but no longer written would read NULL in
//!   every new row while reports still filter on it, a drift nobody sees; a retyped
//!   column cannot be altered in place on BigQuery beyond a few widenings
//!   (<https://cloud.google.com/bigquery/docs/managing-table-schemas>, "Change a
//!   column's data type"). The message says what was expected, what is there, and the
//!   two ways on: restore the configuration, or change the warehouse deliberately.

use crate::change::{lookup, promote_one, PromotedValue, RowError};
use crate::config::{ColumnType, PromotedColumn, Route};
use crate::error::{ErrorKind, StoreError};
use crate::value::{fields_from_json, Fields};

/// One column a warehouse table has: its name, its type in the warehouse's words, and
/// the promoted column type that maps to it (`None`: none does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    pub name: String,
    pub warehouse_type: String,
    pub column_type: Option<ColumnType>,
}

/// What `route`'s table `table` (the changelog or one of its current tables) lacks:
/// the promoted columns setup must add, in configuration order. `fixed` are the
/// warehouse's own columns (never promoted); every other column of `present` is a
/// promoted one. A promoted column present but no longer configured, or of another
/// type, is refused: the error names each one and what to do.
pub fn compare_promoted(
    backend: &'static str,
    route: &Route,
    table: &str,
    fixed: &[&str],
    present: &[TableColumn],
) -> Result<Vec<PromotedColumn>, StoreError> {
    let mut problems = Vec::new();
    for column in present.iter().filter(|c| !fixed.contains(&c.name.as_str())) {
        match route.promoted.iter().find(|p| p.column == column.name) {
            None => problems.push(format!(
                "column `{table}.{}` ({}) is no longer promoted by the configuration: put it back in the route's `promote` list \
                 (e.g. {{ column = \"{}\", field = \"…\", type = \"{}\" }}), or drop the column from `{t}`, `{t}_current` and \
                 `{t}_current_tombstones` deliberately (its values are lost) and run setup",
                column.name,
                column.warehouse_type,
                column.name,
                column.column_type.map_or("…", ColumnType::name),
                t = route.table,
            )),
            Some(p) if Some(p.column_type) != column.column_type => problems.push(format!(
                "promoted column `{table}.{}` is configured as {} but the warehouse column is {}: Converge does not retype columns. \
                 Put `type = \"{}\"` back, or promote the field under a new column name (then drop the old one deliberately), \
                 or drop `{}` from `{t}`, `{t}_current` and `{t}_current_tombstones` deliberately, run setup (it adds the column \
                 with the new type) and `converge backfill --table {t} --column {}`",
                p.column,
                p.column_type.name(),
                column.warehouse_type,
                column.column_type.map_or("…", ColumnType::name),
                p.column,
                p.column,
                t = route.table,
            )),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(StoreError::new(
            ErrorKind::Permanent,
            backend,
            format!("the configuration's promoted columns differ from the warehouse's, refused: {}", problems.join("; ")),
        ));
    }
    Ok(route.promoted.iter().filter(|p| !present.iter().any(|c| c.name == p.column)).cloned().collect())
}

/// The value `column` takes for a row whose `data` (Converge JSON, see
/// [`crate::value`]) is given: the same extraction and typing a new row gets
/// ([`crate::ChangeRow::live`]), so a backfilled value equals the one the row would
/// have had. A field of another type is the [`RowError::SchemaViolation`] the event
/// would have been quarantined with; `data` that is not Converge JSON is an error too.
pub fn promoted_from_data(column: &PromotedColumn, data: &str) -> Result<Option<PromotedValue>, BackfillValueError> {
    let json: serde_json::Value = serde_json::from_str(data).map_err(|e| BackfillValueError::NotConvergeJson(e.to_string()))?;
    let fields: Fields = fields_from_json(&json).map_err(|e| BackfillValueError::NotConvergeJson(e.to_string()))?;
    promote_one(column, lookup(&fields, &column.field)).map_err(BackfillValueError::Row)
}

/// Why a stored row's `data` gives no value for a promoted column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackfillValueError {
    #[error("{0}")]
    Row(RowError),
    #[error("`data` is not Converge JSON: {0}")]
    NotConvergeJson(String),
}

/// What a backfill of one promoted column did, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PromotedBackfill {
    pub table: String,
    pub column: String,
    /// Rows (changelog, current table, current tombstones) that had no value and whose
    /// `data` gives one: now filled.
    pub filled: u64,
    /// Rows whose `data` has no such field (or NULL): left NULL, as a new row would be.
    pub absent: u64,
    /// Rows whose field has another type (a new row would have been quarantined):
    /// left NULL, counted, the first few named.
    pub refused: u64,
    pub refused_examples: Vec<String>,
    /// Rows without a value the warehouse cannot modify yet, left as they are and not
    /// examined: on BigQuery, changelog rows streamed in the last 90 minutes (DML may
    /// not touch recent Storage Write API rows); always 0 on DuckDB. Run the backfill
    /// again later to fill them.
    pub too_recent: u64,
}

/// Examples of refused rows a backfill names, at most.
const REFUSED_EXAMPLES: usize = 5;

impl PromotedBackfill {
    pub fn new(table: &str, column: &str) -> Self {
        Self { table: table.to_owned(), column: column.to_owned(), ..Self::default() }
    }

    /// The value to fill for one stored row (`doc_path`, `data`), if any; a row with
    /// none is counted as absent or refused.
    pub fn derive(&mut self, column: &PromotedColumn, doc_path: &str, data: &str) -> Option<PromotedValue> {
        match promoted_from_data(column, data) {
            Ok(Some(value)) => Some(value),
            Ok(None) => {
                self.absent += 1;
                None
            }
            Err(error) => {
                self.refused += 1;
                if self.refused_examples.len() < REFUSED_EXAMPLES {
                    self.refused_examples.push(format!("{doc_path}: {error}"));
                }
                None
            }
        }
    }
}

/// `route`'s promoted column `column`, or a not-found error naming the ones it has.
pub fn promoted_column<'r>(backend: &'static str, route: &'r Route, column: &str) -> Result<&'r PromotedColumn, StoreError> {
    route.promoted.iter().find(|c| c.column == column).ok_or_else(|| {
        let names: Vec<&str> = route.promoted.iter().map(|c| c.column.as_str()).collect();
        StoreError::new(
            ErrorKind::NotFound,
            backend,
            format!("table `{}` promotes no column `{column}` (its promoted columns: {})", route.table, names.join(", ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PathPattern;
    use crate::value::Value;

    fn route(promoted: &[(&str, ColumnType)]) -> Route {
        Route {
            pattern: PathPattern::parse("orgs/{tenant}/records/{doc}").unwrap(),
            table: "records".into(),
            promoted: promoted.iter().map(|(n, t)| PromotedColumn { column: (*n).into(), field: (*n).into(), column_type: *t }).collect(),
            change_field: None,
        }
    }

    fn present(columns: &[(&str, Option<ColumnType>)]) -> Vec<TableColumn> {
        columns.iter().map(|(n, t)| TableColumn { name: (*n).into(), warehouse_type: format!("{t:?}"), column_type: *t }).collect()
    }

    #[test]
    fn added_columns_are_returned_and_removed_or_retyped_ones_refused() {
        let fixed = ["tenant", "data"];
        let table = present(&[("tenant", None), ("data", None), ("fund", Some(ColumnType::String))]);
        let added = compare_promoted("t", &route(&[("fund", ColumnType::String), ("amount", ColumnType::Float64)]), "records", &fixed, &table).unwrap();
        assert_eq!(added.iter().map(|c| c.column.as_str()).collect::<Vec<_>>(), ["amount"]);

        let removed = compare_promoted("t", &route(&[]), "records", &fixed, &table).unwrap_err();
        assert_eq!(removed.kind, ErrorKind::Permanent);
        assert!(removed.message.contains("`records.fund`") && removed.message.contains("no longer promoted"), "{}", removed.message);

        let retyped = compare_promoted("t", &route(&[("fund", ColumnType::Int64)]), "records", &fixed, &table).unwrap_err();
        assert!(retyped.message.contains("configured as int64") && retyped.message.contains("type = \"string\""), "{}", retyped.message);
    }

    #[test]
    fn values_come_from_data_as_a_new_row_would_get_them() {
        let column = PromotedColumn { column: "amount".into(), field: "totals.amount".into(), column_type: ColumnType::Float64 };
        let mut totals = Fields::new();
        totals.insert("amount".into(), Value::Integer(12));
        let mut fields = Fields::new();
        fields.insert("totals".into(), Value::Map(totals));
        let data = crate::value::fields_to_json_string(&fields);
        assert_eq!(promoted_from_data(&column, &data).unwrap(), Some(PromotedValue::Float64(12.0)));
        fields.insert("totals".into(), Value::String("twelve".into()));
        let data = crate::value::fields_to_json_string(&fields);
        assert_eq!(promoted_from_data(&column, &data).unwrap(), None, "not a map: no such field");
        let mut totals = Fields::new();
        totals.insert("amount".into(), Value::String("twelve".into()));
        fields.insert("totals".into(), Value::Map(totals));
        let data = crate::value::fields_to_json_string(&fields);
        assert!(matches!(promoted_from_data(&column, &data), Err(BackfillValueError::Row(RowError::SchemaViolation { .. }))));
        assert!(matches!(promoted_from_data(&column, "not json"), Err(BackfillValueError::NotConvergeJson(_))));
    }
}
