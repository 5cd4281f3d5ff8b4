//! Run records: what each run of a job (reconcile, rebuild, ETL slice, detectors,
//! setup) did, under a deterministic batch id, with one [`RunOutcome`].
//!
//! Every run record is made by [`RunRecord::new`] and stored through
//! [`crate::Warehouse::record_run`] in [`RUNS_TABLE`]; the outcome is an enum here and
//! its snake_case name (`ok`, `partial`, `failed`, `refused`, `dry_run`) everywhere
//! else: the stored column, run reports' JSON, the CLI's text.

use std::fmt;
use std::str::FromStr;

use crate::value::Timestamp;

/// The table every run (reconcile, rebuild, ETL, detectors) records itself in.
pub const RUNS_TABLE: &str = "converge_runs";

/// A run's batch id: `sha256(kind, scope, key)`, hex. The same work (a scheduler's
/// tick, a tenant's rebuild on one day) always carries the same id, so a re-run is
/// recognisable as one.
pub fn batch_id(kind: &str, scope: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [kind, scope, key] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// How a run ended. A run is `Ok` until something says otherwise (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Everything it set out to do was done.
    #[default]
    Ok,
    /// Some of the work failed and was recorded (a quarantined row, a skipped
    /// document, a repair that failed, a detector that failed); the rest was done.
    Partial,
    /// The run stopped without its result (nothing of a failed slice or rebuild is
    /// visible).
    Failed,
    /// A guard refused the work as unsafe (mass tombstoning); nothing was changed.
    Refused,
    /// A reconcile that only looked (no repairs asked for).
    DryRun,
}

impl RunOutcome {
    pub const ALL: [RunOutcome; 5] = [RunOutcome::Ok, RunOutcome::Partial, RunOutcome::Failed, RunOutcome::Refused, RunOutcome::DryRun];

    /// The outcome's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Partial => "partial",
            RunOutcome::Failed => "failed",
            RunOutcome::Refused => "refused",
            RunOutcome::DryRun => "dry_run",
        }
    }

    /// The outcome of a run made of parts (an ETL run of slices): failed if any part
    /// failed, else partial if any part was, else ok.
    pub fn combine(self, part: RunOutcome) -> RunOutcome {
        use RunOutcome::*;
        match (self, part) {
            (Failed, _) | (_, Failed) => Failed,
            (Refused, _) | (_, Refused) => Refused,
            (Partial, _) | (_, Partial) => Partial,
            (DryRun, _) | (_, DryRun) => DryRun,
            (Ok, Ok) => Ok,
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored outcome that is none of [`RunOutcome`]'s names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run outcome {0:?}: expected one of ok, partial, failed, refused, dry_run")]
pub struct UnknownRunOutcome(pub String);

impl FromStr for RunOutcome {
    type Err = UnknownRunOutcome;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        RunOutcome::ALL.into_iter().find(|outcome| outcome.as_str() == name).ok_or_else(|| UnknownRunOutcome(name.to_owned()))
    }
}

/// What one run did: its deterministic batch id, scope, outcome and counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    /// Deterministic (sha256 of kind, scope and the run's key), so a re-run of the
    /// same work carries the same id.
    pub batch_id: String,
    /// `reconcile`, `rebuild`, `etl`, `detectors`, `setup`.
    pub kind: String,
    /// A tenant, or `*` for all.
    pub scope: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub outcome: RunOutcome,
    /// The kind's counts and details, as a JSON object.
    pub report: serde_json::Value,
    pub code_version: String,
}

impl RunRecord {
    /// The record of one run of `kind` over `scope`: `report` (the run's own report,
    /// plain data) as its JSON, this build's code version. The one place a run record is
    /// made.
    pub fn new(batch_id: String, kind: &str, scope: String, started_at: Timestamp, finished_at: Timestamp, outcome: RunOutcome, report: &impl serde::Serialize) -> Self {
        Self {
            batch_id,
            kind: kind.to_owned(),
            scope,
            started_at,
            finished_at,
            outcome,
            report: serde_json::to_value(report).expect("a run report is plain data"),
            code_version: crate::CODE_VERSION.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_round_trip_through_text_and_json() {
        for outcome in RunOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<RunOutcome>(), Ok(outcome));
            assert_eq!(serde_json::to_value(outcome).unwrap(), serde_json::json!(outcome.as_str()));
            assert_eq!(outcome.to_string(), outcome.as_str());
        }
        assert_eq!("dry_run".parse::<RunOutcome>(), Ok(RunOutcome::DryRun));
        let unknown = "okay".parse::<RunOutcome>().unwrap_err();
        assert!(unknown.to_string().contains("\"okay\""), "{unknown}");
    }

    #[test]
    fn a_run_of_parts_takes_its_worst_part() {
        use RunOutcome::*;
        assert_eq!([Ok, Ok].into_iter().fold(Ok, RunOutcome::combine), Ok);
        assert_eq!([Ok, Partial, Ok].into_iter().fold(Ok, RunOutcome::combine), Partial);
        assert_eq!([Partial, Failed, Ok].into_iter().fold(Ok, RunOutcome::combine), Failed);
        assert_eq!(Failed.combine(Partial), Failed);
    }
}
