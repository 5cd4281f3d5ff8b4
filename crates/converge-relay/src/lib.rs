//! The embedded stand-in for Eventarc: delivers the SQLite store's outbox to the
//! on-write sync function as Firestore CloudEvents in binary content mode, at least
//! once, with retry and backoff.
//!
//! # Delivery guarantees
//!
//! - An event leaves the outbox's `pending` state only after the receiver answered:
//!   2xx marks it delivered, 4xx rejected (the receiver quarantined it, so resending
//!   cannot help), anything else — 5xx, 408, 429, a refused connection, a timeout —
//!   schedules another attempt after an exponential backoff with jitter. Forever:
//!   a receiver that is down only delays events.
//! - Outcomes are recorded per pass in one transaction. If the relay stops mid-pass,
//!   the outcomes it already has are recorded and the requests still in flight are
//!   abandoned: their events stay pending and are sent again, so the receiver may
//!   see an event twice (it dedupes on `ce-id`) but never misses one.
//! - Every outcome update is guarded by `status = 'pending'`, so nothing is marked
//!   twice, even by two relays.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use converge_core::{Clock, StoreError, SystemClock, Timestamp};
use converge_events::binary_headers;
use converge_sqlite::{DeliveryOutcome, OutboxEvent, SqliteStore};
use futures::future::{Fuse, FusedFuture};
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

/// How much of a refusing response's body is kept in the outbox and the logs.
const RESPONSE_SNIPPET_LIMIT: usize = 512;

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Requests in flight at once.
    pub max_in_flight: usize,
    /// Events fetched from the outbox per pass; their outcomes are recorded together.
    pub batch_size: usize,
    /// Longest sleep between looks at the outbox when nothing signals new events.
    pub poll_interval: Duration,
    /// Whole-request timeout (connect, send, response body).
    pub request_timeout: Duration,
    /// First retry delay; doubles per failed attempt of an event.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            batch_size: 1024,
            poll_interval: Duration::from_millis(250),
            request_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(5),
        }
    }
}

/// What a relay has done since it was created (or, from [`Relay::drain`], during
/// that drain).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub delivered: u64,
    pub rejected: u64,
    /// Attempts that failed transiently and were rescheduled.
    pub failed_attempts: u64,
}

impl RelayStats {
    fn since(self, earlier: RelayStats) -> RelayStats {
        RelayStats {
            delivered: self.delivered - earlier.delivered,
            rejected: self.rejected - earlier.rejected,
            failed_attempts: self.failed_attempts - earlier.failed_attempts,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay target `{target}` is not a usable URL: {reason}")]
    InvalidTarget { target: String, reason: String },
    #[error("cannot build the relay's HTTP client: {0}")]
    Client(String),
    #[error("relay outbox: {0}")]
    Store(#[from] StoreError),
    #[error("drain gave up after {waited:?} with {pending} events still pending (is the receiver up and answering 2xx?)")]
    DrainTimeout { waited: Duration, pending: u64 },
}

/// Delivers one store's outbox to one target URL.
pub struct Relay {
    store: Arc<SqliteStore>,
    target: reqwest::Url,
    client: reqwest::Client,
    config: RelayConfig,
    clock: SystemClock,
    delivered: AtomicU64,
    rejected: AtomicU64,
    failed_attempts: AtomicU64,
    /// Keyed hasher used as a cheap random source for backoff jitter.
    jitter: RandomState,
}

/// What one pass over the outbox did.
enum Pass {
    /// Attempted a batch; `all_failed` when not one attempt succeeded.
    Attempted { all_failed: bool },
    /// Nothing was due.
    Idle,
    /// The stop signal fired during the pass.
    Stopped,
}

/// Whether a loop runs until stopped or until the outbox is empty.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    Stopped,
    Empty,
}

enum LoopEnd {
    Stopped,
    Empty,
}

impl Relay {
    /// A relay from `store`'s outbox to `target` (the sync function's `POST /`).
    pub fn new(store: Arc<SqliteStore>, target: &str, config: RelayConfig) -> Result<Self, RelayError> {
        let invalid = |reason: String| RelayError::InvalidTarget { target: target.to_owned(), reason };
        let url = reqwest::Url::parse(target).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!("scheme `{}` is not http", url.scheme())));
        }
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(config.max_in_flight)
            // Eventarc talks to the function directly; a proxy from the environment
            // would only get in the way of the loopback connection.
            .no_proxy()
            .build()
            .map_err(|e| RelayError::Client(error_chain(&e)))?;
        let config = RelayConfig { max_in_flight: config.max_in_flight.max(1), batch_size: config.batch_size.max(1), ..config };
        Ok(Self {
            store,
            target: url,
            client,
            config,
            clock: SystemClock,
            delivered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            jitter: RandomState::new(),
        })
    }

    pub fn target(&self) -> &str {
        self.target.as_str()
    }

    pub fn stats(&self) -> RelayStats {
        RelayStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
        }
    }

    /// Delivers events as they are committed until `shutdown` completes. Wakes at
    /// once on a commit (the store's outbox signal) and otherwise looks at the
    /// outbox every `poll_interval` and when a retry falls due. Store errors are
    /// logged and retried: the relay only ends on `shutdown`.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> RelayStats {
        tracing::info!(target_url = %self.target, max_in_flight = self.config.max_in_flight, "relay started");
        let stop = shutdown.fuse();
        futures::pin_mut!(stop);
        self.deliver_until(stop, Until::Stopped).await;
        let stats = self.stats();
        tracing::info!(delivered = stats.delivered, rejected = stats.rejected, failed_attempts = stats.failed_attempts, "relay stopped");
        stats
    }

    /// Delivers until no event is pending (retries included), or fails with
    /// [`RelayError::DrainTimeout`] after `timeout`. Returns what this drain did.
    pub async fn drain(&self, timeout: Duration) -> Result<RelayStats, RelayError> {
        let before = self.stats();
        let started = Instant::now();
        let stop = tokio::time::sleep(timeout).fuse();
        futures::pin_mut!(stop);
        match self.deliver_until(stop, Until::Empty).await {
            LoopEnd::Empty => Ok(self.stats().since(before)),
            LoopEnd::Stopped => {
                let pending = self.store.pending_count().await?;
                Err(RelayError::DrainTimeout { waited: started.elapsed(), pending })
            }
        }
    }

    async fn deliver_until<S>(&self, mut stop: Pin<&mut Fuse<S>>, until: Until) -> LoopEnd
    where
        S: Future<Output = ()>,
    {
        let signal = self.store.outbox_signal();
        // Passes in a row in which every attempt failed: the receiver is likely
        // down, so back off as a whole instead of cycling through the outbox.
        let mut failing_passes = 0u32;
        loop {
            // A pause after a pass in which everything failed is not cut short by
            // new commits: those would only be sent into the same failure.
            let (wait, wake_on_commit) = match self.pass(stop.as_mut()).await {
                Ok(Pass::Stopped) => return LoopEnd::Stopped,
                Ok(Pass::Attempted { all_failed: false }) => {
                    failing_passes = 0;
                    continue;
                }
                Ok(Pass::Attempted { all_failed: true }) => {
                    failing_passes = failing_passes.saturating_add(1);
                    (self.backoff_delay(failing_passes - 1), false)
                }
                Ok(Pass::Idle) => match self.idle_wait(until).await {
                    Ok(Some(wait)) => (wait, true),
                    Ok(None) => return LoopEnd::Empty,
                    Err(error) => (self.store_trouble(&error), false),
                },
                Err(error) => (self.store_trouble(&error), false),
            };
            if stop.is_terminated() {
                return LoopEnd::Stopped;
            }
            tokio::select! {
                biased;
                () = &mut stop => return LoopEnd::Stopped,
                () = signal.notified(), if wake_on_commit => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn store_trouble(&self, error: &StoreError) -> Duration {
        tracing::warn!(%error, retry_in = ?self.config.poll_interval, "relay cannot read or update the outbox; will retry");
        self.config.poll_interval
    }

    /// How long to sleep when nothing is due: until the earliest retry falls due,
    /// at most one poll interval. `None` when draining and nothing is pending.
    async fn idle_wait(&self, until: Until) -> Result<Option<Duration>, StoreError> {
        let next = self.store.next_pending_attempt().await?;
        let Some(next) = next else {
            return Ok(if until == Until::Empty { None } else { Some(self.config.poll_interval) });
        };
        let due_in_us = next.as_micros().saturating_sub(self.clock.now().as_micros()).max(0);
        let due_in = Duration::from_micros(u64::try_from(due_in_us).unwrap_or(0));
        // At least a millisecond: an event that fell due between two queries is
        // picked up by the next pass, without spinning.
        Ok(Some(due_in.clamp(Duration::from_millis(1), self.config.poll_interval)))
    }

    /// Sends one batch of due events and records their outcomes.
    async fn pass<S>(&self, mut stop: Pin<&mut Fuse<S>>) -> Result<Pass, StoreError>
    where
        S: Future<Output = ()>,
    {
        let batch = self.store.pending_batch(self.config.batch_size, self.clock.now()).await?;
        if batch.is_empty() {
            return Ok(Pass::Idle);
        }
        let attempted = batch.len();
        let mut outcomes = Vec::with_capacity(attempted);
        let mut deliveries = futures::stream::iter(batch).map(|event| self.deliver(event)).buffer_unordered(self.config.max_in_flight);
        let stopped = loop {
            tokio::select! {
                biased;
                () = &mut stop => break true,
                outcome = deliveries.next() => match outcome {
                    Some(outcome) => outcomes.push(outcome),
                    None => break false,
                },
            }
        };
        // Dropping the stream cancels the requests still in flight; their events
        // stay pending and go out again on the next run.
        drop(deliveries);
        let abandoned = attempted - outcomes.len();
        let (delivered, rejected, failed) = self.record(outcomes).await?;
        tracing::debug!(attempted, delivered, rejected, failed, abandoned, "relay pass");
        if stopped {
            tracing::info!(abandoned, "relay stopping; events in flight stay pending and will be sent again");
            return Ok(Pass::Stopped);
        }
        Ok(Pass::Attempted { all_failed: delivered == 0 && rejected == 0 })
    }

    /// Records outcomes in one transaction and counts them.
    async fn record(&self, outcomes: Vec<DeliveryOutcome>) -> Result<(u64, u64, u64), StoreError> {
        let (mut delivered, mut rejected, mut failed) = (0u64, 0u64, 0u64);
        let mut first_failure = None;
        for outcome in &outcomes {
            match outcome {
                DeliveryOutcome::Delivered { .. } => delivered += 1,
                DeliveryOutcome::Rejected { .. } => rejected += 1,
                DeliveryOutcome::Failed { error, .. } => {
                    failed += 1;
                    first_failure.get_or_insert_with(|| error.clone());
                }
            }
        }
        self.store.record_outcomes(outcomes).await?;
        // Counted only once durable, so the stats never claim more than the outbox.
        self.delivered.fetch_add(delivered, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
        self.failed_attempts.fetch_add(failed, Ordering::Relaxed);
        if let Some(error) = first_failure {
            tracing::warn!(failed, delivered, first_error = %error, "relay deliveries failed; retrying with backoff");
        }
        Ok((delivered, rejected, failed))
    }

    /// One attempt to deliver one event.
    async fn deliver(&self, event: OutboxEvent) -> DeliveryOutcome {
        let OutboxEvent { seq, meta, data, attempts } = event;
        let headers = binary_headers(&meta, self.store.event_source());
        let sent = self.client.post(self.target.clone()).headers(headers).body(data).send().await;
        let error = match sent {
            Ok(response) if response.status().is_success() => return DeliveryOutcome::Delivered { seq },
            Ok(response) => {
                let status = response.status();
                let error = format!("HTTP {status}: {}", response_snippet(response).await);
                if is_permanent_refusal(status) {
                    tracing::warn!(seq, event_id = %meta.id, document = %meta.document, %error, "receiver rejected event; it will not be retried");
                    return DeliveryOutcome::Rejected { seq, error };
                }
                error
            }
            Err(error) => error_chain(&error),
        };
        let attempt = attempts.saturating_add(1);
        if attempt % 10 == 0 {
            tracing::warn!(seq, event_id = %meta.id, document = %meta.document, attempt, %error, "event still failing");
        }
        let delay = self.jittered(self.backoff_delay(attempts), seq, attempts);
        let next_attempt = Timestamp::from_micros(self.clock.now().as_micros().saturating_add(delay.as_micros() as i64));
        DeliveryOutcome::Failed { seq, error, next_attempt }
    }

    /// `base × 2^failures`, capped.
    fn backoff_delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.min(20);
        self.config.backoff_base.saturating_mul(factor).min(self.config.backoff_cap)
    }

    /// Between half the delay and the whole ("equal jitter"): retries of events
    /// that failed together spread out instead of arriving in a burst.
    fn jittered(&self, delay: Duration, seq: i64, attempts: u32) -> Duration {
        let half = delay / 2;
        let random = self.jitter.hash_one((seq, attempts, self.clock.now().nanos));
        let spread = half.as_micros() as u64;
        let extra = if spread == 0 { 0 } else { random % (spread + 1) };
        half + Duration::from_micros(extra)
    }
}

/// 4xx means the receiver looked at the event and refused it (it quarantines bad
/// input), except for the codes that mean "not now", which Eventarc retries too.
fn is_permanent_refusal(status: reqwest::StatusCode) -> bool {
    status.is_client_error() && !matches!(status.as_u16(), 408 | 429)
}

async fn response_snippet(response: reqwest::Response) -> String {
    match response.bytes().await {
        Ok(body) => {
            let text = String::from_utf8_lossy(&body);
            let mut snippet: String = text.chars().take(RESPONSE_SNIPPET_LIMIT).collect();
            if text.chars().count() > RESPONSE_SNIPPET_LIMIT {
                snippet.push('…');
            }
            snippet
        }
        Err(error) => format!("(body unreadable: {})", error_chain(&error)),
    }
}

/// An error with its causes: reqwest's own message is often just "error sending
/// request", with the useful part (connection refused, timed out) in a source.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_stays_in_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), Arc::new(SystemClock), converge_events::EventSource::local()).unwrap();
        let relay = Relay::new(Arc::new(store), "http://127.0.0.1:1/", RelayConfig::default()).unwrap();
        assert_eq!(relay.backoff_delay(0), Duration::from_millis(50));
        assert_eq!(relay.backoff_delay(3), Duration::from_millis(400));
        assert_eq!(relay.backoff_delay(7), Duration::from_secs(5));
        assert_eq!(relay.backoff_delay(u32::MAX), Duration::from_secs(5));
        for attempts in 0..50 {
            let delay = relay.backoff_delay(attempts);
            let jittered = relay.jittered(delay, 7, attempts);
            assert!(jittered >= delay / 2 && jittered <= delay, "{jittered:?} vs {delay:?}");
        }
    }

    #[test]
    fn refusals_that_mean_not_now_are_retried() {
        use reqwest::StatusCode;
        assert!(is_permanent_refusal(StatusCode::BAD_REQUEST));
        assert!(is_permanent_refusal(StatusCode::UNPROCESSABLE_ENTITY));
        assert!(!is_permanent_refusal(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_permanent_refusal(StatusCode::REQUEST_TIMEOUT));
        assert!(!is_permanent_refusal(StatusCode::SERVICE_UNAVAILABLE));
    }

    #[test]
    fn bad_targets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("s.db"), Arc::new(SystemClock), converge_events::EventSource::local()).unwrap());
        assert!(matches!(Relay::new(store.clone(), "not a url", RelayConfig::default()), Err(RelayError::InvalidTarget { .. })));
        assert!(matches!(Relay::new(store, "ftp://x/", RelayConfig::default()), Err(RelayError::InvalidTarget { .. })));
    }
}

/// A relay running in a task of the current runtime, with its stop switch.
pub struct RunningRelay {
    pub relay: Arc<Relay>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<RelayStats>,
}

impl RunningRelay {
    /// Starts `relay.run` in a new task.
    pub fn spawn(relay: Arc<Relay>) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let relay = relay.clone();
            async move {
                relay
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        Self { relay, stop, task }
    }

    /// Asks the relay to stop after recording what it has in hand, and waits for it.
    pub async fn stop(self) -> Result<RelayStats, tokio::task::JoinError> {
        let _ = self.stop.send(());
        self.task.await
    }

    /// Kills the relay where it stands: requests in flight are dropped, their events
    /// stay pending and are sent again by the next relay (at least once).
    pub async fn kill(self) -> Result<RelayStats, tokio::task::JoinError> {
        self.task.abort();
        self.task.await
    }
}
