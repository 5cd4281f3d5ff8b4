//! on-write sync: Eventarc Firestore document events → versioned changelog rows.
//! All behaviour lives in `converge-sync`; this binary wires it to `$PORT`.

use std::sync::Arc;

use anyhow::Context;
use converge_backends::{Backends, Tables};
use converge_core::SystemClock;
use converge_sync::{GroupCommitConfig, SyncService};

/// Many small allocations per event, made and freed on different threads (a row is
/// built by a request's task and dropped by the group-commit writer): mimalloc's
/// per-thread free lists serve that better than glibc's arenas. Only this binary:
/// the reconciler and rebuild keep glibc, whose peak memory was lower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_http::telemetry::init("on-write-sync");
    let settings = converge_http::Settings::from_env()?;
    let run_id = format!("sync-{}", uuid::Uuid::new_v4());
    let backends = Backends::open(&settings, Arc::new(SystemClock)).await.context("opening the backends")?;
    backends.open_tables(&settings.mirror, Tables::Changelog).await.context("readying the warehouse's tables")?;
    let service = Arc::new(SyncService::start(
        settings.mirror.clone(),
        backends.warehouse.clone(),
        backends.errors.clone(),
        Arc::new(SystemClock),
        run_id.clone(),
        settings.max_body_bytes,
        GroupCommitConfig::default(),
    ));
    let mut app = converge_sync::app(service.clone());
    if settings.accept_emulator_events {
        app = app.merge(converge_sync::emulator_route(service));
    }
    let listener = converge_http::listen(settings.listen_address()).await?;
    tracing::info!(run_id, port = settings.port, backend = backends.kind, "on-write sync serving");
    converge_http::serve(listener, app, converge_http::shutdown_signal()).await?;
    Ok(())
}
