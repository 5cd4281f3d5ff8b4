//! Phase 6, the incremental reconcile ([`IncrementalPlan`], [`incremental_phase`]):
//! after phase 5's verified full runs, drift of every kind an incremental run can see
//! (`converge_core::incremental`) in a tenant of its own, then one incremental run over
//! that tenant, whose findings must equal what was injected while it reads a fraction
//! of the tenant's documents.
//!
//! The tenant ([`INCREMENTAL_TENANT`]) is written in phase 3 and goes through the
//! pipeline like any other, but its change field says its documents were last written
//! an hour before ([`WRITTEN_BEFORE`]): in a production database most documents were
//! written long before the last verified run, while the drill writes everything within
//! minutes, inside the run's [`CHANGE_FIELD_OVERLAP`], where the change field would
//! return every document. The demo's tenants are written exactly so (`stamped`, the
//! moment of the write), which is why the phase runs on this tenant alone.
//!
//! After phase 5 (whose runs recorded the tenant's verified point), with the pipeline
//! stopped:
//! - **written since the point**, each with a fresh change field: updates, creates and
//!   deletes, of which [`LOST_PER_KIND`] of each kind never reach the warehouse (lost
//!   updates → different, lost creates → missing, lost deletes → orphan: the row stays
//!   live) and as many are told to it as the sync function would tell it (their rows
//!   appended by the drill), so the run must tell drift from writes;
//! - **untouched** documents: phantom rows (live rows for documents the source never
//!   had → orphan) and stray tombstones (a delete row just after a live document's last
//!   write → missing). No change field shows them: only the counts do.
//!
//! Every count-changing drift sits in a range of its own (spread evenly over the
//! tenant's paths): a stray tombstone and a lost delete in one range cancel in its
//! count, which only a full run sees (`converge_core::incremental`, "What only a full
//! run sees").

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use converge_core::incremental::CHANGE_FIELD_OVERLAP;
use converge_core::{
    ChangeRow, Clock, DocWrite, Document, ErrorLog, MirrorConfig, Op, ReconcileMode, RowContext, SourceStore, Timestamp, Value, Warehouse,
};
use converge_reconcile::{Reconciler, RunOptions};

use super::summary::{IncrementalCounts, IncrementalSection};
use crate::bookkeeping_records::{self, Rng};
use crate::demo;

/// The tenant of the incremental phase: no other phase writes it.
pub(crate) const INCREMENTAL_TENANT: &str = "vandelay";
/// Its documents before the phase (and after: as many created as deleted). About 31
/// of the reconciler's fine ranges (`BUCKET_DOCUMENTS`), so that the ranges the drift
/// changes are a fraction of them.
const TENANT_DOCS: u64 = 1_000;
/// Lost writes of each kind (update, create, delete), and as many of each told to the
/// warehouse.
const LOST_PER_KIND: u64 = 3;
/// Phantom rows, and stray tombstones, among the untouched documents.
const PHANTOMS: u64 = 2;
const STRAY_TOMBSTONES: u64 = 2;
/// How long before its write the tenant's change field dates its documents: beyond the
/// overlap an incremental run reads the change field with.
const WRITTEN_BEFORE: Duration = Duration::from_secs(60 * 60);
const _: () = assert!(WRITTEN_BEFORE.as_secs() > CHANGE_FIELD_OVERLAP.as_secs());
/// Firestore takes at most 500 writes per commit.
const COMMIT: usize = 500;
/// The code version of the rows the drill appends itself: the sync function's stand-in.
const TOLD_CODE_VERSION: &str = "drill-incremental";

/// The documents of the incremental phase, by what happens to them (indices into the
/// tenant's records, `bookkeeping_records::doc_id`).
pub(crate) struct IncrementalPlan {
    lost_updates: Vec<u64>,
    told_updates: Vec<u64>,
    lost_deletes: Vec<u64>,
    told_deletes: Vec<u64>,
    stray_tombstones: Vec<u64>,
    /// A phantom's path sorts just after this record's.
    phantoms_after: Vec<u64>,
    /// A created document's path sorts just after this record's; the first
    /// [`LOST_PER_KIND`] are lost.
    creates_after: Vec<u64>,
}

impl IncrementalPlan {
    pub(crate) fn new() -> Self {
        // The count-changing drift (lost deletes, stray tombstones, phantoms) evenly
        // spread, each far from the next (about 140 records apart, ranges hold about 32).
        let spread = LOST_PER_KIND + STRAY_TOMBSTONES + PHANTOMS;
        let mut count_changing = (0..spread).map(|k| (2 * k + 1) * TENANT_DOCS / (2 * spread));
        let lost_deletes: Vec<u64> = count_changing.by_ref().take(LOST_PER_KIND as usize).collect();
        let stray_tombstones: Vec<u64> = count_changing.by_ref().take(STRAY_TOMBSTONES as usize).collect();
        let phantoms_after: Vec<u64> = count_changing.collect();
        // The rest anywhere else, seeded: a changed document changes no count.
        let mut taken: BTreeSet<u64> = lost_deletes.iter().chain(&stray_tombstones).chain(&phantoms_after).copied().collect();
        let mut rng = Rng::new(0x1C4E);
        let mut pick = |n: u64| -> Vec<u64> {
            let mut picked = Vec::new();
            while (picked.len() as u64) < n {
                let index = rng.below(TENANT_DOCS);
                if taken.insert(index) {
                    picked.push(index);
                }
            }
            picked
        };
        Self {
            lost_updates: pick(LOST_PER_KIND),
            told_updates: pick(LOST_PER_KIND),
            told_deletes: pick(LOST_PER_KIND),
            creates_after: pick(2 * LOST_PER_KIND),
            lost_deletes,
            stray_tombstones,
            phantoms_after,
        }
    }

    /// The drift the incremental run must find, by the kind it is found as.
    pub(crate) fn injected(&self) -> IncrementalCounts {
        IncrementalCounts {
            missing: LOST_PER_KIND + self.stray_tombstones.len() as u64,
            different: self.lost_updates.len() as u64,
            orphan: self.lost_deletes.len() as u64 + self.phantoms_after.len() as u64,
        }
    }

    fn path(pattern: &converge_core::PathPattern, id: &str) -> String {
        pattern.document_path(INCREMENTAL_TENANT, id).expect("plain pattern")
    }

    fn record_path(pattern: &converge_core::PathPattern, index: u64) -> String {
        Self::path(pattern, &bookkeeping_records::doc_id(index))
    }

    fn created_path(pattern: &converge_core::PathPattern, after: u64) -> String {
        Self::path(pattern, &format!("{}-created", bookkeeping_records::doc_id(after)))
    }

    fn phantom_path(pattern: &converge_core::PathPattern, after: u64) -> String {
        Self::path(pattern, &format!("{}-phantom", bookkeeping_records::doc_id(after)))
    }

    /// Phase 3: writes the tenant, its change field [`WRITTEN_BEFORE`] the write (not
    /// `stamped`: see the module docs). Returns the events the writes emit.
    pub(crate) async fn write_tenant(&self, source: &dyn SourceStore, config: &MirrorConfig) -> anyhow::Result<u64> {
        let route = &config.routes[0];
        let field = change_field(config)?;
        let written_at = Timestamp::from_micros(converge_core::SystemClock.now().as_micros() - WRITTEN_BEFORE.as_micros() as i64);
        let writes: Vec<DocWrite> = (0..TENANT_DOCS)
            .map(|index| {
                let mut fields = bookkeeping_records::record(8, index, written_at);
                fields.insert(field.to_owned(), Value::Timestamp(written_at));
                DocWrite::Set { path: Self::record_path(&route.pattern, index), fields }
            })
            .collect();
        for chunk in writes.chunks(COMMIT) {
            source.apply(chunk.to_vec()).await.context("writing the incremental phase's tenant")?;
        }
        Ok(writes.len() as u64)
    }

    /// Phase 6's drift, with the pipeline stopped: the writes (each `stamped`, as the
    /// app writes), the told ones' rows as the sync function would append them, the
    /// phantom rows and the stray tombstones.
    pub(crate) async fn inject(&self, source: &dyn SourceStore, warehouse: &dyn Warehouse, config: &MirrorConfig, now: Timestamp) -> anyhow::Result<()> {
        let pattern = &config.routes[0].pattern;
        let record = |index: u64| Self::record_path(pattern, index);
        let updated = |path: String, seed: u64| {
            let mut fields = bookkeeping_records::record(8, seed, now);
            // Another amount than the record's: a different content hash.
            fields.insert("amount".into(), Value::Double(0.5));
            DocWrite::Set { path, fields }
        };
        let mut writes: Vec<DocWrite> = Vec::new();
        writes.extend(self.lost_updates.iter().chain(&self.told_updates).map(|&i| updated(record(i), i)));
        writes.extend(self.creates_after.iter().map(|&i| DocWrite::Set {
            path: Self::created_path(pattern, i),
            fields: bookkeeping_records::record(8, TENANT_DOCS + i, now),
        }));
        writes.extend(self.lost_deletes.iter().chain(&self.told_deletes).map(|&i| DocWrite::Delete { path: record(i) }));
        for chunk in writes.chunks(COMMIT) {
            source.apply(bookkeeping_records::stamped(chunk.to_vec())).await.context("the incremental phase's writes")?;
        }

        let ctx = RowContext { ingested_at: now, run_id: "drill-incremental".into(), code_version: TOLD_CODE_VERSION.into() };
        let event_id = |kind: &str| format!("drill-{kind}-{}", uuid::Uuid::new_v4());
        let mut rows = Vec::new();
        // The told writes: each document as it now is, or its tombstone once gone.
        let told: Vec<(String, Op)> = self
            .told_updates
            .iter()
            .map(|&i| (record(i), Op::Update))
            .chain(self.creates_after[LOST_PER_KIND as usize..].iter().map(|&i| (Self::created_path(pattern, i), Op::Create)))
            .chain(self.told_deletes.iter().map(|&i| (record(i), Op::Delete)))
            .collect();
        let paths: Vec<String> = told.iter().map(|(path, _)| path.clone()).collect();
        let read = source.get_all(&paths).await?;
        for ((path, op), doc) in told.iter().zip(&read.value) {
            let routed = config.route(path).with_context(|| format!("{path} is not mirrored"))?;
            rows.push(match (op, doc) {
                (Op::Delete, None) => {
                    // Versioned at a read after the delete: above every row of the document.
                    ChangeRow::tombstone(&routed, path, Op::Delete, read.read_time.as_micros(), &event_id("told-delete"), &ctx)
                }
                (Op::Create | Op::Update, Some(doc)) => ChangeRow::live(&routed, *op, doc, &event_id("told"), &ctx)?,
                (op, doc) => bail!(
                    "{path} after the drill's {}: expected it {} in the source, found it {}",
                    op.as_str(),
                    if *op == Op::Delete { "gone" } else { "there" },
                    if doc.is_some() { "there" } else { "gone" }
                ),
            });
        }
        // Stray tombstones: just after the document's last write, never after now.
        let strays: Vec<String> = self.stray_tombstones.iter().map(|&i| record(i)).collect();
        let read = source.get_all(&strays).await?;
        for (path, doc) in strays.iter().zip(read.value) {
            let doc = doc.with_context(|| format!("{path} is not in the source: a stray tombstone needs a live document"))?;
            let routed = config.route(path).with_context(|| format!("{path} is not mirrored"))?;
            let last_write = doc.update_time.as_micros();
            let version = (last_write + 1_000).min(now.as_micros()).max(last_write);
            let mut row = ChangeRow::tombstone(&routed, path, Op::Delete, version, &event_id("stray-tombstone"), &ctx);
            row.update_time = Some(last_write);
            row.create_time = Some(doc.create_time.as_micros());
            rows.push(row);
        }
        // Phantoms: documents the source never had, written a second ago.
        let written = Timestamp::from_micros(now.as_micros() - 1_000_000);
        for &after in &self.phantoms_after {
            let path = Self::phantom_path(pattern, after);
            let routed = config.route(&path).with_context(|| format!("{path} is not mirrored"))?;
            let doc = Document { path: path.clone(), fields: bookkeeping_records::record(8, 2 * TENANT_DOCS + after, now), create_time: written, update_time: written };
            rows.push(ChangeRow::live(&routed, Op::Create, &doc, &event_id("phantom"), &ctx)?);
        }
        let expected = rows.len() as u64;
        let receipt = warehouse.append(rows).await.context("appending the incremental phase's rows")?;
        if receipt.written != expected {
            bail!("the warehouse stored {} of the incremental phase's {expected} rows ({} skipped as duplicates)", receipt.written, receipt.duplicates);
        }
        Ok(())
    }
}

/// The change field of the route the drift lands on.
fn change_field(config: &MirrorConfig) -> anyhow::Result<&str> {
    let route = &config.routes[0];
    route.change_field.as_deref().with_context(|| {
        format!("table `{}` has no change_field: the drill's incremental phase needs one (its writes set `updated_at`)", route.table)
    })
}

/// Phase 6, the same on every backend, after [`super::reconcile_phase`]: the drift of
/// [`IncrementalPlan::inject`], one repairing incremental run over the tenant, then its
/// source and latest view compared document by document.
pub(crate) async fn incremental_phase(
    source: Arc<dyn SourceStore>,
    errors: Arc<dyn ErrorLog>,
    warehouse: Arc<dyn Warehouse>,
    config: &MirrorConfig,
    clock: Arc<dyn Clock>,
    plan: &IncrementalPlan,
) -> anyhow::Result<IncrementalSection> {
    change_field(config)?;
    plan.inject(source.as_ref(), warehouse.as_ref(), config, clock.now()).await?;
    let reconciler = Reconciler::new(source.clone(), errors, warehouse.clone(), config.clone(), clock);
    let options = RunOptions { tenant: Some(INCREMENTAL_TENANT.into()), mode: ReconcileMode::Incremental, ..RunOptions::default() };
    let run = reconciler.run_with(options).await.context("the incremental reconciler run")?;
    let drifting = run.tenants.iter().find(|t| t.table == config.routes[0].table).context("the incremental run did not reconcile the drill's route")?;
    if let Some(why) = &drifting.full_because {
        tracing::error!(tenant = INCREMENTAL_TENANT, why, "the incremental run read the tenant in full");
    }
    let compared = demo::compare_routes(source.as_ref(), warehouse.as_ref(), config, &[INCREMENTAL_TENANT]).await?;
    Ok(IncrementalSection {
        tenant: INCREMENTAL_TENANT.into(),
        mode: drifting.mode,
        injected: plan.injected(),
        found: IncrementalCounts { missing: run.missing, different: run.different, orphan: run.orphan },
        source_docs_read: run.source_docs_read,
        source_docs: compared.iter().map(|route| route.source_docs).sum(),
        changed_docs: run.tenants.iter().map(|t| t.changed_docs).sum(),
        ranges_counted: run.tenants.iter().map(|t| t.ranges_counted).sum(),
        leaves_read: run.tenants.iter().map(|t| t.leaves_read).sum(),
        repaired: run.repaired,
        drift_after_repair: compared.iter().map(|route| route.drift).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_s_documents_are_distinct_and_its_count_changes_far_apart() {
        let plan = IncrementalPlan::new();
        let records: Vec<u64> = [&plan.lost_updates, &plan.told_updates, &plan.lost_deletes, &plan.told_deletes, &plan.stray_tombstones]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let distinct: BTreeSet<u64> = records.iter().copied().collect();
        assert_eq!(distinct.len(), records.len(), "one fate per document");
        assert!(records.iter().chain(&plan.phantoms_after).chain(&plan.creates_after).all(|&i| i < TENANT_DOCS));
        let mut count_changing: Vec<u64> = plan.lost_deletes.iter().chain(&plan.stray_tombstones).chain(&plan.phantoms_after).copied().collect();
        count_changing.sort_unstable();
        // Further apart than two of the reconciler's finest ranges.
        assert!(count_changing.windows(2).all(|w| w[1] - w[0] > 2 * converge_core::incremental::BUCKET_DOCUMENTS), "{count_changing:?}");
        assert_eq!(plan.injected(), IncrementalCounts { missing: 3 + 2, different: 3, orphan: 3 + 2 });
    }
}
