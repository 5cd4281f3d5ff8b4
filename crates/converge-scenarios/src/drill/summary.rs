//! What a drill injected, what it found, and its verdict: the same shapes for the
//! embedded and the cloud drill.

use std::time::Instant;

use serde::Serialize;

/// Drift by kind and by class; the same shape for what was injected and what was found.
///
/// `missing`, `different` and `orphan` are the lost changes, and `known` and `silent`
/// their classes (known + silent = missing + different + orphan). The wrong rows are
/// kinds of their own, counted from the reconciler's report of their tenants: a wrong
/// row is silent by nature (no delivery failed, so no error record names it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DriftCounts {
    pub missing: u64,
    pub different: u64,
    pub orphan: u64,
    pub known: u64,
    pub silent: u64,
    /// Documents whose latest row is a wrong event row at their own version (found as
    /// different).
    pub wrong_content_same_version: u64,
    /// Live documents hidden by a wrong tombstone (found as missing).
    pub wrong_tombstone: u64,
    /// Tenants given more orphans than the guard lets one run tombstone; found when the
    /// repairing run refused that tenant, with its orphan count, and tombstoned none.
    pub mass_orphan_refused: u64,
}

/// Faults that must cause no drift, as injected.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NoDriftFaults {
    /// Events delivered again after they had been stored.
    pub duplicates: u64,
    /// Events delivered after a later change of the same document.
    pub reordered: u64,
    /// Appends failed transiently (each answered 503 to every event in it).
    pub transient_failures: u64,
    /// Sync processes killed between a group commit and its answers.
    pub sync_kills: u64,
    /// Relays killed mid-batch (always 0 on the cloud backend, which has no relay:
    /// Firestore's own trigger emits each change).
    pub relay_kills: u64,
    /// Events pending in the outbox when each relay was killed.
    pub pending_at_relay_kills: Vec<u64>,
    /// Requests the sync function had answered in the batch each relay was killed in
    /// (delivered, but not yet recorded in the outbox: sent again by the next relay).
    pub answered_in_killed_batches: Vec<u64>,
    /// Rows the warehouse skipped because their event was already stored (duplicates,
    /// and events of the killed group commit delivered again). Always 0 on BigQuery,
    /// which stores such a row again and whose views pick one of the copies.
    pub redeliveries_skipped: u64,
    /// Deliveries sent again after a 5xx answer or a broken connection: the relays'
    /// failed attempts, or on the cloud backend the Eventarc front's retries.
    pub delivery_retries: u64,
}

/// Drift of the incremental phase by the kind a reconcile finds it as; the same shape
/// for what was injected and what was found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IncrementalCounts {
    /// Lost creates and stray tombstones.
    pub missing: u64,
    /// Lost updates.
    pub different: u64,
    /// Lost deletes and phantom rows.
    pub orphan: u64,
}

/// The incremental phase: drift injected after the verified full runs, in a tenant of
/// its own, and what one incremental run over that tenant found and read.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementalSection {
    pub tenant: String,
    /// How the drifting route's tenant was reconciled: `incremental`, unless it had no
    /// verified point (then it was read in full, and the phase proves nothing).
    pub mode: converge_core::ReconcileMode,
    pub injected: IncrementalCounts,
    pub found: IncrementalCounts,
    /// Source documents the incremental run read: changed ones and leaves of the
    /// ranges whose counts disagreed.
    pub source_docs_read: u64,
    /// The tenant's documents in the source (every route), for the fraction read.
    pub source_docs: u64,
    /// Documents the change-field query returned.
    pub changed_docs: u64,
    /// Path ranges whose `count()` was compared.
    pub ranges_counted: u64,
    /// Ranges read from both sides.
    pub leaves_read: u64,
    pub repaired: u64,
    /// Differences between the tenant's source and latest view after the run.
    pub drift_after_repair: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillSummary {
    /// `embedded` (SQLite + DuckDB) or `cloud` (Firestore + BigQuery on their emulators).
    pub backend: String,
    /// Where the stores were: a data directory, or the emulators' addresses.
    pub data_dir: String,
    pub records: u64,
    pub events_delivered: u64,
    pub injected: DriftCounts,
    pub found: DriftCounts,
    pub no_drift_faults: NoDriftFaults,
    /// Lost changes the repairing run repaired (the drill's tenants).
    pub repaired: u64,
    /// Documents of the wrong rows' tenants repaired: by the repairing run, and the
    /// mass orphans tombstoned by its run again with the guard lifted.
    pub wrong_rows_repaired: u64,
    pub errors_resolved: u64,
    /// Differences between source and latest view, all tenants, after the repairing run
    /// and its run with the guard lifted.
    pub drift_after_repair: u64,
    /// What the reconciler found after the repairing run: the run with the guard
    /// lifted (besides the refused orphans it was run for), and another run after it.
    pub second_run_findings: u64,
    /// `sync_errors` records still open after the runs (the transient failures' are
    /// closed once their document is seen converged, the known losses' once repaired).
    pub open_sync_errors: u64,
    /// The incremental phase, after the runs above.
    pub incremental: IncrementalSection,
    /// Nothing in [`mismatches`]: found == injected, no drift after repair, a quiet
    /// second run, and the incremental phase's findings as injected, read incrementally.
    pub passed: bool,
    pub total_millis: u64,
}

/// What the reconcile phase found and left behind.
pub(crate) struct Reconciled {
    pub(super) found: DriftCounts,
    pub(super) repaired: u64,
    pub(super) wrong_rows_repaired: u64,
    pub(super) errors_resolved: u64,
    pub(super) drift_after_repair: u64,
    pub(super) second_run_findings: u64,
    pub(super) open_sync_errors: u64,
}

impl DrillSummary {
    /// The summary and its verdict ([`mismatches`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backend: &str,
        data_dir: String,
        records: u64,
        events_delivered: u64,
        injected: DriftCounts,
        no_drift_faults: NoDriftFaults,
        reconciled: Reconciled,
        incremental: IncrementalSection,
        started: Instant,
    ) -> Self {
        let mut summary = Self {
            backend: backend.into(),
            data_dir,
            records,
            events_delivered,
            injected,
            found: reconciled.found,
            no_drift_faults,
            repaired: reconciled.repaired,
            wrong_rows_repaired: reconciled.wrong_rows_repaired,
            errors_resolved: reconciled.errors_resolved,
            drift_after_repair: reconciled.drift_after_repair,
            second_run_findings: reconciled.second_run_findings,
            open_sync_errors: reconciled.open_sync_errors,
            incremental,
            passed: false,
            total_millis: started.elapsed().as_millis() as u64,
        };
        summary.passed = mismatches(&summary).is_empty();
        summary
    }
}

/// The drill's verdict lines, for the CLI's text summary.
pub fn mismatches(summary: &DrillSummary) -> Vec<String> {
    let mut out = Vec::new();
    if summary.found != summary.injected {
        out.push(format!("found {:?} ≠ injected {:?}", summary.found, summary.injected));
    }
    if summary.drift_after_repair != 0 {
        out.push(format!("{} differences remain after repair", summary.drift_after_repair));
    }
    if summary.second_run_findings != 0 {
        out.push(format!("the second run found {}", summary.second_run_findings));
    }
    let inc = &summary.incremental;
    if inc.found != inc.injected {
        out.push(format!("incremental: found {:?} ≠ injected {:?}", inc.found, inc.injected));
    }
    if inc.mode != converge_core::ReconcileMode::Incremental {
        out.push(format!("incremental: tenant {} was read in full, not incrementally (no verified point after the full runs?)", inc.tenant));
    } else if inc.source_docs_read >= inc.source_docs {
        out.push(format!(
            "incremental: the run read {} source documents of the tenant's {}: a fraction was expected (changed documents plus the leaves of the ranges whose counts disagree)",
            inc.source_docs_read, inc.source_docs
        ));
    }
    if inc.drift_after_repair != 0 {
        out.push(format!("incremental: {} differences remain in tenant {} after its repair", inc.drift_after_repair, inc.tenant));
    }
    out
}
