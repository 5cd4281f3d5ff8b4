//! A documents-per-second cap for backfills.

use std::time::{Duration, Instant};

/// Paces items to at most `per_second` per second, on a schedule fixed from the first
/// item: item n passes no earlier than n / rate seconds after it. After a stall
/// elsewhere (a slow scan page), the overdue items pass at once, so the cap holds as
/// an average over the run, which is what protects live sync.
#[derive(Debug)]
pub struct Throttle {
    per_second: Option<u32>,
    started: Option<Instant>,
    passed: u64,
}

impl Throttle {
    /// `None` or `Some(0)`: no cap.
    pub fn new(per_second: Option<u32>) -> Self {
        Self { per_second: per_second.filter(|n| *n > 0), started: None, passed: 0 }
    }

    pub fn is_capped(&self) -> bool {
        self.per_second.is_some()
    }

    /// Waits until one more item may pass.
    pub async fn admit(&mut self) {
        let wait = self.wait_for_next(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Counts one more item at `now` and says how long it must wait (the clock is a
    /// parameter so tests can drive it).
    pub fn wait_for_next(&mut self, now: Instant) -> Duration {
        let Some(rate) = self.per_second else { return Duration::ZERO };
        let started = *self.started.get_or_insert(now);
        self.passed += 1;
        // Item n may pass at n / rate seconds after the first.
        let due = started + Duration::from_secs_f64((self.passed - 1) as f64 / f64::from(rate));
        due.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_cap() {
        let mut throttle = Throttle::new(Some(100));
        let start = Instant::now();
        let mut now = start;
        for _ in 0..301 {
            now += throttle.wait_for_next(now);
        }
        // 301 items at 100/s: the last passes 3 s after the first.
        assert_eq!(now - start, Duration::from_secs(3));
    }

    #[test]
    fn a_stall_is_not_paid_twice() {
        let mut throttle = Throttle::new(Some(10));
        let start = Instant::now();
        assert_eq!(throttle.wait_for_next(start), Duration::ZERO);
        // The next item arrives 1 s late: it and the overdue ones pass at once.
        let late = start + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(throttle.wait_for_next(late), Duration::ZERO);
        }
        assert_eq!(throttle.wait_for_next(late), Duration::from_millis(100));
    }

    #[test]
    fn no_cap_never_waits() {
        for cap in [None, Some(0)] {
            let mut throttle = Throttle::new(cap);
            let now = Instant::now();
            assert!((0..10_000).all(|_| throttle.wait_for_next(now).is_zero()));
            assert!(!throttle.is_capped());
        }
    }
}
