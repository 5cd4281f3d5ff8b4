//! nightly-etl: a Cloud Scheduler tick in (HTTP or Pub/Sub, OIDC-authenticated), one
//! ETL pass out. All behaviour lives in `converge-etl`; this binary wires it to `$PORT`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_function::telemetry::init("nightly-etl");
    let settings = converge_function::Settings::from_env()?;
    let state = nightly_etl::EtlState::open(&settings).await?;
    let listener = converge_function::listen(settings.listen_address()).await?;
    tracing::info!(port = settings.port, "nightly-etl serving");
    state.run(listener, converge_function::shutdown_signal()).await?;
    Ok(())
}
