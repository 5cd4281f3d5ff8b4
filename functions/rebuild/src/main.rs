//! rebuild: authenticated HTTP in, one tenant rebuilt atomically out.
//! All behaviour lives in `converge-rebuild`; this binary wires it to `$PORT`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_http::telemetry::init("rebuild");
    let settings = converge_http::Settings::from_env()?;
    let state = rebuild::RebuildState::open(&settings).await?;
    let listener = converge_http::listen(settings.listen_address()).await?;
    tracing::info!(port = settings.port, "rebuild serving");
    state.run(listener, converge_http::shutdown_signal()).await?;
    Ok(())
}
