//! The report of one pass, stored as the run record's `report`.

use converge_core::{Opportunity, RunCost, RunOutcome};
use serde::{Deserialize, Serialize};

/// One pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectRun {
    pub batch_id: String,
    pub as_of: String,
    pub scope: String,
    /// `ok`, `partial` (some detectors failed, the others' results stand) or `failed`
    /// (every detector failed).
    pub outcome: RunOutcome,
    /// Detectors run (each once, or once per named tenant).
    pub run: u64,
    /// Findings: rows returned by the detectors that succeeded.
    pub fired: u64,
    /// Detectors that failed (for at least one tenant).
    pub failed: u64,
    pub failures: Vec<DetectorFailure>,
    /// Detectors whose query failed for a passing reason beside the others (out of
    /// memory under a shared cap, a timeout) and ran again alone; a failure the second
    /// time is in `failures`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried_alone: Vec<String>,
    pub opportunities: OpportunityCounts,
    /// Per detector, in pack order: findings and query time.
    pub detectors: Vec<DetectorStats>,
    pub millis: u64,
    pub code_version: String,
    /// What the pass cost: the warehouse bytes of its queries, and the opportunity
    /// documents it read (the open ones, listed per tenant, and each one it resolved,
    /// which the store reads before its conditional update). Upserts are writes, not
    /// reads, and are not in it.
    #[serde(default)]
    pub cost: RunCost,
    /// Days the pass's tenants declared as known events (left out of tested detectors'
    /// windows).
    #[serde(default)]
    pub known_event_days: u64,
    /// Known-event documents left out, each with what was wrong.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_event_problems: Vec<String>,
    /// The findings themselves, as the opportunities upserted (for the CLI's table);
    /// not stored in the run record.
    #[serde(skip)]
    pub findings: Vec<Opportunity>,
}

impl DetectRun {
    /// Whether trying again may help: some failure was retryable (a timeout, an
    /// unavailable backend).
    pub fn has_retryable_failure(&self) -> bool {
        self.failures.iter().any(|f| f.retryable)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorFailure {
    pub detector: String,
    /// The tenant of the failed query, when the pass ran per tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub error: String,
    pub retryable: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpportunityCounts {
    /// New ids.
    pub opened: u64,
    /// Existing ids found again (open, or resolved and reopened).
    pub updated: u64,
    /// Open ones of a successful detector that it did not find again.
    pub resolved: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorStats {
    pub id: String,
    pub findings: u64,
    /// Wall time of its queries (summed over tenants when run per tenant).
    pub millis: u64,
    pub ok: bool,
}
