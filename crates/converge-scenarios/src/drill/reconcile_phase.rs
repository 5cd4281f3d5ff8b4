//! Phase 5, the same on every backend: the reconciler's runs, and source and latest
//! view compared document by document.

use std::sync::Arc;

use anyhow::Context;
use converge_core::{Clock, ErrorLog, MirrorConfig, RunOutcome, SourceStore, Warehouse};
use converge_reconcile::{OrphanGuard, Reconciler, RunOptions};

use crate::demo;
use super::summary::{DriftCounts, Reconciled};
use super::wrong_rows::{Corruption, MASS_ORPHANS, MASS_ORPHAN_TENANT, WRONG_ROWS_TENANT};

/// The last phase, on any backend:
///
/// 1. the repairing run, with the default [`OrphanGuard`]: its findings are what the
///    drill found. It must repair everything but the mass orphans, which it must
///    refuse: outcome `refused`, their tenant (alone) listed with their count, and
///    that tenant's latest count unchanged;
/// 2. the same run again with the guard lifted, as an operator overrides a refusal
///    after checking it: the same key, so the same batch (its record replaces the
///    refused one in [`Warehouse::runs`]). It must tombstone the mass orphans and find
///    nothing else;
/// 3. another run, which must find nothing;
/// 4. every tenant's source compared with its latest view document by document, on
///    every route, which must agree.
pub(crate) async fn reconcile_phase(
    source: Arc<dyn SourceStore>,
    errors: Arc<dyn ErrorLog>,
    warehouse: Arc<dyn Warehouse>,
    config: &MirrorConfig,
    clock: Arc<dyn Clock>,
    tenants: &[&str],
    corruption: &Corruption,
) -> anyhow::Result<Reconciled> {
    let table = config.routes[0].table.clone();
    let reconciler = Reconciler::new(source.clone(), errors.clone(), warehouse.clone(), config.clone(), clock.clone());
    let before_refusal = warehouse.latest_count(&table, MASS_ORPHAN_TENANT).await?;
    let key = clock.now().to_rfc3339();
    let first = reconciler.run_with(RunOptions { key: Some(key.clone()), ..RunOptions::default() }).await.context("the repairing reconciler run")?;
    let after_refusal = warehouse.latest_count(&table, MASS_ORPHAN_TENANT).await?;
    let lifted = OrphanGuard { max_share: 1.0, ..OrphanGuard::default() };
    let overridden = reconciler
        .run_with(RunOptions { key: Some(key), orphan_guard: Some(lifted), ..RunOptions::default() })
        .await
        .context("the repairing run again, with the orphan guard lifted")?;
    let second = reconciler.run(None, false).await.context("the second reconciler run")?;

    let mut found = DriftCounts::default();
    let (mut repaired, mut wrong_rows_repaired) = (0, 0);
    for t in &first.tenants {
        match t.tenant.as_str() {
            WRONG_ROWS_TENANT => {
                found.wrong_content_same_version += t.different;
                found.wrong_tombstone += t.missing;
                // None injected: any is a mismatch.
                found.orphan += t.orphan;
                wrong_rows_repaired += t.repaired;
            }
            MASS_ORPHAN_TENANT => {
                // Its orphans are the refusal's, judged below; nothing else injected.
                found.missing += t.missing;
                found.different += t.different;
                wrong_rows_repaired += t.repaired;
            }
            _ => {
                found.missing += t.missing;
                found.different += t.different;
                found.orphan += t.orphan;
                found.known += t.known;
                found.silent += t.silent;
                repaired += t.repaired;
            }
        }
    }
    let refusal = first.refused.iter().map(|r| (r.tenant.as_str(), r.orphans)).collect::<Vec<_>>();
    let refused_as_injected = first.outcome == RunOutcome::Refused && refusal == [(MASS_ORPHAN_TENANT, MASS_ORPHANS)] && after_refusal == before_refusal;
    if !refused_as_injected {
        tracing::error!(
            outcome = %first.outcome, ?refusal, before_refusal, after_refusal,
            "the repairing run did not refuse exactly the mass orphans, leaving them in place"
        );
    }
    found.mass_orphan_refused = u64::from(refused_as_injected);
    // The override is for the refused orphans; anything else it finds, the repairing
    // run left behind.
    let mut after_repair = overridden.findings();
    for t in overridden.tenants.iter().filter(|t| t.tenant == MASS_ORPHAN_TENANT) {
        after_repair -= t.orphan;
        wrong_rows_repaired += t.repaired;
    }

    let all_tenants: Vec<&str> = tenants.iter().copied().chain(corruption.tenants()).collect();
    let compared = demo::compare_routes(source.as_ref(), warehouse.as_ref(), config, &all_tenants).await?;
    Ok(Reconciled {
        found,
        repaired,
        wrong_rows_repaired,
        errors_resolved: first.errors_resolved + overridden.errors_resolved,
        drift_after_repair: compared.iter().map(|route| route.drift).sum(),
        second_run_findings: after_repair + second.findings(),
        open_sync_errors: errors.open_sync_errors(None).await?.len() as u64,
    })
}
