//! A local BigQuery emulator (PyPI `bqemulator`: REST + gRPC Storage API, DuckDB
//! underneath) on loopback ports, for the adapter's tests and the CLI.
//!
//! [`BigQueryEmulator::start`] runs the binary in its own process group, waits until
//! both ports accept connections, and dropping the value kills the whole group, so
//! nothing stays running after a test, even one that panics.
//!
//! The binary is `$CONVERGE_BQEMULATOR`, else `tools/bqemulator/venv/bin/bqemulator`
//! in the workspace; `make bqemulator` (a dependency of `make test`) installs it. It
//! runs with `HOME` set to the `home` directory next to its venv, where the Makefile
//! put the DuckDB extensions bqemulator needs (it would otherwise download them).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use converge_core::StoreError;

use crate::config::BigQueryConfig;
use crate::warehouse::BigQueryWarehouse;

/// Names the emulator binary; the same name as `converge_function::env::BQEMULATOR`
/// (this crate does not depend on the HTTP plumbing).
pub const BINARY_ENV: &str = "CONVERGE_BQEMULATOR";

/// The project every emulator instance serves.
pub const PROJECT: &str = "converge-test";

/// How long the emulator may take to listen (it is ready in ~1 s on an idle machine;
/// a loaded 2-core CI machine building Rust meanwhile is much slower).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("BigQuery emulator not installed: expected {path} (set by ${BINARY_ENV} or the workspace default); run `make bqemulator` (or `make test`, which installs it)")]
    Missing { path: PathBuf },
    #[error("cannot start the BigQuery emulator {path}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("the BigQuery emulator exited before listening ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("the BigQuery emulator did not listen on {rest} and {grpc} within {} s; its log:\n{log}", READY_TIMEOUT.as_secs())]
    NotReady { rest: SocketAddr, grpc: SocketAddr, log: String },
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
}

/// A running emulator. Dropping it kills the emulator and its children.
pub struct BigQueryEmulator {
    child: Child,
    rest: SocketAddr,
    grpc: SocketAddr,
    log: PathBuf,
}

/// `relative` under the nearest directory, from the current one upwards, that has it
/// (cargo runs tests from their package directory, inside the workspace).
fn workspace_file(relative: &str) -> PathBuf {
    let start = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    start
        .ancestors()
        .map(|dir| dir.join(relative))
        .find(|candidate| candidate.exists())
        .unwrap_or_else(|| start.join(relative))
}

impl BigQueryEmulator {
    /// The binary that [`start`](Self::start) would run, if it is installed.
    pub fn binary() -> Result<PathBuf, EmulatorError> {
        let path = match std::env::var_os(BINARY_ENV) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            // Found at run time, not compile time: a build cache shared by checkouts in
            // different places must not carry one checkout's path into another.
            _ => workspace_file("tools/bqemulator/venv/bin/bqemulator"),
        };
        if path.is_file() {
            Ok(path)
        } else {
            Err(EmulatorError::Missing { path })
        }
    }

    /// Starts an emulator on free loopback ports and waits until it listens.
    pub async fn start() -> Result<Self, EmulatorError> {
        let binary = Self::binary()?;
        let (rest, grpc) = (free_port()?, free_port()?);
        static INSTANCE: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir()
            .join(format!("converge-bqemulator-{}-{}.log", std::process::id(), INSTANCE.fetch_add(1, Ordering::Relaxed)));
        let log_file = std::fs::File::create(&log).map_err(|source| EmulatorError::Spawn { path: log.clone(), source })?;
        let mut command = Command::new(&binary);
        command
            .args(["start", "--project", PROJECT, "--ephemeral", "--log-level", "warning"])
            .args(["--rest-host", "127.0.0.1", "--rest-port", &rest.port().to_string()])
            .args(["--grpc-host", "127.0.0.1", "--grpc-port", &grpc.port().to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|source| EmulatorError::Spawn { path: log.clone(), source })?)
            .stderr(log_file);
        // venv/bin/bqemulator → venv/.. /home, where the Makefile put the DuckDB extensions.
        if let Some(home) = binary.parent().and_then(Path::parent).and_then(Path::parent).map(|d| d.join("home")) {
            if home.is_dir() {
                command.env("HOME", home);
            }
        }
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so Drop can kill Python and anything it spawned.
            command.process_group(0);
        }
        let child = command.spawn().map_err(|source| EmulatorError::Spawn { path: binary.clone(), source })?;
        let mut emulator = Self { child, rest, grpc, log };
        emulator.wait_ready().await?;
        Ok(emulator)
    }

    async fn wait_ready(&mut self) -> Result<(), EmulatorError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EmulatorError::Exited { status: status.to_string(), log: self.log_text() });
            }
            let rest = tokio::net::TcpStream::connect(self.rest).await.is_ok();
            // The gRPC server starts after the REST one: both must accept.
            if rest && tokio::net::TcpStream::connect(self.grpc).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmulatorError::NotReady { rest: self.rest, grpc: self.grpc, log: self.log_text() });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The emulator's output so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn project(&self) -> &str {
        PROJECT
    }

    pub fn rest_url(&self) -> String {
        format!("http://{}", self.rest)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A configuration for `dataset` on this emulator.
    pub fn config(&self, dataset: &str) -> BigQueryConfig {
        BigQueryConfig::emulator(PROJECT, dataset, self.rest_url(), self.grpc_url()).expect("emulator project and test dataset names are valid")
    }

    /// A warehouse on `dataset` of this emulator (created by `ensure_tables`).
    pub async fn warehouse(&self, dataset: &str) -> Result<BigQueryWarehouse, StoreError> {
        BigQueryWarehouse::connect(self.config(dataset)).await
    }

    /// A warehouse on a dataset no other call of this process has used: a fresh, empty
    /// warehouse on a shared emulator.
    pub async fn fresh_warehouse(&self) -> Result<BigQueryWarehouse, StoreError> {
        static DATASET: AtomicU32 = AtomicU32::new(0);
        self.warehouse(&format!("converge_{}_{}", std::process::id(), DATASET.fetch_add(1, Ordering::Relaxed))).await
    }

    /// For tests: the running emulator, or `None` after one loud line when it is not
    /// installed. In CI (`CI=true`) a missing emulator fails instead: the Makefile
    /// always installs it there, so its absence is a broken setup, not a skip.
    pub async fn for_tests() -> Option<Self> {
        match Self::start().await {
            Ok(emulator) => Some(emulator),
            Err(error @ EmulatorError::Missing { .. }) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("SKIPPED BigQuery emulator tests: {error}");
                None
            }
            Err(error) => panic!("{error}"),
        }
    }
}

impl Drop for BigQueryEmulator {
    fn drop(&mut self) {
        // The whole group: bqemulator may run workers of its own.
        let group = format!("-{}", self.child.id());
        let killed = Command::new("kill").args(["-KILL", "--", &group]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !killed.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> Result<SocketAddr, EmulatorError> {
    // Bound and released: another process could take it before the emulator does, a
    // race that shows up as `Exited` with "address already in use" in the log.
    let listener = TcpListener::bind("127.0.0.1:0").map_err(EmulatorError::Port)?;
    listener.local_addr().map_err(EmulatorError::Port)
}
