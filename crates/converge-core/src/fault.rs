//! Fault injection around a real warehouse: appends that fail on demand.
//!
//! Used by tests and the fault drill to prove that a failed write is recorded,
//! retried and converges. It wraps a real implementation; it never stands in for one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::change::ChangeRow;
use crate::config::MirrorConfig;
use crate::error::{ErrorKind, StoreError};
use crate::store::{AppendReceipt, DocState, RunRecord, Scan, Warehouse};

pub struct FaultyWarehouse {
    inner: Arc<dyn Warehouse>,
    pending_failures: AtomicUsize,
    kind: Mutex<ErrorKind>,
    injected: AtomicU64,
}

impl FaultyWarehouse {
    pub fn new(inner: Arc<dyn Warehouse>) -> Self {
        Self { inner, pending_failures: AtomicUsize::new(0), kind: Mutex::new(ErrorKind::Retryable), injected: AtomicU64::new(0) }
    }

    /// The next `count` appends fail with `kind`, without touching the warehouse.
    pub fn fail_next_appends(&self, count: usize, kind: ErrorKind) {
        *self.kind.lock().unwrap_or_else(|p| p.into_inner()) = kind;
        self.pending_failures.store(count, Ordering::SeqCst);
    }

    /// Failures still to inject.
    pub fn remaining(&self) -> usize {
        self.pending_failures.load(Ordering::SeqCst)
    }

    /// How many appends have been failed so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Warehouse for FaultyWarehouse {
    async fn ensure_tables(&self, config: &MirrorConfig) -> Result<(), StoreError> {
        self.inner.ensure_tables(config).await
    }

    async fn append(&self, rows: Vec<ChangeRow>) -> Result<AppendReceipt, StoreError> {
        let take = self.pending_failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if take.is_ok() {
            self.injected.fetch_add(1, Ordering::SeqCst);
            let kind = *self.kind.lock().unwrap_or_else(|p| p.into_inner());
            return Err(StoreError::new(kind, "fault-injection", format!("injected append failure ({} rows not written)", rows.len())));
        }
        self.inner.append(rows).await
    }

    async fn append_atomic(&self, rows: BoxStream<'static, Result<ChangeRow, StoreError>>) -> Result<AppendReceipt, StoreError> {
        // Passed through: the fault drill fails live appends, not rebuilds.
        self.inner.append_atomic(rows).await
    }

    async fn latest_states(&self, table: &str, tenant: &str) -> Result<Scan<DocState>, StoreError> {
        self.inner.latest_states(table, tenant).await
    }

    async fn latest_count(&self, table: &str, tenant: &str) -> Result<u64, StoreError> {
        self.inner.latest_count(table, tenant).await
    }

    async fn tenants(&self, table: &str) -> Result<Vec<String>, StoreError> {
        self.inner.tenants(table).await
    }

    async fn record_run(&self, run: RunRecord) -> Result<(), StoreError> {
        self.inner.record_run(run).await
    }

    async fn runs(&self, kind: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.runs(kind, limit).await
    }
}
