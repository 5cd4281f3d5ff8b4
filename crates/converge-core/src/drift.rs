//! Comparing source and derived data: a merge of two path-ordered streams of
//! [`DocState`], classifying every difference.

use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::config::Route;
use crate::error::{ErrorKind, StoreError};
use crate::store::{DocState, SourceStore, Warehouse};

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
/// latest view, document by document, streaming both sides.
pub async fn compare_tenant(source: &dyn SourceStore, warehouse: &dyn Warehouse, route: &Route, tenant: &str) -> Result<DriftReport, StoreError> {
    let collection = route.pattern.collection_path(tenant).ok_or_else(|| {
        StoreError::new(
            ErrorKind::InvalidInput,
            "drift",
            format!("route `{}` has wildcards besides {{tenant}} and {{doc}}; its documents cannot be listed per tenant", route.pattern.as_str()),
        )
    })?;
    let source_scan = source.scan_states(&collection).await?;
    let derived_scan = warehouse.latest_states(&route.table, tenant).await?;
    compare(source_scan.items, derived_scan.items).await
}

/// Merges two streams sorted by `doc_path` (ascending, no duplicates).
pub async fn compare<S, D>(source: S, derived: D) -> Result<DriftReport, StoreError>
where
    S: Stream<Item = Result<DocState, StoreError>> + Unpin,
    D: Stream<Item = Result<DocState, StoreError>> + Unpin,
{
    let mut source = source.peekable();
    let mut derived = derived.peekable();
    let mut report = DriftReport::default();
    loop {
        let ordering = match (std::pin::Pin::new(&mut source).peek().await, std::pin::Pin::new(&mut derived).peek().await) {
            (None, None) => return Ok(report),
            (Some(Err(_)), _) => return Err(source.next().await.expect("peeked").expect_err("peeked an error")),
            (_, Some(Err(_))) => return Err(derived.next().await.expect("peeked").expect_err("peeked an error")),
            (Some(Ok(_)), None) => std::cmp::Ordering::Less,
            (None, Some(Ok(_))) => std::cmp::Ordering::Greater,
            (Some(Ok(s)), Some(Ok(d))) => s.doc_path.cmp(&d.doc_path),
        };
        match ordering {
            std::cmp::Ordering::Less => {
                let s = source.next().await.expect("peeked")?;
                report.source_docs += 1;
                report.missing.push(s.doc_path);
            }
            std::cmp::Ordering::Greater => {
                let d = derived.next().await.expect("peeked")?;
                report.derived_docs += 1;
                report.orphan.push(d.doc_path);
            }
            std::cmp::Ordering::Equal => {
                let s = source.next().await.expect("peeked")?;
                let d = derived.next().await.expect("peeked")?;
                report.source_docs += 1;
                report.derived_docs += 1;
                if !s.same_state(&d) {
                    report.different.push(s.doc_path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn st(path: &str, version: i64, hash: &str) -> Result<DocState, StoreError> {
        Ok(DocState::from_source(path.into(), version, hash.into()))
    }

    #[test]
    fn classifies_every_kind() {
        let source = stream::iter(vec![st("a", 1, "x"), st("b", 2, "y"), st("c", 3, "z")]);
        let derived = stream::iter(vec![st("b", 1, "y"), st("c", 3, "z"), st("d", 1, "w")]);
        let report = futures::executor::block_on(compare(source, derived)).unwrap();
        assert_eq!(report.missing, vec!["a"]);
        assert_eq!(report.different, vec!["b"]);
        assert_eq!(report.orphan, vec!["d"]);
        assert_eq!((report.source_docs, report.derived_docs), (3, 3));
    }
}
