//! Test helpers (feature `testing`): a JWKS server on loopback whose keys can be
//! rotated and whose fetches are counted, and Google-shaped ID-token claims.
//!
//! ```text
//! let key = RsaSigningKey::generate()?;
//! let jwks = JwksServer::start(key.jwk_set()).await;
//! let config = VerifierConfig::new(KeySource::jwks(jwks.url()), GOOGLE_ISSUERS, AUD, [EMAIL]);
//! let token = key.sign(&google_claims(EMAIL, AUD, now_seconds, 3600))?;
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jsonwebtoken::jwk::JwkSet;

use crate::config::GOOGLE_ISSUERS;

/// The path the server answers on, like Google's.
pub const JWKS_PATH: &str = "/oauth2/v3/certs";

struct Served {
    keys: Mutex<JwkSet>,
    cache_control: Mutex<Option<String>>,
    failing: AtomicBool,
    response_delay: Mutex<Duration>,
    fetches: AtomicUsize,
}

/// A JWKS endpoint on `127.0.0.1:<ephemeral>`. Stops when dropped.
pub struct JwksServer {
    served: Arc<Served>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Serves `keys` with `Cache-Control: public, max-age=3600` until told otherwise.
    pub async fn start(keys: JwkSet) -> Self {
        let served = Arc::new(Served {
            keys: Mutex::new(keys),
            cache_control: Mutex::new(Some("public, max-age=3600".into())),
            failing: AtomicBool::new(false),
            response_delay: Mutex::new(Duration::ZERO),
            fetches: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let app = Router::new().route(JWKS_PATH, get(serve_keys)).with_state(served.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the JWKS test server failed");
        });
        Self { served, addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.addr)
    }

    /// Replaces the served keys: a rotation.
    pub fn set_keys(&self, keys: JwkSet) {
        *self.served.keys.lock().unwrap() = keys;
    }

    /// The `Cache-Control` header to send, or none.
    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.served.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    /// While failing, every request is answered 503 (and still counted).
    pub fn set_failing(&self, failing: bool) {
        self.served.failing.store(failing, Ordering::SeqCst);
    }

    /// How long each response waits before it is sent: a slow key server, so that
    /// requests can pile up behind one fetch.
    pub fn set_response_delay(&self, delay: Duration) {
        *self.served.response_delay.lock().unwrap() = delay;
    }

    /// Requests served so far, failed ones included.
    pub fn fetch_count(&self) -> usize {
        self.served.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_keys(State(served): State<Arc<Served>>) -> Response {
    served.fetches.fetch_add(1, Ordering::SeqCst);
    let delay = *served.response_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if served.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for the test").into_response();
    }
    let body = serde_json::to_string(&*served.keys.lock().unwrap()).expect("a JWK set serializes");
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(value) = served.cache_control.lock().unwrap().as_deref() {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(value).expect("a valid header value"));
    }
    (headers, body).into_response()
}

/// A URL on loopback where nothing listens (a port bound and released): a key server
/// that is down.
pub fn unreachable_jwks_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let addr = listener.local_addr().expect("a bound listener has an address");
    drop(listener);
    format!("http://{addr}{JWKS_PATH}")
}

/// The claims of a Google ID token for a verified `email`, issued at `issued_at` (unix
/// seconds) and valid for `lifetime_seconds`.
pub fn google_claims(email: &str, audience: &str, issued_at: i64, lifetime_seconds: i64) -> serde_json::Value {
    serde_json::json!({
        "iss": GOOGLE_ISSUERS[0],
        "aud": audience,
        "azp": "117003457437398467251",
        "sub": "117003457437398467251",
        "email": email,
        "email_verified": true,
        "iat": issued_at,
        "exp": issued_at + lifetime_seconds,
    })
}
