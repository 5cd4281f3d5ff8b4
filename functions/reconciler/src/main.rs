//! reconciler: Cloud Scheduler in, one reconcile run (and its run record) out.
//! All behaviour lives in `converge-reconcile`; this binary wires it to `$PORT`.

use std::sync::Arc;

use anyhow::Context;
use converge_backends::{Backends, Tables};
use converge_core::SystemClock;
use converge_reconcile::Reconciler;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_http::telemetry::init("reconciler");
    let settings = converge_http::Settings::from_env()?;
    let backends = Backends::open(&settings, Arc::new(SystemClock)).await.context("opening the backends")?;
    backends.open_tables(&settings.mirror, Tables::Changelog).await.context("readying the warehouse's tables")?;
    let reconciler = Reconciler::new(backends.source, backends.errors, backends.warehouse, settings.mirror.clone(), Arc::new(SystemClock));
    let listener = converge_http::listen(settings.listen_address()).await?;
    tracing::info!(port = settings.port, backend = backends.kind, "reconciler serving");
    converge_http::serve(listener, reconciler::app(Arc::new(reconciler)), converge_http::shutdown_signal()).await?;
    Ok(())
}
