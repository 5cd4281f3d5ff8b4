//! What Eventarc does between Firestore and the sync function, for the Firestore
//! emulator, which does not.
//!
//! Eventarc takes each document change from Firestore and delivers it to the function
//! at least once, concurrently and unordered, retrying while the function answers 5xx
//! or cannot be reached. The emulator's trigger support posts each change straight to
//! the function, one at a time, waiting for each answer, and never retries: an event
//! answered 503, or in flight when the function dies, is gone. [`EventarcFront`] sits
//! between the two on loopback (the emulator's `--functions_emulator` points at it) and
//! gives the emulator's events Eventarc's delivery:
//!
//! - **accept**: each POST from the emulator is kept and answered 200 at once, as
//!   Eventarc accepts a change from Firestore before delivering it. (Answering only
//!   once delivered would hold the emulator's single dispatcher for every commit of
//!   the function: measured here, ~330 events/s answered at once, ~18/s with 50 ms
//!   answers. And the function would only ever see groups of one.)
//! - **deliver**: up to `concurrency` deliveries at once, each forwarded as it came
//!   (path, headers, body) to the function, retried after a 5xx, a broken connection
//!   or a timeout with exponential backoff until the function answers 2xx. A 4xx is
//!   not retried but counted as rejected: Eventarc would redeliver it too until its
//!   retention ends, but a run that sends nothing the function should refuse is better
//!   stopped than left spinning.
//! - **hold and replay**: deliveries of chosen documents are accepted and held instead
//!   of delivered ([`EventarcFront::hold_where`]); the owner then sends them in an order
//!   of its choosing, any number of times ([`EventarcFront::deliver`]) — the
//!   duplicates and the reordering Eventarc is allowed to produce, made on purpose.
//!
//! Backoff is 10 ms doubling to 250 ms, not Pub/Sub's 10 s to 600 s: the same
//! semantics at a pace a test can wait for.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::Router;
use bytes::Bytes;

/// How the front delivers.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Deliveries in flight at once (Cloud Run's concurrency per instance is 80).
    pub concurrency: usize,
    pub request_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for FrontConfig {
    fn default() -> Self {
        Self { concurrency: 64, request_timeout: Duration::from_secs(30), backoff_base: Duration::from_millis(10), backoff_cap: Duration::from_millis(250) }
    }
}

/// One event as the emulator posted it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The changed document (`ce-document`), e.g. `orgs/acme/records/r1`.
    pub document: String,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

/// Counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontStats {
    /// Events the emulator posted (held ones included).
    pub accepted: u64,
    /// Deliveries the function answered 2xx (replays included).
    pub delivered: u64,
    /// Deliveries the function answered 4xx.
    pub rejected: u64,
    /// Attempts that failed with a 5xx, a broken connection or a timeout, and were
    /// made again.
    pub retries: u64,
    /// Events accepted and held for their owner.
    pub held: u64,
    /// Events accepted and not yet delivered or rejected (held ones excluded).
    pub outstanding: u64,
}

type DocumentPredicate = Box<dyn Fn(&str) -> bool + Send + Sync>;

/// Which documents' events are held, and those held so far: one lock, so that an
/// event is either held or delivered, never dropped between the two.
#[derive(Default)]
struct Holding {
    predicate: Option<DocumentPredicate>,
    held: Vec<Delivery>,
}

struct Shared {
    target: SocketAddr,
    config: FrontConfig,
    client: reqwest::Client,
    permits: tokio::sync::Semaphore,
    holding: Mutex<Holding>,
    accepted: AtomicU64,
    delivered: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
    outstanding: AtomicU64,
    /// The last rejection, for the error that ends the run.
    last_rejection: Mutex<Option<String>>,
    /// Set when the front goes away: deliveries still retrying give up.
    closed: AtomicBool,
}

pub struct EventarcFront {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl EventarcFront {
    /// Listens on a free loopback port and delivers to the function at `target`.
    pub async fn start(target: SocketAddr, config: FrontConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().no_proxy().timeout(config.request_timeout).build()?;
        let shared = Arc::new(Shared {
            target,
            permits: tokio::sync::Semaphore::new(config.concurrency),
            config,
            client,
            holding: Mutex::new(Holding::default()),
            accepted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            last_rejection: Mutex::new(None),
            closed: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(accept).with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(converge_function::serve(listener, app, async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, shared, stop: Some(stop), server: Some(server) })
    }

    /// Where the emulator should post (its `--functions_emulator`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> FrontStats {
        let s = &self.shared;
        FrontStats {
            accepted: s.accepted.load(Ordering::SeqCst),
            delivered: s.delivered.load(Ordering::SeqCst),
            rejected: s.rejected.load(Ordering::SeqCst),
            retries: s.retries.load(Ordering::SeqCst),
            held: lock(&s.holding).held.len() as u64,
            outstanding: s.outstanding.load(Ordering::SeqCst),
        }
    }

    /// From now on events of documents for which `predicate` holds are accepted and
    /// held, not delivered, until [`Self::take_held`].
    pub fn hold_where(&self, predicate: impl Fn(&str) -> bool + Send + Sync + 'static) {
        lock(&self.shared.holding).predicate = Some(Box::new(predicate));
    }

    /// Stops holding, and hands over what was held, in the order it arrived.
    pub fn take_held(&self) -> Vec<Delivery> {
        let mut holding = lock(&self.shared.holding);
        holding.predicate = None;
        std::mem::take(&mut holding.held)
    }

    /// Delivers `delivery` now, retrying like any other, and returns once the function
    /// has answered 2xx (an error for a 4xx).
    pub async fn deliver(&self, delivery: &Delivery) -> anyhow::Result<()> {
        self.shared.outstanding.fetch_add(1, Ordering::SeqCst);
        match self.shared.deliver(delivery).await {
            Outcome::Delivered => Ok(()),
            Outcome::Rejected(detail) => bail!("the sync function refused a replayed delivery of {}: {detail}", delivery.document),
            Outcome::Closed => bail!("the front closed while delivering {}", delivery.document),
        }
    }

    /// Waits until the emulator has posted `expected` events and none is left to
    /// deliver. Fails on a rejection, when the emulator stops posting short of
    /// `expected` (a change it never emitted would otherwise show up as drift nobody
    /// injected), or after `timeout`.
    pub async fn settle(&self, expected: u64, timeout: Duration) -> anyhow::Result<FrontStats> {
        let deadline = Instant::now() + timeout;
        let quiet_limit = Duration::from_secs(30);
        let (mut last_accepted, mut last_change) = (0, Instant::now());
        loop {
            let stats = self.check()?;
            if stats.accepted >= expected && stats.outstanding == 0 {
                return Ok(stats);
            }
            if stats.accepted != last_accepted {
                (last_accepted, last_change) = (stats.accepted, Instant::now());
            } else if stats.accepted < expected && last_change.elapsed() > quiet_limit {
                bail!("the Firestore emulator posted {} of {expected} events, then nothing for {quiet_limit:?}", stats.accepted);
            }
            if Instant::now() > deadline {
                bail!("{} of {expected} events posted, {} still to deliver, after {timeout:?}", stats.accepted, stats.outstanding);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The counts, or the rejection that ends the run.
    pub fn check(&self) -> anyhow::Result<FrontStats> {
        let stats = self.stats();
        if stats.rejected > 0 {
            let last = lock(&self.shared.last_rejection).clone().unwrap_or_default();
            bail!("the sync function refused {} deliveries (last: {last}); the drill sends none that it should refuse", stats.rejected);
        }
        Ok(stats)
    }

    /// Stops accepting; deliveries still retrying give up.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server).await.context("Eventarc front shutdown")???;
        }
        Ok(())
    }
}

impl Drop for EventarcFront {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

enum Outcome {
    Delivered,
    Rejected(String),
    Closed,
}

impl Shared {
    /// One delivery, until the function answers 2xx or 4xx (or the front closes);
    /// settles one outstanding event.
    async fn deliver(&self, delivery: &Delivery) -> Outcome {
        let outcome = self.deliver_with_retries(delivery).await;
        match &outcome {
            Outcome::Delivered => {
                self.delivered.fetch_add(1, Ordering::SeqCst);
            }
            Outcome::Rejected(detail) => {
                tracing::error!(document = delivery.document, detail, "the sync function refused a delivery");
                *lock(&self.last_rejection) = Some(format!("{}: {detail}", delivery.document));
                self.rejected.fetch_add(1, Ordering::SeqCst);
            }
            Outcome::Closed => {}
        }
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    async fn deliver_with_retries(&self, delivery: &Delivery) -> Outcome {
        let Ok(_permit) = self.permits.acquire().await else { return Outcome::Closed };
        let url = format!("http://{}{}", self.target, delivery.path_and_query);
        let mut backoff = self.config.backoff_base;
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Outcome::Closed;
            }
            let request = self.client.post(&url).headers(delivery.headers.clone()).body(delivery.body.clone());
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => return Outcome::Delivered,
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status();
                    return Outcome::Rejected(format!("{status} {}", response.text().await.unwrap_or_default()));
                }
                Ok(response) => format!("answered {}", response.status()),
                Err(error) => format!("unreachable: {error}"),
            };
            self.retries.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(document = delivery.document, failure, ?backoff, "delivery failed; redelivering");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.backoff_cap);
        }
    }
}

/// Any POST from the emulator: kept, answered 200, then held or delivered.
async fn accept(State(shared): State<Arc<Shared>>, request: Request) -> StatusCode {
    if request.method() != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED;
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, converge_function::settings::DEFAULT_MAX_BODY_BYTES).await else {
        // Nothing accepted: the emulator is told so (it will not retry, and the drill's
        // count of accepted events comes up short and says so).
        return StatusCode::PAYLOAD_TOO_LARGE;
    };
    let mut headers = parts.headers;
    // Set again by the client for the forwarded request.
    for hop in [header::HOST, header::CONTENT_LENGTH, header::CONNECTION, header::TRANSFER_ENCODING] {
        headers.remove(hop);
    }
    let document = headers.get("ce-document").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    let delivery = Delivery { document, path_and_query, headers, body };
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    {
        let mut holding = lock(&shared.holding);
        if holding.predicate.as_ref().is_some_and(|hold| hold(&delivery.document)) {
            holding.held.push(delivery);
            return StatusCode::OK;
        }
    }
    shared.outstanding.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        shared.deliver(&delivery).await;
    });
    StatusCode::OK
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
