//! The traits every external system sits behind, one per system. Each has an
//! embedded implementation (SQLite, DuckDB) and a cloud one (Firestore, BigQuery),
//! and both pass the same contract suite.

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::change::ChangeRow;
use crate::config::{MirrorConfig, PathPattern, SourceScope};
use crate::cost::WarehouseBytes;
use crate::incremental::{PathRange, VerifiedPoint};
use crate::error::StoreError;
use crate::retention::{CompactionPlan, CurrentRefresh, RefreshFrom, TableCompaction};
use crate::run::RunRecord;
use crate::value::{Document, Fields, Timestamp};
use crate::version::Version;

/// The compact state of one document, enough to compare source and derived data
/// without reading whole documents.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DocState {
    pub doc_path: String,
    /// The document's own `update_time` (µs).
    pub update_time: Version,
    pub content_hash: String,
    /// When this state was known to hold: the changelog `version` of the warehouse row
    /// it comes from (a repair's read time, say); for a state read from the source,
    /// its `update_time`. Only the warehouse side uses it, to leave alone rows written
    /// after the source was read.
    pub version: Version,
}

impl DocState {
    /// A state as the source reports it.
    pub fn from_source(doc_path: String, update_time: Version, content_hash: String) -> Self {
        Self { doc_path, update_time, content_hash, version: update_time }
    }

    /// Whether two states of one document are the same state: the same `update_time`
    /// and the same content. (Their `version`s may differ: a repair row read at `R`
    /// carries the state committed at `update_time`.)
    pub fn same_state(&self, other: &DocState) -> bool {
        self.update_time == other.update_time && self.content_hash == other.content_hash
    }
}

/// Documents read at one read time.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadAt<T> {
    /// Every commit at or before this instant is reflected; none after it.
    pub read_time: Timestamp,
    pub value: T,
}

/// A consistent scan: every item reflects the store as of `read_time`, the moment of
/// the read: every commit it reflects is at or before it, every commit it does not
/// reflect is after it.
pub struct Scan<T> {
    pub read_time: Timestamp,
    /// Items in ascending `doc_path` order, streamed (never a whole tenant in memory).
    pub items: BoxStream<'static, Result<T, StoreError>>,
}

/// Items that a producer hands over in chunks (one channel message, one wake-up per
/// chunk rather than per item), as one stream of items. An error ends nothing by
/// itself: the producer stops after sending one, so the stream ends after it.
pub fn flatten_chunks<T: Send + 'static>(
    chunks: impl futures::Stream<Item = Result<Vec<T>, StoreError>> + Send + 'static,
) -> BoxStream<'static, Result<T, StoreError>> {
    use futures::StreamExt;
    chunks
        .flat_map(|chunk| match chunk {
            Ok(items) => futures::stream::iter(items.into_iter().map(Ok)).left_stream(),
            Err(error) => futures::stream::once(async move { Err(error) }).right_stream(),
        })
        .boxed()
}

/// One write in a batch applied to the source store.
#[derive(Debug, Clone, PartialEq)]
pub enum DocWrite {
    /// Create or replace the document at `path`.
    Set { path: String, fields: Fields },
    /// Delete the document at `path`; deleting a missing document is not an error.
    Delete { path: String },
}

/// The operational database: Firestore in the cloud, SQLite embedded.
#[async_trait]
pub trait SourceStore: Send + Sync + 'static {
    /// Reads one document.
    async fn get(&self, path: &str) -> Result<Option<Document>, StoreError>;

    /// Reads documents at one read time, which it returns with them (in `paths`'
    /// order, `None` for a missing document). The read time is the moment of the read
    /// (never earlier than a commit it reflects, and every later commit is later than
    /// it): what a repair row read from it is versioned with.
    async fn get_all(&self, paths: &[String]) -> Result<ReadAt<Vec<Option<Document>>>, StoreError>;

    /// Applies writes atomically with one commit time, which it returns.
    async fn apply(&self, writes: Vec<DocWrite>) -> Result<Timestamp, StoreError>;

    /// States of every document of `scope` (one collection, or one tenant's documents
    /// of a route at any depth), at one read time, in ascending `doc_path` order (byte
    /// order of the whole path, as the warehouse's `ORDER BY doc_path`), streamed.
    async fn scan_states(&self, scope: &SourceScope) -> Result<Scan<DocState>, StoreError>;

    /// Whole documents of `scope`, at one read time, in path order (as
    /// [`SourceStore::scan_states`]); streamed, for rebuilds and repairs.
    async fn scan_documents(&self, scope: &SourceScope) -> Result<Scan<Document>, StoreError>;

    /// Number of documents of `scope`.
    async fn count(&self, scope: &SourceScope) -> Result<u64, StoreError>;

    /// Documents of `scope` whose top-level field `field` is a timestamp at or after
    /// `since` (`where field >= since`: the route's app-maintained change field), at one
    /// read time, in no promised order; streamed. What an incremental reconcile reads
    /// for writes (see [`crate::incremental`]). A store that cannot answer it without
    /// reading every document refuses (`InvalidInput`) rather than scanning.
    async fn changed_since(&self, scope: &SourceScope, field: &str, since: Timestamp) -> Result<Scan<Document>, StoreError>;

    /// Number of documents of `scope` in `range` (Firestore: a `count()` aggregation
    /// over `__name__`, billed one read per 1,000 index entries). A collection scope
    /// takes any range; a scope of more than one collection only [`PathRange::all`]
    /// (Firestore orders `__name__` segment by segment, not as the byte order of the
    /// whole path that ranges here follow), anything else is `InvalidInput`.
    async fn count_range(&self, scope: &SourceScope, range: &PathRange) -> Result<u64, StoreError>;

    /// States of the documents of `scope` in `range`, at one read time, in path order
    /// (as [`SourceStore::scan_states`]); the same ranges as [`SourceStore::count_range`].
    async fn scan_states_in(&self, scope: &SourceScope, range: &PathRange) -> Result<Scan<DocState>, StoreError>;

    /// Ids of the documents directly in `collection_path`, in ascending order,
    /// including ids that exist only as the parent of a subcollection (Firestore's
    /// "missing" documents: `orgs/acme` when only `orgs/acme/records/r1` was written).
    /// How the reconciler lists tenants.
    async fn list_document_ids(&self, collection_path: &str) -> Result<Vec<String>, StoreError>;

    /// The tenants of `pattern` in the source, ascending. When only literal segments
    /// come before `{tenant}`: the ids in the collection of tenants (`orgs`) by
    /// [`SourceStore::list_document_ids`], which includes ids that exist only as the
    /// ancestor of deeper documents (Firestore's "missing" documents), so the tenants of
    /// a nested route (`orgs/{tenant}/projects/{project}/tasks/{doc}`) are found though
    /// `orgs/acme` and `orgs/acme/projects/p1` were never written; such a tenant may have
    /// no document of this pattern (it has others). With a wildcard before `{tenant}`:
    /// the tenants of every document the pattern matches, from one scan of all of them.
    async fn list_tenants(&self, pattern: &PathPattern) -> Result<Vec<String>, StoreError> {
        use futures::StreamExt;
        if let Some(parent) = pattern.tenant_parent() {
            return self.list_document_ids(&parent).await;
        }
        let mut scan = self.scan_states(&pattern.every_tenant_scope()).await?.items;
        let mut tenants = std::collections::BTreeSet::new();
        while let Some(state) = scan.next().await {
            if let Some(tenant) = pattern.tenant_of(&state?.doc_path) {
                tenants.insert(tenant);
            }
        }
        Ok(tenants.into_iter().collect())
    }
}

/// The analytics copy: BigQuery in the cloud, DuckDB embedded. Append-only.
#[async_trait]
pub trait Warehouse: Send + Sync + 'static {
    /// Creates every changelog table and its views for `config`, if missing, and the
    /// runs table: the setup step (`converge setup`; the embedded backends run it at
    /// every start, a laptop has no separate setup).
    async fn ensure_tables(&self, config: &MirrorConfig) -> Result<(), StoreError>;

    /// Checks, changing nothing, that what [`Warehouse::ensure_tables`] creates for
    /// `config` exists as this version of it creates it, and adopts `config` for later
    /// calls: what a cloud function runs at start instead of DDL. A missing or outdated
    /// object is `ErrorKind::NotFound`, naming every one.
    async fn check_tables(&self, config: &MirrorConfig) -> Result<(), StoreError>;

    /// Appends rows (any tables) durably: when this returns `Ok`, they survive a crash.
    /// Redelivery is harmless: a row whose `event_id` is already stored never changes
    /// a view. Backends that can tell skip it and count it in `duplicates` (DuckDB);
    /// BigQuery's append path cannot, stores it, and its views ignore the copy.
    async fn append(&self, rows: Vec<ChangeRow>) -> Result<AppendReceipt, StoreError>;

    /// Appends a stream of rows all or nothing: readers see none of them until every
    /// one is durable, then all at once. An error (from the stream or the backend)
    /// leaves nothing visible. The rebuild path (DuckDB: one transaction; BigQuery: a
    /// PENDING write stream committed with BatchCommitWriteStreams).
    async fn append_atomic(&self, rows: BoxStream<'static, Result<ChangeRow, StoreError>>) -> Result<AppendReceipt, StoreError>;

    /// Latest states of one tenant's documents in `table`, tombstones hidden.
    async fn latest_states(&self, table: &str, tenant: &str) -> Result<Scan<DocState>, StoreError>;

    /// Latest states of one tenant's documents as `<table>_current` holds them (what
    /// reports read; equal to [`Warehouse::latest_states`] after a refresh), in path
    /// order.
    async fn current_states(&self, table: &str, tenant: &str) -> Result<Scan<DocState>, StoreError>;

    /// One tenant's states as of `as_of` (the `<table>_as_of` view), in path order.
    /// Before the table's compaction horizon it fails: the state then is incomplete.
    async fn as_of_states(&self, table: &str, tenant: &str, as_of: Timestamp) -> Result<Scan<DocState>, StoreError>;

    /// Latest states of the documents at `paths` (one tenant's), tombstones hidden (a
    /// deleted or unknown document is simply not returned), in path order: what an
    /// incremental reconcile compares the changed documents with. Exact (the ordering
    /// rule over the changelog, as [`Warehouse::latest_states`]). The default filters
    /// the tenant's whole scan (the reference; backends answer from the paths).
    async fn latest_states_of(&self, table: &str, tenant: &str, paths: &[String]) -> Result<Vec<DocState>, StoreError> {
        use futures::TryStreamExt;
        let wanted: std::collections::HashSet<&str> = paths.iter().map(String::as_str).collect();
        let scan = self.latest_states(table, tenant).await?;
        let mut out = Vec::new();
        let mut items = scan.items;
        while let Some(state) = items.try_next().await? {
            if wanted.contains(state.doc_path.as_str()) {
                out.push(state);
            }
        }
        Ok(out)
    }

    /// Latest states of one tenant's documents in any of `ranges` (disjoint, ascending),
    /// tombstones hidden, in path order: the leaves of an incremental reconcile's range
    /// bisection, read in one query. Exact, as [`Warehouse::latest_states`] (the
    /// default filters it).
    async fn latest_states_in(&self, table: &str, tenant: &str, ranges: &[PathRange]) -> Result<Scan<DocState>, StoreError> {
        use futures::StreamExt;
        let scan = self.latest_states(table, tenant).await?;
        let ranges = ranges.to_vec();
        let items = scan
            .items
            .filter(move |item| std::future::ready(item.as_ref().map_or(true, |state| ranges.iter().any(|range| range.contains(&state.doc_path)))))
            .boxed();
        Ok(Scan { read_time: scan.read_time, items })
    }

    /// Live documents of `tenant` in each of `ranges` as `<table>_current` holds them
    /// (refresh it first for an up-to-date answer): the warehouse's side of an
    /// incremental reconcile's range counts. The default counts the current scan.
    async fn current_range_counts(&self, table: &str, tenant: &str, ranges: &[PathRange]) -> Result<Vec<u64>, StoreError> {
        use futures::TryStreamExt;
        let mut counts = vec![0u64; ranges.len()];
        let mut items = self.current_states(table, tenant).await?.items;
        while let Some(state) = items.try_next().await? {
            for (count, range) in counts.iter_mut().zip(ranges) {
                *count += u64::from(range.contains(&state.doc_path));
            }
        }
        Ok(counts)
    }

    /// Up to `parts - 1` paths, ascending and distinct, each strictly inside `range`
    /// (after its start), that split `range` into parts of about equal numbers of
    /// `<table>_current`'s live documents of `tenant` (an estimate is fine: a sample).
    /// Fewer when the range holds fewer documents; none for an empty range. The default
    /// reads the range's current states twice (count, then pick).
    async fn split_range(&self, table: &str, tenant: &str, range: &PathRange, parts: usize) -> Result<Vec<String>, StoreError> {
        use futures::TryStreamExt;
        let total = self.current_range_counts(table, tenant, std::slice::from_ref(range)).await?[0];
        let step = total.div_ceil(parts.max(1) as u64).max(1);
        let mut cuts = Vec::new();
        let mut seen = 0u64;
        let mut items = self.current_states(table, tenant).await?.items;
        while let Some(state) = items.try_next().await? {
            if !range.contains(&state.doc_path) {
                continue;
            }
            if seen > 0 && seen % step == 0 && range.start.as_deref() != Some(state.doc_path.as_str()) {
                cuts.push(state.doc_path);
            }
            seen += 1;
        }
        Ok(cuts)
    }

    /// Every tenant's last verified point in `table` (the newest per tenant).
    async fn verified_points(&self, table: &str) -> Result<Vec<VerifiedPoint>, StoreError>;

    /// Stores verified points (`converge_verified_points`).
    async fn record_verified_points(&self, points: Vec<VerifiedPoint>) -> Result<(), StoreError>;

    /// The bytes this warehouse's queries processed and were billed since it was
    /// opened (see [`crate::cost`]): a run reads it before and after itself.
    fn bytes_processed(&self) -> WarehouseBytes;

    /// Number of live documents of `tenant` in `table`'s latest view.
    async fn latest_count(&self, table: &str, tenant: &str) -> Result<u64, StoreError>;

    /// Every tenant with rows in `table` (tombstones included), ascending.
    async fn tenants(&self, table: &str) -> Result<Vec<String>, StoreError>;

    /// Stores one run's record in the runs table (`converge_runs`), replacing any
    /// earlier record of the same `batch_id` in what [`Warehouse::runs`] returns.
    async fn record_run(&self, run: RunRecord) -> Result<(), StoreError>;

    /// The most recent run records of `kind`, newest first (one per batch id).
    async fn runs(&self, kind: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError>;

    /// Brings `<table>_current` (and its tombstones) up to date with the changelog, in
    /// one transaction: the rows ingested since the watermark (minus the overlap), or
    /// every row, ranked by the ordering rule (see [`crate::retention`]).
    async fn refresh_current(&self, table: &str, from: RefreshFrom) -> Result<CurrentRefresh, StoreError>;

    /// Prunes `table`'s rows superseded at or before the plan's horizon and the deletes
    /// the plan allows, records the horizon (as-of queries before it then fail), and
    /// leaves the current table to a full refresh (see [`crate::retention`]).
    async fn compact(&self, table: &str, plan: CompactionPlan) -> Result<TableCompaction, StoreError>;

    /// Fills promoted column `column` of `table` (and of its current tables) in the
    /// rows that have no value and whose `data` gives one, derived exactly as a new
    /// row's ([`crate::schema_change::promoted_from_data`]): `converge backfill`, after
    /// a promoted column was added. In place: the column is derived from `data`, so no
    /// row's state, version or hash changes (see `crate::schema_change`).
    async fn backfill_promoted(&self, table: &str, column: &str) -> Result<crate::schema_change::PromotedBackfill, StoreError> {
        Err(StoreError::permanent("warehouse", format!("this warehouse cannot backfill `{table}.{column}`")))
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendReceipt {
    /// Rows newly stored.
    pub written: u64,
    /// Rows skipped because their event id was already stored.
    pub duplicates: u64,
}

