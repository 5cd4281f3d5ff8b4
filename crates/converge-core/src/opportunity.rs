//! Opportunities: the detectors' findings as records the app reads (Firestore
//! `orgs/{tenant}/opportunities/{id}` in the cloud, listened to in realtime; a table of
//! the SQLite store embedded), and the rule for their deterministic ids.
//!
//! # Identity: (detector, tenant, entity, period)
//!
//! `period` is the run date bucketed by the detector's recent-window length: days
//! since 1970-01-01 divided by `recent_days`, written as the bucket's first day and its
//! length (`2025-03-02/28d`). Why:
//!
//! - a 28-day detector that keeps firing on the same entity day after day is looking
//!   at mostly the same evidence, so it updates ONE opportunity instead of opening one
//!   per day;
//! - once a whole window has passed, the evidence is entirely new: a new opportunity
//!   opens (the old one resolves as no longer firing in its period), so the app shows
//!   a problem that persists for months as such, not one record growing forever;
//! - it is a pure function of the run date and the spec: a re-run or a backfill of
//!   any date computes the same id without reading anything first.
//!
//! The cost: buckets are aligned to the epoch, not to the first firing, so a finding
//! that starts late in a bucket rolls over sooner than a window's length.

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::value::Timestamp;

/// The collection under each tenant (`orgs/{tenant}/opportunities/{id}` in Firestore).
pub const OPPORTUNITIES_COLLECTION: &str = "opportunities";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpportunityStatus {
    Open,
    Resolved,
}

impl OpportunityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OpportunityStatus::Open => "open",
            OpportunityStatus::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(OpportunityStatus::Open),
            "resolved" => Some(OpportunityStatus::Resolved),
            _ => None,
        }
    }
}

/// One opportunity as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opportunity {
    /// [`opportunity_id`] of (detector, tenant, entity type, entity id, period).
    pub id: String,
    pub tenant: String,
    pub detector: String,
    pub title: String,
    /// `info`, `warning`, `critical`.
    pub severity: String,
    pub entity_type: String,
    pub entity_id: String,
    /// The detector's message rendered for this finding.
    pub message: String,
    pub recent_value: Option<f64>,
    pub baseline_value: Option<f64>,
    pub reference_value: Option<f64>,
    pub volume: Option<f64>,
    /// See the module documentation: `YYYY-MM-DD/{n}d`.
    pub period: String,
    /// The run date (`as_of`, `YYYY-MM-DD`) of the latest run that found it.
    pub as_of: String,
    /// When a run first found it (the run's clock). Kept by every later upsert.
    pub first_seen: Timestamp,
    /// When a run last found it. The one field a re-run of the same work changes.
    pub last_seen: Timestamp,
    pub status: OpportunityStatus,
    pub resolved_at: Option<Timestamp>,
    /// Batch id of the run that last wrote it (found it, or resolved it).
    pub batch_id: String,
    /// What the finding rests on, beside `recent_value` (observed), `baseline_value`
    /// (expected) and `volume`.
    #[serde(default)]
    pub evidence: Evidence,
}

impl Opportunity {
    /// A copy with every number to `digits` significant digits, for comparing two
    /// passes over the same data: a warehouse sums floating-point terms in whatever
    /// order its threads take them, so the same finding's values agree only to ~12
    /// digits, and a p-value of 1e-98 moves in its 11th.
    pub fn with_numbers_rounded(&self, digits: usize) -> Opportunity {
        let round = |x: Option<f64>| x.map(|x| crate::findings::round_significant(x, digits));
        let e = &self.evidence;
        Opportunity {
            recent_value: round(self.recent_value),
            baseline_value: round(self.baseline_value),
            reference_value: round(self.reference_value),
            volume: round(self.volume),
            evidence: Evidence {
                test: e.test.clone(),
                effect_pct: round(e.effect_pct),
                baseline_volume: round(e.baseline_volume),
                statistic: round(e.statistic),
                p_value: round(e.p_value),
                q_value: round(e.q_value),
            },
            ..self.clone()
        }
    }
}

/// What a finding rests on, so a person can judge it without SQL. Stored as flat
/// fields next to the opportunity's others (`test`, `effect_pct`, `baseline_volume`,
/// `statistic`, `p_value`, `q_value`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// How it was decided, in words: the test and its false-discovery rate, or that
    /// the threshold decided alone (a rule).
    pub test: String,
    /// Relative change of the observed value against the expected one, in percent.
    pub effect_pct: Option<f64>,
    /// The baseline window's volume (the gating metric's sum).
    pub baseline_volume: Option<f64>,
    /// The test's z score.
    pub statistic: Option<f64>,
    /// One-sided p-value in the detector's direction.
    pub p_value: Option<f64>,
    /// The p-value adjusted for the entities tested with it (Benjamini–Hochberg).
    pub q_value: Option<f64>,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsertOutcome {
    /// No opportunity had this id.
    Opened,
    /// It existed (open, or resolved and now open again): fields replaced, `first_seen` kept.
    Updated,
}

/// Where opportunities live: next to the source data, where the app reads them.
#[async_trait]
pub trait OpportunityStore: Send + Sync + 'static {
    /// Creates `opportunity`, or replaces every field of the stored one with the same
    /// (tenant, id) except `first_seen`, which stays the first sighting's. It is stored
    /// open with no `resolved_at`, whatever it was before: it fires again.
    async fn upsert_opportunity(&self, opportunity: Opportunity) -> Result<UpsertOutcome, StoreError>;

    /// One opportunity, open or resolved.
    async fn opportunity(&self, tenant: &str, id: &str) -> Result<Option<Opportunity>, StoreError>;

    /// Open opportunities of one tenant, or of all with `None`, ordered by (tenant, id).
    async fn open_opportunities(&self, tenant: Option<&str>) -> Result<Vec<Opportunity>, StoreError>;

    /// Marks an open opportunity resolved at `at` by the run `batch_id`. Returns
    /// whether it was open (resolving a resolved or missing one changes nothing).
    async fn resolve_opportunity(&self, tenant: &str, id: &str, at: Timestamp, batch_id: &str) -> Result<bool, StoreError>;
}

/// The period of a finding on `as_of` by a detector whose recent window spans
/// `recent_days` (see the module documentation). `recent_days` 0 counts as 1.
pub fn opportunity_period(as_of: NaiveDate, recent_days: u32) -> String {
    let length = i64::from(recent_days.max(1));
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
    let days = (as_of - epoch).num_days();
    let start = epoch + chrono::Duration::days(days.div_euclid(length) * length);
    format!("{start}/{length}d")
}

/// `sha256(detector, tenant, entity type, entity id, period)`, hex, 32 characters: a
/// valid Firestore document id whatever the entity id holds (`/`, spaces).
pub fn opportunity_id(detector: &str, tenant: &str, entity_type: &str, entity_id: &str, period: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [detector, tenant, entity_type, entity_id, period] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_period_spans_the_recent_window_and_is_the_same_for_every_day_in_it() {
        let first = opportunity_period(date("2025-03-31"), 28);
        let (start, length) = first.split_once('/').unwrap();
        assert_eq!(length, "28d");
        let start = date(start);
        // Every day of the bucket maps to it, the day after to the next one.
        for offset in 0..28 {
            assert_eq!(opportunity_period(start + chrono::Duration::days(offset), 28), first);
        }
        assert_eq!(opportunity_period(start + chrono::Duration::days(28), 28), format!("{}/28d", start + chrono::Duration::days(28)));
        assert_eq!(opportunity_period(start - chrono::Duration::days(1), 28), format!("{}/28d", start - chrono::Duration::days(28)));
        // One-day windows: one period per day.
        assert_eq!(opportunity_period(date("2025-03-31"), 1), "2025-03-31/1d");
        assert_eq!(opportunity_period(date("2025-03-31"), 0), "2025-03-31/1d");
    }

    #[test]
    fn numbers_rounded_agree_whatever_order_a_sum_took() {
        let terms = [0.1, 0.2, 0.3, 1e-9, 7.7];
        let forward: f64 = terms.iter().sum();
        let backward: f64 = terms.iter().rev().sum();
        assert_ne!(forward, backward, "the order changes the last bits");
        let opportunity = |value: f64| Opportunity {
            id: "x".into(),
            tenant: "t".into(),
            detector: "d".into(),
            title: String::new(),
            severity: "info".into(),
            entity_type: "page".into(),
            entity_id: "/".into(),
            message: String::new(),
            recent_value: Some(value),
            baseline_value: None,
            reference_value: None,
            volume: None,
            period: String::new(),
            as_of: String::new(),
            first_seen: Timestamp::new(0, 0),
            last_seen: Timestamp::new(0, 0),
            status: OpportunityStatus::Open,
            resolved_at: None,
            batch_id: String::new(),
            evidence: Evidence { p_value: Some(value * 1e-98), ..Evidence::default() },
        };
        assert_eq!(opportunity(forward).with_numbers_rounded(8), opportunity(backward).with_numbers_rounded(8));
        assert_eq!(opportunity(forward).with_numbers_rounded(8).recent_value, Some(8.3));
        assert_ne!(opportunity(1.0).with_numbers_rounded(8), opportunity(1.001).with_numbers_rounded(8));
    }

    #[test]
    fn ids_are_deterministic_and_separate_every_part() {
        let id = opportunity_id("d", "acme", "page", "/pricing", "2025-03-02/28d");
        assert_eq!(id, opportunity_id("d", "acme", "page", "/pricing", "2025-03-02/28d"));
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, opportunity_id("d", "acme", "page", "/pricing", "2025-03-30/28d"));
        assert_ne!(id, opportunity_id("d", "acme", "campaign", "/pricing", "2025-03-02/28d"));
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(opportunity_id("ab", "c", "", "", ""), opportunity_id("a", "bc", "", "", ""));
    }
}
