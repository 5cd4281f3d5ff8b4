//! Phase 4, wrong rows ([`Corruption`]): rows appended straight into the warehouse, as
//! a buggy writer or an older code version would.

use anyhow::{bail, Context};
use converge_core::hash::content_hash;
use converge_core::{ChangeRow, DocWrite, Document, Fields, MirrorConfig, Op, RowContext, SourceStore, Timestamp, Value, Warehouse};

use crate::bookkeeping_records;
use super::summary::DriftCounts;

/// The tenant whose correctly mirrored documents get wrong rows.
pub(crate) const WRONG_ROWS_TENANT: &str = "hooli";
/// The tenant given rows for documents the source never had, too many for one run to
/// tombstone.
pub(crate) const MASS_ORPHAN_TENANT: &str = "cyberdyne";
/// The mass-orphan tenant's documents in the source, and the orphans given to it: more
/// than 10 and more than 10% of its documents in the warehouse (20 of 60), so the
/// default [`OrphanGuard`] refuses them.
const MASS_ORPHAN_DOCS: u64 = 40;
pub(super) const MASS_ORPHANS: u64 = 20;
/// The code version the wrong rows claim: an older writer's.
const WRONG_ROWS_CODE_VERSION: &str = "0.0.1-older";
/// How far after a document's last write its wrong tombstone is dated (µs), at most.
const WRONG_TOMBSTONE_AFTER_US: i64 = 1_000;

/// Phase 4: rows written straight into the warehouse, in two tenants of their own
/// whose documents first go through the pipeline like any other. Each wrong row is an
/// event row (its own unique event id: DuckDB skips an id it has stored), so a source
/// read outranks it (the ordering rule, `converge_core::version`).
pub(crate) struct Corruption {
    /// Documents given wrong content, and as many given a wrong tombstone.
    per_kind: u64,
}

impl Corruption {
    pub(crate) fn new(per_kind: u64) -> Self {
        Self { per_kind }
    }

    pub(crate) fn tenants(&self) -> [&'static str; 2] {
        [WRONG_ROWS_TENANT, MASS_ORPHAN_TENANT]
    }

    /// Documents of the wrong-rows tenant: the wrong content's first, then the wrong
    /// tombstones', then some left alone.
    fn wrong_rows_docs(&self) -> u64 {
        2 * self.per_kind + 20
    }

    /// Both tenants' documents, written to the source before the wrong rows.
    pub(crate) fn setup_writes(&self, pattern: &converge_core::PathPattern, now: Timestamp) -> Vec<DocWrite> {
        let write = |tenant: &str, seed: u64, index: u64| DocWrite::Set {
            path: pattern.document_path(tenant, &bookkeeping_records::doc_id(index)).expect("plain pattern"),
            fields: bookkeeping_records::record(seed, index, now),
        };
        (0..self.wrong_rows_docs()).map(|i| write(WRONG_ROWS_TENANT, 5, i)).chain((0..MASS_ORPHAN_DOCS).map(|i| write(MASS_ORPHAN_TENANT, 6, i))).collect()
    }

    /// Appends the wrong rows, once every document of [`Self::setup_writes`] is
    /// mirrored.
    pub(crate) async fn inject(&self, source: &dyn SourceStore, warehouse: &dyn Warehouse, config: &MirrorConfig, now: Timestamp) -> anyhow::Result<()> {
        let pattern = &config.routes[0].pattern;
        let ctx = RowContext { ingested_at: now, run_id: "drill-wrong-rows".into(), code_version: WRONG_ROWS_CODE_VERSION.into() };
        let event_id = |kind: &str| format!("drill-{kind}-{}", uuid::Uuid::new_v4());
        let mut rows = Vec::new();
        for index in 0..2 * self.per_kind {
            let path = pattern.document_path(WRONG_ROWS_TENANT, &bookkeeping_records::doc_id(index)).expect("plain pattern");
            let doc = source.get(&path).await?.with_context(|| format!("{path} is not in the source"))?;
            let routed = config.route(&path).with_context(|| format!("{path} is not mirrored"))?;
            if index < self.per_kind {
                // At the genuine row's version; above it in the order by content hash.
                let wrong = Document { fields: content_sorting_above(&doc.fields), ..doc.clone() };
                rows.push(ChangeRow::live(&routed, Op::Update, &wrong, &event_id("wrong-content"), &ctx)?);
            } else {
                // After the last write, never after now.
                let last_write = doc.update_time.as_micros();
                let version = (last_write + WRONG_TOMBSTONE_AFTER_US).min(now.as_micros()).max(last_write);
                let mut row = ChangeRow::tombstone(&routed, &path, Op::Delete, version, &event_id("wrong-tombstone"), &ctx);
                // What a delete event carries: the deleted document's own times.
                row.update_time = Some(last_write);
                row.create_time = Some(doc.create_time.as_micros());
                rows.push(row);
            }
        }
        // Documents the source never had, written a second ago.
        let written = Timestamp::from_micros(now.as_micros() - 1_000_000);
        for index in 0..MASS_ORPHANS {
            let path = pattern.document_path(MASS_ORPHAN_TENANT, &format!("ghost-{index:04}")).expect("plain pattern");
            let routed = config.route(&path).with_context(|| format!("{path} is not mirrored"))?;
            let doc = Document { path: path.clone(), fields: bookkeeping_records::record(6, 1_000_000 + index, now), create_time: written, update_time: written };
            rows.push(ChangeRow::live(&routed, Op::Create, &doc, &event_id("orphan"), &ctx)?);
        }
        let expected = rows.len() as u64;
        let receipt = warehouse.append(rows).await.context("appending the wrong rows")?;
        if receipt.written != expected {
            bail!("the warehouse stored {} of the {expected} wrong rows ({} skipped as duplicates)", receipt.written, receipt.duplicates);
        }
        Ok(())
    }

    /// `base` (the loss plan's) with the wrong rows added.
    pub(crate) fn injected(&self, base: DriftCounts) -> DriftCounts {
        DriftCounts { wrong_content_same_version: self.per_kind, wrong_tombstone: self.per_kind, mass_orphan_refused: 1, ..base }
    }
}

/// Other fields than `fields`, whose content hash sorts above theirs: a wrong row at the
/// genuine row's version wins the latest view by the hash alone.
fn content_sorting_above(fields: &Fields) -> Fields {
    let genuine = content_hash(fields);
    (1..)
        .map(|k: u32| {
            let mut other = fields.clone();
            other.insert("amount".into(), Value::Double(f64::from(k) / 100.0));
            other
        })
        .find(|other| content_hash(other) > genuine)
        .expect("some amount hashes above")
}
