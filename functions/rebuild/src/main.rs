//! rebuild: authenticated HTTP in, one tenant rebuilt atomically out.
//! All behaviour lives in `converge-rebuild`; this binary wires it to `$PORT`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_function::telemetry::init("rebuild");
    let settings = converge_function::Settings::from_env()?;
    let state = rebuild::RebuildState::open(&settings).await?;
    let listener = converge_function::listen(settings.listen_address()).await?;
    tracing::info!(port = settings.port, "rebuild serving");
    state.run(listener, converge_function::shutdown_signal()).await?;
    Ok(())
}
