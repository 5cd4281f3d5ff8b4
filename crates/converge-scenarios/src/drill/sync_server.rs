//! The sync function as the drill runs it: on a runtime of its own, so it can be
//! killed the way a process dies.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use converge_core::faulty_warehouse::FaultyWarehouse;
use converge_core::{ErrorLog, MirrorConfig, SystemClock, Warehouse};
use converge_sync::{GroupCommitConfig, SyncConfig, SyncService};

/// The sync function on a runtime of its own, so that a crash ends it the way a
/// process dies: every task (listener, connections, the group-commit writer, and the
/// connections of clients opened on that runtime) at once.
pub(crate) struct DrillServer {
    pub(crate) addr: SocketAddr,
    pub(crate) service: Arc<SyncService>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DrillServer {
    /// The runtime a sync process runs on: build its clients on it (see
    /// [`Self::start_on`]) and they die with it.
    pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("drill-sync").enable_all().build()?)
    }

    /// The sync function on `addr` (a free port when `None`), on a runtime of its own,
    /// writing through stores that outlive it (the embedded ones).
    pub(super) async fn start(warehouse: Arc<dyn Warehouse>, errors: Arc<dyn ErrorLog>, config: &MirrorConfig, addr: Option<SocketAddr>) -> anyhow::Result<Self> {
        let listener = converge_function::bind_retrying(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
        Self::start_on(Self::runtime()?, listener, warehouse, errors, config, false).await
    }

    /// The sync function on `runtime`, serving `listener` (bound beforehand, so its
    /// address can be handed out before the stores are open); with `emulator_route`
    /// it also serves the Firestore emulator's delivery path.
    pub(crate) async fn start_on(
        runtime: tokio::runtime::Runtime,
        listener: std::net::TcpListener,
        warehouse: Arc<dyn Warehouse>,
        errors: Arc<dyn ErrorLog>,
        config: &MirrorConfig,
        emulator_route: bool,
    ) -> anyhow::Result<Self> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let service = {
            let _entered = runtime.enter();
            Arc::new(SyncService::start(SyncConfig {
                mirror: config.clone(),
                warehouse,
                errors,
                clock: Arc::new(SystemClock),
                run_id: format!("drill-{}", uuid::Uuid::new_v4()),
                max_body_bytes: converge_function::settings::DEFAULT_MAX_BODY_BYTES,
                commit: GroupCommitConfig::default(),
            }))
        };
        let mut app = converge_sync::app(service.clone());
        if emulator_route {
            app = app.merge(converge_sync::emulator_route(service.clone()));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            converge_function::serve(listener, app, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Self { addr, service, stop: Some(stop), task: Some(task), runtime: Some(runtime) })
    }

    /// Arms `faulty` (the warehouse this server writes through) to stall after its next
    /// commit, waits until an append has committed and stalled, and kills the server
    /// there: the events of that group commit are stored but never answered, so they
    /// come back. Returns the rows the warehouse had skipped as already stored until
    /// then (the new server's committer counts from zero).
    pub(crate) async fn kill_mid_group_commit(self, faulty: &FaultyWarehouse) -> anyhow::Result<u64> {
        faulty.stall_after_next_commit();
        wait_for("the sync function to stall after a commit", Duration::from_secs(120), || faulty.stalled()).await?;
        let skipped = self.service.committer().stats().duplicates.load(Ordering::Relaxed);
        self.crash().await;
        Ok(skipped)
    }

    /// Graceful: in-flight requests finish, then every task ends.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task).await.context("sync function shutdown")???;
        }
        self.drop_runtime().await
    }

    /// Every task dropped where it stands.
    async fn crash(mut self) {
        let _ = self.drop_runtime().await;
    }

    async fn drop_runtime(&mut self) -> anyhow::Result<()> {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks until its blocking work is done: not here.
            let (done, finished) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                drop(runtime);
                let _ = done.send(());
            });
            finished.await.context("runtime shutdown thread")?;
        }
        Ok(())
    }
}

impl Drop for DrillServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub(crate) async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
