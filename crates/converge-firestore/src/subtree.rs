//! Scans of a [`SourceScope`] at any depth: one tenant's documents of a nested route
//! (`orgs/{tenant}/projects/{project}/tasks/{doc}` → `orgs/acme/projects/*/tasks/*`).
//!
//! Every read of a scan happens at one read time, the database's time when the scan
//! starts (the read time of an empty query), so the scan is one snapshot however many
//! requests it takes (Firestore serves reads at a past read time within the last hour,
//! https://firebase.google.com/docs/firestore/reference/rpc/google.firestore.v1#runqueryrequest).
//!
//! The order is the one the merge with the warehouse needs: the byte order of the whole
//! path (the warehouse's `ORDER BY doc_path`). Firestore orders `__name__` segment by
//! segment instead, and the two differ where one sibling id is another plus a character
//! that sorts before `/` (`p` and `p-1`: Firestore puts `p`'s documents first, the byte
//! order `p-1/…` before `p/…`). So the walk goes down the scope's segments:
//!
//! - given ids are followed (`orgs/acme`);
//! - at a wildcard document id (`projects/*`) it lists the ids at the read time
//!   (`ListDocuments` with `show_missing`: a project that exists only as the parent of
//!   its tasks is listed too). When their orders agree and one collection follows
//!   (`tasks/*`), one collection-group query (`all_descendants`) under the document
//!   above (`orgs/acme`) for collection id `tasks`, in `__name__` order, paged with a
//!   cursor, reads them all, keeping the paths the scope matches exactly (a `tasks`
//!   collection elsewhere in the tenant is read but dropped). Otherwise each id's
//!   subtree is walked in turn, in byte order of `id/`;
//! - one collection left (`…/tasks/*`): a plain paged query of it;
//! - a wildcard collection id (`orgs/{tenant}/{kind}/x/items/{doc}`, rare): one
//!   collection-group query under the document, whose order is checked as it streams
//!   (a pair of ids that would break it ends the scan with an error, never a misjudged
//!   merge).
//!
//! The collection-group query needs a collection-group-scope index on `__name__` for
//! the collection id ("indexes with a collection group query scope … allow queries
//! against all collections descended from a specific document, specified at query
//! time", https://firebase.google.com/docs/firestore/reference/rest/v1/projects.databases.collectionGroups.indexes,
//! `QueryScope`); `infra/firestore.tf` declares it for the shipped nested route.
//!
//! Memory: one page ahead, and the listed ids of the levels being walked (the projects
//! of one tenant), never the documents.
//!
//! [`Inner::scope_collections`] lists the same levels the same way, at one read time,
//! and returns the scope's collections themselves (`orgs/acme/projects/p/tasks`, …): what
//! `ranges.rs` queries one by one with a field filter, which a collection-group query
//! under a document cannot carry (only `__name__` conditions are allowed there; see
//! `ranges.rs`).

use converge_core::{ScopeSegment, Scan, SourceScope, StoreError};
use firestore::gcloud_sdk::google::firestore::v1 as pb;
use firestore::gcloud_sdk::prost_types;
use tokio::sync::mpsc;

use crate::convert::{timestamp_to_proto, DocPaths};
use crate::error::FirestoreError;
use crate::source::{page_query, page_stream, Inner, PAGES_AHEAD};

/// Turns one document into a scan item.
pub(crate) type Mapper<T> = fn(&DocPaths, pb::Document) -> Result<T, FirestoreError>;

impl Inner {
    /// A streamed, path-ordered scan of `scope` at one read time (see the module docs).
    pub(crate) async fn scan_subtree<T: Send + 'static>(self: &std::sync::Arc<Self>, scope: &SourceScope, map: Mapper<T>) -> Result<Scan<T>, StoreError> {
        let inner = self;
        let read_time = inner.read_with_retry(|| inner.server_time()).await?;
        let (pages_tx, pages_rx) = mpsc::channel::<Result<Vec<T>, StoreError>>(PAGES_AHEAD);
        let mut walk = Walk { inner: inner.clone(), scope: scope.clone(), at: timestamp_to_proto(read_time), map, pages: pages_tx, last: None };
        tokio::spawn(async move {
            if let Err(error) = walk.run().await {
                let _ = walk.pages.send(Err(error)).await;
            }
        });
        Ok(Scan { read_time, items: page_stream(Vec::new(), pages_rx) })
    }

    /// Paths of the collections holding `scope`'s documents at `at`, in path order of
    /// the walk: given ids followed, wildcard document ids listed (`ListDocuments` with
    /// `show_missing`, so a project that exists only as its tasks' parent is there),
    /// wildcard collection ids listed (`ListCollectionIds`). What `ranges.rs` queries
    /// one by one where a collection-group query cannot be filtered. Memory: the
    /// collections of one tenant's scope (its projects), never documents.
    pub(crate) async fn scope_collections(&self, scope: &SourceScope, at: prost_types::Timestamp) -> Result<Vec<String>, FirestoreError> {
        let segments = scope.segments();
        let mut prefixes: Vec<String> = vec![String::new()];
        for (i, segment) in segments[..segments.len() - 1].iter().enumerate() {
            let mut next = Vec::with_capacity(prefixes.len());
            for prefix in prefixes {
                let join = |id: &str| if prefix.is_empty() { id.to_owned() } else { format!("{prefix}/{id}") };
                match segment {
                    ScopeSegment::Id(id) => next.push(join(id)),
                    // Odd positions are document ids: `prefix` is a collection.
                    ScopeSegment::Any if i % 2 == 1 => next.extend(self.list_ids(&prefix, Some(at)).await?.iter().map(|id| join(id))),
                    ScopeSegment::Any => next.extend(self.list_collection_ids(&prefix, at).await?.iter().map(|id| join(id))),
                }
            }
            prefixes = next;
        }
        Ok(prefixes)
    }

    /// Ids of the collections directly under the document at `document_path` (`""`:
    /// the database root) at `at`, ascending.
    async fn list_collection_ids(&self, document_path: &str, at: prost_types::Timestamp) -> Result<Vec<String>, FirestoreError> {
        let parent = if document_path.is_empty() { self.paths.documents.clone() } else { self.paths.document_name(document_path)? };
        let mut ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListCollectionIdsRequest {
                parent: parent.clone(),
                page_size: self.config.page_size as i32,
                page_token: page_token.clone(),
                request_options: None,
                consistency_selector: Some(pb::list_collection_ids_request::ConsistencySelector::ReadTime(at)),
            };
            let response =
                self.read_with_retry(|| async { self.unary("ListCollectionIds", self.client().list_collection_ids(request.clone())).await }).await?;
            ids.extend(response.collection_ids);
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

struct Walk<T> {
    inner: std::sync::Arc<Inner>,
    scope: SourceScope,
    at: prost_types::Timestamp,
    map: Mapper<T>,
    pages: mpsc::Sender<Result<Vec<T>, StoreError>>,
    /// The last path handed over, to check the order of collection-group pages.
    last: Option<String>,
}

/// Whether the walk goes on (`false`: the consumer went away).
type Going = bool;

impl<T: Send + 'static> Walk<T> {
    async fn run(&mut self) -> Result<(), StoreError> {
        let segments = self.scope.segments().to_vec();
        let n = segments.len();
        let id = |i: usize| match &segments[i] {
            ScopeSegment::Id(id) => Some(id.clone()),
            ScopeSegment::Any => None,
        };
        let parent = self.scope.parent();
        let start: Vec<String> = if parent.is_empty() { Vec::new() } else { parent.split('/').map(str::to_owned).collect() };
        // Prefixes still to walk, the next on top.
        let mut stack = vec![start];
        while let Some(mut prefix) = stack.pop() {
            let k = prefix.len();
            let Some(wild) = (k..n - 1).find(|&i| id(i).is_none()) else {
                // One collection left.
                prefix.extend((k..n - 1).map(|i| id(i).expect("no wildcard")));
                if !self.query(&prefix.join("/"), false).await? {
                    return Ok(());
                }
                continue;
            };
            prefix.extend((k..wild).map(|i| id(i).expect("before the first wildcard")));
            if wild % 2 == 0 {
                // A wildcard collection id under the document `prefix`.
                if !self.query(&prefix.join("/"), true).await? {
                    return Ok(());
                }
                continue;
            }
            // A wildcard document id in the collection `prefix`.
            let ids = self.inner.list_ids(&prefix.join("/"), Some(self.at)).await?;
            let mut in_path_order = ids.clone();
            in_path_order.sort_by_key(|id| format!("{id}/"));
            // `ids` is in Firestore's (byte) order of the ids themselves.
            let orders_agree = in_path_order == ids;
            if orders_agree && wild + 1 == n - 2 && !ids.is_empty() {
                // One collection follows: one collection-group query under the document
                // holding the listed collection.
                if !self.query(&prefix[..wild - 1].join("/"), true).await? {
                    return Ok(());
                }
                continue;
            }
            for child in in_path_order.into_iter().rev() {
                let mut next = prefix.clone();
                next.push(child);
                stack.push(next);
            }
        }
        Ok(())
    }

    /// Pages through one query at the read time, handing over the scope's documents:
    /// the collection at `path`, or (`group`) every collection named the scope's
    /// collection id below the document at `path` (`""`: the database root).
    async fn query(&mut self, path: &str, group: bool) -> Result<Going, StoreError> {
        let inner = self.inner.clone();
        let (parent, collection_id) = if group {
            let parent = if path.is_empty() { inner.paths.documents.clone() } else { format!("{}/{path}", inner.paths.documents) };
            (parent, self.scope.collection_id().to_owned())
        } else {
            inner.paths.collection_parent(path)?
        };
        let page_size = inner.config.page_size.max(1);
        let mut cursor: Option<String> = None;
        loop {
            let query = page_query(&collection_id, cursor.as_deref(), page_size, group);
            let (docs, _) = inner.read_with_retry(|| inner.run_query(parent.clone(), query.clone(), Some(self.at))).await?;
            let done = docs.len() < page_size as usize;
            cursor = docs.last().map(|d| d.name.clone());
            let mut page = Vec::with_capacity(docs.len());
            for doc in docs {
                let path = inner.paths.relative(&doc.name).map_err(FirestoreError::from)?;
                if !self.scope.matches(path) {
                    continue;
                }
                if let Some(last) = &self.last {
                    if path <= last.as_str() {
                        return Err(StoreError::permanent(
                            "firestore",
                            format!(
                                "scan of {}: Firestore returned `{path}` after `{last}`, out of path order (an id and the same id plus a character before `/`, such as `p` and `p-1`, under a wildcard collection id); the merge with the warehouse needs byte order: rename one of the ids, or give the route a literal collection id",
                                self.scope
                            ),
                        ));
                    }
                }
                self.last = Some(path.to_owned());
                page.push((self.map)(&inner.paths, doc).map_err(StoreError::from)?);
            }
            if !page.is_empty() && self.pages.send(Ok(page)).await.is_err() {
                return Ok(false);
            }
            if done {
                return Ok(true);
            }
        }
    }
}
