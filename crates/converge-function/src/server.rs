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
/// Every request is served in a span carrying its trace (see [`request_span`]).
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router.layer(axum::middleware::from_fn(request_span))).with_graceful_shutdown(shutdown).await
}

/// Serves a request inside a `request` span naming its trace when the caller sent a
/// W3C `traceparent` (Cloud Run's front end adds one to each request it forwards), so
/// every line logged for it carries the trace (`crate::telemetry`).
pub async fn request_span(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use tracing::Instrument;
    match traceparent(request.headers()) {
        Some((trace, span)) => next.run(request).instrument(tracing::info_span!("request", trace_id = %trace, span_id = %span)).await,
        None => next.run(request).await,
    }
}

/// The trace id and parent span id of a `traceparent` header
/// (`version-traceid-parentid-flags`: 2, 32 and 16 lowercase hex digits, then the
/// flags; an all-zero id is invalid: <https://www.w3.org/TR/trace-context/#traceparent-header>).
pub fn traceparent(headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    (hex(version, 2) && version != "ff" && hex(trace, 32) && hex(span, 16) && hex(flags, 2) && !zero(trace) && !zero(span)).then(|| (trace.to_owned(), span.to_owned()))
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

    #[test]
    fn a_traceparent_is_read_only_when_well_formed() {
        let headers = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert("traceparent", value.parse().unwrap());
            headers
        };
        assert_eq!(
            traceparent(&headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736".into(), "00f067aa0ba902b7".into()))
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "nonsense",
        ] {
            assert_eq!(traceparent(&headers(bad)), None, "{bad}");
        }
        assert_eq!(traceparent(&axum::http::HeaderMap::new()), None);
    }

    /// Over the router as `serve` wraps it: a line logged while handling a request with
    /// a traceparent carries its trace.
    #[test]
    fn a_request_with_a_traceparent_logs_with_its_trace() {
        use tower::ServiceExt;
        let buffer = crate::telemetry::LogBuffer::default();
        let router = Router::new()
            .route(
                "/",
                get(|| async {
                    tracing::info!("handled");
                    "ok"
                }),
            )
            .layer(axum::middleware::from_fn(request_span));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        tracing::subscriber::with_default(crate::telemetry::cloud_logging("test", Some("p".into()), buffer.clone()), || {
            runtime.block_on(async {
                let request = axum::http::Request::get("/")
                    .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                    .body(axum::body::Body::empty())
                    .unwrap();
                router.oneshot(request).await.unwrap();
            })
        });
        let line = buffer.lines().into_iter().next().expect("a line");
        assert_eq!(line["message"], "handled");
        assert_eq!(line["logging.googleapis.com/trace"], "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
