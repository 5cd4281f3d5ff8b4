//! on-write sync: Eventarc Firestore document events → versioned changelog rows.
//! All behaviour lives in `converge-sync`; this binary wires it to `$PORT`.

/// Many small allocations per event, made and freed on different threads (a row is
/// built by a request's task and dropped by the group-commit writer): mimalloc's
/// per-thread free lists serve that better than glibc's arenas. Only this binary:
/// the reconciler and rebuild keep glibc, whose peak memory was lower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_function::telemetry::init("on-write-sync");
    let settings = converge_function::Settings::from_env()?;
    let state = on_write_sync::SyncState::open(&settings).await?;
    let listener = converge_function::listen(settings.listen_address()).await?;
    tracing::info!(run_id = state.service.run_id(), port = settings.port, "on-write sync serving");
    state.run(listener, converge_function::shutdown_signal()).await?;
    Ok(())
}
