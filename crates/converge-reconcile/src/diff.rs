//! The streaming merge of one tenant's source states and latest-view states, both in
//! ascending path order. Memory holds the differences only, never a tenant.

use converge_core::{DocState, StoreError, Version};
use futures::{Stream, StreamExt};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    Missing,
    Different,
    Orphan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub kind: DifferenceKind,
    pub doc_path: String,
}

/// What one merge found, and how much it read.
#[derive(Debug, Default)]
pub struct Diff {
    pub differences: Vec<Difference>,
    pub source_docs: u64,
    pub derived_rows: u64,
    /// Derived states newer than the snapshot (written while the run scanned): not
    /// judged against a source that predates them.
    pub in_flight: u64,
}

/// Merges the two sorted streams. `read_time` is the source snapshot's: a derived
/// state versioned after it reflects a write the snapshot cannot see, so it is
/// neither "different" nor "orphan" in this run.
pub async fn diff<S, D>(source: S, derived: D, read_time: Version) -> Result<Diff, StoreError>
where
    S: Stream<Item = Result<DocState, StoreError>> + Unpin,
    D: Stream<Item = Result<DocState, StoreError>> + Unpin,
{
    let mut source = source.fuse();
    let mut derived = derived.fuse();
    let mut out = Diff::default();
    let mut s = source.next().await.transpose()?;
    let mut d = derived.next().await.transpose()?;
    loop {
        let ordering = match (&s, &d) {
            (None, None) => return Ok(out),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => a.doc_path.cmp(&b.doc_path),
        };
        match ordering {
            std::cmp::Ordering::Less => {
                let state = s.take().expect("compared");
                out.source_docs += 1;
                out.differences.push(Difference { kind: DifferenceKind::Missing, doc_path: state.doc_path });
                s = source.next().await.transpose()?;
            }
            std::cmp::Ordering::Greater => {
                let state = d.take().expect("compared");
                out.derived_rows += 1;
                if state.version > read_time {
                    out.in_flight += 1;
                } else {
                    out.differences.push(Difference { kind: DifferenceKind::Orphan, doc_path: state.doc_path });
                }
                d = derived.next().await.transpose()?;
            }
            std::cmp::Ordering::Equal => {
                let (a, b) = (s.take().expect("compared"), d.take().expect("compared"));
                out.source_docs += 1;
                out.derived_rows += 1;
                if b.version > read_time {
                    out.in_flight += 1;
                } else if !a.same_state(&b) {
                    out.differences.push(Difference { kind: DifferenceKind::Different, doc_path: a.doc_path });
                }
                s = source.next().await.transpose()?;
                d = derived.next().await.transpose()?;
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

    fn kinds(diff: &Diff) -> Vec<(DifferenceKind, &str)> {
        diff.differences.iter().map(|d| (d.kind, d.doc_path.as_str())).collect()
    }

    #[tokio::test]
    async fn every_kind_is_found_and_later_writes_are_not_judged() {
        let source = stream::iter(vec![st("a", 1, "x"), st("b", 2, "y"), st("c", 3, "z"), st("e", 5, "e")]);
        let derived = stream::iter(vec![st("b", 1, "y"), st("c", 3, "z"), st("d", 1, "w"), st("e", 99, "new"), st("f", 98, "new")]);
        let diff = diff(source, derived, 50).await.unwrap();
        use DifferenceKind::*;
        assert_eq!(kinds(&diff), vec![(Missing, "a"), (Different, "b"), (Orphan, "d")]);
        assert_eq!((diff.source_docs, diff.derived_rows, diff.in_flight), (4, 5, 2));
    }

    #[tokio::test]
    async fn a_content_change_at_the_same_version_is_different() {
        let diff = diff(stream::iter(vec![st("a", 1, "x")]), stream::iter(vec![st("a", 1, "y")]), 10).await.unwrap();
        assert_eq!(kinds(&diff), vec![(DifferenceKind::Different, "a")]);
    }

    #[tokio::test]
    async fn a_stream_error_fails_the_diff() {
        let broken = stream::iter(vec![st("a", 1, "x"), Err(StoreError::retryable("test", "scan broke"))]);
        assert!(diff(broken, stream::iter(vec![st("a", 1, "x"), st("b", 1, "x")]), 10).await.is_err());
    }
}
