//! Phase 3, the losses: documents chosen up front (seeded), each losing one change of
//! one kind (create, update, delete) as *known* (refused for good, so recorded in
//! `sync_errors`) or *silent* (acknowledged and never written).

use std::collections::HashSet;

use anyhow::bail;
use converge_core::faulty_warehouse::FaultyWarehouse;
use converge_core::{DocWrite, ErrorKind, Op, Value};

use crate::bookkeeping_records::{self, Rng};
use super::summary::DriftCounts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Missing,
    Different,
    Orphan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Known,
    Silent,
}

/// One document that loses one change.
struct Loss {
    path: String,
    kind: Kind,
    class: Class,
    seed: u64,
}

impl Loss {
    /// The op of the lost row.
    fn op(&self) -> Op {
        match self.kind {
            Kind::Missing => Op::Create,
            Kind::Different => Op::Update,
            Kind::Orphan => Op::Delete,
        }
    }
}

/// The documents that lose a change: `per_cell` for every kind × class, spread over
/// the tenants by a seeded generator, each with an id of its own that no other
/// traffic touches.
pub(crate) struct LossPlan {
    losses: Vec<Loss>,
    per_cell: u64,
}

impl LossPlan {
    /// Losses per kind × class for a drill of `records`: at least three.
    pub(crate) fn per_cell_for(records: u64) -> u64 {
        (records / 2_000).max(3)
    }

    pub(crate) fn new(tenants: &[&str], pattern: &converge_core::PathPattern, per_cell: u64) -> Self {
        let mut rng = Rng::new(0xD811);
        let mut losses = Vec::new();
        for kind in [Kind::Missing, Kind::Different, Kind::Orphan] {
            for class in [Class::Known, Class::Silent] {
                for i in 0..per_cell {
                    let tenant = *rng.pick(tenants);
                    let id = format!("drill-{kind:?}-{class:?}-{i:04}").to_lowercase();
                    let path = pattern.document_path(tenant, &id).expect("plain pattern");
                    losses.push(Loss { path, kind, class, seed: 3_000_000 + losses.len() as u64 });
                }
            }
        }
        Self { losses, per_cell }
    }

    fn rows(&self, class: Class) -> HashSet<(String, Op)> {
        self.losses.iter().filter(|l| l.class == class).map(|l| (l.path.clone(), l.op())).collect()
    }

    /// From now on `faulty` acknowledges the silent losses' rows without storing them.
    pub(crate) fn lose_silent_rows(&self, faulty: &FaultyWarehouse) {
        let silent = self.rows(Class::Silent);
        faulty.lose_rows_where(move |row| silent.contains(&(row.doc_path.clone(), row.op)));
    }

    /// From now on `faulty` refuses the known losses' rows for good, so the sync
    /// function records each in `sync_errors` and acknowledges it.
    pub(crate) fn refuse_known_rows(&self, faulty: &FaultyWarehouse) {
        let known = self.rows(Class::Known);
        faulty.fail_rows_where(move |row| known.contains(&(row.doc_path.clone(), row.op)), ErrorKind::Permanent);
    }

    /// Every silent loss must have reached the warehouse and been dropped there (a
    /// redelivery may drop one again, so more is fine).
    pub(crate) fn check_silent_losses(&self, lost: u64) -> anyhow::Result<()> {
        if lost < self.per_cell * 3 {
            bail!("the warehouse lost {lost} rows silently; {} silent losses were planned", self.per_cell * 3);
        }
        Ok(())
    }

    /// The creates that must land before an update or a delete can be lost.
    pub(crate) fn setup_writes(&self, now: converge_core::Timestamp) -> Vec<DocWrite> {
        self.losses
            .iter()
            .filter(|l| l.kind != Kind::Missing)
            .map(|l| DocWrite::Set { path: l.path.clone(), fields: bookkeeping_records::record(7, l.seed, now) })
            .collect()
    }

    /// The changes that are lost, of one class.
    pub(crate) fn lossy_writes(&self, class: Class, now: converge_core::Timestamp) -> Vec<DocWrite> {
        self.losses
            .iter()
            .filter(|l| l.class == class)
            .map(|l| match l.kind {
                Kind::Missing => DocWrite::Set { path: l.path.clone(), fields: bookkeeping_records::record(7, l.seed, now) },
                Kind::Different => {
                    let mut fields = bookkeeping_records::record(7, l.seed, now);
                    fields.insert("amount".into(), Value::Double(0.25));
                    DocWrite::Set { path: l.path.clone(), fields }
                }
                Kind::Orphan => DocWrite::Delete { path: l.path.clone() },
            })
            .collect()
    }

    pub(crate) fn injected(&self) -> DriftCounts {
        let count = |f: &dyn Fn(&Loss) -> bool| self.losses.iter().filter(|l| f(l)).count() as u64;
        DriftCounts {
            missing: count(&|l| l.kind == Kind::Missing),
            different: count(&|l| l.kind == Kind::Different),
            orphan: count(&|l| l.kind == Kind::Orphan),
            known: count(&|l| l.class == Class::Known),
            silent: count(&|l| l.class == Class::Silent),
            ..DriftCounts::default()
        }
    }
}
