//! detector-runner: Cloud Scheduler (direct HTTP, OIDC token) or on demand in, one
//! detector pass out. All behaviour lives in `converge-detector-runner`; this binary
//! wires it to `$PORT`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_http::telemetry::init("detector-runner");
    let settings = converge_http::Settings::from_env()?;
    let state = detector_runner::DetectorRunnerState::open(&settings).await?;
    let listener = converge_http::listen(settings.listen_address()).await?;
    tracing::info!(port = settings.port, "detector-runner serving");
    state.run(listener, converge_http::shutdown_signal()).await?;
    Ok(())
}
