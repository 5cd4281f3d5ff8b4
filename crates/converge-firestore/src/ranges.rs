//! What an incremental reconcile reads from Firestore (see
//! [`converge_core::incremental`]): the documents whose change field moved since a time,
//! and `COUNT` aggregations and state scans over `__name__` ranges.
//!
//! - `changed_since`: `where field >= since` (a timestamp value), ordered by the field
//!   then `__name__` and paged with a cursor on both. An inequality matches values of
//!   its own type only, so documents without the field, or with a string or number
//!   there, are not returned (what the trait promises). Each query is served by
//!   Firestore's automatic single-field index of collection scope: no index to declare.
//!   - One collection: one query; its first page fixes the read time, later pages are
//!     read at it.
//!   - A scope of more than one collection (a nested route's tenant,
//!     `orgs/acme/projects/*/tasks/*`): at the database time the read starts, the
//!     scope's collections are listed (`Inner::scope_collections` in `subtree.rs`: the
//!     tenant's project ids, "missing" ones included) and each is queried in turn at
//!     that time. Not one collection-group query under `orgs/acme`: Firestore allows a
//!     collection-group query below a document only with `__name__` conditions and
//!     orders ("collection group queries are only allowed at the root parent", the
//!     Firestore emulator's query validator), and one at the root would return every
//!     tenant's changes to each tenant's run. The cost is one listing read per project
//!     and one query per project (a query is billed at least one read) besides the
//!     documents returned: bounded by the tenant's projects, never its tasks.
//! - `count_range`: a `COUNT` aggregation of the collection with `__name__ >= start`
//!   and `__name__ < end`, billed one read per 1,000 index entries.
//! - `scan_states_in`: the collection scan of `source.rs` with the same filters.
//!
//! Ranges are in byte order of the whole path (the warehouse's `ORDER BY doc_path`).
//! Within one collection every path is `<collection>/<id>` and Firestore orders
//! `__name__` by id, in byte order: the two orders agree, so a bound becomes a
//! reference to `<collection>/<id>` ([`bound_in`]). Across collections they do not
//! (Firestore compares segment by segment: `p/…` before `p-1/…`, the byte order
//! `p-1/…` first), so a scope of more than one collection takes only
//! [`PathRange::all`], as the trait says; any other range is refused, never answered
//! in the wrong order.

use converge_core::{DocState, Document, PathRange, Scan, SourceScope, StoreError, Timestamp};
use firestore::gcloud_sdk::google::firestore::v1 as pb;
use futures::{StreamExt, TryStreamExt};
use pb::structured_query::{composite_filter, field_filter, filter, CollectionSelector, CompositeFilter, Direction, FieldFilter, FieldReference, Filter, Order};

use crate::convert::{timestamp_to_proto, DocPaths};
use crate::error::FirestoreError;
use crate::source::{doc_state, document, reference, FirestoreSource, Inner};

impl FirestoreSource {
    /// Documents of `scope` whose top-level `field` is a timestamp at or after `since`
    /// (see the module docs).
    pub(crate) async fn changed_documents(&self, scope: &SourceScope, field: &str, since: Timestamp) -> Result<Scan<Document>, StoreError> {
        if field.is_empty() {
            return Err(FirestoreError::InvalidChangeField { field: field.to_owned() }.into());
        }
        let changed = ChangedQuery {
            path: field_path(field),
            name: field.to_owned(),
            since: pb::Value { value_type: Some(pb::value::ValueType::TimestampValue(timestamp_to_proto(since))) },
        };
        let inner = self.inner.clone();
        if let Some(collection_path) = scope.collection_path() {
            let (parent, collection_id) = inner.paths.collection_parent(&collection_path)?;
            return inner.paged(parent, changed.of(collection_id), whole_document, None).await;
        }
        let read_time = inner.read_with_retry(|| inner.server_time()).await?;
        let collections = inner.scope_collections(scope, timestamp_to_proto(read_time)).await?;
        let items = futures::stream::iter(collections)
            .then(move |collection_path| {
                let (inner, changed) = (inner.clone(), changed.clone());
                async move {
                    let (parent, collection_id) = inner.paths.collection_parent(&collection_path)?;
                    Ok::<_, StoreError>(inner.paged(parent, changed.of(collection_id), whole_document, Some(read_time)).await?.items)
                }
            })
            .try_flatten()
            .boxed();
        Ok(Scan { read_time, items })
    }

    /// Number of documents of `scope` in `range`: a `COUNT` aggregation of one
    /// collection; the whole of a larger scope is its walk, counted (no aggregation
    /// counts a scope's exact depth).
    pub(crate) async fn count_in(&self, scope: &SourceScope, range: &PathRange) -> Result<u64, StoreError> {
        let Some(collection_path) = collection_of(scope, range, "count_range")? else {
            let mut items = self.inner.scan_subtree(scope, doc_state).await?.items;
            let mut count = 0u64;
            while let Some(item) = items.next().await {
                item?;
                count += 1;
            }
            return Ok(count);
        };
        let Some(filters) = name_filters(&self.inner.paths, &collection_path, range)? else { return Ok(0) };
        let (parent, collection_id) = self.inner.paths.collection_parent(&collection_path)?;
        let query = pb::StructuredQuery {
            from: vec![CollectionSelector { collection_id, all_descendants: false }],
            r#where: all_of(filters),
            ..Default::default()
        };
        Ok(self.inner.count_query(parent, query).await?)
    }

    /// States of the documents of `scope` in `range`, in path order.
    pub(crate) async fn states_in(&self, scope: &SourceScope, range: &PathRange) -> Result<Scan<DocState>, StoreError> {
        let Some(collection_path) = collection_of(scope, range, "scan_states_in")? else {
            return self.inner.scan_subtree(scope, doc_state).await;
        };
        match name_filters(&self.inner.paths, &collection_path, range)? {
            Some(filters) => self.scan_collection(&collection_path, all_of(filters), doc_state).await,
            None => {
                // Nothing of the collection is in the range: no query, the database's
                // time as the (empty) scan's read time.
                let read_time = self.inner.read_with_retry(|| self.inner.server_time()).await?;
                Ok(Scan { read_time, items: futures::stream::empty().boxed() })
            }
        }
    }
}

/// `where <field> >= since`, one page of one collection at a time.
#[derive(Clone)]
struct ChangedQuery {
    /// The field as a field path (quoted when it must be).
    path: String,
    /// The field's name, as a document's fields are keyed.
    name: String,
    since: pb::Value,
}

impl ChangedQuery {
    /// The page query of the collection `collection_id` (under the parent the caller
    /// sends it to): ordered by the field, then `__name__`, after the previous page's
    /// last document.
    fn of(self, collection_id: String) -> impl Fn(Option<&pb::Document>, u32) -> Result<pb::StructuredQuery, FirestoreError> + Send + 'static {
        move |after, limit| {
            let start_at = match after {
                Some(doc) => {
                    // Every document the filter returned has the field: one without is a
                    // broken response, reported rather than paged from the start again.
                    let value = doc.fields.get(&self.name).cloned().ok_or(FirestoreError::MissingInResponse {
                        operation: "RunQuery",
                        what: "the change field on a document that `where field >= since` returned",
                    })?;
                    Some(pb::Cursor { values: vec![value, reference(&doc.name)], before: false })
                }
                None => None,
            };
            Ok(pb::StructuredQuery {
                from: vec![CollectionSelector { collection_id: collection_id.clone(), all_descendants: false }],
                r#where: Some(field_filter_of(&self.path, field_filter::Operator::GreaterThanOrEqual, self.since.clone())),
                order_by: vec![ascending(&self.path), ascending("__name__")],
                start_at,
                limit: Some(i32::try_from(limit).unwrap_or(i32::MAX)),
                ..Default::default()
            })
        }
    }
}

fn whole_document(paths: &DocPaths, doc: pb::Document) -> Result<Option<Document>, FirestoreError> {
    document(paths, doc).map(Some)
}

impl Inner {
    /// The result of a `COUNT` aggregation over `query` under `parent`.
    pub(crate) async fn count_query(&self, parent: String, query: pb::StructuredQuery) -> Result<u64, FirestoreError> {
        use pb::structured_aggregation_query::aggregation::{Count, Operator};
        use pb::structured_aggregation_query::{Aggregation, QueryType};
        let request = pb::RunAggregationQueryRequest {
            parent,
            explain_options: None,
            request_options: None,
            query_type: Some(pb::run_aggregation_query_request::QueryType::StructuredAggregationQuery(pb::StructuredAggregationQuery {
                aggregations: vec![Aggregation { alias: "n".into(), operator: Some(Operator::Count(Count { up_to: None })) }],
                query_type: Some(QueryType::StructuredQuery(query)),
            })),
            consistency_selector: None,
        };
        let count = self
            .read_with_retry(|| async {
                let mut count = None;
                self.collect_stream("RunAggregationQuery", self.client().run_aggregation_query(request.clone()), |response: pb::RunAggregationQueryResponse| {
                    if let Some(value) = response.result.and_then(|mut r| r.aggregate_fields.remove("n")) {
                        count = Some(value);
                    }
                    Ok::<(), ()>(())
                })
                .await?
                .ok();
                Ok(count)
            })
            .await?;
        match count.and_then(|v| v.value_type) {
            Some(pb::value::ValueType::IntegerValue(n)) => Ok(u64::try_from(n).unwrap_or(0)),
            other => Err(FirestoreError::MissingInResponse {
                operation: "RunAggregationQuery",
                what: if other.is_some() { "an integer count (it sent another type)" } else { "the count" },
            }),
        }
    }
}

/// The one collection of `scope` a range is answered in; `None` for a larger scope
/// and the whole range (answered by its walk); a refusal for a larger scope and any
/// other range.
fn collection_of(scope: &SourceScope, range: &PathRange, operation: &'static str) -> Result<Option<String>, FirestoreError> {
    match scope.collection_path() {
        Some(collection_path) => Ok(Some(collection_path)),
        None if range.is_all() => Ok(None),
        None => Err(FirestoreError::RangeOfNestedScope { operation, scope: scope.to_string(), range: range.to_string() }),
    }
}

/// Where a range bound falls among the documents of one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    /// Before every document of the collection.
    Below,
    /// At the document with this id: paths of the collection at or after the bound
    /// are exactly those of ids at or after this one.
    Id(String),
    /// After every document of the collection.
    Above,
}

/// Where `bound`, any path, falls among the documents `<collection_path>/<id>`, in byte
/// order of the whole path.
fn bound_in(collection_path: &str, bound: &str) -> Result<Bound, FirestoreError> {
    let prefix = format!("{collection_path}/");
    let Some(rest) = bound.strip_prefix(prefix.as_str()) else {
        // Not under the collection: it differs from the prefix before the prefix ends
        // (or is a prefix of it), so it sorts before or after every path of it.
        return Ok(if bound < prefix.as_str() { Bound::Below } else { Bound::Above });
    };
    if rest.is_empty() {
        return Ok(Bound::Below);
    }
    let id = match rest.split_once('/') {
        // A path below a document (`…/p/notes/n`). No id holds `/`, so the ids at or
        // after `p/…` are exactly those after `p/`, the ones at or after `p0` (`0`
        // is the byte after `/`).
        Some((head, _)) => format!("{head}0"),
        None => rest.to_owned(),
    };
    converge_core::path::check_id(&id).map_err(|reason| FirestoreError::UnusableRangeBound {
        bound: bound.to_owned(),
        collection: collection_path.to_owned(),
        id: id.clone(),
        reason,
    })?;
    Ok(Bound::Id(id))
}

/// The `__name__` filters that select the documents of the collection in `range`
/// (none: the whole collection); `None` when the range holds none of them.
fn name_filters(paths: &DocPaths, collection_path: &str, range: &PathRange) -> Result<Option<Vec<Filter>>, FirestoreError> {
    let mut filters = Vec::new();
    for (bound, op) in [(&range.start, field_filter::Operator::GreaterThanOrEqual), (&range.end, field_filter::Operator::LessThan)] {
        let Some(bound) = bound else { continue };
        let lower = op == field_filter::Operator::GreaterThanOrEqual;
        match bound_in(collection_path, bound)? {
            Bound::Below if lower => {}
            Bound::Above if !lower => {}
            Bound::Below | Bound::Above => return Ok(None),
            Bound::Id(id) => {
                let name = paths.document_name(&format!("{collection_path}/{id}"))?;
                filters.push(field_filter_of("__name__", op, reference(&name)));
            }
        }
    }
    Ok(Some(filters))
}

/// The conjunction of `filters` (`None` for none).
fn all_of(mut filters: Vec<Filter>) -> Option<Filter> {
    match filters.len() {
        0 => None,
        1 => filters.pop(),
        _ => Some(Filter {
            filter_type: Some(filter::FilterType::CompositeFilter(CompositeFilter { op: composite_filter::Operator::And as i32, filters })),
        }),
    }
}

fn field_filter_of(field_path: &str, op: field_filter::Operator, value: pb::Value) -> Filter {
    Filter {
        filter_type: Some(filter::FilterType::FieldFilter(FieldFilter {
            field: Some(FieldReference { field_path: field_path.to_owned() }),
            op: op as i32,
            value: Some(value),
        })),
    }
}

fn ascending(field_path: &str) -> Order {
    Order { field: Some(FieldReference { field_path: field_path.to_owned() }), direction: Direction::Ascending as i32 }
}

/// A top-level field name as a Firestore field path: as it is when it is a simple name
/// (`[A-Za-z_][A-Za-z0-9_]*`), else quoted in backticks with `\` and `` ` `` escaped,
/// so a name with a dot or a dash is one field, never a path into a map
/// (https://firebase.google.com/docs/firestore/reference/rpc/google.firestore.v1#google.firestore.v1.Document,
/// `fields`).
fn field_path(name: &str) -> String {
    let simple = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if simple {
        return name.to_owned();
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('`');
    for c in name.chars() {
        if c == '`' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('`');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_fall_among_a_collections_ids_in_whole_path_byte_order() {
        let c = "orgs/acme/records";
        assert_eq!(bound_in(c, "orgs/acme/records/p").unwrap(), Bound::Id("p".into()));
        assert_eq!(bound_in(c, "orgs/acme/records/p-1").unwrap(), Bound::Id("p-1".into()));
        // Below a document: after `p` and `p-1` (`-` < `/`), before `p0`.
        assert_eq!(bound_in(c, "orgs/acme/records/p/notes/n").unwrap(), Bound::Id("p0".into()));
        assert_eq!(bound_in(c, "orgs/acme/records//x").unwrap(), Bound::Id("0".into()));
        for below in ["", "orgs", "orgs/acme", "orgs/acme-x", "orgs/acme/records", "orgs/acme/records/", "orgs/acme/recordr/zzz"] {
            assert_eq!(bound_in(c, below).unwrap(), Bound::Below, "{below:?}");
        }
        for above in ["orgs/acme/recordsx", "orgs/acme/records0", "orgs/acme/recordt", "z", "orgs/acmf"] {
            assert_eq!(bound_in(c, above).unwrap(), Bound::Above, "{above:?}");
        }
        let error = bound_in(c, "orgs/acme/records/..").unwrap_err();
        assert_eq!(error.kind(), converge_core::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("orgs/acme/records/.."), "{error}");
        // The rounding agrees with byte order for every id around the cut.
        for id in ["p", "p-1", "p.x", "p0", "p00", "pa", "q", "o"] {
            let path = format!("{c}/{id}");
            assert_eq!(path.as_str() >= "orgs/acme/records/p/notes/n", id >= "p0", "{id}");
        }
    }

    #[test]
    fn ranges_become_name_filters_or_nothing() {
        let paths = DocPaths::new("p", "(default)");
        let c = "orgs/acme/records";
        let range = |start: Option<&str>, end: Option<&str>| PathRange::new(start.map(str::to_owned), end.map(str::to_owned));
        assert_eq!(name_filters(&paths, c, &PathRange::all()).unwrap().unwrap().len(), 0);
        assert_eq!(name_filters(&paths, c, &range(Some("orgs/acme/records/b"), None)).unwrap().unwrap().len(), 1);
        assert_eq!(name_filters(&paths, c, &range(Some("a"), Some("orgs/acme/records/b"))).unwrap().unwrap().len(), 1);
        assert_eq!(name_filters(&paths, c, &range(Some("orgs/acme/records/a"), Some("orgs/acme/records/b"))).unwrap().unwrap().len(), 2);
        assert_eq!(name_filters(&paths, c, &range(Some("orgs/b"), None)).unwrap(), None, "starts after the collection");
        assert_eq!(name_filters(&paths, c, &range(None, Some("orgs/acme/records"))).unwrap(), None, "ends before it");
        let Some(filter::FilterType::FieldFilter(f)) = &name_filters(&paths, c, &range(Some("orgs/acme/records/b"), None)).unwrap().unwrap()[0].filter_type
        else {
            panic!("a field filter")
        };
        assert_eq!(f.value, Some(reference("projects/p/databases/(default)/documents/orgs/acme/records/b")));
    }

    #[test]
    fn field_names_that_are_not_simple_are_quoted() {
        assert_eq!(field_path("updated_at"), "updated_at");
        assert_eq!(field_path("_t2"), "_t2");
        assert_eq!(field_path("updated-at"), "`updated-at`");
        assert_eq!(field_path("2nd"), "`2nd`");
        assert_eq!(field_path("a.b"), "`a.b`");
        assert_eq!(field_path("a`b\\c"), "`a\\`b\\\\c`");
    }

    #[test]
    fn a_larger_scope_takes_only_the_whole_range() {
        let scope = converge_core::PathPattern::parse("orgs/{tenant}/projects/{project}/tasks/{doc}").unwrap().tenant_scope("acme").unwrap();
        assert_eq!(collection_of(&scope, &PathRange::all(), "count_range").unwrap(), None);
        let error = collection_of(&scope, &PathRange::new(Some("orgs/acme/projects/p".into()), None), "count_range").unwrap_err();
        assert_eq!(error.kind(), converge_core::ErrorKind::InvalidInput);
        let text = error.to_string();
        assert!(text.contains("orgs/acme/projects/*/tasks/*") && text.contains("PathRange::all"), "{text}");
        let records = SourceScope::collection("orgs/acme/records").unwrap();
        assert_eq!(collection_of(&records, &PathRange::new(Some("x".into()), None), "count_range").unwrap().as_deref(), Some("orgs/acme/records"));
    }
}
