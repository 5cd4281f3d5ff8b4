//! Comparing source and derived data: the one merge of two path-ordered streams
//! ([`DriftMerge`]), judging every document path with the read-time guard, and what
//! is built on it — the reconciler's [`diff`], the strict [`compare`] of the demo and
//! the tests, the rebuild's merge join — and the mass-tombstone guard.

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::config::Route;
use crate::error::{ErrorKind, StoreError};
use crate::hash::content_hash;
use crate::store::{DocState, SourceStore, Warehouse};
use crate::value::Document;
use crate::version::Version;

/// Differences between the source and the warehouse for one tenant and table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriftReport {
    pub source_docs: u64,
    pub derived_docs: u64,
    /// In the source, not in the latest view (a dropped write).
    pub missing: Vec<String>,
    /// In both, with another version or content (a partial or failed edit).
    pub different: Vec<String>,
    /// In the latest view, gone from the source (a delete that never propagated).
    pub orphan: Vec<String>,
}

impl DriftReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.different.is_empty() && self.orphan.is_empty()
    }

    pub fn total(&self) -> usize {
        self.missing.len() + self.different.len() + self.orphan.len()
    }
}

/// Refuses to tombstone a large share of a tenant's documents in one run. A source
/// scan that comes back empty or short (a wrong project, a misconfigured route, a bug)
/// looks exactly like every document having been deleted; tombstoning on its word
/// would empty the warehouse. Such a tenant's orphans are reported, not tombstoned,
/// and the run is recorded as `refused`; raise the share to tombstone them on purpose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrphanGuard {
    /// The largest share (0.0–1.0) of a tenant's documents in the warehouse that one
    /// run may tombstone.
    pub max_share: f64,
    /// Tenants with at most this many orphans are never refused (on a tenant of ten
    /// documents, one delete is 10%).
    pub min_orphans: u64,
}

impl Default for OrphanGuard {
    fn default() -> Self {
        Self { max_share: 0.10, min_orphans: 10 }
    }
}

impl OrphanGuard {
    /// Whether tombstoning `orphans` of `derived_docs` documents is refused.
    pub fn refuses(&self, orphans: u64, derived_docs: u64) -> bool {
        orphans > self.min_orphans && orphans as f64 > self.max_share * derived_docs as f64
    }

    /// How to override a refusal, for reports and logs.
    pub fn override_hint(&self) -> String {
        format!(
            "orphans above {:.0}% of the tenant's documents are not tombstoned: check that the source scan reads the right project, database and route; to tombstone them on purpose, run again with --max-orphan-share 1.0 (or \"max_orphan_share\": 1.0 in the request)",
            self.max_share * 100.0
        )
    }
}

/// Compares one tenant's documents under `route` in the source with the warehouse's
/// latest view, document by document, streaming both sides. Strict: no read-time
/// guard, so every state the view shows must match the source's — the proof of
/// equality the demo and the tests make at quiescence, where nothing is in flight.
pub async fn compare_tenant(source: &dyn SourceStore, warehouse: &dyn Warehouse, route: &Route, tenant: &str) -> Result<DriftReport, StoreError> {
    let scope = route
        .pattern
        .tenant_scope(tenant)
        .map_err(|problem| StoreError::new(ErrorKind::InvalidInput, "drift", format!("tenant {tenant:?} is not a document id: {problem}")))?;
    let source_scan = source.scan_states(&scope).await?;
    let derived_scan = warehouse.latest_states(&route.table, tenant).await?;
    compare(source_scan.items, derived_scan.items).await
}

/// Merges two streams sorted by `doc_path` (ascending, no duplicates), strictly (see
/// [`compare_tenant`]).
pub async fn compare<S, D>(source: S, derived: D) -> Result<DriftReport, StoreError>
where
    S: Stream<Item = Result<DocState, StoreError>> + Send + 'static,
    D: Stream<Item = Result<DocState, StoreError>> + Send + 'static,
{
    let found = diff(source, derived, Version::MAX).await?;
    let mut report = DriftReport { source_docs: found.source_docs, derived_docs: found.derived_rows, ..DriftReport::default() };
    for difference in found.differences {
        match difference.kind {
            DifferenceKind::Missing => report.missing.push(difference.doc_path),
            DifferenceKind::Different => report.different.push(difference.doc_path),
            DifferenceKind::Orphan => report.orphan.push(difference.doc_path),
        }
    }
    Ok(report)
}

/// A kind of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// In the source, not in the latest view.
    Missing,
    /// In both, with another update time or content.
    Different,
    /// In the latest view, not in the source.
    Orphan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub kind: DifferenceKind,
    pub doc_path: String,
}

/// What one merge found, and how much it read. Memory holds the differences only,
/// never a tenant.
#[derive(Debug, Default)]
pub struct Diff {
    pub differences: Vec<Difference>,
    pub source_docs: u64,
    pub derived_rows: u64,
    /// Derived states newer than the source's read time (written while the run read):
    /// not judged against a source that predates them.
    pub in_flight: u64,
}

/// The reconciler's merge: every [`Judgement`] of the two sorted streams, counted.
pub async fn diff<S, D>(source: S, derived: D, read_time: Version) -> Result<Diff, StoreError>
where
    S: Stream<Item = Result<DocState, StoreError>> + Send + 'static,
    D: Stream<Item = Result<DocState, StoreError>> + Send + 'static,
{
    let mut merge = DriftMerge::new(source.boxed(), derived.boxed(), read_time);
    let mut out = Diff::default();
    while let Some(judgement) = merge.next().await? {
        let (kind, doc_path) = match judgement {
            Judgement::Same(_) => {
                out.source_docs += 1;
                out.derived_rows += 1;
                continue;
            }
            Judgement::InFlight { source, .. } => {
                out.source_docs += u64::from(source.is_some());
                out.derived_rows += 1;
                out.in_flight += 1;
                continue;
            }
            Judgement::Missing(state) => {
                out.source_docs += 1;
                (DifferenceKind::Missing, state.doc_path)
            }
            Judgement::Different { source, .. } => {
                out.source_docs += 1;
                out.derived_rows += 1;
                (DifferenceKind::Different, source.doc_path)
            }
            Judgement::Orphan(derived) => {
                out.derived_rows += 1;
                (DifferenceKind::Orphan, derived.doc_path)
            }
        };
        out.differences.push(Difference { kind, doc_path });
    }
    Ok(out)
}

/// What the source side of a merge offers: its path, and whether a derived state is
/// its state. Implemented by [`DocState`] (the reconciler compares states) and
/// [`Document`] (a rebuild needs the whole document to write it).
pub trait SourceSide {
    fn doc_path(&self) -> &str;
    /// Same update time and content (`DocState::same_state`).
    fn matches(&self, derived: &DocState) -> bool;
}

impl SourceSide for DocState {
    fn doc_path(&self) -> &str {
        &self.doc_path
    }

    fn matches(&self, derived: &DocState) -> bool {
        self.same_state(derived)
    }
}

impl SourceSide for Document {
    fn doc_path(&self) -> &str {
        &self.path
    }

    fn matches(&self, derived: &DocState) -> bool {
        DocState::from_source(String::new(), self.update_time.as_micros(), content_hash(&self.fields)).same_state(derived)
    }
}

/// One document path, judged. The read-time guard: a derived state versioned after
/// the source's read time reflects a write the source read cannot have seen, so it is
/// [`Judgement::InFlight`], neither different nor orphan (ARCHITECTURE.md, "The
/// ordering rule").
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement<S> {
    /// In the source only.
    Missing(S),
    /// In both, and the derived state is the source's.
    Same(S),
    /// In both, with another state, versioned at or before the read time.
    Different { source: S, derived: DocState },
    /// In the warehouse only, versioned at or before the read time.
    Orphan(DocState),
    /// The derived state is versioned after the read time; `source` is the source's
    /// side, if it has the document.
    InFlight { source: Option<S>, derived: DocState },
}

/// The one merge of a source's states (or documents) with the warehouse's latest
/// states, both streamed in ascending `doc_path` order with no duplicates: memory stays
/// flat whatever the tenant's size. Used by the reconciler ([`diff`]), the rebuild and
/// the strict [`compare`].
pub struct DriftMerge<S> {
    source: BoxStream<'static, Result<S, StoreError>>,
    derived: BoxStream<'static, Result<DocState, StoreError>>,
    read_time: Version,
    next_source: Option<S>,
    next_derived: Option<DocState>,
    started: bool,
}

impl<S: SourceSide> DriftMerge<S> {
    pub fn new(source: BoxStream<'static, Result<S, StoreError>>, derived: BoxStream<'static, Result<DocState, StoreError>>, read_time: Version) -> Self {
        Self { source, derived, read_time, next_source: None, next_derived: None, started: false }
    }

    /// The next path's judgement, or `None` at the end of both streams. An error from
    /// either stream ends the merge with that error.
    pub async fn next(&mut self) -> Result<Option<Judgement<S>>, StoreError> {
        if !self.started {
            self.started = true;
            self.next_source = self.source.next().await.transpose()?;
            self.next_derived = self.derived.next().await.transpose()?;
        }
        let order = match (&self.next_source, &self.next_derived) {
            (None, None) => return Ok(None),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(source), Some(derived)) => source.doc_path().cmp(derived.doc_path.as_str()),
        };
        let source = match order {
            std::cmp::Ordering::Greater => None,
            _ => {
                let taken = self.next_source.take();
                self.next_source = self.source.next().await.transpose()?;
                taken
            }
        };
        let derived = match order {
            std::cmp::Ordering::Less => None,
            _ => {
                let taken = self.next_derived.take();
                self.next_derived = self.derived.next().await.transpose()?;
                taken
            }
        };
        Ok(Some(match (source, derived) {
            (Some(source), None) => Judgement::Missing(source),
            (source, Some(derived)) if derived.version > self.read_time => Judgement::InFlight { source, derived },
            (Some(source), Some(derived)) if source.matches(&derived) => Judgement::Same(source),
            (Some(source), Some(derived)) => Judgement::Different { source, derived },
            (None, Some(derived)) => Judgement::Orphan(derived),
            (None, None) => unreachable!("one side or both are taken"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::stream;

    fn st(path: &str, version: i64, hash: &str) -> Result<DocState, StoreError> {
        Ok(DocState::from_source(path.into(), version, hash.into()))
    }

    fn kinds(diff: &Diff) -> Vec<(DifferenceKind, &str)> {
        diff.differences.iter().map(|d| (d.kind, d.doc_path.as_str())).collect()
    }

    #[test]
    fn every_kind_is_found_and_later_writes_are_not_judged() {
        let source = stream::iter(vec![st("a", 1, "x"), st("b", 2, "y"), st("c", 3, "z"), st("e", 5, "e")]);
        let derived = stream::iter(vec![st("b", 1, "y"), st("c", 3, "z"), st("d", 1, "w"), st("e", 99, "new"), st("f", 98, "new")]);
        let diff = block_on(diff(source, derived, 50)).unwrap();
        use DifferenceKind::*;
        assert_eq!(kinds(&diff), vec![(Missing, "a"), (Different, "b"), (Orphan, "d")]);
        assert_eq!((diff.source_docs, diff.derived_rows, diff.in_flight), (4, 5, 2));
    }

    #[test]
    fn a_content_change_at_the_same_version_is_different() {
        let diff = block_on(diff(stream::iter(vec![st("a", 1, "x")]), stream::iter(vec![st("a", 1, "y")]), 10)).unwrap();
        assert_eq!(kinds(&diff), vec![(DifferenceKind::Different, "a")]);
    }

    #[test]
    fn a_stream_error_fails_the_merge() {
        let broken = stream::iter(vec![st("a", 1, "x"), Err(StoreError::retryable("test", "scan broke"))]);
        assert!(block_on(diff(broken, stream::iter(vec![st("a", 1, "x"), st("b", 1, "x")]), 10)).is_err());
        let broken = stream::iter(vec![st("a", 1, "x"), Err(StoreError::retryable("test", "scan broke"))]);
        assert!(block_on(diff(stream::iter(vec![st("a", 1, "x"), st("b", 1, "x")]), broken, 10)).is_err());
    }

    #[test]
    fn documents_are_judged_by_update_time_and_content_hash() {
        let document = |path: &str, amount: f64| Document {
            path: path.into(),
            fields: crate::value::fields_from_json(&serde_json::json!({ "amount": amount })).unwrap(),
            create_time: crate::Timestamp::from_micros(5),
            update_time: crate::Timestamp::from_micros(5),
        };
        let same = DocState::from_source("c/a".into(), 5, content_hash(&document("c/a", 1.0).fields));
        let other = DocState::from_source("c/b".into(), 5, content_hash(&document("c/b", 1.0).fields));
        let source = stream::iter(vec![Ok(document("c/a", 1.0)), Ok(document("c/b", 2.0))]).boxed();
        let mut merge = DriftMerge::new(source, stream::iter(vec![Ok(same), Ok(other)]).boxed(), 10);
        assert!(matches!(block_on(merge.next()).unwrap(), Some(Judgement::Same(d)) if d.path == "c/a"));
        assert!(matches!(block_on(merge.next()).unwrap(), Some(Judgement::Different { source, .. }) if source.path == "c/b"));
        assert!(block_on(merge.next()).unwrap().is_none());
    }

    #[test]
    fn classifies_every_kind() {
        let source = stream::iter(vec![st("a", 1, "x"), st("b", 2, "y"), st("c", 3, "z")]);
        let derived = stream::iter(vec![st("b", 1, "y"), st("c", 3, "z"), st("d", 1, "w")]);
        let report = block_on(compare(source, derived)).unwrap();
        assert_eq!(report.missing, vec!["a"]);
        assert_eq!(report.different, vec!["b"]);
        assert_eq!(report.orphan, vec!["d"]);
        assert_eq!((report.source_docs, report.derived_docs), (3, 3));
    }
}
