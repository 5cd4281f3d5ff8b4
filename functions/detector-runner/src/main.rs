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
    runs.ensure_tables(&settings.mirror).await.context("creating the warehouse tables")?;
    let verifier = converge_auth::IdTokenVerifier::new(auth, clock.clone()).context("the token verifier's configuration")?;
    let runner = Arc::new(DetectorRunner::new(Pack::shipped()?, findings, runs, opportunities, clock.clone(), RunnerOptions::default()));
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", settings.port)).await.with_context(|| format!("binding port {}", settings.port))?;
    tracing::info!(port = settings.port, "detector-runner serving");
    let state = detector_runner::DetectorRunnerState { runner, verifier, clock };
    converge_http::serve(listener, detector_runner::app(state), converge_http::shutdown_signal()).await?;
    Ok(())
}

type Handles = (Arc<dyn FindingsWarehouse>, Arc<dyn Warehouse>, Arc<dyn OpportunityStore>);

/// The warehouse (findings queries and run records) and the opportunity store.
async fn open(settings: &converge_http::Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Handles> {
    match &settings.backend {
        #[cfg(feature = "embedded")]
        Backend::Embedded => {
            converge_http::caller_auth::ensure_local_signer(&settings.data_dir).context("creating the local signer's key")?;
            let embedded = converge_backends::EmbeddedBackends::open(&settings.data_dir, clock).context("opening the embedded backends")?;
            Ok((Arc::new(embedded.warehouse.clone()), Arc::new(embedded.warehouse.clone()), Arc::new(embedded.source.clone())))
        }
        #[cfg(not(feature = "embedded"))]
        Backend::Embedded => {
            let _ = clock;
            anyhow::bail!("{} is `embedded` (or unset), but this binary was built for the cloud only; set {}=cloud", converge_http::env::BACKEND, converge_http::env::BACKEND)
        }
        Backend::Cloud(_) => {
            let _ = clock;
            anyhow::bail!(
                "{}=cloud: the detector runner's BigQuery findings queries and Firestore opportunities are not implemented yet; run it embedded",
                converge_http::env::BACKEND
            )
        }
    }
}
