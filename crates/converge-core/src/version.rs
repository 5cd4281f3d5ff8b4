//! Row versions and the one rule that picks the winner among a document's rows.
//!
//! # The rule (ARCHITECTURE.md, "The ordering rule")
//!
//! A row's `version` is the instant, on the source's clock, at which its state was
//! known to hold:
//! - a create or update event: the document's `update_time` (its commit time);
//! - a delete event: [`delete_version`], the later of the event's time and the deleted
//!   document's last `update_time`;
//! - a row read from the source (op `REBUILD` or `REPAIR`, live or tombstone): the read
//!   time of the snapshot it was read at. The document's own `update_time` is kept in
//!   its own column.
//!
//! Among the rows of one document the winner is the greatest [`RowOrder`]:
//! 1. the highest `version`;
//! 2. then a row read from the source beats an event row (a read at `t` saw every
//!    commit up to `t`, so it knows at least as much as an event committed at `t`);
//! 3. then a delete beats a write;
//! 4. then the greatest content hash (rows that tie on everything above and still
//!    differ exist only when a row is wrong; this makes the pick a pure function of the
//!    set of rows, whatever order they arrived in).
//!
//! Why this converges: a reconcile run reads the source at `R` and appends, for every
//! document that differs, a row read at `R' >= R`. Every row already stored for that
//! document was either committed before the read (its version is `<= R'`: the repair
//! wins, by rule 1 or, at `R'` itself, rule 2) or after it (a live write: it must win,
//! and does). Old events redelivered after the repair carry their old versions and
//! lose again. Rows dated after the read cannot come from the event stream: sync
//! quarantines an event dated more than [`MAX_CLOCK_SKEW_MICROS`] after its own clock.
//!
//! As of an instant `t`, a document's state is the winner among its rows with
//! `version <= t`: the latest state the changelog knew to hold at `t` (an event's commit
//! time, a read's snapshot time). A repair at `R` changes the answer only from `R` on:
//! before it, an as-of query shows what the changelog held then, wrong rows included.

use std::cmp::Ordering;

use serde::Serialize;

use crate::value::Timestamp;

/// The instant a row's state was known to hold, in microseconds since the Unix epoch,
/// on the source's clock.
pub type Version = i64;

/// How far past the sync function's own clock an event may be dated before it is
/// quarantined: a row dated later would sort after the reconciler's next read and a
/// repair could not beat it. Firestore commit times and Cloud Run clocks are both
/// kept by Google's time service; a minute is far beyond their drift.
pub const MAX_CLOCK_SKEW_MICROS: i64 = 60_000_000;

/// The version of a tombstone written from a delete event: the later of the event's
/// time and the deleted document's last `update_time`. The event time alone may be
/// coarser than the document's timestamps (whole seconds from the Firestore emulator),
/// and a tombstone must never sort before the version it deletes.
pub fn delete_version(event_time: Timestamp, last_update_time: Option<Timestamp>) -> Version {
    let event = event_time.as_micros();
    last_update_time.map_or(event, |t| event.max(t.as_micros()))
}

/// What a changelog row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Op {
    Create,
    Update,
    Delete,
    Rebuild,
    Repair,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "CREATE",
            Op::Update => "UPDATE",
            Op::Delete => "DELETE",
            Op::Rebuild => "REBUILD",
            Op::Repair => "REPAIR",
        }
    }

    /// The `action` part of a sync error id.
    pub fn action(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Rebuild => "rebuild",
            Op::Repair => "repair",
        }
    }
}

/// Whether rows of `op` were read from the source (rule 2) rather than written from an
/// event.
pub fn is_source_read(op: Op) -> bool {
    SOURCE_READ_OPS.contains(&op)
}

/// The ops whose rows are read from the source, as the SQL views name them.
pub const SOURCE_READ_OPS: [Op; 2] = [Op::Rebuild, Op::Repair];

/// The sort key of a changelog row within its document: greatest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowOrder<'a> {
    pub version: Version,
    pub source_read: bool,
    pub is_deleted: bool,
    /// `None` (a tombstone) sorts below every hash.
    pub content_hash: Option<&'a str>,
}

impl Ord for RowOrder<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version
            .cmp(&other.version)
            .then(self.source_read.cmp(&other.source_read))
            .then(self.is_deleted.cmp(&other.is_deleted))
            .then_with(|| self.content_hash.cmp(&other.content_hash))
    }
}

impl PartialOrd for RowOrder<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `'REBUILD', 'REPAIR'`: the SQL list of [`SOURCE_READ_OPS`], for the views that
/// render rule 2 (`op IN (…)`). Each warehouse's view is checked against [`RowOrder`]
/// by the warehouse contract suite's property test.
pub fn source_read_ops_sql() -> String {
    SOURCE_READ_OPS.iter().map(|op| format!("'{}'", op.as_str())).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(version: Version, source_read: bool, is_deleted: bool, content_hash: Option<&str>) -> RowOrder<'_> {
        RowOrder { version, source_read, is_deleted, content_hash }
    }

    #[test]
    fn delete_version_never_sorts_before_the_deleted_state() {
        let coarse_event = Timestamp::new(100, 0);
        let last_write = Timestamp::new(100, 750_000_000);
        assert_eq!(delete_version(coarse_event, Some(last_write)), last_write.as_micros());
        assert_eq!(delete_version(Timestamp::new(101, 0), Some(last_write)), 101_000_000);
        assert_eq!(delete_version(coarse_event, None), 100_000_000);
    }

    #[test]
    fn a_delete_beats_a_write_at_the_same_instant() {
        let write = order(5, false, false, Some("zzz"));
        let delete = order(5, true, true, None);
        assert!(order(5, false, true, None) > write);
        assert!(delete > write);
        assert!(order(6, false, false, Some("a")) > delete);
    }

    #[test]
    fn a_source_read_beats_an_event_at_the_same_instant() {
        // A repair read at the instant of a wrong row (or a wrong tombstone) wins.
        assert!(order(5, true, false, Some("a")) > order(5, false, false, Some("z")));
        assert!(order(5, true, false, Some("a")) > order(5, false, true, None));
        // A live write after the read wins over the read.
        assert!(order(6, false, false, Some("a")) > order(5, true, false, Some("z")));
    }

    #[test]
    fn rows_that_tie_otherwise_are_ordered_by_content() {
        assert!(order(5, false, false, Some("b")) > order(5, false, false, Some("a")));
        assert!(order(5, false, false, Some("a")) > order(5, false, false, None));
    }

    #[test]
    fn the_sql_list_names_the_source_read_ops() {
        assert_eq!(source_read_ops_sql(), "'REBUILD', 'REPAIR'");
        assert!(is_source_read(Op::Repair) && is_source_read(Op::Rebuild));
        assert!(!is_source_read(Op::Delete) && !is_source_read(Op::Create) && !is_source_read(Op::Update));
    }
}
