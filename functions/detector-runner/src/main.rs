//! detector-runner: Cloud Scheduler (direct HTTP, OIDC token) or on demand in, one
//! detector pass out. All behaviour lives in `converge-detector-runner`; this binary
//! wires it to `$PORT`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_function::telemetry::init("detector-runner");
    let settings = converge_function::Settings::from_env()?;
    let state = detector_runner::DetectorRunnerState::open(&settings).await?;
    let listener = converge_function::listen(settings.listen_address()).await?;
    tracing::info!(port = settings.port, "detector-runner serving");
    state.run(listener, converge_function::shutdown_signal()).await?;
    Ok(())
}
