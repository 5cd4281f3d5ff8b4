//! Sync throughput and lag per minute: how many events became durable, and how long
//! after their source commit (the event's document `update_time`, or the delete's
//! time) — the figure an alert on "the copy is falling behind" needs.
//!
//! Each minute with any traffic is written twice: as one structured log line
//! (`metric = "sync_minute"`, for Cloud Monitoring's log-based metrics, see
//! `infra/monitoring.tf`) and as a run record of kind [`SYNC_MINUTE_KIND`] in the
//! warehouse (for the status page, `converge_status`). An idle minute writes nothing.
//! Each instance records its own minutes (the batch id names the process's run id).
//!
//! On Cloud Run with CPU allocated only during requests, the recorder's tick may run
//! late; the minute it records is still the one its events came in.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use converge_core::{Clock, RunOutcome, RunRecord, Timestamp, Warehouse};
use serde::Serialize;

/// The run kind of one minute (read by the status page).
pub const SYNC_MINUTE_KIND: &str = "sync_minute";
/// How often the recorder writes.
pub const MINUTE: Duration = Duration::from_secs(60);
/// Lags kept per minute for the quantiles: beyond this, every other one is dropped
/// (the maximum is kept exactly).
const LAGS_KEPT: usize = 4096;

/// One minute's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MinuteReport {
    pub events: u64,
    pub quarantined: u64,
    pub errors: u64,
    pub lag_ms_p50: u64,
    pub lag_ms_p95: u64,
    pub lag_ms_max: u64,
}

#[derive(Default)]
struct Minute {
    events: u64,
    quarantined: u64,
    errors: u64,
    lags_ms: Vec<u64>,
    /// Keep one lag in `stride` once `lags_ms` is full.
    stride: u64,
    max_ms: u64,
}

/// The current minute's counts, shared by the handlers and the recorder.
#[derive(Default)]
pub struct SyncMinutes {
    current: Mutex<Minute>,
}

impl SyncMinutes {
    /// An event made durable `lag_ms` after its source commit.
    pub fn written(&self, lag_ms: u64) {
        let mut minute = self.current.lock().unwrap_or_else(|p| p.into_inner());
        minute.events += 1;
        minute.max_ms = minute.max_ms.max(lag_ms);
        if minute.lags_ms.len() == LAGS_KEPT {
            // Halve the sample and keep every other one from now on: it stays spread
            // over the minute and bounded.
            let kept: Vec<u64> = minute.lags_ms.iter().step_by(2).copied().collect();
            minute.lags_ms = kept;
            minute.stride = minute.stride.max(1) * 2;
        }
        if minute.stride <= 1 || minute.events % minute.stride == 0 {
            minute.lags_ms.push(lag_ms);
        }
    }

    pub fn quarantined(&self) {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).quarantined += 1;
    }

    pub fn error(&self) {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).errors += 1;
    }

    /// The minute so far, and a new one begun.
    pub fn take(&self) -> MinuteReport {
        let minute = std::mem::take(&mut *self.current.lock().unwrap_or_else(|p| p.into_inner()));
        let mut lags = minute.lags_ms;
        lags.sort_unstable();
        let quantile = |q: f64| if lags.is_empty() { 0 } else { lags[((lags.len() - 1) as f64 * q).round() as usize] };
        MinuteReport {
            events: minute.events,
            quarantined: minute.quarantined,
            errors: minute.errors,
            lag_ms_p50: quantile(0.5),
            lag_ms_p95: quantile(0.95),
            lag_ms_max: minute.max_ms,
        }
    }
}

/// Writes each minute with traffic (see the module docs) until the task is dropped.
pub fn spawn_recorder(minutes: Arc<SyncMinutes>, warehouse: Arc<dyn Warehouse>, clock: Arc<dyn Clock>, run_id: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(MINUTE);
        ticks.tick().await;
        let mut started = clock.now();
        loop {
            ticks.tick().await;
            let finished = clock.now();
            let report = minutes.take();
            if let Err(error) = record(&*warehouse, &run_id, started, finished, &report).await {
                tracing::warn!(run_id, %error, "a sync minute was not recorded; its log line stands");
            }
            started = finished;
        }
    })
}

/// Logs and records one minute (nothing for an idle one).
pub async fn record(warehouse: &dyn Warehouse, run_id: &str, started: Timestamp, finished: Timestamp, report: &MinuteReport) -> Result<(), converge_core::StoreError> {
    if report.events == 0 && report.quarantined == 0 && report.errors == 0 {
        return Ok(());
    }
    tracing::info!(
        metric = SYNC_MINUTE_KIND,
        run_id,
        events = report.events,
        quarantined = report.quarantined,
        errors = report.errors,
        lag_ms_p50 = report.lag_ms_p50,
        lag_ms_p95 = report.lag_ms_p95,
        lag_ms_max = report.lag_ms_max,
        "sync minute"
    );
    let batch_id = converge_core::batch_id(SYNC_MINUTE_KIND, run_id, &started.to_rfc3339());
    warehouse.record_run(RunRecord::new(batch_id, SYNC_MINUTE_KIND, "*".into(), started, finished, RunOutcome::Ok, report)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_reports_its_quantiles_and_starts_again() {
        let minutes = SyncMinutes::default();
        for lag in 1..=100 {
            minutes.written(lag);
        }
        minutes.quarantined();
        minutes.error();
        let report = minutes.take();
        assert_eq!(report, MinuteReport { events: 100, quarantined: 1, errors: 1, lag_ms_p50: 51, lag_ms_p95: 95, lag_ms_max: 100 });
        assert_eq!(minutes.take(), MinuteReport::default());
    }

    #[test]
    fn a_busy_minute_keeps_a_bounded_sample_and_the_exact_maximum() {
        let minutes = SyncMinutes::default();
        for i in 0..100_000u64 {
            minutes.written(i % 1000);
        }
        minutes.written(5_000);
        assert!(minutes.current.lock().unwrap().lags_ms.len() <= LAGS_KEPT);
        let report = minutes.take();
        assert_eq!((report.events, report.lag_ms_max), (100_001, 5_000));
        assert!((400..=600).contains(&report.lag_ms_p50), "{report:?}");
    }
}
