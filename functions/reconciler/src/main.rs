//! reconciler: Cloud Scheduler in, one reconcile run (and its run record) out.
//! All behaviour lives in `converge-reconcile`; this binary wires it to `$PORT`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_function::telemetry::init("reconciler");
    let settings = converge_function::Settings::from_env()?;
    let state = reconciler::ReconcilerState::open(&settings).await?;
    let listener = converge_function::listen(settings.listen_address()).await?;
    tracing::info!(port = settings.port, "reconciler serving");
    state.run(listener, converge_function::shutdown_signal()).await?;
    Ok(())
}
