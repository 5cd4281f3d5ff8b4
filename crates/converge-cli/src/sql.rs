//! `converge sql`: one query on the embedded warehouse.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use converge_backends::EmbeddedBackends;
use converge_duckdb::DuckWarehouse;

/// Runs `query` against the warehouse in `data_dir`, printing one JSON object per row.
pub async fn run(data_dir: &Path, query: &str, out: &mut impl Write) -> anyhow::Result<usize> {
    let path = EmbeddedBackends::warehouse_path(data_dir);
    if !path.exists() {
        anyhow::bail!("no warehouse at {}; run `converge demo --data-dir {}` first, or pass the right --data-dir", path.display(), data_dir.display());
    }
    let warehouse = DuckWarehouse::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let rows = warehouse.query_json(query).await?;
    for row in &rows {
        writeln!(out, "{row}")?;
    }
    Ok(rows.len())
}
