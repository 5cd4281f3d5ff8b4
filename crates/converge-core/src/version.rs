//! Row versions and the order that picks the winner among a document's rows.
//!
//! A version is the source's own commit time in microseconds since the epoch, never
//! the wall clock of the function that wrote the row (DESIGN.md, "The changelog").
//! Among the rows of one document the winner is the greatest [`RowOrder`]: the
//! highest version; at equal versions a delete beats a write; then the greatest
//! event id. That makes the latest view a pure function of the *set* of rows, so
//! delivery order, duplicates and retries cannot change it. The warehouse views pick
//! the greatest (version, is_deleted) in SQL; rows that tie on it carry one state
//! (a redelivery, a rebuild of an unchanged document), so the event id only decides
//! which of identical states is shown.

use std::cmp::Ordering;

use crate::value::Timestamp;

/// Commit time of a row's source state, in microseconds since the Unix epoch.
pub type Version = i64;

/// The version of a tombstone: the later of the delete event's time and the deleted
/// document's last `update_time`. The event time alone may be coarser than the
/// document's timestamps (whole seconds from the Firestore emulator), and a tombstone
/// must never sort before the version it deletes.
pub fn delete_version(event_time: Timestamp, last_update_time: Option<Timestamp>) -> Version {
    let event = event_time.as_micros();
    last_update_time.map_or(event, |t| event.max(t.as_micros()))
}

/// The sort key of a changelog row within its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowOrder<'a> {
    pub version: Version,
    pub is_deleted: bool,
    pub event_id: &'a str,
}

impl Ord for RowOrder<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.version
            .cmp(&other.version)
            .then(self.is_deleted.cmp(&other.is_deleted))
            .then_with(|| self.event_id.cmp(other.event_id))
    }
}

impl PartialOrd for RowOrder<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let write = RowOrder { version: 5, is_deleted: false, event_id: "zzz" };
        let delete = RowOrder { version: 5, is_deleted: true, event_id: "aaa" };
        assert!(delete > write);
        let later_write = RowOrder { version: 6, is_deleted: false, event_id: "a" };
        assert!(later_write > delete);
    }
}
