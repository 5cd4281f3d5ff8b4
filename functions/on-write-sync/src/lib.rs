//! The on-write sync function: its state, opened from the settings in one call, and
//! served until shutdown. All behaviour lives in `converge-sync` (the decision per event
//! and the router); this crate only builds it from the environment.
//!
//! `POST /` takes Eventarc's Firestore CloudEvents; `GET /healthz`. With
//! `CONVERGE_ACCEPT_EMULATOR_EVENTS=true` (local runs only) it also serves the Firestore
//! emulator's trigger deliveries (`converge_sync::emulator_route`).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use converge_backends::{Backends, Tables};
use converge_core::SystemClock;
use converge_function::{Settings, StartError};
use converge_sync::{GroupCommitConfig, SyncConfig, SyncService};
use tokio::net::TcpListener;

pub struct SyncState {
    pub service: Arc<SyncService>,
    /// Whether the emulator's delivery route is served too.
    pub accept_emulator_events: bool,
}

impl SyncState {
    /// The backends from the settings, their changelog tables readied (in the cloud only
    /// checked: a dataset the setup step has not made stops the start here, naming what
    /// is missing), and the sync service over them with a fresh run id, its group-commit
    /// writer started on the current runtime.
    pub async fn open(settings: &Settings) -> Result<Self, StartError> {
        let backends = Backends::open(settings, Arc::new(SystemClock)).await.map_err(StartError::Backends)?;
        backends.open_tables(&settings.mirror, Tables::Changelog).await.map_err(StartError::Tables)?;
        let run_id = format!("sync-{}", uuid::Uuid::new_v4());
        tracing::info!(run_id, backend = backends.kind, "on-write sync backends open");
        let service = SyncService::start(SyncConfig {
            mirror: settings.mirror.clone(),
            warehouse: backends.warehouse,
            errors: backends.errors,
            clock: Arc::new(SystemClock),
            run_id,
            max_body_bytes: settings.max_body_bytes,
            commit: GroupCommitConfig::default(),
        });
        Ok(Self { service: Arc::new(service), accept_emulator_events: settings.accept_emulator_events })
    }

    /// `POST /`, `GET /healthz`, and the emulator's route when asked for.
    pub fn app(&self) -> Router {
        let app = converge_sync::app(self.service.clone());
        if self.accept_emulator_events {
            app.merge(converge_sync::emulator_route(self.service.clone()))
        } else {
            app
        }
    }

    /// Serves [`SyncState::app`] on `listener` until `shutdown` resolves.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        converge_function::serve(listener, self.app(), shutdown).await
    }
}
