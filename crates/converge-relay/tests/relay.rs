//! The relay against a real HTTP receiver on 127.0.0.1:0 that decodes every request
//! as the sync function would and answers as each test tells it to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use converge_core::{DocWrite, SourceStore, SystemClock};
use converge_events::EventSource;
use converge_relay::{Relay, RelayConfig, RelayError, RelayStats};
use converge_sqlite::{OutboxStats, SqliteStore};

/// How the receiver answers a request.
#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    /// Never answers (until the client gives up).
    Hang,
}

/// Decides the reply from the event id's attempt number (1-based) and the request's
/// overall number (0-based).
type Policy = Arc<dyn Fn(u32, usize) -> Reply + Send + Sync>;

struct Receiver {
    url: String,
    policy: RwLock<Policy>,
    attempts_by_id: Mutex<HashMap<String, u32>>,
    requests: AtomicUsize,
    undecodable: AtomicUsize,
}

impl Receiver {
    async fn start(policy: Policy) -> Arc<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let receiver = Arc::new(Receiver {
            url,
            policy: RwLock::new(policy),
            attempts_by_id: Mutex::default(),
            requests: AtomicUsize::new(0),
            undecodable: AtomicUsize::new(0),
        });
        let app = Router::new().route("/", post(receive)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    fn set_policy(&self, policy: Policy) {
        *self.policy.write().unwrap() = policy;
    }

    fn attempts_by_id(&self) -> HashMap<String, u32> {
        self.attempts_by_id.lock().unwrap().clone()
    }

    async fn wait_for_requests(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.requests.load(Ordering::SeqCst) < count {
            assert!(Instant::now() < deadline, "receiver saw only {} requests", self.requests.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let change = match converge_events::decode(&headers, body.to_vec()) {
        Ok(change) => change,
        Err(_) => {
            receiver.undecodable.fetch_add(1, Ordering::SeqCst);
            return StatusCode::BAD_REQUEST;
        }
    };
    let attempt = {
        let mut attempts = receiver.attempts_by_id.lock().unwrap();
        let count = attempts.entry(change.event_id.clone()).or_insert(0);
        *count += 1;
        *count
    };
    let request = receiver.requests.fetch_add(1, Ordering::SeqCst);
    let policy = receiver.policy.read().unwrap().clone();
    match policy(attempt, request) {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }
}

struct Source {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
}

async fn source_with_events(count: usize) -> Source {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("source.db"), Arc::new(SystemClock), EventSource::local()).unwrap();
    let writes: Vec<DocWrite> = (0..count).map(write).collect();
    for chunk in writes.chunks(2_000) {
        store.apply(chunk.to_vec()).await.unwrap();
    }
    Source { _dir: dir, store: Arc::new(store) }
}

fn write(i: usize) -> DocWrite {
    let fields = converge_core::value::fields_from_json(&serde_json::json!({"i": i, "amount": 1.5, "account": "A"})).unwrap();
    DocWrite::Set { path: format!("orgs/t{}/records/r{i:06}", i % 3), fields }
}

fn quick_retries() -> RelayConfig {
    RelayConfig {
        backoff_base: Duration::from_millis(2),
        backoff_cap: Duration::from_millis(20),
        poll_interval: Duration::from_millis(50),
        ..RelayConfig::default()
    }
}

#[tokio::test]
async fn failed_attempts_are_retried_until_accepted() {
    let events = 30;
    let source = source_with_events(events).await;
    // Every event is refused twice with 503, then accepted.
    let receiver = Receiver::start(Arc::new(|attempt, _| if attempt <= 2 { Reply::Status(503) } else { Reply::Status(204) })).await;
    let relay = Relay::new(source.store.clone(), &receiver.url, quick_retries()).unwrap();
    let stats = relay.drain(Duration::from_secs(20)).await.unwrap();
    assert_eq!(stats, RelayStats { delivered: events as u64, rejected: 0, failed_attempts: 2 * events as u64 });
    assert_eq!(
        source.store.outbox_stats().await.unwrap(),
        OutboxStats { pending: 0, delivered: events as u64, rejected: 0, attempts: 3 * events as u64 }
    );
    let attempts = receiver.attempts_by_id();
    assert_eq!(attempts.len(), events);
    assert!(attempts.values().all(|&n| n == 3), "{attempts:?}");
    assert_eq!(receiver.undecodable.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn refused_events_are_rejected_and_not_retried() {
    let source = source_with_events(5).await;
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Status(400))).await;
    let relay = Relay::new(source.store.clone(), &receiver.url, quick_retries()).unwrap();
    let stats = relay.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(stats, RelayStats { delivered: 0, rejected: 5, failed_attempts: 0 });
    assert_eq!(source.store.outbox_stats().await.unwrap(), OutboxStats { pending: 0, delivered: 0, rejected: 5, attempts: 5 });
    // Nothing left to send: a second drain sends nothing.
    assert_eq!(relay.drain(Duration::from_secs(1)).await.unwrap(), RelayStats::default());
    assert!(receiver.attempts_by_id().values().all(|&n| n == 1));
}

#[tokio::test]
async fn a_relay_stopped_mid_batch_loses_nothing() {
    let events = 50;
    let in_flight = 8;
    let source = source_with_events(events).await;
    // The first ten requests are accepted; after that the receiver stops answering,
    // so the relay is stopped with eight requests in flight.
    let receiver = Receiver::start(Arc::new(|_, request| if request < 10 { Reply::Status(200) } else { Reply::Hang })).await;
    let config = RelayConfig { max_in_flight: in_flight, ..quick_retries() };
    let relay = Arc::new(Relay::new(source.store.clone(), &receiver.url, config.clone()).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let relay = relay.clone();
        async move {
            relay
                .run(async move {
                    let _ = stop_rx.await;
                })
                .await
        }
    });
    // Request 17 is only sent once the tenth answer has been taken in.
    receiver.wait_for_requests(10 + in_flight).await;
    stop_tx.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), running).await.expect("run ends promptly").unwrap();
    assert_eq!(stopped.delivered, 10);
    let after_stop = source.store.outbox_stats().await.unwrap();
    assert_eq!(after_stop, OutboxStats { pending: 40, delivered: 10, rejected: 0, attempts: 10 }, "in-flight events stay pending");

    // Restart against a receiver that answers again.
    receiver.set_policy(Arc::new(|_, _| Reply::Status(200)));
    let restarted = Relay::new(source.store.clone(), &receiver.url, config).unwrap();
    let stats = restarted.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(stats.delivered, 40);
    assert_eq!(source.store.outbox_stats().await.unwrap(), OutboxStats { pending: 0, delivered: 50, rejected: 0, attempts: 50 });
    let attempts = receiver.attempts_by_id();
    assert_eq!(attempts.len(), events, "every event arrived");
    assert_eq!(attempts.values().filter(|&&n| n == 2).count(), in_flight, "exactly the abandoned ones were sent again");
    assert_eq!(attempts.values().filter(|&&n| n == 1).count(), events - in_flight);
}

#[tokio::test]
async fn a_running_relay_wakes_on_commit() {
    let source = source_with_events(0).await;
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Status(200))).await;
    // A poll interval far longer than the test: only the commit signal can wake it.
    let config = RelayConfig { poll_interval: Duration::from_secs(60), ..RelayConfig::default() };
    let relay = Arc::new(Relay::new(source.store.clone(), &receiver.url, config).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let relay = relay.clone();
        async move {
            relay
                .run(async move {
                    let _ = stop_rx.await;
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    source.store.apply(vec![write(1)]).await.unwrap();
    receiver.wait_for_requests(1).await;
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    source.store.apply(vec![write(2), write(3)]).await.unwrap();
    receiver.wait_for_requests(3).await;
    stop_tx.send(()).unwrap();
    let stats = running.await.unwrap();
    assert_eq!(stats.delivered, 3);
}

#[tokio::test]
async fn drain_gives_up_at_its_deadline_and_keeps_events_pending() {
    let source = source_with_events(3).await;
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Status(503))).await;
    let relay = Relay::new(source.store.clone(), &receiver.url, quick_retries()).unwrap();
    match relay.drain(Duration::from_millis(300)).await {
        Err(RelayError::DrainTimeout { pending, .. }) => assert_eq!(pending, 3),
        other => panic!("expected a drain timeout, got {other:?}"),
    }
    let stats = source.store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.delivered), (3, 0));
    assert!(stats.attempts >= 3);
    assert_eq!(relay.stats().failed_attempts, stats.attempts);
}

#[tokio::test]
async fn a_receiver_that_is_down_only_delays_events() {
    let source = source_with_events(4).await;
    // Reserve a port, then close it: connections are refused until the receiver
    // starts there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let relay = Relay::new(source.store.clone(), &format!("http://{address}/"), quick_retries()).unwrap();
    assert!(relay.drain(Duration::from_millis(200)).await.is_err());
    let refused = relay.stats().failed_attempts;
    assert!(refused >= 4, "{refused}");

    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let app = Router::new().route("/", post(|| async { StatusCode::OK }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let stats = relay.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(stats.delivered, 4);
}

#[tokio::test]
async fn throughput_sanity() {
    let events = 5_000;
    let source = source_with_events(events).await;
    let receiver = Receiver::start(Arc::new(|_, _| Reply::Status(200))).await;
    let relay = Relay::new(source.store.clone(), &receiver.url, RelayConfig::default()).unwrap();
    let start = Instant::now();
    let stats = relay.drain(Duration::from_secs(60)).await.unwrap();
    let rate = events as f64 / start.elapsed().as_secs_f64();
    eprintln!("relay: {events} events in {:?}: {rate:.0} events/s", start.elapsed());
    assert_eq!(stats.delivered, events as u64);
    assert_eq!(receiver.attempts_by_id().len(), events);
    assert!(rate > 500.0, "{rate:.0} events/s");
}
