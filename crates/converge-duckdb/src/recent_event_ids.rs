//! A bounded memory of recently appended event ids.
//!
//! Eventarc delivers at least once; a redelivery usually follows its original within
//! minutes. Remembering the last N event ids lets the warehouse skip nearly every
//! duplicate without a per-commit index lookup. It is an optimisation, not the
//! guarantee: a duplicate that slips past (older than the window) is an identical
//! row, and the latest view is a function of the *set* of rows.

use std::collections::{HashSet, VecDeque};

use sha2::{Digest, Sha256};

pub struct RecentEvents {
    capacity: usize,
    /// 128-bit digests: a collision (which would drop a real row) is out of reach.
    members: HashSet<u128>,
    order: VecDeque<u128>,
}

fn digest(event_id: &str) -> u128 {
    let hash = Sha256::digest(event_id.as_bytes());
    u128::from_be_bytes(hash[..16].try_into().expect("16 bytes"))
}

impl RecentEvents {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, members: HashSet::with_capacity(capacity.min(1 << 16)), order: VecDeque::new() }
    }

    pub fn contains(&self, event_id: &str) -> bool {
        self.members.contains(&digest(event_id))
    }

    pub fn insert(&mut self, event_id: &str) {
        let key = digest(event_id);
        if self.members.insert(key) {
            self.order.push_back(key);
            if self.order.len() > self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.members.remove(&oldest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_last_n() {
        let mut recent = RecentEvents::new(2);
        recent.insert("a");
        recent.insert("b");
        recent.insert("a");
        assert!(recent.contains("a") && recent.contains("b"));
        recent.insert("c");
        assert!(!recent.contains("a"));
        assert!(recent.contains("b") && recent.contains("c"));
    }
}
