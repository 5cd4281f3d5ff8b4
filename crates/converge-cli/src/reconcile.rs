//! `converge reconcile`: one reconciler run on the embedded backends of a data
//! directory (the demo's, for instance).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use converge_backends::EmbeddedBackends;
use converge_core::{MirrorConfig, SystemClock, Warehouse};
use converge_reconcile::{ReconcileRun, Reconciler, RunOptions};

pub async fn run(data_dir: &Path, mirror: MirrorConfig, options: RunOptions) -> anyhow::Result<ReconcileRun> {
    if !EmbeddedBackends::source_path(data_dir).exists() {
        anyhow::bail!("no source store in {}; run `converge demo --data-dir {}` first, or pass the right --data-dir", data_dir.display(), data_dir.display());
    }
    let backends = EmbeddedBackends::open(data_dir, Arc::new(SystemClock)).with_context(|| format!("opening {}", data_dir.display()))?;
    backends.warehouse.ensure_tables(&mirror).await?;
    let reconciler = Reconciler::new(backends.source_store(), backends.error_log(), backends.warehouse(), mirror, Arc::new(SystemClock));
    Ok(reconciler.run_with(options).await?)
}
