//! [`RawSource`] on Firestore: one structured query per page,
//! `where date >= from and date <= to order by date, __name__`, answered from
//! Firestore's automatic single-field index on `date`. Like the other scans, the
//! first page fixes the read time and every later page is read at it, so the whole
//! range is one snapshot; a reader task keeps a page or two ahead of the consumer.

use async_trait::async_trait;
use chrono::NaiveDate;
use converge_core::raw_source::{check_date_range, date_text};
use converge_core::{Document, RawSource, Scan, StoreError};
use firestore::gcloud_sdk::google::firestore::v1 as pb;
use pb::structured_query::{composite_filter, field_filter, filter, CollectionSelector, CompositeFilter, Direction, FieldFilter, FieldReference, Filter, Order};
use tokio::sync::mpsc;

use crate::convert::timestamp_from_proto;
use crate::error::{FirestoreError, BACKEND};
use crate::source::{page_stream, reference, FirestoreSource};

/// Pages the reader task keeps ahead of its consumer.
const PAGES_AHEAD: usize = 2;

fn string(text: &str) -> pb::Value {
    pb::Value { value_type: Some(pb::value::ValueType::StringValue(text.to_owned())) }
}

fn bound(field: &str, op: field_filter::Operator, value: &str) -> Filter {
    Filter {
        filter_type: Some(filter::FilterType::FieldFilter(FieldFilter {
            field: Some(FieldReference { field_path: field.to_owned() }),
            op: op as i32,
            value: Some(string(value)),
        })),
    }
}

/// One page of `collection_id` with `field` in `from..=to`, in (field, name) order,
/// after the cursor (the last page's last date and name).
fn range_query(collection_id: &str, field: &str, from: &str, to: &str, cursor: Option<&(String, String)>, limit: u32) -> pb::StructuredQuery {
    pb::StructuredQuery {
        from: vec![CollectionSelector { collection_id: collection_id.to_owned(), all_descendants: false }],
        r#where: Some(Filter {
            filter_type: Some(filter::FilterType::CompositeFilter(CompositeFilter {
                op: composite_filter::Operator::And as i32,
                filters: vec![bound(field, field_filter::Operator::GreaterThanOrEqual, from), bound(field, field_filter::Operator::LessThanOrEqual, to)],
            })),
        }),
        order_by: vec![
            Order { field: Some(FieldReference { field_path: field.to_owned() }), direction: Direction::Ascending as i32 },
            Order { field: Some(FieldReference { field_path: "__name__".into() }), direction: Direction::Ascending as i32 },
        ],
        start_at: cursor.map(|(date, name)| pb::Cursor { values: vec![string(date), reference(name)], before: false }),
        limit: Some(i32::try_from(limit).unwrap_or(i32::MAX)),
        ..Default::default()
    }
}

/// The cursor after a page: its last document's date field and name.
fn cursor_after(field: &str, docs: &[pb::Document]) -> Option<(String, String)> {
    let last = docs.last()?;
    let date = match last.fields.get(field).and_then(|v| v.value_type.as_ref()) {
        Some(pb::value::ValueType::StringValue(text)) => text.clone(),
        _ => return None,
    };
    Some((date, last.name.clone()))
}

#[async_trait]
impl RawSource for FirestoreSource {
    async fn scan_by_date(&self, collection_path: &str, date_field: &str, from: NaiveDate, to: NaiveDate) -> Result<Scan<Document>, StoreError> {
        check_date_range(BACKEND, from, to)?;
        if date_field.is_empty() || date_field.contains(['.', '`']) {
            return Err(StoreError::new(
                converge_core::ErrorKind::InvalidInput,
                BACKEND,
                format!("date field {date_field:?}: expected a plain top-level field name such as `date`"),
            ));
        }
        let inner = &self.inner;
        let (parent, collection_id) = inner.paths.collection_parent(collection_path)?;
        let (field, from, to) = (date_field.to_owned(), date_text(from), date_text(to));
        let page_size = inner.config.page_size.max(1);
        let first_query = range_query(&collection_id, &field, &from, &to, None, page_size);
        let (first, read_time) = inner.read_with_retry(|| inner.run_query(parent.clone(), first_query.clone(), None)).await?;
        let read_time = read_time.ok_or(FirestoreError::MissingInResponse { operation: "RunQuery", what: "read_time" })?;
        let mut done = first.len() < page_size as usize;
        let mut cursor = cursor_after(&field, &first);
        let first: Vec<Document> = first.into_iter().map(|d| inner.paths.document_from_proto(d)).collect::<Result<_, _>>().map_err(FirestoreError::from)?;

        let (pages_tx, pages_rx) = mpsc::channel::<Result<Vec<Document>, StoreError>>(PAGES_AHEAD);
        if !done {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                while !done {
                    let query = range_query(&collection_id, &field, &from, &to, cursor.as_ref(), page_size);
                    let page = inner.read_with_retry(|| inner.run_query(parent.clone(), query.clone(), Some(read_time))).await.and_then(|(docs, _)| {
                        done = docs.len() < page_size as usize;
                        cursor = cursor_after(&field, &docs);
                        docs.into_iter().map(|d| inner.paths.document_from_proto(d).map_err(FirestoreError::from)).collect::<Result<Vec<_>, _>>()
                    });
                    let failed = page.is_err();
                    if pages_tx.send(page.map_err(StoreError::from)).await.is_err() || failed {
                        return;
                    }
                }
            });
        }
        let items = page_stream(first, pages_rx);
        Ok(Scan { read_time: timestamp_from_proto(&read_time), items })
    }
}
