//! `converge serve`: the embedded setup in one process. The on-write sync function
//! listens on the port, beside the status page (`GET /status`, `GET /status.json`); the relay delivers the source store's outbox to it; the current
//! tables are refreshed from their watermarks every [`REFRESH_EVERY`] (the cloud's
//! Scheduler job does it every 15 minutes). One process, because DuckDB allows one
//! writing process per database file.

use std::path::PathBuf;
use std::sync::Arc;

use converge_backends::EmbeddedBackends;
use converge_core::{MirrorConfig, SystemClock, Warehouse};
use converge_relay::{Relay, RelayConfig, RunningRelay};
use converge_sync::{GroupCommitConfig, SyncConfig, SyncService};

/// How often `converge serve` refreshes the current tables.
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

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
    let retention = converge_retention::Retention::new(backends.warehouse(), options.mirror.clone(), Arc::new(SystemClock));
    let refresher = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(REFRESH_EVERY);
        loop {
            ticks.tick().await;
            if let Err(error) = retention.refresh(converge_core::RefreshFrom::Watermark, None).await {
                tracing::warn!(%error, "the current tables were not refreshed; the next tick tries again");
            }
        }
    });
    let status = converge_status::StatusSources::new(
        &backends.backends(),
        options.mirror.clone(),
        Arc::new(SystemClock),
        converge_status::Commands::Embedded { data_dir: options.data_dir.display().to_string() },
    );
    // Printed, not only logged: it is what a person opens.
    println!("status page: http://{address}{}", converge_status::STATUS_PATH);
    let router = converge_sync::app(Arc::new(service)).merge(converge_status::app(Arc::new(status)));
    converge_function::serve(listener, router, converge_function::shutdown_signal()).await?;
    refresher.abort();
    running_relay.stop().await?;
    Ok(())
}
