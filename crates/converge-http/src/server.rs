//! Serving a function's router until shutdown.

use std::future::Future;

use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

/// `GET /healthz`, merged into every function's router.
pub fn health_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
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
