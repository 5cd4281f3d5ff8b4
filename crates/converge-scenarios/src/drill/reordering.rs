//! Phase 2, reordering and duplicates: documents changed twice whose events the drill
//! delivers itself, newest first, then the newest again.

use std::collections::HashSet;

use converge_core::{DocWrite, Value};

use crate::bookkeeping_records;

/// How many documents phase 2 changes twice.
pub(crate) fn reorder_count(records: u64) -> u64 {
    (records / 400).clamp(20, 200)
}

/// Phase 2's writes: `n` documents of the large tenant that nothing else touches,
/// created in one commit, then in a second commit updated (even) or deleted (odd).
pub(crate) fn reorder_writes(pattern: &converge_core::PathPattern, n: u64, now: converge_core::Timestamp) -> [Vec<DocWrite>; 2] {
    let path = |i: u64| pattern.document_path("acme", &format!("reorder-{i:04}")).expect("plain pattern");
    let first = (0..n).map(|i| DocWrite::Set { path: path(i), fields: bookkeeping_records::record(9, i, now) }).collect();
    let second = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let mut fields = bookkeeping_records::record(9, i, now);
                fields.insert("amount".into(), Value::Double(1.5 + i as f64));
                DocWrite::Set { path: path(i), fields }
            } else {
                DocWrite::Delete { path: path(i) }
            }
        })
        .collect();
    [first, second]
}

/// The order phase 2 sends the events of documents changed twice in: all of them
/// newest first, so each document's older change arrives after its newer one
/// (reordered), then each document's newest change again (a duplicate).
pub(crate) struct OutOfOrder {
    /// Indices into the events, in sending order.
    pub(crate) sends: Vec<usize>,
    pub(crate) reordered: u64,
    pub(crate) duplicates: u64,
}

impl OutOfOrder {
    /// `events` in commit order; `document` names the document an event changes.
    pub(crate) fn of<E>(events: &[E], document: impl Fn(&E) -> &str) -> Self {
        let mut sends: Vec<usize> = (0..events.len()).rev().collect();
        let mut seen = HashSet::new();
        let mut newest = Vec::new();
        let mut reordered = 0;
        for &index in &sends {
            if seen.insert(document(&events[index])) {
                newest.push(index);
            } else {
                reordered += 1;
            }
        }
        newest.reverse();
        let duplicates = newest.len() as u64;
        sends.extend(newest);
        Self { sends, reordered, duplicates }
    }
}

#[cfg(test)]
mod tests {
    use super::OutOfOrder;

    #[test]
    fn out_of_order_sends_each_newer_change_then_the_older_then_the_newer_again() {
        // Two documents, a and b, each changed twice, in commit order.
        let events = ["a1", "b1", "a2", "b2"];
        let order = OutOfOrder::of(&events, |event| &event[..1]);
        let sent: Vec<&str> = order.sends.iter().map(|index| events[*index]).collect();
        assert_eq!(sent, ["b2", "a2", "b1", "a1", "a2", "b2"]);
        assert_eq!((order.reordered, order.duplicates), (2, 2));
    }
}
