//! rebuild: authenticated HTTP in, one tenant rebuilt atomically out.
//! All behaviour lives in `converge-rebuild`; this binary wires it to `$PORT`.

use std::sync::Arc;

use anyhow::Context;
use converge_backends::{Backends, Tables};
use converge_core::SystemClock;
use converge_http::Backend;
use converge_rebuild::Rebuilder;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    converge_http::telemetry::init("rebuild");
    let settings = converge_http::Settings::from_env()?;
    let auth = rebuild::verifier_config(&settings, |name| std::env::var(name).ok())?;
    if settings.backend == Backend::Embedded {
        rebuild::ensure_local_signer(&settings.data_dir).context("creating the local signer's key")?;
    }
    let verifier = converge_auth::IdTokenVerifier::new(auth, Arc::new(SystemClock)).context("the token verifier's configuration")?;
    let backends = Backends::open(&settings, Arc::new(SystemClock)).await.context("opening the backends")?;
    backends.open_tables(&settings.mirror, Tables::Changelog).await.context("readying the warehouse's tables")?;
    let rebuilder = Arc::new(Rebuilder::new(backends.source, backends.warehouse, settings.mirror.clone(), Arc::new(SystemClock)));
    let listener = converge_http::listen(settings.listen_address()).await?;
    tracing::info!(port = settings.port, backend = backends.kind, "rebuild serving");
    converge_http::serve(listener, rebuild::app(rebuild::RebuildState { rebuilder, verifier }), converge_http::shutdown_signal()).await?;
    Ok(())
}
