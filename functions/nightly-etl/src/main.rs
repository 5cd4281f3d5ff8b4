//! nightly-etl: a Cloud Scheduler tick in (HTTP or Pub/Sub, OIDC-authenticated), one
//! ETL pass out. All behaviour lives in `converge-etl`; this binary wires it to `$PORT`.

use std::sync::Arc;

use anyhow::Context;
use converge_backends::{Backends, Tables};
use converge_core::SystemClock;
use converge_etl::{EtlBackends, EtlRunner};
use converge_http::Backend;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_http::telemetry::init("nightly-etl");
    let settings = converge_http::Settings::from_env()?;
    let auth = nightly_etl::verifier_config(&settings, |name| std::env::var(name).ok())?;
    if settings.backend == Backend::Embedded {
        converge_http::caller_auth::ensure_local_signer(&settings.data_dir).context("creating the local signer's key")?;
    }
    let verifier = converge_auth::IdTokenVerifier::new(auth, Arc::new(SystemClock)).context("the token verifier's configuration")?;
    let backends = Backends::open(&settings, Arc::new(SystemClock)).await.context("opening the backends")?;
    backends.open_tables(&settings.mirror, Tables::ChangelogAndMetrics).await.context("readying the warehouse's tables")?;
    let runner = EtlRunner::new(
        EtlBackends {
            raw: backends.raw.clone(),
            source: backends.source.clone(),
            errors: backends.errors.clone(),
            warehouse: backends.warehouse.clone(),
            metrics: backends.metrics.clone(),
        },
        Arc::new(SystemClock),
    );
    let listener = converge_http::listen(settings.listen_address()).await?;
    tracing::info!(port = settings.port, backend = backends.kind, "nightly-etl serving");
    let state = nightly_etl::EtlState { runner: Arc::new(runner), verifier, clock: Arc::new(SystemClock) };
    converge_http::serve(listener, nightly_etl::app(state), converge_http::shutdown_signal()).await?;
    Ok(())
}
