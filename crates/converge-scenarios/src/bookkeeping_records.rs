//! The demo's dataset: realistic bookkeeping records, generated deterministically so
//! every run (and every test) sees the same data.

use converge_core::{DocWrite, Fields, Timestamp, Value};

/// SplitMix64: tiny, fast, and good enough to make data look varied.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

pub const ACCOUNTS: &[&str] = &[
    "4100 Tuition", "4200 Donations", "4300 Grants Revenue", "4400 Events", "5100 Salaries", "5200 Rent",
    "5300 Supplies", "5400 Travel", "5500 Software", "5600 Utilities", "5700 Insurance", "5800 Professional Fees",
];
pub const FUNDS: &[&str] = &["General", "Scholarship", "Capital", "Endowment", "Restricted-Arts", "Restricted-Science"];
pub const LABELS: &[&str] = &["operations", "payroll", "grants", "travel", "equipment", "outreach", "facilities"];

/// The label the demo report filters on.
pub const REPORT_LABEL: &str = "grants";

const DAY_SECONDS: i64 = 86_400;
/// Records span this many days before the demo's reference time.
pub const HISTORY_DAYS: i64 = 540;

/// The fields of record number `index` of a tenant, as of `now`.
pub fn record(tenant_seed: u64, index: u64, now: Timestamp) -> Fields {
    let mut rng = Rng::new(tenant_seed.wrapping_mul(1_000_003).wrapping_add(index));
    let days_ago = rng.below(HISTORY_DAYS as u64) as i64;
    let date = Timestamp::new((now.seconds / DAY_SECONDS - days_ago) * DAY_SECONDS, 0);
    let cents = 500 + rng.below(500_000) as i64;
    let mut fields = Fields::new();
    fields.insert("account".into(), Value::String((*rng.pick(ACCOUNTS)).into()));
    fields.insert("fund".into(), Value::String((*rng.pick(FUNDS)).into()));
    fields.insert("date".into(), Value::Timestamp(date));
    fields.insert("label".into(), Value::String((*rng.pick(LABELS)).into()));
    fields.insert("amount".into(), Value::Double(cents as f64 / 100.0));
    fields.insert("memo".into(), Value::String(format!("Invoice #{}", 10_000 + index)));
    fields.insert("seq".into(), Value::Integer(index as i64));
    fields.insert("approved".into(), Value::Boolean(rng.below(10) != 0));
    fields
}

/// Whether record `index` is dated more than `days` before `now`.
pub fn is_older_than(fields: &Fields, now: Timestamp, days: i64) -> bool {
    matches!(fields.get("date"), Some(Value::Timestamp(t)) if t.seconds < now.seconds - days * DAY_SECONDS)
}

/// The document id of record `index`.
pub fn doc_id(index: u64) -> String {
    format!("r{index:07}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_deterministic_and_varied() {
        let now = Timestamp::new(1_800_000_000, 0);
        assert_eq!(record(1, 42, now), record(1, 42, now));
        assert_ne!(record(1, 42, now), record(1, 43, now));
        assert_ne!(record(1, 42, now), record(2, 42, now));
        let labels: std::collections::BTreeSet<String> =
            (0..200).map(|i| record(1, i, now)["label"].to_json().to_string()).collect();
        assert_eq!(labels.len(), LABELS.len());
    }
}

/// `writes` as the app makes them: every document written carries the route's change
/// field ([`converge_core::config::DEFAULT_CHANGE_FIELD`], `updated_at`) set to the
/// moment of the write — what `FieldValue.serverTimestamp()` does on Firestore, here
/// from the machine's clock just before the commit (the incremental reconcile reads it
/// with an overlap that covers the difference).
pub fn stamped(mut writes: Vec<DocWrite>) -> Vec<DocWrite> {
    use converge_core::Clock;
    let now = converge_core::SystemClock.now();
    for write in &mut writes {
        if let DocWrite::Set { fields, .. } = write {
            fields.insert(converge_core::config::DEFAULT_CHANGE_FIELD.into(), Value::Timestamp(now));
        }
    }
    writes
}
