//! What an incremental run finds for one route and tenant (the mechanism and what it
//! cannot see are `converge_core::incremental`'s module docs): the documents written
//! since the verified point, then `count()` per path range against the current
//! table, bisected down to leaves that are read from both sides.

use std::collections::{BTreeSet, HashSet};

use converge_core::drift::{diff, Difference, DifferenceKind};
use converge_core::hash::content_hash;
use converge_core::incremental::{BUCKET_DOCUMENTS, FIRST_SPLIT_PARTS, LEAF_DOCUMENTS, MAX_BUCKETS, SPLIT_PARTS};
use converge_core::{DocState, Document, PathRange, Route, RunCost, SourceScope, StoreError, Timestamp};
use futures::{FutureExt, StreamExt, TryStreamExt};

use crate::run::Reconciler;

/// Changed documents compared per warehouse lookup.
const CHANGED_BATCH: usize = 10_000;
/// Source `count()` and leaf reads in flight at once (Firestore answers each in tens
/// of milliseconds; the embedded store in microseconds).
const SOURCE_CONCURRENCY: usize = 8;

/// What one incremental pass over a tenant found and read.
#[derive(Debug, Default)]
pub(crate) struct IncrementalFind {
    /// Differences, each with the read time of the read that proved it (an orphan's
    /// tombstone is versioned with it).
    pub found: Vec<(Timestamp, Difference)>,
    /// The earliest read time of the pass: the verified point it can record.
    pub read_time: Option<Timestamp>,
    /// Source documents read (changed ones, named by open errors, leaves).
    pub source_docs: u64,
    /// Warehouse states read.
    pub derived_rows: u64,
    /// Live documents the current table holds for the tenant (the orphan guard's base).
    pub derived_docs: u64,
    pub in_flight: u64,
    pub changed_docs: u64,
    pub ranges_counted: u64,
    pub leaves_read: u64,
    pub cost: RunCost,
}

impl IncrementalFind {
    fn saw(&mut self, read_time: Timestamp) {
        self.read_time = Some(self.read_time.map_or(read_time, |t| t.min(read_time)));
    }

    /// Judges source states read at `read_time` against the warehouse's (both in path
    /// order) by core's one merge, keeping each difference with the read that proved it.
    async fn judge(&mut self, source: Vec<DocState>, derived: Vec<DocState>, read_time: Timestamp) -> Result<(), StoreError> {
        let found = diff(
            futures::stream::iter(source.into_iter().map(Ok)),
            futures::stream::iter(derived.into_iter().map(Ok)),
            read_time.as_micros(),
        )
        .await?;
        self.in_flight += found.in_flight;
        self.found.extend(found.differences.into_iter().map(|d| (read_time, d)));
        Ok(())
    }
}

/// A node of the bisection: fine buckets `[from, to)` of the tenant's cut points.
#[derive(Debug, Clone, Copy)]
struct Node {
    from: usize,
    to: usize,
}

impl Reconciler {
    /// Steps 1 and 2 of `converge_core::incremental` for `route`'s `tenant`: writes since
    /// `since` (the change field `field`) and the paths of `open_paths`, then counts.
    pub(crate) async fn find_incremental(
        &self,
        route: &Route,
        tenant: &str,
        scope: &SourceScope,
        field: &str,
        since: Timestamp,
        open_paths: Vec<String>,
    ) -> Result<IncrementalFind, StoreError> {
        let mut out = IncrementalFind::default();
        let started = std::time::Instant::now();
        let tenant_cut = self.cut_tenant(&route.table, tenant, scope).await?;
        out.derived_docs = tenant_cut.total;
        // Step 1 and the source's first level of counts need nothing of each other (the
        // counts only the cut points): they run at once, the counts on the store's
        // readers while step 1 waits on its query and the warehouse. At 10,000,000
        // documents the first level is most of the source's counting.
        let first_level = tenant_cut.first_level();
        let first_ranges: Vec<PathRange> = first_level.iter().map(|node| tenant_cut.range(*node)).collect();
        let (_, first_counts) = futures::try_join!(
            self.compare_changed(route, tenant, scope, field, since, open_paths, &mut out),
            self.source_counts(scope, &first_ranges),
        )?;
        let changed_millis = started.elapsed().as_millis() as u64;
        self.compare_counts(route, tenant, scope, &tenant_cut, (first_level, first_counts), &mut out).await?;
        tracing::info!(
            tenant, table = route.table, changed_docs = out.changed_docs, changed_and_first_counts_millis = changed_millis,
            counts_and_leaves_millis = started.elapsed().as_millis() as u64 - changed_millis,
            ranges_counted = out.ranges_counted, leaves_read = out.leaves_read, "incremental pass"
        );
        // A leaf may hold a document step 1 already judged: one finding per document.
        let mut seen = HashSet::new();
        out.found.retain(|(_, difference)| seen.insert(difference.doc_path.clone()));
        Ok(out)
    }

    /// Step 1: the documents whose change field is at or after `since`, and those open
    /// errors name, against their latest states.
    #[allow(clippy::too_many_arguments)]
    async fn compare_changed(
        &self,
        route: &Route,
        tenant: &str,
        scope: &SourceScope,
        field: &str,
        since: Timestamp,
        open_paths: Vec<String>,
        out: &mut IncrementalFind,
    ) -> Result<(), StoreError> {
        let changed = self.source.changed_since(scope, field, since).await?;
        let read_time = changed.read_time;
        out.saw(read_time);
        let mut items = changed.items;
        let mut returned = 0u64;
        let mut seen: HashSet<String> = HashSet::new();
        let mut batch: Vec<DocState> = Vec::with_capacity(CHANGED_BATCH);
        while let Some(document) = items.try_next().await? {
            returned += 1;
            if !self.config.routes_to(&document.path, &route.table) {
                continue;
            }
            seen.insert(document.path.clone());
            batch.push(state_of(&document));
            if batch.len() == CHANGED_BATCH {
                self.judge_batch(route, tenant, read_time, std::mem::take(&mut batch), &[], out).await?;
            }
        }
        out.cost.docs_read(returned);
        out.source_docs += returned;
        out.changed_docs += returned;
        self.judge_batch(route, tenant, read_time, batch, &[], out).await?;

        // Documents an open sync error names: re-read whatever their change field says
        // (a failed write may be one the field does not show).
        let open: Vec<String> = open_paths.into_iter().filter(|path| !seen.contains(path)).collect();
        for chunk in open.chunks(crate::run::REPAIR_CHUNK) {
            let read = self.source.get_all(chunk).await?;
            out.cost.docs_read(chunk.len() as u64);
            out.source_docs += chunk.len() as u64;
            out.saw(read.read_time);
            let states: Vec<DocState> = read
                .value
                .iter()
                .flatten()
                .map(state_of)
                .collect();
            self.judge_batch(route, tenant, read.read_time, states, chunk, out).await?;
        }
        Ok(())
    }

    /// Judges source `states` (read at `read_time`) and the paths in `asked` (read too):
    /// one of those not among `states` is gone from the source.
    async fn judge_batch(
        &self,
        route: &Route,
        tenant: &str,
        read_time: Timestamp,
        mut states: Vec<DocState>,
        asked: &[String],
        out: &mut IncrementalFind,
    ) -> Result<(), StoreError> {
        if states.is_empty() && asked.is_empty() {
            return Ok(());
        }
        states.sort_unstable_by(|a, b| a.doc_path.cmp(&b.doc_path));
        let mut paths: Vec<String> = states.iter().map(|s| s.doc_path.clone()).collect();
        paths.extend(asked.iter().cloned());
        paths.sort_unstable();
        paths.dedup();
        // The warehouse's states of exactly these paths: a path asked for but not read
        // is absent from the source, so only those can be orphans here (a changed
        // document exists by definition).
        let timer = std::time::Instant::now();
        let derived = self.warehouse.latest_states_of(&route.table, tenant, &paths).await?;
        tracing::debug!(paths = paths.len(), millis = timer.elapsed().as_millis() as u64, "incremental: the warehouse's states of changed documents");
        out.derived_rows += derived.len() as u64;
        out.judge(states, derived, read_time).await
    }

    /// The tenant's live count in the current table and its cut points: a collection is
    /// cut into fine buckets once (a scope of several collections can be counted only
    /// whole, see `SourceStore::count_range`).
    async fn cut_tenant(&self, table: &str, tenant: &str, scope: &SourceScope) -> Result<TenantCut, StoreError> {
        let timer = std::time::Instant::now();
        let total = self.warehouse.current_range_counts(table, tenant, &[PathRange::all()]).await?[0];
        let total_millis = timer.elapsed().as_millis() as u64;
        let cuts: Vec<String> = if scope.collection_path().is_some() {
            let buckets = (total / BUCKET_DOCUMENTS).clamp(1, MAX_BUCKETS) as usize;
            self.warehouse.split_range(table, tenant, &PathRange::all(), buckets).await?
        } else {
            Vec::new()
        };
        tracing::debug!(total, total_millis, cuts = cuts.len(), split_millis = timer.elapsed().as_millis() as u64 - total_millis, "incremental: the tenant cut into buckets");
        Ok(TenantCut { total, cuts })
    }

    /// The source's `count()` of each range, [`SOURCE_CONCURRENCY`] at a time.
    async fn source_counts(&self, scope: &SourceScope, ranges: &[PathRange]) -> Result<Vec<u64>, StoreError> {
        let timer = std::time::Instant::now();
        // Collected first: a stream over a closure is not `Send` for every lifetime,
        // which the functions' handlers need.
        let counts: Vec<_> = ranges.iter().map(|range| self.source.count_range(scope, range)).collect();
        let counted: Vec<u64> = futures::stream::iter(counts).buffered(SOURCE_CONCURRENCY).try_collect().await?;
        tracing::debug!(ranges = ranges.len(), millis = timer.elapsed().as_millis() as u64, "incremental: the source counted");
        Ok(counted)
    }

    /// Step 2: source `count()` against the current table's live count per range,
    /// bisecting ranges that disagree down to leaves read from both sides. The first
    /// level's source counts come counted (`first`, beside step 1).
    async fn compare_counts(
        &self,
        route: &Route,
        tenant: &str,
        scope: &SourceScope,
        tenant_cut: &TenantCut,
        first: (Vec<Node>, Vec<u64>),
        out: &mut IncrementalFind,
    ) -> Result<(), StoreError> {
        let table = &route.table;
        // What step 1 found changes the counts it expects: a missing document is in
        // the source's count and (after its repair) the warehouse's; an orphan the reverse.
        let adjustments: Vec<(String, i64)> = out
            .found
            .iter()
            .filter_map(|(_, d)| match d.kind {
                DifferenceKind::Missing => Some((d.doc_path.clone(), 1)),
                DifferenceKind::Orphan => Some((d.doc_path.clone(), -1)),
                DifferenceKind::Different => None,
            })
            .collect();

        let (mut level, mut counted) = (first.0, Some(first.1));
        let mut leaves: Vec<PathRange> = Vec::new();
        while !level.is_empty() {
            let ranges: Vec<PathRange> = level.iter().map(|node| tenant_cut.range(*node)).collect();
            let timer = std::time::Instant::now();
            let derived_counts = self.warehouse.current_range_counts(table, tenant, &ranges).await?;
            tracing::debug!(ranges = ranges.len(), millis = timer.elapsed().as_millis() as u64, "incremental: the current table counted");
            let source_counts = match counted.take() {
                Some(counts) => counts,
                None => self.source_counts(scope, &ranges).await?,
            };
            let mut next = Vec::new();
            for ((node, range), (source, derived)) in level.iter().zip(&ranges).zip(source_counts.into_iter().zip(derived_counts)) {
                out.cost.count_query(source);
                out.ranges_counted += 1;
                let adjust: i64 = adjustments.iter().filter(|(path, _)| range.contains(path)).map(|(_, n)| n).sum();
                if source as i64 == derived as i64 + adjust {
                    continue;
                }
                if node.to - node.from == 1 || source <= LEAF_DOCUMENTS {
                    leaves.push(range.clone());
                } else {
                    next.extend(children(*node, SPLIT_PARTS));
                }
            }
            level = next;
        }
        if leaves.is_empty() {
            return Ok(());
        }
        leaves.sort_by(|a, b| a.start.cmp(&b.start));
        out.leaves_read += leaves.len() as u64;
        // Both sides of every leaf, in path order (leaves are disjoint and ascending).
        let reads: Vec<futures::future::BoxFuture<'_, Result<(Timestamp, Vec<DocState>), StoreError>>> = leaves
            .iter()
            .map(|range| {
                async move {
                    let scan = self.source.scan_states_in(scope, range).await?;
                    let states: Vec<DocState> = scan.items.try_collect().await?;
                    Ok((scan.read_time, states))
                }
                .boxed()
            })
            .collect();
        let source_leaves: Vec<(Timestamp, Vec<DocState>)> = futures::stream::iter(reads).buffered(SOURCE_CONCURRENCY).try_collect().await?;
        let read_time = source_leaves.iter().map(|(t, _)| *t).min().expect("at least one leaf");
        out.saw(read_time);
        let mut source_states = Vec::new();
        for (_, states) in source_leaves {
            out.cost.docs_read(states.len() as u64);
            out.source_docs += states.len() as u64;
            source_states.extend(states.into_iter().filter(|s| self.config.routes_to(&s.doc_path, table)));
        }
        let timer = std::time::Instant::now();
        let derived_states: Vec<DocState> = self.warehouse.latest_states_in(table, tenant, &leaves).await?.items.try_collect().await?;
        tracing::debug!(leaves = leaves.len(), millis = timer.elapsed().as_millis() as u64, "incremental: the leaves' latest states read");
        out.derived_rows += derived_states.len() as u64;
        out.judge(source_states, derived_states, read_time).await
    }
}

/// A tenant's live documents in the current table, and the cut points of its fine
/// buckets (none for a scope of several collections).
struct TenantCut {
    total: u64,
    cuts: Vec<String>,
}

impl TenantCut {
    /// The bisection's first level: the whole tenant in [`FIRST_SPLIT_PARTS`] nodes.
    fn first_level(&self) -> Vec<Node> {
        children(Node { from: 0, to: self.cuts.len() + 1 }, FIRST_SPLIT_PARTS)
    }

    /// The paths of `node`'s buckets.
    fn range(&self, node: Node) -> PathRange {
        let start = (node.from > 0).then(|| self.cuts[node.from - 1].clone());
        let end = (node.to <= self.cuts.len()).then(|| self.cuts[node.to - 1].clone());
        PathRange::new(start, end)
    }
}

/// A source document's state, as the warehouse's are compared with it.
fn state_of(document: &Document) -> DocState {
    DocState::from_source(document.path.clone(), document.update_time.as_micros(), content_hash(&document.fields))
}

/// A node's children: up to `parts` nodes of about equal numbers of buckets.
fn children(node: Node, parts: usize) -> Vec<Node> {
    let width = node.to - node.from;
    let parts = width.min(parts);
    let mut out = Vec::with_capacity(parts);
    let mut from = node.from;
    for part in 0..parts {
        let to = node.from + width * (part + 1) / parts;
        if to > from {
            out.push(Node { from, to });
            from = to;
        }
    }
    out
}

/// Paths of a tenant's open errors under `route` (for step 1), sorted.
pub(crate) fn open_paths_in<'a>(paths: impl Iterator<Item = &'a String>, scope: &SourceScope) -> Vec<String> {
    let set: BTreeSet<&String> = paths.filter(|p| scope.matches(p)).collect();
    set.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_cover_their_parent_exactly() {
        for (width, split) in [1usize, 2, 31, 32, 33, 1000, 1025, 65_537].into_iter().flat_map(|w| [(w, SPLIT_PARTS), (w, FIRST_SPLIT_PARTS)]) {
            let node = Node { from: 5, to: 5 + width };
            let parts = children(node, split);
            assert!(parts.len() <= split && parts.len() == width.min(split), "{width} in {split}: {}", parts.len());
            assert_eq!(parts.first().unwrap().from, node.from);
            assert_eq!(parts.last().unwrap().to, node.to);
            assert!(parts.windows(2).all(|w| w[0].to == w[1].from && w[0].from < w[0].to));
        }
    }
}
