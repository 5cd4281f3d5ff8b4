//! The source's documents against the warehouse's latest states, both streamed in
//! ascending path order, as a merge join: memory stays flat whatever the tenant's size.

use converge_core::drift::{DriftMerge, Judgement, SourceSide};
use converge_core::{DocState, Document, StoreError, Version};
use futures::stream::BoxStream;

/// What the rebuild writes for one document path.
#[derive(Debug, Clone, PartialEq)]
pub enum Rebuilt {
    /// The source has the document: its state, as read.
    Document(Document),
    /// The warehouse shows the document, the source does not have it: a tombstone at
    /// the scan's read time.
    Absent { doc_path: String },
    /// The warehouse's latest state is the source's (same update time and content):
    /// nothing to write, so a rebuild run again writes only what changed since.
    Unchanged,
}

/// The source's documents against the warehouse's latest states, through core's one
/// merge (`converge_core::drift::DriftMerge`, with its read-time guard): derived
/// documents versioned after `read_time` were written after the scan's snapshot (a
/// live create), so the snapshot cannot speak for them and they get no tombstone.
pub struct MergeJoin {
    merge: DriftMerge<Document>,
}

impl MergeJoin {
    pub fn new(
        source: BoxStream<'static, Result<Document, StoreError>>,
        derived: BoxStream<'static, Result<DocState, StoreError>>,
        read_time: Version,
    ) -> Self {
        Self { merge: DriftMerge::new(source, derived, read_time) }
    }

    /// The next item, or `None` at the end of both streams.
    pub async fn next(&mut self) -> Result<Option<Rebuilt>, StoreError> {
        loop {
            let rebuilt = match self.merge.next().await? {
                None => return Ok(None),
                Some(Judgement::Missing(doc) | Judgement::Different { source: doc, .. }) => Rebuilt::Document(doc),
                Some(Judgement::Same(_)) => Rebuilt::Unchanged,
                Some(Judgement::Orphan(state)) => Rebuilt::Absent { doc_path: state.doc_path },
                // A live write after the snapshot: the source's copy (read at the
                // snapshot) is written only if it differs, and loses to the live row by
                // version anyway; a live create gets no tombstone.
                Some(Judgement::InFlight { source: Some(doc), derived }) if doc.matches(&derived) => Rebuilt::Unchanged,
                Some(Judgement::InFlight { source: Some(doc), .. }) => Rebuilt::Document(doc),
                Some(Judgement::InFlight { source: None, .. }) => continue,
            };
            return Ok(Some(rebuilt));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use converge_core::hash::content_hash;
    use converge_core::{Fields, Timestamp};
    use futures::{stream, StreamExt};

    fn doc(path: &str) -> Result<Document, StoreError> {
        Ok(Document { path: path.into(), fields: Fields::new(), create_time: Timestamp::new(1, 0), update_time: Timestamp::new(1, 0) })
    }

    fn state(path: &str, version: Version) -> Result<DocState, StoreError> {
        Ok(DocState { doc_path: path.into(), update_time: version, content_hash: "h".into(), version })
    }

    async fn all(mut merge: MergeJoin) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        while let Some(item) = merge.next().await? {
            out.push(match item {
                Rebuilt::Document(d) => format!("doc {}", d.path),
                Rebuilt::Absent { doc_path } => format!("absent {doc_path}"),
                Rebuilt::Unchanged => "unchanged".into(),
            });
        }
        Ok(out)
    }

    #[tokio::test]
    async fn every_source_document_once_and_tombstones_for_what_only_the_warehouse_has() {
        let source = stream::iter(vec![doc("c/a"), doc("c/c"), doc("c/e")]).boxed();
        let derived = stream::iter(vec![state("c/b", 5), state("c/c", 5), state("c/d", 50), state("c/f", 5)]).boxed();
        let found = all(MergeJoin::new(source, derived, 10)).await.unwrap();
        // c/d was written after the snapshot (version 50 > read time 10): no tombstone.
        assert_eq!(found, ["doc c/a", "absent c/b", "doc c/c", "doc c/e", "absent c/f"]);
    }

    #[tokio::test]
    async fn a_document_whose_latest_state_is_the_sources_is_unchanged() {
        let source = stream::iter(vec![doc("c/a"), doc("c/b")]).boxed();
        let same = DocState::from_source("c/a".into(), 1_000_000, content_hash(&Fields::new()));
        let derived = stream::iter(vec![Ok(same), state("c/b", 1_000_000)]).boxed();
        let found = all(MergeJoin::new(source, derived, 10_000_000)).await.unwrap();
        assert_eq!(found, ["unchanged", "doc c/b"]);
    }

    #[tokio::test]
    async fn empty_sides() {
        let none = || stream::iter(Vec::<Result<Document, StoreError>>::new()).boxed();
        let no_states = || stream::iter(Vec::<Result<DocState, StoreError>>::new()).boxed();
        assert!(all(MergeJoin::new(none(), no_states(), 10)).await.unwrap().is_empty());
        let found = all(MergeJoin::new(none(), stream::iter(vec![state("c/x", 1)]).boxed(), 10)).await.unwrap();
        assert_eq!(found, ["absent c/x"]);
        let found = all(MergeJoin::new(stream::iter(vec![doc("c/x")]).boxed(), no_states(), 10)).await.unwrap();
        assert_eq!(found, ["doc c/x"]);
    }

    #[tokio::test]
    async fn a_failing_stream_fails_the_merge() {
        let source = stream::iter(vec![doc("c/a"), Err(StoreError::retryable("test", "connection reset"))]).boxed();
        let derived = stream::iter(vec![state("c/z", 1)]).boxed();
        assert!(all(MergeJoin::new(source, derived, 10)).await.is_err());
    }
}
