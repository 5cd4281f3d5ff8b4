//! The `converge` command's library: one module per command (argument values in,
//! a library called, a summary out), so tests can run a command without a
//! subprocess. The scenarios `converge demo` and `converge drill` run live in
//! `converge-scenarios`; this crate only calls and prints them.
//!
//! # Layout
//!
//! - [`backfill`]: `converge backfill`, a promoted column added to the configuration
//!   filled in the rows written before it, on a data directory.
//! - [`compact`]: `converge compact` and `converge refresh-current`: compaction with a
//!   retention horizon, and the current tables refreshed, on a data directory.
//! - [`detectors`]: `converge detectors list`, the shipped detector pack.
//! - [`detect`]: `converge detect`, one detector pass on a data directory.
//! - [`etl`]: `converge etl`, one nightly-ETL pass on a data directory.
//! - [`rebuild`]: `converge rebuild` / `converge import`, one tenant through the rebuild
//!   function on loopback, with a local ID token.
//! - [`reconcile`]: `converge reconcile` and `converge retry-errors`, one reconciler run
//!   or one pass of the error log's retry on a data directory.
//! - [`quarantine`]: `converge quarantine list`, quarantined events and what to do.
//! - [`setup`]: `converge setup`, the warehouse's tables and views created (the cloud's
//!   functions only check them at start).
//! - [`sql`]: `converge sql`, a query on the embedded warehouse, one JSON object per row.
//! - [`serve`]: `converge serve`, the sync function and the relay in one process.
//! - [`bench`]: `converge bench …`, the benchmarks, with one shared measuring module
//!   (its own layout in `bench/mod.rs`).
//! - [`render`]: human-readable output (demo, drill, reconcile, rebuild).

pub mod backfill;
pub mod bench;
pub mod compact;
pub mod detect;
pub mod detectors;
pub mod etl;
pub mod quarantine;
pub mod rebuild;
pub mod reconcile;
pub mod render;
pub mod serve;
pub mod setup;
pub mod sql;

/// The mirror configuration for a command on `data_dir`: `CONVERGE_CONFIG` when it is
/// set (already read into `from_env`), else the `mirror.toml` the data directory was
/// made with (`converge demo` writes one), else the default.
pub fn mirror_for(data_dir: &std::path::Path, from_env: converge_core::MirrorConfig) -> anyhow::Result<converge_core::MirrorConfig> {
    let file = data_dir.join(converge_scenarios::demo::MIRROR_FILE);
    if std::env::var_os(converge_function::env::CONFIG).is_some() || !file.exists() {
        return Ok(from_env);
    }
    let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    converge_core::MirrorConfig::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e} (fix it, or set CONVERGE_CONFIG)", file.display()))
}
