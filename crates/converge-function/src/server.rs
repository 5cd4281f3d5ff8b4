//! Serving a function's router until shutdown.

use std::future::Future;

use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

/// `GET /healthz`, merged into every function's router.
pub fn health_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
}

/// Pending connections the kernel queues for `accept`. Cloud Run sends up to 1,000
/// concurrent requests to an instance, and a burst of new connections can arrive
/// while every worker is busy: with the default queue (1,024 in tokio, less in std),
/// the overflow is dropped and the client retries its SYN after a full second. The
/// kernel caps this at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `address` (`Settings::listen_address`: Cloud Run's `$PORT`, on loopback
/// unless on Cloud Run or told otherwise) with [`LISTEN_BACKLOG`].
pub async fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let port = address.port();
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std and tokio do for a listener: a restarted server may bind at once.
    socket.set_reuseaddr(true)?;
    socket.bind(address).map_err(|e| std::io::Error::new(e.kind(), format!("binding port {port}: {e}")))?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish. Taking the listener (not a port) lets tests bind port 0.
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// Resolves on SIGTERM (Cloud Run's stop signal) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// Binds `addr` for a server that takes over from one that just stopped or was
/// killed, retrying for up to ten seconds while the port is still taken. The
/// listener is non-blocking, ready for a runtime of the caller's choosing.
pub async fn bind_retrying(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => {
                listener.set_nonblocking(true)?;
                return Ok(listener);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(error) => return Err(std::io::Error::new(error.kind(), format!("binding {addr}: {error}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The soft limit on open files, from `/proc/self/limits` (Linux).
    fn open_files_limit() -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    /// More simultaneous new connections than tokio's default queue holds, none of
    /// them accepted yet (every worker busy): all complete their handshake at once.
    /// With a 1,024 queue the rest would wait a second for a SYN retry.
    #[tokio::test]
    async fn a_burst_of_connections_beyond_the_default_backlog_is_queued_not_dropped() {
        const CONNECTIONS: usize = 1_300;
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        if somaxconn < CONNECTIONS as u32 || open_files_limit().unwrap_or(0) < CONNECTIONS as u64 + 64 {
            eprintln!("skipped: needs net.core.somaxconn and the open-files limit above {CONNECTIONS} (somaxconn {somaxconn}, files {:?})", open_files_limit());
            return;
        }
        let listener = listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let connects = (0..CONNECTIONS).map(|_| tokio::time::timeout(std::time::Duration::from_millis(500), tokio::net::TcpStream::connect(address)));
        let results = futures::future::join_all(connects).await;
        let completed = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(completed, CONNECTIONS, "connections left waiting for a SYN retry: the listen queue is too short");
        drop(listener);
    }
}
