//! The injected clock. Row versions never come from it (they are the source's commit
//! times); it stamps `ingested_at`, error records and run durations, and tests
//! control it.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::value::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let now = chrono::Utc::now();
        Timestamp::new(now.timestamp(), now.timestamp_subsec_nanos() as i32)
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    pub fn at(time: Timestamp) -> Self {
        Self { micros: AtomicI64::new(time.as_micros()) }
    }

    pub fn set(&self, time: Timestamp) {
        self.micros.store(time.as_micros(), Ordering::SeqCst);
    }

    pub fn advance_micros(&self, micros: i64) {
        self.micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.micros.load(Ordering::SeqCst))
    }
}
