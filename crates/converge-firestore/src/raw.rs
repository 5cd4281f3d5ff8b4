//! [`RawSource`] on Firestore: one structured query per page,
//! `where date >= from and date <= to order by date, __name__`, answered from
//! Firestore's automatic single-field index on `date`. Like the other scans (one paged
//! reader, `Inner::paged`), the first page fixes the read time and every later page is
//! read at it, so the whole range is one snapshot; a reader task keeps a page or two
//! ahead of the consumer.

use async_trait::async_trait;
use chrono::NaiveDate;
use converge_core::raw_source::{check_date_range, date_text};
use converge_core::{Document, RawSource, Scan, StoreError};
use firestore::gcloud_sdk::google::firestore::v1 as pb;
use pb::structured_query::{composite_filter, field_filter, filter, CollectionSelector, CompositeFilter, Direction, FieldFilter, FieldReference, Filter, Order};

use crate::error::{FirestoreError, BACKEND};
use crate::source::{reference, FirestoreSource};

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

/// The cursor after a page: its last document's date field and name. Every document
/// the range query returns has a string date (the filter matched it); one without is
/// a broken response, reported rather than paged from the start again.
fn cursor_after(field: &str, last: &pb::Document) -> Result<(String, String), FirestoreError> {
    match last.fields.get(field).and_then(|v| v.value_type.as_ref()) {
        Some(pb::value::ValueType::StringValue(text)) => Ok((text.clone(), last.name.clone())),
        _ => Err(FirestoreError::MissingInResponse { operation: "RunQuery", what: "the string date field on a document the date range returned" }),
    }
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
        let (parent, collection_id) = self.inner.paths.collection_parent(collection_path)?;
        let (field, from, to) = (date_field.to_owned(), date_text(from), date_text(to));
        let query = move |after: Option<&pb::Document>, limit| {
            let cursor = after.map(|last| cursor_after(&field, last)).transpose()?;
            Ok(range_query(&collection_id, &field, &from, &to, cursor.as_ref(), limit))
        };
        self.inner.paged(parent, query, |paths, doc| Ok(Some(paths.document_from_proto(doc)?)), None).await
    }
}
