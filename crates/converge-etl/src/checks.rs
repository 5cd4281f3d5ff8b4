//! Quality checks: a slice that fails one is not loaded (the old slice stays), and
//! its run record says why. They fail the run, they do not warn.
//!
//! - `rows_in_vs_trailing_median`: the day's valid raw records must be at least
//!   [`CheckPolicy::min_ratio`] of the median of the tenant's last
//!   [`CheckPolicy::trailing_loads`] loads with data before that day (from
//!   `etl_loads`). With fewer than [`CheckPolicy::min_history`] such loads there is no
//!   baseline yet and the check passes, saying so.
//!   A day the tenant declared as a known event passes, saying so, and declared days
//!   are left out of the median ([`declared_day_check`]).
//! - `duplicate_keys`: no natural key twice in one collection's day (the same export
//!   row landed under two document ids would count twice).
//! - `empty_entity_ids`: no record whose raw id canonicalises to nothing (a blank
//!   keyword, a URL with no path, a campaign name of symbols only).

use serde::{Deserialize, Serialize};

use crate::slice::SliceBuilder;

/// The thresholds of the checks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CheckPolicy {
    pub min_ratio: f64,
    pub trailing_loads: usize,
    pub min_history: usize,
}

impl Default for CheckPolicy {
    fn default() -> Self {
        Self { min_ratio: 0.5, trailing_loads: 14, min_history: 3 }
    }
}

/// One check's verdict, as the run record holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl CheckResult {
    fn new(name: &str, passed: bool, detail: String) -> Self {
        Self { name: name.into(), passed, detail }
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[u64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 { sorted[mid] as f64 } else { (sorted[mid - 1] + sorted[mid]) as f64 / 2.0 })
}

/// `rows_in` against the rows in of earlier loads (newest first; loads without data
/// are left out here).
pub fn rows_in_check(rows_in: u64, earlier_rows_in: &[u64], policy: &CheckPolicy) -> CheckResult {
    const NAME: &str = "rows_in_vs_trailing_median";
    let history: Vec<u64> = earlier_rows_in.iter().copied().filter(|n| *n > 0).take(policy.trailing_loads).collect();
    if history.len() < policy.min_history {
        return CheckResult::new(NAME, true, format!("{rows_in} rows in; {} earlier loads with data, {} needed for a baseline", history.len(), policy.min_history));
    }
    let median = median(&history).expect("history is not empty");
    let floor = median * policy.min_ratio;
    let passed = rows_in as f64 >= floor;
    let detail = format!(
        "{rows_in} rows in; median of the last {} loads with data {median}, floor {floor} ({}%){}",
        history.len(),
        policy.min_ratio * 100.0,
        if passed { "" } else { ": far below the usual volume, an export is probably missing or partial; the old slice stays" }
    );
    CheckResult::new(NAME, passed, detail)
}

/// A day the tenant declared as a known event (`orgs/{tenant}/known_events`): its
/// volume is expected to be unusual, so the check passes and says why; such days are
/// also left out of later days' trailing median.
pub fn declared_day_check(rows_in: u64, reason: &str) -> CheckResult {
    let reason = if reason.is_empty() { "no reason given" } else { reason };
    CheckResult::new("rows_in_vs_trailing_median", true, format!("{rows_in} rows in; a declared known event ({reason}): volume not checked"))
}

pub fn duplicate_keys_check(slice: &SliceBuilder) -> CheckResult {
    let passed = slice.duplicate_keys == 0;
    let detail = if passed {
        "no natural key twice".into()
    } else {
        format!(
            "{} raw records repeat a natural key already seen that day (the same export row under two document ids), e.g. {:?}; remove the copies, then run again",
            slice.duplicate_keys, slice.duplicate_examples
        )
    };
    CheckResult::new("duplicate_keys", passed, detail)
}

pub fn empty_ids_check(slice: &SliceBuilder) -> CheckResult {
    let passed = slice.empty_ids == 0;
    let detail = if passed {
        "every raw id has a canonical entity id".into()
    } else {
        format!("{} raw records have a raw id that is empty once canonicalised, e.g. {:?}; fix the export, then run again", slice.empty_ids, slice.empty_id_examples)
    };
    CheckResult::new("empty_entity_ids", passed, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5, 1, 3]), Some(3.0));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2.5));
    }

    #[test]
    fn rows_in_far_below_the_median_fail() {
        let policy = CheckPolicy::default();
        let history = [1000, 1100, 900, 0, 1000];
        assert!(rows_in_check(500, &history, &policy).passed, "exactly half passes");
        let failed = rows_in_check(499, &history, &policy);
        assert!(!failed.passed);
        assert!(failed.detail.contains("median of the last 4 loads with data 1000"), "{}", failed.detail);
        assert!(!rows_in_check(0, &history, &policy).passed, "a missing day fails");
    }

    #[test]
    fn without_enough_history_there_is_no_baseline() {
        let check = rows_in_check(1, &[1000, 0, 1000], &CheckPolicy::default());
        assert!(check.passed);
        assert!(check.detail.contains("2 earlier loads with data, 3 needed"), "{}", check.detail);
    }

    #[test]
    fn only_the_trailing_loads_count() {
        let policy = CheckPolicy { trailing_loads: 2, ..CheckPolicy::default() };
        let policy = CheckPolicy { min_history: 2, ..policy };
        // Newest first: the last two loads (100, 100) set the baseline, not the old 10,000s.
        assert!(rows_in_check(60, &[100, 100, 10_000, 10_000, 10_000], &policy).passed);
    }
}
