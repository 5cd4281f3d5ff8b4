//! Changelog rows as Arrow: the schema of a table, record batches, and their IPC
//! encoding, which is how the Storage Write API takes rows from the official client.
//!
//! Types follow BigQuery's Arrow mapping: STRING → Utf8, BOOL → Boolean, INT64 →
//! Int64, FLOAT64 → Float64, DATE → Date32, TIMESTAMP → Timestamp(µs, "UTC").
//! REQUIRED columns are non-nullable fields.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_ipc::writer::{write_message, CompressionContext, DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use converge_core::config::{ColumnType, Route};
use converge_core::{ChangeRow, PromotedValue, StoreError};
use google_cloud_bigquery::model::{ArrowRecordBatch, ArrowSchema};

use crate::error::BACKEND;
use crate::schema::{ADDED_COLUMNS, LEADING_COLUMNS, TRAILING_COLUMNS};

/// A row that does not fit its table's layout: a bug or a configuration that differs
/// between writer and warehouse, never fixed by retrying.
#[derive(Debug, thiserror::Error)]
pub enum ArrowRowError {
    #[error("row for `{doc_path}` has {found} promoted values, table `{table}` has {expected} promoted columns; is the mirror configuration the same everywhere?")]
    PromotedCount { table: String, doc_path: String, expected: usize, found: usize },
    #[error("row for `{doc_path}`: promoted column `{column}` of table `{table}` is {expected}, the row holds {found}")]
    PromotedType { table: String, doc_path: String, column: String, expected: &'static str, found: &'static str },
    #[error("Arrow encoding failed: {0}")]
    Arrow(#[from] ArrowError),
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn arrow_type(sql: &str) -> DataType {
    match sql {
        "STRING" => DataType::Utf8,
        "BOOL" => DataType::Boolean,
        "INT64" => DataType::Int64,
        "FLOAT64" => DataType::Float64,
        "DATE" => DataType::Date32,
        "TIMESTAMP" => timestamp_type(),
        other => unreachable!("schema.rs declares no column of type {other}"),
    }
}

/// The Arrow schema of `route`'s changelog table, columns in append order.
pub fn table_schema(route: &Route) -> SchemaRef {
    let fields: Vec<Field> =
        crate::schema::columns(route).into_iter().map(|(name, ty, required)| Field::new(name, arrow_type(ty), !required)).collect();
    Arc::new(Schema::new(fields))
}

/// `schema`'s fields (and `columns`, one per field) in the table's column order
/// `order` (empty: as they are). A promoted column added to an existing table comes
/// last there, after the added columns, where a table created with it has it among the
/// promoted ones; the writer schema follows the table. Fields `order` lacks keep their
/// place after the others.
fn in_table_order(schema: SchemaRef, columns: Vec<ArrayRef>, order: &[String]) -> (SchemaRef, Vec<ArrayRef>) {
    if order.is_empty() {
        return (schema, columns);
    }
    let rank = |name: &str| order.iter().position(|c| c == name).unwrap_or(usize::MAX);
    let mut permutation: Vec<usize> = (0..schema.fields().len()).collect();
    permutation.sort_by_key(|i| rank(schema.field(*i).name()));
    let fields: Vec<Field> = permutation.iter().map(|i| schema.field(*i).clone()).collect();
    let columns = if columns.is_empty() { columns } else { permutation.iter().map(|i| columns[*i].clone()).collect() };
    (Arc::new(Schema::new(fields)), columns)
}

/// The Arrow schema of `route`'s changelog table whose columns are in `order` (empty:
/// as [`table_schema`]).
pub fn table_schema_in(route: &Route, order: &[String]) -> SchemaRef {
    in_table_order(table_schema(route), Vec::new(), order).0
}

/// One record batch of `rows`, all of `route`'s table, columns in `order` (see
/// [`in_table_order`]).
pub fn record_batch_in(route: &Route, order: &[String], rows: &[&ChangeRow]) -> Result<RecordBatch, ArrowRowError> {
    let batch = record_batch(route, rows)?;
    let (schema, columns) = in_table_order(batch.schema(), batch.columns().to_vec(), order);
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// One record batch of `rows`, all of `route`'s table.
pub fn record_batch(route: &Route, rows: &[&ChangeRow]) -> Result<RecordBatch, ArrowRowError> {
    let n = rows.len();
    let strings = |get: &dyn Fn(&ChangeRow) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        for row in rows {
            b.append_option(get(row));
        }
        Arc::new(b.finish())
    };
    let timestamps = |get: &dyn Fn(&ChangeRow) -> i64| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for row in rows {
            b.append_value(get(row));
        }
        Arc::new(b.finish())
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(LEADING_COLUMNS.len() + route.promoted.len() + TRAILING_COLUMNS.len() + ADDED_COLUMNS.len());
    columns.push(strings(&|r| Some(&r.tenant)));
    columns.push(strings(&|r| Some(&r.collection)));
    columns.push(strings(&|r| Some(&r.doc_id)));
    columns.push(strings(&|r| Some(&r.doc_path)));
    columns.push(strings(&|r| Some(r.op.as_str())));
    let mut deleted = BooleanBuilder::with_capacity(n);
    for row in rows {
        deleted.append_value(row.is_deleted);
    }
    columns.push(Arc::new(deleted.finish()));
    columns.push(timestamps(&|r| r.version));
    columns.push(strings(&|r| Some(&r.event_id)));
    columns.push(strings(&|r| r.content_hash.as_deref()));
    columns.push(strings(&|r| r.data.as_deref()));
    for row in rows {
        if row.promoted.len() != route.promoted.len() {
            return Err(ArrowRowError::PromotedCount {
                table: route.table.clone(),
                doc_path: row.doc_path.clone(),
                expected: route.promoted.len(),
                found: row.promoted.len(),
            });
        }
    }
    for (i, column) in route.promoted.iter().enumerate() {
        columns.push(promoted_column(route, i, column.column_type, rows)?);
    }
    columns.push(timestamps(&|r| r.ingested_at));
    columns.push(strings(&|r| Some(&r.run_id)));
    columns.push(strings(&|r| Some(&r.code_version)));
    let optional_timestamps = |get: &dyn Fn(&ChangeRow) -> Option<i64>| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for row in rows {
            b.append_option(get(row));
        }
        Arc::new(b.finish())
    };
    columns.push(optional_timestamps(&|r| r.update_time));
    columns.push(optional_timestamps(&|r| r.create_time));
    Ok(RecordBatch::try_new(table_schema(route), columns)?)
}

fn promoted_column(route: &Route, i: usize, column_type: ColumnType, rows: &[&ChangeRow]) -> Result<ArrayRef, ArrowRowError> {
    let n = rows.len();
    let mismatch = |row: &ChangeRow, found: &PromotedValue| ArrowRowError::PromotedType {
        table: route.table.clone(),
        doc_path: row.doc_path.clone(),
        column: route.promoted[i].column.clone(),
        expected: column_type.name(),
        found: match found {
            PromotedValue::String(_) => "string",
            PromotedValue::Int64(_) => "int64",
            PromotedValue::Float64(_) => "float64",
            PromotedValue::Bool(_) => "bool",
            PromotedValue::Timestamp(_) => "timestamp",
            PromotedValue::Date(_) => "date",
        },
    };
    // One builder per type; each arm checks that every row holds that type.
    macro_rules! build {
        ($builder:expr, $variant:ident) => {{
            let mut b = $builder;
            for row in rows {
                match &row.promoted[i] {
                    None => b.append_null(),
                    Some(PromotedValue::$variant(v)) => b.append_value(v.clone()),
                    Some(other) => return Err(mismatch(row, other)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match column_type {
        ColumnType::String => build!(StringBuilder::with_capacity(n, n * 8), String),
        ColumnType::Int64 => build!(Int64Builder::with_capacity(n), Int64),
        ColumnType::Float64 => build!(Float64Builder::with_capacity(n), Float64),
        ColumnType::Bool => build!(BooleanBuilder::with_capacity(n), Bool),
        ColumnType::Timestamp => build!(TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC"), Timestamp),
        ColumnType::Date => build!(Date32Builder::with_capacity(n), Date),
    })
}

/// The IPC encoding of a schema message (`ArrowSchema.serialized_schema`).
pub fn ipc_schema(schema: &Schema) -> Vec<u8> {
    let options = IpcWriteOptions::default();
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(schema, &mut DictionaryTracker::new(false), &options);
    let mut out = Vec::new();
    write_message(&mut out, encoded, &options).expect("writing a schema message to memory cannot fail");
    out
}

/// The IPC encoding of one record batch message, without its schema
/// (`ArrowRecordBatch.serialized_record_batch`).
pub fn ipc_batch(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let options = IpcWriteOptions::default();
    let (dictionaries, encoded) =
        IpcDataGenerator::default().encode(batch, &mut DictionaryTracker::new(false), &options, &mut CompressionContext::default())?;
    // The changelog has no dictionary-encoded columns.
    debug_assert!(dictionaries.is_empty());
    let mut out = Vec::with_capacity(encoded.arrow_data.len() + encoded.ipc_message.len() + 16);
    write_message(&mut out, encoded, &options)?;
    Ok(out)
}

/// Largest Arrow payload sent in one AppendRows request. The API refuses requests
/// over 10 MB; the margin covers the schema and request framing.
const MAX_APPEND_BYTES: usize = 7 * 1024 * 1024;

pub(crate) fn arrow_schema(route: &Route, order: &[String]) -> ArrowSchema {
    ArrowSchema::new().set_serialized_schema(ipc_schema(&table_schema_in(route, order)))
}

pub(crate) fn arrow_rows(route: &Route, order: &[String], rows: &[&ChangeRow]) -> Result<ArrowRecordBatch, StoreError> {
    let batch = record_batch_in(route, order, rows).map_err(|e| StoreError::permanent(BACKEND, e.to_string()))?;
    let bytes = ipc_batch(&batch).map_err(|e| StoreError::permanent(BACKEND, format!("Arrow IPC encoding failed: {e}")))?;
    Ok(ArrowRecordBatch::new().set_serialized_record_batch(bytes))
}

/// Splits rows into runs whose estimated Arrow size stays under [`MAX_APPEND_BYTES`].
pub(crate) fn chunks_by_size<'a, 'r>(rows: &'a [&'r ChangeRow]) -> impl Iterator<Item = &'a [&'r ChangeRow]> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= rows.len() {
            return None;
        }
        let mut bytes = 0;
        let mut end = start;
        while end < rows.len() && (end == start || bytes + estimate(rows[end]) <= MAX_APPEND_BYTES) {
            bytes += estimate(rows[end]);
            end += 1;
        }
        let chunk = &rows[start..end];
        start = end;
        Some(chunk)
    })
}

fn estimate(row: &ChangeRow) -> usize {
    let text = row.tenant.len() + row.collection.len() + row.doc_id.len() + row.doc_path.len() + row.event_id.len();
    let optional = row.content_hash.as_ref().map_or(0, String::len) + row.data.as_ref().map_or(0, String::len);
    // Offsets, validity bits, fixed-width columns and promoted values.
    text + optional + row.run_id.len() + row.code_version.len() + 128 + 16 * row.promoted.len()
}


#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    use arrow_array::types::{Date32Type, Float64Type, TimestampMicrosecondType};
    use converge_core::{MirrorConfig, Op};

    fn row(doc: &str, deleted: bool) -> ChangeRow {
        ChangeRow {
            table: "records".into(),
            tenant: "t".into(),
            collection: "records".into(),
            doc_id: doc.into(),
            doc_path: format!("orgs/t/records/{doc}"),
            op: if deleted { Op::Delete } else { Op::Create },
            is_deleted: deleted,
            version: 1_700_000_000_123_456,
            event_id: format!("e-{doc}"),
            content_hash: (!deleted).then(|| "h".into()),
            data: (!deleted).then(|| r#"{"amount":{"$int":"9007199254740993"}}"#.into()),
            promoted: if deleted {
                vec![None; 5]
            } else {
                vec![
                    Some(PromotedValue::String("a".into())),
                    None,
                    Some(PromotedValue::Date(19_783)),
                    Some(PromotedValue::String("grants".into())),
                    Some(PromotedValue::Float64(12.5)),
                ]
            },
            ingested_at: 1_700_000_001_000_000,
            run_id: "run".into(),
            code_version: "0.1.0".into(),
            update_time: (!deleted).then_some(1_700_000_000_000_001),
            create_time: None,
        }
    }

    #[test]
    fn rows_round_trip_through_ipc() {
        let mirror = MirrorConfig::default();
        let route = &mirror.routes[0];
        let rows = [row("a", false), row("b", true)];
        let batch = record_batch(route, &rows.iter().collect::<Vec<_>>()).unwrap();
        // A reader sees exactly what the Write API receives: the schema message, then
        // the batch message.
        let mut stream = ipc_schema(&table_schema(route));
        stream.extend(ipc_batch(&batch).unwrap());
        let mut reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(stream), None).unwrap();
        let back = reader.next().unwrap().unwrap();
        assert_eq!(back, batch);
        assert_eq!(back.schema().field_with_name("tenant").unwrap().is_nullable(), false);
        assert_eq!(back.column_by_name("doc_path").unwrap().as_string::<i32>().value(1), "orgs/t/records/b");
        assert!(back.column_by_name("is_deleted").unwrap().as_boolean().value(1));
        let version = back.column_by_name("version").unwrap().as_primitive::<TimestampMicrosecondType>();
        assert_eq!(version.value(0), 1_700_000_000_123_456);
        let data = back.column_by_name("data").unwrap().as_string::<i32>();
        assert_eq!(data.value(0), r#"{"amount":{"$int":"9007199254740993"}}"#);
        assert!(data.is_null(1));
        assert_eq!(back.column_by_name("date").unwrap().as_primitive::<Date32Type>().value(0), 19_783);
        assert_eq!(back.column_by_name("amount").unwrap().as_primitive::<Float64Type>().value(0), 12.5);
        assert!(back.column_by_name("fund").unwrap().is_null(0));
    }

    #[test]
    fn a_row_that_does_not_fit_is_refused() {
        let mirror = MirrorConfig::default();
        let route = &mirror.routes[0];
        let mut bad = row("a", false);
        bad.promoted[4] = Some(PromotedValue::String("12.5".into()));
        let err = record_batch(route, &[&bad]).unwrap_err();
        assert!(err.to_string().contains("`amount` of table `records` is float64, the row holds string"), "{err}");
        bad.promoted.pop();
        assert!(matches!(record_batch(route, &[&bad]), Err(ArrowRowError::PromotedCount { expected: 5, found: 4, .. })));
    }
}
