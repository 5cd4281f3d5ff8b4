//! Harness for Converge's end-to-end tests: the on-write sync function served over
//! real HTTP on `127.0.0.1:0`, on the real embedded stores (SQLite source, DuckDB
//! warehouse) in a temporary directory, plus helpers to compare source and derived
//! data per tenant.
//!
//! Every server runs on its own tokio runtime, so that [`SyncServer::crash`] can end
//! it the way a process dies: every task (listener, connections, the group-commit
//! writer) is dropped at once, and the DuckDB handle with them. Work already handed
//! to the blocking pool (an append in progress) finishes first, as a write already
//! in the kernel would.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use converge_core::{
    drift, DocWrite, DriftReport, ErrorLog, Fields, MirrorConfig, SourceStore, SystemClock, Value, Warehouse,
};
use converge_duckdb::DuckWarehouse;
use converge_events::EventSource;
use converge_relay::{Relay, RelayConfig, RelayStats, RunningRelay};
use converge_sqlite::SqliteStore;
use converge_sync::{GroupCommitConfig, SyncConfig, SyncService};

pub use converge_backends::EmbeddedBackends;

/// The changelog table of the built-in route (`orgs/{tenant}/records/{doc}`).
pub const TABLE: &str = "records";

/// Whether both emulators are here for a test of the cloud path; if not, says so
/// loudly and the test returns early. The Firestore emulator needs the Google Cloud
/// SDK and Java, which a CI machine may lack; the BigQuery one is installed by
/// `make bqemulator`, so on CI (`CI=true`) its absence fails the test instead.
pub fn cloud_emulators_present(test: &str) -> bool {
    if let Err(error) = converge_firestore::emulator::locate(None) {
        eprintln!("!!!!! SKIPPED {test}: Firestore emulator unavailable ({error}); see the Makefile's test target for how to install it");
        return false;
    }
    if let Err(error) = converge_bigquery::BigQueryEmulator::binary() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{error}");
        }
        eprintln!("!!!!! SKIPPED {test}: {error}");
        return false;
    }
    true
}

/// What a fault drill must show on either backend: at least three losses of every
/// kind × class, as many known as silent, every one found and classified as injected
/// and repaired, no drift after repair, and a second run that finds nothing; and in
/// the incremental phase, drift of every kind found by an incremental run that reads
/// less than half of its tenant's documents (each drift site's range, not the tenant).
pub fn assert_drill_found_what_it_injected(summary: &converge_scenarios::drill::DrillSummary) {
    let injected = summary.injected;
    assert!(injected.missing >= 6 && injected.different >= 6 && injected.orphan >= 6, "{summary:#?}");
    assert_eq!(injected.known + injected.silent, injected.missing + injected.different + injected.orphan);
    assert_eq!(injected.known, injected.silent);
    assert_eq!(summary.found, injected, "{summary:#?}");
    assert_eq!((summary.drift_after_repair, summary.second_run_findings), (0, 0), "{summary:#?}");
    assert_eq!(summary.repaired, injected.missing + injected.different + injected.orphan);

    let inc = &summary.incremental;
    assert_eq!(inc.mode, converge_core::ReconcileMode::Incremental, "{inc:#?}");
    assert!(inc.injected.missing > 0 && inc.injected.different > 0 && inc.injected.orphan > 0, "{inc:#?}");
    assert_eq!(inc.found, inc.injected, "{inc:#?}");
    let total = inc.injected.missing + inc.injected.different + inc.injected.orphan;
    assert_eq!((inc.repaired, inc.drift_after_repair), (total, 0), "{inc:#?}");
    assert!(inc.source_docs_read < inc.source_docs / 2, "an incremental run reads a fraction of the tenant: {inc:#?}");
    // The writes since the verified point, lost and told: at least the lost updates
    // and creates, and far fewer than the tenant.
    assert!(inc.changed_docs >= inc.injected.different && inc.changed_docs < inc.source_docs / 10, "{inc:#?}");
    // One leaf per range a count-changing drift is in (lost deletes and phantoms are
    // orphans, stray tombstones missing), each in a range of its own.
    assert!(inc.leaves_read >= 1 && inc.leaves_read <= inc.injected.orphan + inc.injected.missing, "{inc:#?}");
    assert!(summary.passed, "{:?}", converge_scenarios::drill::mismatches(summary));
}

/// Runs `future`, failing the test if it takes longer than `seconds`.
pub async fn bounded<T>(seconds: u64, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(seconds), future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: did not finish within {seconds}s"),
    }
}

/// The source store of a data directory (`source.sqlite`), on the system clock.
pub fn open_source(data_dir: &Path) -> SqliteStore {
    SqliteStore::open(&EmbeddedBackends::source_path(data_dir), Arc::new(SystemClock), EventSource::local()).expect("open the source store")
}

/// The warehouse of a data directory (`warehouse.duckdb`).
pub fn open_warehouse(data_dir: &Path) -> DuckWarehouse {
    DuckWarehouse::open(&EmbeddedBackends::warehouse_path(data_dir)).expect("open the warehouse")
}

/// How a test server is set up.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub max_body_bytes: usize,
    pub commit: GroupCommitConfig,
    /// Bind this address instead of `127.0.0.1:0` (a restart on the same port).
    pub addr: Option<SocketAddr>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self { max_body_bytes: converge_function::settings::DEFAULT_MAX_BODY_BYTES, commit: GroupCommitConfig::default(), addr: None }
    }
}

/// The on-write sync function served on loopback.
pub use converge_core::faulty_warehouse::FaultyWarehouse;

pub struct SyncServer {
    /// `http://127.0.0.1:PORT/`: the Eventarc route.
    pub url: String,
    pub addr: SocketAddr,
    pub service: Arc<SyncService>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The warehouse the server was given, and whether nobody else holds it (then it
    /// must be gone once the server is).
    warehouse: Weak<dyn Warehouse>,
    owns_warehouse: bool,
}

impl SyncServer {
    /// Creates the tables on `warehouse` and serves the sync function over it. The
    /// server keeps `warehouse`; a caller that wants [`SyncServer::crash`] to close the
    /// DuckDB file must not keep a clone of it.
    pub async fn start(warehouse: Arc<dyn Warehouse>, errors: Arc<dyn ErrorLog>, options: ServerOptions) -> anyhow::Result<Self> {
        let config = MirrorConfig::default();
        let weak_warehouse = Arc::downgrade(&warehouse);
        warehouse.ensure_tables(&config).await.context("creating the changelog tables")?;
        let listener = converge_function::bind_retrying(options.addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sync-server")
            .enable_all()
            .build()
            .context("building the server's runtime")?;
        let service = {
            // The group-commit writer is spawned on the server's runtime.
            let _entered = runtime.enter();
            Arc::new(SyncService::start(SyncConfig {
                mirror: config,
                warehouse,
                errors,
                clock: Arc::new(SystemClock),
                run_id: format!("e2e-{}", addr.port()),
                max_body_bytes: options.max_body_bytes,
                commit: options.commit,
            }))
        };
        let app = converge_sync::app(service.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            converge_function::serve(listener, app, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(Self {
            url: format!("http://{addr}/"),
            addr,
            service,
            stop: Some(stop),
            task: Some(task),
            runtime: Some(runtime),
            warehouse: weak_warehouse,
            owns_warehouse: false,
        })
    }

    /// Like [`SyncServer::start`], for a warehouse nobody else holds: stopping or
    /// crashing the server checks that the warehouse is gone with it.
    pub async fn start_owned(warehouse: Arc<dyn Warehouse>, errors: Arc<dyn ErrorLog>, options: ServerOptions) -> anyhow::Result<Self> {
        let mut server = Self::start(warehouse, errors, options).await?;
        server.owns_warehouse = true;
        Ok(server)
    }

    /// Serves over the embedded backends of `data_dir` (created if needed): the
    /// warehouse is opened here and owned by the server alone.
    pub async fn start_embedded(data_dir: &Path, errors: &SqliteStore, options: ServerOptions) -> anyhow::Result<Self> {
        let warehouse = DuckWarehouse::open(&EmbeddedBackends::warehouse_path(data_dir))?;
        Self::start_owned(Arc::new(warehouse), Arc::new(errors.clone()), options).await
    }

    /// `url` + `path` (path without its leading slash).
    pub fn at(&self, path: &str) -> String {
        format!("{}{}", self.url, path.trim_start_matches('/'))
    }

    /// Graceful stop: no new connections, in-flight requests finish, then every task
    /// of the server ends and its warehouse handle is dropped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let served = bounded(30, "graceful server shutdown", task).await;
            served.expect("server task").expect("server ended with an error");
        }
        self.shut_down_runtime().await;
    }

    /// A crash: every task of the server (listener, connections mid-request, the
    /// group-commit writer) is dropped at once. Returns once the warehouse handle is
    /// gone, so the same DuckDB file can be opened again.
    pub async fn crash(mut self) {
        // The runtime goes first: dropping the stop sender earlier would begin a
        // graceful shutdown.
        self.shut_down_runtime().await;
    }

    async fn shut_down_runtime(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks until its blocking-pool work is done, which an
            // async context may not do: drop it on a thread of its own.
            let (done, finished) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                drop(runtime);
                let _ = done.send(());
            });
            bounded(30, "server runtime shutdown", finished).await.expect("runtime shutdown thread");
        }
        if self.owns_warehouse {
            assert_eq!(self.warehouse.strong_count(), 0, "the server's warehouse handle outlived the server");
        }
    }
}

impl Drop for SyncServer {
    fn drop(&mut self) {
        // A test that ended early (a failed assertion): do not block in drop.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Retries fast enough for tests; otherwise the relay's defaults.
pub fn quick_relay_config() -> RelayConfig {
    RelayConfig {
        poll_interval: Duration::from_millis(50),
        request_timeout: Duration::from_secs(10),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(250),
        ..RelayConfig::default()
    }
}

/// Starts a relay from `source` to `url` in a task of the test's runtime.
pub fn start_relay(source: &SqliteStore, url: &str, config: RelayConfig) -> RunningRelay {
    RunningRelay::spawn(Arc::new(Relay::new(Arc::new(source.clone()), url, config).expect("relay")))
}

/// Stops a relay and waits for it.
pub async fn stop_relay(relay: RunningRelay) -> RelayStats {
    bounded(30, "relay stop", relay.stop()).await.expect("relay task")
}

/// Kills a relay task where it stands.
pub async fn kill_relay(relay: RunningRelay) {
    let ended = bounded(30, "relay abort", relay.kill()).await;
    assert!(ended.as_ref().err().is_some_and(|e| e.is_cancelled()), "the relay task was expected to be cancelled: {ended:?}");
}

/// Waits until the outbox has no pending event (the demo's wait).
pub use converge_scenarios::demo::wait_for_outbox;

/// Polls `condition` every few milliseconds until it holds.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The collection of `tenant`'s records.
pub fn collection(tenant: &str) -> String {
    format!("orgs/{tenant}/records")
}

/// The path of one of `tenant`'s records.
pub fn record_path(tenant: &str, doc_id: &str) -> String {
    format!("orgs/{tenant}/records/{doc_id}")
}

/// A record's fields, all promoted columns well typed.
pub fn record_fields(n: u64, amount: f64) -> Fields {
    let mut fields = Fields::new();
    fields.insert("account".into(), Value::String(format!("4{:03} Account", n % 17)));
    fields.insert("fund".into(), Value::String(["General", "Capital", "Endowment"][(n % 3) as usize].into()));
    fields.insert("date".into(), Value::String(format!("2024-{:02}-{:02}", 1 + n % 12, 1 + n % 28)));
    fields.insert("label".into(), Value::String(["grants", "payroll", "travel"][(n % 3) as usize].into()));
    fields.insert("amount".into(), Value::Double(amount));
    fields.insert("seq".into(), Value::Integer(n as i64));
    fields
}

/// A `Set` of one record.
pub fn set(tenant: &str, doc_id: &str, n: u64, amount: f64) -> DocWrite {
    DocWrite::Set { path: record_path(tenant, doc_id), fields: record_fields(n, amount) }
}

/// A `Delete` of one record.
pub fn delete(tenant: &str, doc_id: &str) -> DocWrite {
    DocWrite::Delete { path: record_path(tenant, doc_id) }
}

/// Source vs the latest view for one tenant, document by document.
pub async fn drift_report(source: &dyn SourceStore, warehouse: &dyn Warehouse, tenant: &str) -> anyhow::Result<DriftReport> {
    let config = MirrorConfig::default();
    let route = config.table(TABLE).expect("the default configuration mirrors records");
    Ok(drift::compare_tenant(source, warehouse, route, tenant).await?)
}

/// Asserts derived == source for every tenant, and that the latest view's count
/// matches; returns the number of live documents per tenant.
pub async fn assert_converged(source: &dyn SourceStore, warehouse: &dyn Warehouse, tenants: &[&str]) -> Vec<u64> {
    let mut counts = Vec::new();
    for tenant in tenants {
        let report = drift_report(source, warehouse, tenant).await.expect("compare source and derived");
        assert!(
            report.is_clean(),
            "tenant {tenant}: derived differs from source: {} missing (e.g. {:?}), {} different (e.g. {:?}), {} orphan (e.g. {:?})",
            report.missing.len(),
            report.missing.iter().take(3).collect::<Vec<_>>(),
            report.different.len(),
            report.different.iter().take(3).collect::<Vec<_>>(),
            report.orphan.len(),
            report.orphan.iter().take(3).collect::<Vec<_>>(),
        );
        assert_eq!(report.source_docs, report.derived_docs, "tenant {tenant}");
        let scope = converge_core::SourceScope::collection(&collection(tenant)).expect("a collection path");
        let source_count = source.count(&scope).await.expect("source count");
        let latest = warehouse.latest_count(TABLE, tenant).await.expect("latest count");
        assert_eq!((report.source_docs, latest), (source_count, source_count), "tenant {tenant}: scan, count and latest view agree");
        counts.push(source_count);
    }
    counts
}

/// One integer from a single-row, single-column query.
pub async fn query_i64(warehouse: &DuckWarehouse, sql: &str) -> i64 {
    let rows = warehouse.query_json(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    let object = rows[0].as_object().expect("a row is an object");
    assert_eq!(object.len(), 1, "{sql}: {rows:?}");
    object.values().next().and_then(serde_json::Value::as_i64).unwrap_or_else(|| panic!("{sql}: not an integer: {rows:?}"))
}

/// Rows of the changelog whose event id another row already has: zero when
/// redelivery never appended twice.
pub async fn duplicate_event_ids(warehouse: &DuckWarehouse) -> i64 {
    query_i64(warehouse, "SELECT count(*) - count(DISTINCT event_id) AS duplicates FROM records").await
}

/// A reqwest client for loopback: no proxy from the environment, bounded requests.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(128)
        .build()
        .expect("http client")
}

/// A temporary data directory.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    (dir, path)
}

/// Runs `converge <args> --data-dir DIR` (the built binary, no `CONVERGE_CONFIG`, logs
/// at warn) and expects it to succeed; its stdout.
pub fn converge_ok(data_dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(binary("converge"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("CONVERGE_CONFIG")
        .env("CONVERGE_LOG", "warn")
        .output()
        .expect("run converge");
    assert!(output.status.success(), "converge {args:?}: exit {:?}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("converge prints UTF-8")
}

/// A binary of the workspace, built next to the running test (`current_exe()` is
/// `target/<profile>/deps/<test>`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "the `{name}` binary is not built (looked for {}); run `cargo build --workspace --bins` first (`make test` does), with the same CARGO_TARGET_DIR",
        path.display()
    );
    path
}
