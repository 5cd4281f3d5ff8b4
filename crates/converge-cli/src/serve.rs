//! `converge serve`: the embedded setup in one process. The on-write sync function
//! listens on the port; the relay delivers the source store's outbox to it. One
//! process, because DuckDB allows one writing process per database file.

use std::path::PathBuf;
use std::sync::Arc;

use converge_backends::EmbeddedBackends;
use converge_core::{MirrorConfig, SystemClock, Warehouse};
use converge_relay::{Relay, RelayConfig, RunningRelay};
use converge_sync::{GroupCommitConfig, SyncConfig, SyncService};

pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub port: u16,
    pub mirror: MirrorConfig,
    pub max_body_bytes: usize,
}

pub async fn run(options: ServeOptions) -> anyhow::Result<()> {
    let backends = EmbeddedBackends::open_for(&options.data_dir, Arc::new(SystemClock), &options.mirror)?;
    backends.warehouse.ensure_tables(&options.mirror).await?;
    let run_id = format!("serve-{}", uuid::Uuid::new_v4());
    let service = SyncService::start(SyncConfig {
        mirror: options.mirror.clone(),
        warehouse: backends.warehouse(),
        errors: backends.error_log(),
        clock: Arc::new(SystemClock),
        run_id: run_id.clone(),
        max_body_bytes: options.max_body_bytes,
        commit: GroupCommitConfig::default(),
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
    let address = listener.local_addr()?;
    let relay = Arc::new(Relay::new(Arc::new(backends.source.clone()), &format!("http://{address}/"), RelayConfig::default())?);
    tracing::info!(run_id, %address, data_dir = %options.data_dir.display(), "serving on-write sync with the outbox relay");
    let running_relay = RunningRelay::spawn(relay);
    converge_function::serve(listener, converge_sync::app(Arc::new(service)), converge_function::shutdown_signal()).await?;
    running_relay.stop().await?;
    Ok(())
}
