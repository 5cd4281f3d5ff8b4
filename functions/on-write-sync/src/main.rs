//! on-write sync: Eventarc Firestore document events → versioned changelog rows.
//! All behaviour lives in `converge-sync`; this binary wires it to `$PORT`.

use std::sync::Arc;

use anyhow::Context;
use converge_backends::EmbeddedBackends;
use converge_core::{SystemClock, Warehouse};
use converge_sync::{GroupCommitConfig, SyncService};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_http::telemetry::init("on-write-sync");
    let settings = converge_http::Settings::from_env()?;
    let run_id = format!("sync-{}", uuid::Uuid::new_v4());
    let backends = EmbeddedBackends::open(&settings.data_dir, Arc::new(SystemClock)).context("opening the embedded backends")?;
    backends.warehouse.ensure_tables(&settings.mirror).await.context("creating the changelog tables")?;
    let service = SyncService::start(
        settings.mirror.clone(),
        backends.warehouse(),
        backends.error_log(),
        Arc::new(SystemClock),
        run_id.clone(),
        settings.max_body_bytes,
        GroupCommitConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", settings.port)).await.with_context(|| format!("binding port {}", settings.port))?;
    tracing::info!(run_id, port = settings.port, data_dir = %settings.data_dir.display(), "on-write sync serving");
    converge_http::serve(listener, converge_sync::app(Arc::new(service)), converge_http::shutdown_signal()).await?;
    Ok(())
}
