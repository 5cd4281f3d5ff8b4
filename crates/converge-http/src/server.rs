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

/// Binds `0.0.0.0:port` (Cloud Run's `$PORT`) with [`LISTEN_BACKLOG`].
pub async fn listen(port: u16) -> std::io::Result<TcpListener> {
    let address = std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let socket = tokio::net::TcpSocket::new_v4()?;
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
