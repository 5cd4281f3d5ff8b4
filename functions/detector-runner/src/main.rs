//! detector-runner: Cloud Scheduler (direct HTTP, OIDC token) or on demand in, one
//! detector pass out. All behaviour lives in `converge-detector-runner`; this binary
//! wires it to `$PORT`.

use std::sync::Arc;

use anyhow::Context;
use converge_core::{Clock, FindingsWarehouse, OpportunityStore, SystemClock, Warehouse};
use converge_detect::Pack;
use converge_detector_runner::{DetectorRunner, RunnerOptions};
use converge_http::Backend;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_http::telemetry::init("detector-runner");
    let settings = converge_http::Settings::from_env()?;
    let auth = detector_runner::verifier_config(&settings, |name| std::env::var(name).ok())?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (findings, runs, opportunities) = open(&settings, clock.clone()).await?;
    let verifier = converge_auth::IdTokenVerifier::new(auth, clock.clone()).context("the token verifier's configuration")?;
    let runner = Arc::new(DetectorRunner::new(Pack::shipped()?, findings, runs, opportunities, clock.clone(), RunnerOptions::default()));
    let listener = converge_http::listen(settings.listen_address()).await?;
    tracing::info!(port = settings.port, "detector-runner serving");
    let state = detector_runner::DetectorRunnerState { runner, verifier, clock };
    converge_http::serve(listener, detector_runner::app(state), converge_http::shutdown_signal()).await?;
    Ok(())
}

type Handles = (Arc<dyn FindingsWarehouse>, Arc<dyn Warehouse>, Arc<dyn OpportunityStore>);

/// The warehouse (findings queries and run records) and the opportunity store: DuckDB
/// and SQLite in the data directory, or BigQuery and Firestore.
async fn open(settings: &converge_http::Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Handles> {
    if settings.backend == Backend::Embedded {
        // Embedded callers sign their tokens with the data directory's local key.
        converge_http::caller_auth::ensure_local_signer(&settings.data_dir).context("creating the local signer's key")?;
    }
    let backends = converge_backends::Backends::open(settings, clock).await.context("opening the backends")?;
    backends.open_tables(&settings.mirror, converge_backends::Tables::ChangelogAndMetrics).await.context("readying the warehouse's tables")?;
    tracing::info!(backend = backends.kind, "detector-runner backends open");
    Ok((backends.findings, backends.warehouse, backends.opportunities))
}
