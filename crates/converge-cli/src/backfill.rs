//! `converge backfill`: a promoted column added to the mirror configuration, filled in
//! the rows written before it, on the embedded warehouse of a data directory.
//!
//! Opening the warehouse runs setup (`Warehouse::ensure_tables`), which adds the column
//! to the changelog and its current tables (or refuses a removed or retyped one); then
//! `Warehouse::backfill_promoted` fills it in place from each row's `data`, derived as
//! a new row's value (`converge_core::schema_change`). No row's state, version or hash
//! changes, so no view's answer does except for the column itself. Re-running it finds
//! nothing left to fill.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use converge_backends::EmbeddedBackends;
use converge_core::schema_change::PromotedBackfill;
use converge_core::{MirrorConfig, SystemClock, Warehouse};

/// Fills `column` of `table` (every promoted column of the table when `None`).
pub async fn backfill(data_dir: &Path, mirror: MirrorConfig, table: &str, column: Option<&str>) -> anyhow::Result<Vec<PromotedBackfill>> {
    let route = mirror.table(table).cloned().ok_or_else(|| {
        let tables: Vec<&str> = mirror.routes.iter().map(|r| r.table.as_str()).collect();
        anyhow::anyhow!("no mirrored table `{table}` in the configuration (its tables: {})", tables.join(", "))
    })?;
    if !EmbeddedBackends::warehouse_path(data_dir).exists() {
        anyhow::bail!("no warehouse in {}; pass the right --data-dir", data_dir.display());
    }
    let backends = EmbeddedBackends::open(data_dir, Arc::new(SystemClock)).with_context(|| format!("opening {}", data_dir.display()))?;
    backends.warehouse.ensure_tables(&mirror).await?;
    let columns: Vec<String> = match column {
        Some(column) => vec![column.to_owned()],
        None => route.promoted.iter().map(|c| c.column.clone()).collect(),
    };
    let mut done = Vec::new();
    for column in columns {
        done.push(backends.warehouse.backfill_promoted(table, &column).await?);
    }
    Ok(done)
}

pub fn render(backfills: &[PromotedBackfill]) -> String {
    let mut out = String::new();
    for b in backfills {
        let _ = writeln!(
            out,
            "{}.{}: {} rows filled, {} without the field (left NULL), {} of another type (left NULL)",
            b.table, b.column, b.filled, b.absent, b.refused
        );
        if b.too_recent > 0 {
            let _ = writeln!(out, "  {} rows written too recently for the warehouse to modify: run the backfill again later", b.too_recent);
        }
        for example in &b.refused_examples {
            let _ = writeln!(out, "  refused: {example}");
        }
    }
    if backfills.iter().any(|b| b.refused > 0) {
        let _ = writeln!(out, "Rows of another type would have been quarantined as new events: fix those documents (then reconcile), or the column's type.");
    }
    out
}
