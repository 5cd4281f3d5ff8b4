//! `converge reconcile` and `converge retry-errors`: one reconciler run, or one pass
//! of the error log's own retry, on the embedded backends of a data directory (the
//! demo's, for instance).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use converge_backends::EmbeddedBackends;
use converge_core::{MirrorConfig, SystemClock, Warehouse};
use converge_reconcile::{ReconcileRun, Reconciler, RetryRun, RunOptions};

pub async fn run(data_dir: &Path, mirror: MirrorConfig, options: RunOptions) -> anyhow::Result<ReconcileRun> {
    Ok(open(data_dir, mirror).await?.run_with(options).await?)
}

/// Re-reads the documents open sync errors name, appends their states and resolves
/// the records (see `converge_reconcile::retry`).
pub async fn retry_errors(data_dir: &Path, mirror: MirrorConfig, tenant: Option<&str>) -> anyhow::Result<RetryRun> {
    Ok(open(data_dir, mirror).await?.retry_errors(tenant).await?)
}

async fn open(data_dir: &Path, mirror: MirrorConfig) -> anyhow::Result<Reconciler> {
    if !EmbeddedBackends::source_path(data_dir).exists() {
        anyhow::bail!("no source store in {}; run `converge demo --data-dir {}` first, or pass the right --data-dir", data_dir.display(), data_dir.display());
    }
    let backends = EmbeddedBackends::open(data_dir, Arc::new(SystemClock)).with_context(|| format!("opening {}", data_dir.display()))?;
    backends.warehouse.ensure_tables(&mirror).await?;
    let prices = converge_function::env::prices_from_env()?;
    Ok(Reconciler::new(backends.source_store(), backends.error_log(), backends.warehouse(), mirror, Arc::new(SystemClock)).with_prices(prices))
}
