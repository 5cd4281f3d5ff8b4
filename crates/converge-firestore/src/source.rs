//! [`FirestoreSource`]: the [`SourceStore`] over Firestore's gRPC API.
//!
//! The `firestore` crate opens the connection (TLS, credentials, or the emulator's
//! stub token); every call then goes through its raw gRPC client, so values,
//! transactions and read times are exactly what Firestore's API says:
//!
//! - `apply` is one `Commit` RPC without a transaction: Firestore applies all its
//!   writes atomically at one commit time, which it returns. There is no closure to
//!   retry: a failed commit is reported (retryable or not) and the caller decides.
//!   (The crate's batch writer is `BatchWrite`, which is not atomic.)
//! - scans page through the collection ordered by `__name__` with a cursor
//!   (`Inner::paged`, the one paged reader of this crate's queries). The first page is read at "now" and fixes the scan's read time (the latest
//!   `read_time` of its responses: Firestore guarantees the earlier documents did not
//!   change up to it); every later page is read *at* that time, so the whole scan is
//!   one snapshot however long it takes (Firestore keeps versions for an hour, or
//!   seven days with point-in-time recovery). A reader task keeps a page or two ahead
//!   of the consumer, so memory stays bounded by the page size.
//! - a scope at any depth (a nested route's documents of one tenant) is walked by
//!   `subtree.rs`, every read at one read time; `count` of one is that walk, counted.
//! - `count` of one collection is a `COUNT` aggregation query (`ranges.rs`, over the
//!   whole range).
//! - what an incremental reconcile reads (`changed_since`, `count_range`,
//!   `scan_states_in`) is `ranges.rs`: a query on the change field, and `COUNT`
//!   aggregations and scans over `__name__` ranges.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use converge_core::hash::content_hash;
use converge_core::{DocState, DocWrite, Document, PathRange, ReadAt, Scan, SourceScope, SourceStore, StoreError, Timestamp};
use firestore::gcloud_sdk::google::firestore::v1 as pb;
use firestore::gcloud_sdk::google::firestore::v1::firestore_client::FirestoreClient;
use firestore::gcloud_sdk::prost_types;
use firestore::gcloud_sdk::tonic::{self, Code};
use firestore::gcloud_sdk::GoogleAuthMiddleware;
use firestore::{FirestoreDb, FirestoreDbOptions};
use futures::StreamExt;
use pb::structured_query::{CollectionSelector, Direction, FieldReference, Filter, Order};
use tokio::sync::mpsc;

use crate::config::FirestoreConfig;
use crate::convert::{self, timestamp_from_proto, DocPaths};
use crate::error::FirestoreError;

/// Pages a scan's reader task keeps ahead of its consumer.
pub(crate) const PAGES_AHEAD: usize = 2;
/// Tries of an idempotent read (a get, a page, a count) before its error is returned.
const READ_ATTEMPTS: u32 = 3;
/// Wait before the first retry of a read; each next one waits four times longer.
const READ_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// The Firestore source store (and, see [`crate::error_log`], error log).
/// Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct FirestoreSource {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: FirestoreDb,
    pub(crate) config: FirestoreConfig,
    pub(crate) paths: DocPaths,
}

impl std::fmt::Debug for FirestoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirestoreSource").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl FirestoreSource {
    /// Connects to the database `config` names (see [`FirestoreConfig::emulator_host`]
    /// for how the endpoint and credentials are chosen).
    pub async fn connect(config: FirestoreConfig) -> Result<Self, StoreError> {
        Self::connect_inner(config).await.map_err(StoreError::from)
    }

    async fn connect_inner(config: FirestoreConfig) -> Result<Self, FirestoreError> {
        let mut options = FirestoreDbOptions::new(config.project_id.clone());
        options.database_id = config.database_id.clone();
        options.request_timeout = Some(config.request_timeout);
        let endpoint = config.emulator_host.clone().unwrap_or_else(|| "the default endpoint".to_owned());
        let connect_error = |e: firestore::errors::FirestoreError| FirestoreError::Connect { endpoint: endpoint.clone(), message: e.to_string() };
        let db = match &config.emulator_host {
            Some(host) => {
                options.firebase_api_url = Some(if host.contains("://") { host.clone() } else { format!("http://{host}") });
                FirestoreDb::with_options_auth(options, crate::emulator::EmulatorCredentials::new()).await.map_err(connect_error)?
            }
            None => {
                // rustls picks no default crypto provider when a build enables two;
                // make the one this crate's TLS stack already carries the default (a
                // provider the application installed first stays).
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                FirestoreDb::with_options(options).await.map_err(connect_error)?
            }
        };
        let paths = DocPaths::new(&config.project_id, &config.database_id);
        Ok(Self { inner: Arc::new(Inner { db, config, paths }) })
    }

    pub fn config(&self) -> &FirestoreConfig {
        &self.inner.config
    }

    /// The underlying `firestore` crate client, for anything this type does not cover.
    pub fn db(&self) -> &FirestoreDb {
        &self.inner.db
    }

    /// `projects/P/databases/D/documents`.
    pub fn documents_root(&self) -> &str {
        &self.inner.paths.documents
    }
}

impl Inner {
    pub(crate) fn client(&self) -> FirestoreClient<GoogleAuthMiddleware> {
        self.db.client().get()
    }

    /// One unary call, bounded by the request timeout.
    pub(crate) async fn unary<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, FirestoreError> {
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(FirestoreError::rpc(operation, status)),
            Err(_) => Err(FirestoreError::Timeout { operation, timeout }),
        }
    }

    /// Every message of a server stream, each wait bounded by the request timeout.
    pub(crate) async fn collect_stream<M, T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>,
        mut each: impl FnMut(M) -> Result<(), T>,
    ) -> Result<Result<(), T>, FirestoreError> {
        let mut stream = self.unary(operation, call).await?;
        let timeout = self.config.request_timeout;
        loop {
            match tokio::time::timeout(timeout, stream.message()).await {
                Ok(Ok(Some(message))) => {
                    if let Err(e) = each(message) {
                        return Ok(Err(e));
                    }
                }
                Ok(Ok(None)) => return Ok(Ok(())),
                Ok(Err(status)) => return Err(FirestoreError::rpc(operation, status)),
                Err(_) => return Err(FirestoreError::Timeout { operation, timeout }),
            }
        }
    }

    /// Runs an idempotent read, retrying transient failures a few times with backoff.
    /// (Commits are never retried here: the caller decides, knowing what it wrote.)
    pub(crate) async fn read_with_retry<T, Fut>(&self, mut read: impl FnMut() -> Fut) -> Result<T, FirestoreError>
    where
        Fut: Future<Output = Result<T, FirestoreError>>,
    {
        let mut backoff = READ_BACKOFF;
        for _ in 1..READ_ATTEMPTS {
            match read().await {
                Err(e) if e.kind() == converge_core::ErrorKind::Retryable => {
                    tracing::debug!(error = %e, ?backoff, "firestore read failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                }
                result => return result,
            }
        }
        read().await
    }

    pub(crate) async fn commit(&self, writes: Vec<pb::Write>) -> Result<Timestamp, FirestoreError> {
        let request = pb::CommitRequest { database: self.paths.database.clone(), writes, transaction: Vec::new(), request_options: None };
        let response = self.unary("Commit", self.client().commit(request)).await?;
        let commit_time = response.commit_time.ok_or(FirestoreError::MissingInResponse { operation: "Commit", what: "commit_time" })?;
        Ok(timestamp_from_proto(&commit_time))
    }

    /// The database's current time: the read time of a query that reads nothing.
    pub(crate) async fn server_time(&self) -> Result<Timestamp, FirestoreError> {
        let query = page_query("converge-clock", None, 1, false);
        let (_, read_time) = self.run_query(self.paths.documents.clone(), query, None).await?;
        let read_time = read_time.ok_or(FirestoreError::MissingInResponse { operation: "RunQuery", what: "read_time" })?;
        Ok(timestamp_from_proto(&read_time))
    }

    /// Reads one document by resource name, at `read_time` or now; `None` when it does
    /// not exist.
    pub(crate) async fn get_by_name(&self, name: String) -> Result<Option<pb::Document>, FirestoreError> {
        self.get_by_name_at(name, None).await
    }

    pub(crate) async fn get_by_name_at(&self, name: String, read_time: Option<prost_types::Timestamp>) -> Result<Option<pb::Document>, FirestoreError> {
        let consistency_selector = read_time.map(pb::get_document_request::ConsistencySelector::ReadTime);
        let request = pb::GetDocumentRequest { name, mask: None, request_options: None, consistency_selector };
        match self.unary("GetDocument", self.client().get_document(request)).await {
            Ok(doc) => Ok(Some(doc)),
            Err(e) if e.code() == Some(Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs `query` under `parent` and returns its documents and the latest read time
    /// of its responses.
    pub(crate) async fn run_query(
        &self,
        parent: String,
        query: pb::StructuredQuery,
        read_time: Option<prost_types::Timestamp>,
    ) -> Result<(Vec<pb::Document>, Option<prost_types::Timestamp>), FirestoreError> {
        let request = pb::RunQueryRequest {
            parent,
            explain_options: None,
            request_options: None,
            query_type: Some(pb::run_query_request::QueryType::StructuredQuery(query)),
            consistency_selector: read_time.map(pb::run_query_request::ConsistencySelector::ReadTime),
        };
        let mut documents = Vec::new();
        let mut latest: Option<prost_types::Timestamp> = None;
        self.collect_stream("RunQuery", self.client().run_query(request), |response: pb::RunQueryResponse| {
            if let Some(t) = response.read_time {
                if latest.as_ref().is_none_or(|l| (l.seconds, l.nanos) < (t.seconds, t.nanos)) {
                    latest = Some(t);
                }
            }
            documents.extend(response.document);
            Ok::<(), ()>(())
        })
        .await?
        .ok();
        Ok((documents, latest))
    }
}

/// A query for one page of a collection in `__name__` order, after `cursor`; with
/// `all_descendants`, of every collection named `collection_id` below the parent (a
/// collection-group query scoped to the parent's subtree).
pub(crate) fn page_query(collection_id: &str, cursor: Option<&str>, limit: u32, all_descendants: bool) -> pb::StructuredQuery {
    pb::StructuredQuery {
        from: vec![CollectionSelector { collection_id: collection_id.to_owned(), all_descendants }],
        order_by: vec![Order { field: Some(FieldReference { field_path: "__name__".into() }), direction: Direction::Ascending as i32 }],
        start_at: cursor.map(|name| pb::Cursor { values: vec![reference(name)], before: false }),
        limit: Some(i32::try_from(limit).unwrap_or(i32::MAX)),
        ..Default::default()
    }
}

pub(crate) fn reference(name: &str) -> pb::Value {
    pb::Value { value_type: Some(pb::value::ValueType::ReferenceValue(name.to_owned())) }
}

impl Inner {
    /// One query read page by page as one consistent, read-ahead scan. Without `at`, the
    /// first page is read now and fixes the read time (the latest `read_time` of its
    /// responses: Firestore guarantees the earlier documents did not change up to it);
    /// with `at`, every page is read at that time (one snapshot across several queries).
    /// Every later page is read *at* the scan's time, so the whole scan is one snapshot
    /// however long it takes. A reader task keeps [`PAGES_AHEAD`] pages ahead of the
    /// consumer.
    ///
    /// `query(after, limit)` builds a page of at most `limit` documents after `after`,
    /// the previous page's last document (`None`: the first page); `map` turns each
    /// document into an item, or drops it (`None`).
    pub(crate) async fn paged<T, Q, M>(self: &Arc<Self>, parent: String, query: Q, map: M, at: Option<Timestamp>) -> Result<Scan<T>, StoreError>
    where
        T: Send + 'static,
        Q: Fn(Option<&pb::Document>, u32) -> Result<pb::StructuredQuery, FirestoreError> + Send + 'static,
        M: Fn(&DocPaths, pb::Document) -> Result<Option<T>, FirestoreError> + Send + 'static,
    {
        let page_size = self.config.page_size.max(1);
        let first_query = query(None, page_size)?;
        let at = at.map(crate::convert::timestamp_to_proto);
        let (first, read_time) = self.read_with_retry(|| self.run_query(parent.clone(), first_query.clone(), at)).await?;
        let read_time = at.or(read_time).ok_or(FirestoreError::MissingInResponse { operation: "RunQuery", what: "read_time" })?;
        let mut done = first.len() < page_size as usize;
        let mut last = first.last().cloned();
        let first = map_page(&self.paths, &map, first)?;

        let (pages_tx, pages_rx) = mpsc::channel::<Result<Vec<T>, StoreError>>(PAGES_AHEAD);
        if !done {
            let inner = self.clone();
            tokio::spawn(async move {
                while !done {
                    let page = match query(last.as_ref(), page_size) {
                        Ok(query) => inner.read_with_retry(|| inner.run_query(parent.clone(), query.clone(), Some(read_time))).await,
                        Err(error) => Err(error),
                    }
                    .and_then(|(docs, _)| {
                        done = docs.len() < page_size as usize;
                        last = docs.last().cloned();
                        map_page(&inner.paths, &map, docs)
                    });
                    let failed = page.is_err();
                    if pages_tx.send(page.map_err(StoreError::from)).await.is_err() || failed {
                        // The consumer went away, or the scan ends with this error.
                        return;
                    }
                }
            });
        }
        Ok(Scan { read_time: timestamp_from_proto(&read_time), items: page_stream(first, pages_rx) })
    }
}

/// One page's items: each document mapped, the dropped ones left out.
fn map_page<T>(
    paths: &DocPaths,
    map: &impl Fn(&DocPaths, pb::Document) -> Result<Option<T>, FirestoreError>,
    docs: Vec<pb::Document>,
) -> Result<Vec<T>, FirestoreError> {
    docs.into_iter().filter_map(|doc| map(paths, doc).transpose()).collect()
}

impl FirestoreSource {
    /// A consistent, paged, read-ahead scan of one collection in `__name__` order,
    /// narrowed by `filter` (a `__name__` range) when given; `map` turns each document
    /// into an item.
    pub(crate) async fn scan_collection<T: Send + 'static>(
        &self,
        collection_path: &str,
        filter: Option<Filter>,
        map: fn(&DocPaths, pb::Document) -> Result<T, FirestoreError>,
    ) -> Result<Scan<T>, StoreError> {
        let (parent, collection_id) = self.inner.paths.collection_parent(collection_path)?;
        let query = move |after: Option<&pb::Document>, limit| {
            Ok(pb::StructuredQuery { r#where: filter.clone(), ..page_query(&collection_id, after.map(|doc| doc.name.as_str()), limit, false) })
        };
        self.inner.paged(parent, query, move |paths, doc| map(paths, doc).map(Some), None).await
    }
}

/// A paged scan as one stream: the first page (read before the scan returns, so its
/// read time is known), then each page the reading task sends, item by item. The task
/// stops after sending an error, which ends the stream.
pub(crate) fn page_stream<T: Send + 'static>(
    first: Vec<T>,
    rest: mpsc::Receiver<Result<Vec<T>, StoreError>>,
) -> futures::stream::BoxStream<'static, Result<T, StoreError>> {
    let rest = futures::stream::unfold(rest, |mut rest| async move { rest.recv().await.map(|page| (page, rest)) });
    converge_core::flatten_chunks(futures::stream::iter([Ok(first)]).chain(rest))
}

pub(crate) fn doc_state(paths: &DocPaths, doc: pb::Document) -> Result<DocState, FirestoreError> {
    let doc = paths.document_from_proto(doc)?;
    Ok(DocState::from_source(doc.path, doc.update_time.as_micros(), content_hash(&doc.fields)))
}

pub(crate) fn document(paths: &DocPaths, doc: pb::Document) -> Result<Document, FirestoreError> {
    Ok(paths.document_from_proto(doc)?)
}

/// Checks a batch and turns it into Firestore writes.
fn prepare_writes(paths: &DocPaths, writes: &[DocWrite]) -> Result<Vec<pb::Write>, FirestoreError> {
    let mut seen = HashSet::with_capacity(writes.len());
    writes
        .iter()
        .map(|write| {
            let path = match write {
                DocWrite::Set { path, .. } | DocWrite::Delete { path } => path.as_str(),
            };
            let name = paths.document_name(path)?;
            if !seen.insert(path) {
                return Err(FirestoreError::DuplicateWrite(path.to_owned()));
            }
            let operation = match write {
                DocWrite::Set { fields, .. } => {
                    pb::write::Operation::Update(pb::Document { name, fields: convert::fields_to_proto(fields), create_time: None, update_time: None })
                }
                DocWrite::Delete { .. } => pb::write::Operation::Delete(name),
            };
            Ok(pb::Write { update_mask: None, update_transforms: Vec::new(), current_document: None, operation: Some(operation) })
        })
        .collect()
}

#[async_trait]
impl SourceStore for FirestoreSource {
    async fn get(&self, path: &str) -> Result<Option<Document>, StoreError> {
        let name = self.inner.paths.document_name(path)?;
        let Some(doc) = self.inner.read_with_retry(|| self.inner.get_by_name(name.clone())).await? else { return Ok(None) };
        Ok(Some(self.inner.paths.document_from_proto(doc).map_err(FirestoreError::from)?))
    }

    /// At the database's current time (the read time of an empty query), then each
    /// document at that read time: Firestore serves consistent reads at a past read
    /// time within the last hour
    /// (https://firebase.google.com/docs/firestore/reference/rpc/google.firestore.v1#getdocumentrequest).
    async fn get_all(&self, paths: &[String]) -> Result<ReadAt<Vec<Option<Document>>>, StoreError> {
        let read_time = self.inner.read_with_retry(|| self.inner.server_time()).await?;
        let at = prost_types::Timestamp { seconds: read_time.seconds, nanos: read_time.nanos };
        let mut docs = Vec::with_capacity(paths.len());
        for path in paths {
            let name = self.inner.paths.document_name(path)?;
            let doc = self.inner.read_with_retry(|| self.inner.get_by_name_at(name.clone(), Some(at))).await?;
            docs.push(match doc {
                Some(doc) => Some(self.inner.paths.document_from_proto(doc).map_err(FirestoreError::from)?),
                None => None,
            });
        }
        Ok(ReadAt { read_time, value: docs })
    }

    async fn apply(&self, writes: Vec<DocWrite>) -> Result<Timestamp, StoreError> {
        if writes.is_empty() {
            // Nothing to commit (the emulator answers an empty Commit without a
            // commit time): the database's current time, which follows every commit
            // so far, as the batch's.
            return Ok(self.inner.server_time().await?);
        }
        let writes = prepare_writes(&self.inner.paths, &writes)?;
        Ok(self.inner.commit(writes).await?)
    }

    async fn scan_states(&self, scope: &SourceScope) -> Result<Scan<DocState>, StoreError> {
        match scope.collection_path() {
            Some(collection_path) => self.scan_collection(&collection_path, None, doc_state).await,
            None => self.inner.scan_subtree(scope, doc_state).await,
        }
    }

    async fn scan_documents(&self, scope: &SourceScope) -> Result<Scan<Document>, StoreError> {
        match scope.collection_path() {
            Some(collection_path) => self.scan_collection(&collection_path, None, document).await,
            None => self.inner.scan_subtree(scope, document).await,
        }
    }

    async fn changed_since(&self, scope: &SourceScope, field: &str, since: Timestamp) -> Result<Scan<Document>, StoreError> {
        self.changed_documents(scope, field, since).await
    }

    async fn count_range(&self, scope: &SourceScope, range: &PathRange) -> Result<u64, StoreError> {
        self.count_in(scope, range).await
    }

    async fn scan_states_in(&self, scope: &SourceScope, range: &PathRange) -> Result<Scan<DocState>, StoreError> {
        self.states_in(scope, range).await
    }

    async fn list_document_ids(&self, collection_path: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.inner.list_ids(collection_path, None).await?)
    }

    async fn count(&self, scope: &SourceScope) -> Result<u64, StoreError> {
        self.count_in(scope, &PathRange::all()).await
    }
}

impl Inner {
    /// Ids directly in `collection_path` (at `read_time`, or now), ascending.
    /// ListDocuments with show_missing: ids that exist only as parents of
    /// subcollections come back too (a query would skip them). An empty mask reads
    /// no fields.
    pub(crate) async fn list_ids(&self, collection_path: &str, read_time: Option<prost_types::Timestamp>) -> Result<Vec<String>, FirestoreError> {
        let inner = self;
        let (parent, collection_id) = inner.paths.collection_parent(collection_path)?;
        let mut ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListDocumentsRequest {
                parent: parent.clone(),
                collection_id: collection_id.clone(),
                page_size: inner.config.page_size as i32,
                page_token: page_token.clone(),
                order_by: String::new(),
                mask: Some(pb::DocumentMask { field_paths: vec![] }),
                show_missing: true,
                request_options: None,
                consistency_selector: read_time.map(pb::list_documents_request::ConsistencySelector::ReadTime),
            };
            let response = inner
                .read_with_retry(|| async { inner.unary("ListDocuments", inner.client().list_documents(request.clone())).await })
                .await?;
            for doc in response.documents {
                let path = inner.paths.relative(&doc.name)?;
                if let Some(id) = path.rsplit('/').next() {
                    ids.push(id.to_owned());
                }
            }
            if response.next_page_token.is_empty() {
                break;
            }
            page_token = response.next_page_token;
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}
