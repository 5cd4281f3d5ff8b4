//! Incremental reconciliation: a run whose cost follows the change, not the size.
//!
//! # What Firestore offers, and what was chosen
//!
//! Firestore queries cannot filter on a document's `update_time`, Listen resume tokens
//! older than 30 minutes are billed as a fresh query, and a read at a past `read_time`
//! reaches back one hour (7 days with point-in-time recovery) — none of them lists the
//! writes and deletes of a day. Two things it does offer cheaply:
//! - a query on an ordinary, indexed field, billed per document returned: with an
//!   **app-maintained change field** (a timestamp every write sets, ideally
//!   `FieldValue.serverTimestamp()`, configured per route as `change_field`),
//!   `where change_field >= since` returns exactly the documents written since;
//! - **`count()` over `__name__` ranges**, billed one read per 1,000 index entries
//!   (<https://cloud.google.com/firestore/pricing>, "Aggregation queries"): a delete
//!   leaves no document to query, but it leaves a range with one document fewer.
//!
//! # One incremental run, per route and tenant
//!
//! 1. **Writes**: the documents whose change field is at or after the tenant's last
//!    verified point minus [`CHANGE_FIELD_OVERLAP`], plus every document an open sync
//!    error names, are compared with their latest states in the warehouse: missing and
//!    different documents among them are found exactly as a full run finds them.
//! 2. **Deletes (and anything else that changes a count)**: the tenant's path space is
//!    split into ranges (paths chosen from the current table); for each range the
//!    source's `count()` is compared with the current table's live count (after the
//!    run's own refresh), corrected for step 1's missing documents. A range whose counts
//!    disagree is split again and recounted; once it holds at most [`LEAF_DOCUMENTS`]
//!    documents its states are read from both sides and merged like a full run's. This
//!    finds orphans (a delete the event stream lost; a live row for a document the
//!    source never had) and missing documents among unchanged ones.
//! 3. A run with no refusal and no failed repair records its read time as the tenant's
//!    new **verified point** ([`VerifiedPoint`]); so does every such full run.
//!
//! A nested route (more than one collection per tenant) is counted whole: Firestore
//! orders `__name__` segment by segment, not in the byte order of whole paths that the
//! warehouse's ranges follow, so its only range is the whole scope, and a disagreement
//! reads the tenant's states in full.
//!
//! # What only a full run sees
//!
//! - a document whose change field was not updated by a write (an app path that forgot
//!   it, a field set by a client clock further behind than the overlap), when its
//!   count is unchanged: different or missing documents without a newer change field;
//! - a warehouse row corrupted for a document nobody touched (another content hash,
//!   another update time): counts do not change;
//! - drift that cancels in a count: an orphan and an old missing document in the same
//!   range at the same time;
//! - a route without a change field (its incremental run is a full one, said so).
//!
//! So the full run stays: weekly by default on its own schedule, and on demand
//! (`converge reconcile --mode full`). Orphans are found whatever the verified point:
//! counts cover every document each run.

use serde::{Deserialize, Serialize};

use crate::value::Timestamp;

/// How far before the last verified point the change field is read from: covers a
/// change field set from a client's clock that runs behind the commit, and commits in
/// flight while the verified run read.
pub const CHANGE_FIELD_OVERLAP: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// A range whose counts disagree is read in full once the source holds at most this
/// many documents in it; larger ones are split again (reading 64 documents costs 64
/// reads, splitting costs one `count()` read per part).
pub const LEAF_DOCUMENTS: u64 = 64;

/// The finest ranges a tenant is cut into hold about this many documents (fewer cuts
/// for a very large tenant: see the reconciler's bucket cap).
pub const BUCKET_DOCUMENTS: u64 = 32;

/// At most this many fine buckets per tenant (the bisection's finest ranges): a larger
/// tenant's buckets hold more than [`BUCKET_DOCUMENTS`] each. Their cut points are held
/// in memory by a run (~40 bytes each), and the embedded warehouse keeps a live count
/// per bucket.
pub const MAX_BUCKETS: u64 = 1 << 16;

/// How many parts a disagreeing range is split into per level.
pub const SPLIT_PARTS: usize = 32;

/// How many parts the whole tenant is cut into at the first level: [`SPLIT_PARTS`]
/// squared. Drift spread over a tenant makes nearly every one of 32 parts disagree, so
/// a 32-way first level is followed by a second that counts the whole tenant again;
/// starting at 1,024 counts it once (at 10,000,000 documents a whole count costs ~0.5 s
/// on the embedded source and ~0.3 s in DuckDB), for at most 1,024 `count()` queries.
pub const FIRST_SPLIT_PARTS: usize = SPLIT_PARTS * SPLIT_PARTS;

/// Which reconcile a run is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileMode {
    /// Every source document read and compared (the nightly default before issue 18;
    /// now weekly and on demand).
    #[default]
    Full,
    /// What may have changed since the last verified point (see the module docs).
    Incremental,
}

impl ReconcileMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileMode::Full => "full",
            ReconcileMode::Incremental => "incremental",
        }
    }
}

impl std::str::FromStr for ReconcileMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "full" => Ok(ReconcileMode::Full),
            "incremental" => Ok(ReconcileMode::Incremental),
            other => Err(format!("unknown reconcile mode {other:?}: expected `full` or `incremental`")),
        }
    }
}

impl std::fmt::Display for ReconcileMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Paths `start <= path < end` in byte order of the whole path (the order of
/// `ORDER BY doc_path` and of [`crate::SourceStore::scan_states`]); `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathRange {
    pub start: Option<String>,
    pub end: Option<String>,
}

impl PathRange {
    /// Every path.
    pub fn all() -> Self {
        Self::default()
    }

    pub fn new(start: Option<String>, end: Option<String>) -> Self {
        Self { start, end }
    }

    pub fn is_all(&self) -> bool {
        self.start.is_none() && self.end.is_none()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.start.as_deref().is_none_or(|start| path >= start) && self.end.as_deref().is_none_or(|end| path < end)
    }

    /// The range cut at `cuts` (ascending, each inside the range): `cuts.len() + 1`
    /// adjacent ranges covering exactly this one.
    pub fn split_at(&self, cuts: &[String]) -> Vec<PathRange> {
        let mut inside: Vec<&String> = cuts.iter().filter(|cut| self.contains(cut) && Some(cut.as_str()) != self.start.as_deref()).collect();
        inside.dedup();
        let mut bounds: Vec<Option<String>> = Vec::with_capacity(inside.len() + 2);
        bounds.push(self.start.clone());
        bounds.extend(inside.into_iter().cloned().map(Some));
        bounds.push(self.end.clone());
        bounds.windows(2).map(|pair| PathRange::new(pair[0].clone(), pair[1].clone())).collect()
    }
}

impl std::fmt::Display for PathRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {})", self.start.as_deref().unwrap_or("-∞"), self.end.as_deref().unwrap_or("+∞"))
    }
}

/// A (table, tenant) known equal to the source as of `read_time`: the read time of a
/// reconcile run that found no refusal and no failed repair. An incremental run reads
/// the change field from here (minus the overlap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedPoint {
    pub table: String,
    pub tenant: String,
    pub read_time: Timestamp,
    pub batch_id: String,
    pub mode: ReconcileMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_covers_the_range_exactly_once() {
        let range = PathRange::new(Some("b".into()), Some("x".into()));
        let parts = range.split_at(&["a".into(), "b".into(), "c".into(), "c".into(), "m".into(), "y".into()]);
        assert_eq!(
            parts,
            vec![
                PathRange::new(Some("b".into()), Some("c".into())),
                PathRange::new(Some("c".into()), Some("m".into())),
                PathRange::new(Some("m".into()), Some("x".into())),
            ]
        );
        for path in ["b", "bz", "c", "l", "m", "w"] {
            assert_eq!(parts.iter().filter(|p| p.contains(path)).count(), 1, "{path}");
        }
        assert_eq!(PathRange::all().split_at(&[]), vec![PathRange::all()]);
    }

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("incremental".parse::<ReconcileMode>(), Ok(ReconcileMode::Incremental));
        assert_eq!(ReconcileMode::Full.to_string(), "full");
        assert!("fast".parse::<ReconcileMode>().unwrap_err().contains("`full` or `incremental`"));
    }
}
