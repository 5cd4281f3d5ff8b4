//! Fault injection around a real warehouse: appends that fail, lose rows or hang on
//! demand.
//!
//! Five faults, independent of each other; the first four apply to appends, in this
//! order:
//! - by count: the next `n` appends fail ([`FaultyWarehouse::fail_next_appends`]),
//!   whatever they carry — a warehouse that is briefly unavailable;
//! - by row: every append carrying a row that matches a predicate fails
//!   ([`FaultyWarehouse::fail_rows_where`]), each time it is tried — a row the
//!   warehouse refuses for good. Nothing of such an append is written;
//! - silent loss: rows matching a predicate are acknowledged as written but never
//!   stored ([`FaultyWarehouse::lose_rows_where`]) — a hole in error capture;
//! - a crash between commit and answer: the next append commits, then never returns
//!   ([`FaultyWarehouse::stall_after_next_commit`]).
//!
//! The fifth interrupts the next atomic append (a rebuild) after `n` rows
//! ([`FaultyWarehouse::interrupt_next_atomic_after`]): its stream ends in an error
//! mid-way, as when the process reading the source dies or loses its connection.
//!
//! Used by tests and the fault drill to prove that a failed write is recorded,
//! retried and converges. It wraps a real implementation; it never stands in for one.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::change::ChangeRow;
use crate::config::MirrorConfig;
use crate::error::{ErrorKind, StoreError};
use crate::retention::{CompactionPlan, CurrentRefresh, RefreshFrom, TableCompaction};
use crate::run::RunRecord;
use crate::store::{AppendReceipt, DocState, Scan, Warehouse};
use crate::cost::WarehouseBytes;
use crate::incremental::{PathRange, VerifiedPoint};

/// Which rows an append may not carry, and how such an append fails.
type RowFault = (RowPredicate, ErrorKind);

pub struct FaultyWarehouse {
    inner: Arc<dyn Warehouse>,
    pending_failures: AtomicUsize,
    kind: Mutex<ErrorKind>,
    injected: AtomicU64,
    row_fault: Mutex<Option<RowFault>>,
    row_failures: AtomicU64,
    lose: Mutex<Option<RowPredicate>>,
    lost: AtomicU64,
    stall_armed: AtomicBool,
    stalled: AtomicBool,
    /// Rows after which the next atomic append is interrupted (`u64::MAX`: never).
    interrupt_atomic_after: AtomicU64,
    /// Run records to refuse (retryable) before passing them through again.
    failing_run_records: AtomicUsize,
}

type RowPredicate = Arc<dyn Fn(&ChangeRow) -> bool + Send + Sync>;

impl FaultyWarehouse {
    pub fn new(inner: Arc<dyn Warehouse>) -> Self {
        Self {
            inner,
            pending_failures: AtomicUsize::new(0),
            kind: Mutex::new(ErrorKind::Retryable),
            injected: AtomicU64::new(0),
            row_fault: Mutex::new(None),
            row_failures: AtomicU64::new(0),
            lose: Mutex::new(None),
            lost: AtomicU64::new(0),
            stall_armed: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            interrupt_atomic_after: AtomicU64::new(u64::MAX),
            failing_run_records: AtomicUsize::new(0),
        }
    }

    /// From now on rows for which `predicate` holds are acknowledged as written and
    /// never stored (replaces any earlier predicate).
    /// The next `count` run records fail (retryable), as a warehouse briefly down
    /// right after a run committed its rows.
    pub fn fail_next_run_records(&self, count: usize) {
        self.failing_run_records.store(count, Ordering::SeqCst);
    }

    /// The next atomic append's stream fails after `rows` rows (retryable), once.
    pub fn interrupt_next_atomic_after(&self, rows: u64) {
        self.interrupt_atomic_after.store(rows, Ordering::SeqCst);
    }

    pub fn lose_rows_where(&self, predicate: impl Fn(&ChangeRow) -> bool + Send + Sync + 'static) {
        *self.lose.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(predicate));
    }

    /// Rows acknowledged without being stored so far (redeliveries included).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }

    /// The next append commits, then never answers: a process that dies between its
    /// commit and its replies.
    pub fn stall_after_next_commit(&self) {
        self.stall_armed.store(true, Ordering::SeqCst);
    }

    /// Whether an append has stalled after its commit.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }

    /// From now on every append carrying a row for which `predicate` holds fails with
    /// `kind`, writing nothing (replaces any earlier predicate).
    pub fn fail_rows_where(&self, predicate: impl Fn(&ChangeRow) -> bool + Send + Sync + 'static, kind: ErrorKind) {
        *self.row_fault.lock().unwrap_or_else(|p| p.into_inner()) = Some((Arc::new(predicate), kind));
    }

    /// Stops failing appends by row.
    pub fn clear_row_faults(&self) {
        *self.row_fault.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// How many appends have been failed by row so far (not counted in [`Self::injected`]).
    pub fn row_failures(&self) -> u64 {
        self.row_failures.load(Ordering::SeqCst)
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

    async fn check_tables(&self, config: &MirrorConfig) -> Result<(), StoreError> {
        self.inner.check_tables(config).await
    }

    async fn append(&self, rows: Vec<ChangeRow>) -> Result<AppendReceipt, StoreError> {
        let take = self.pending_failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if take.is_ok() {
            self.injected.fetch_add(1, Ordering::SeqCst);
            let kind = *self.kind.lock().unwrap_or_else(|p| p.into_inner());
            return Err(StoreError::new(kind, "fault-injection", format!("injected append failure ({} rows not written)", rows.len())));
        }
        let row_fault = self.row_fault.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((predicate, kind)) = row_fault {
            if let Some(refused) = rows.iter().find(|row| predicate(row)) {
                self.row_failures.fetch_add(1, Ordering::SeqCst);
                let detail = format!("injected row failure: {} {} refused ({} rows not written)", refused.op.as_str(), refused.doc_path, rows.len());
                return Err(StoreError::new(kind, "fault-injection", detail));
            }
        }
        let lose = self.lose.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (lost, rows): (Vec<ChangeRow>, Vec<ChangeRow>) = match lose {
            Some(predicate) => rows.into_iter().partition(|row| predicate(row)),
            None => (Vec::new(), rows),
        };
        let mut receipt = if rows.is_empty() { AppendReceipt::default() } else { self.inner.append(rows).await? };
        if !lost.is_empty() {
            self.lost.fetch_add(lost.len() as u64, Ordering::SeqCst);
            receipt.written += lost.len() as u64;
        }
        if self.stall_armed.swap(false, Ordering::SeqCst) {
            self.stalled.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Ok(receipt)
    }

    async fn append_atomic(&self, rows: BoxStream<'static, Result<ChangeRow, StoreError>>) -> Result<AppendReceipt, StoreError> {
        use futures::StreamExt;
        let after = self.interrupt_atomic_after.swap(u64::MAX, Ordering::SeqCst);
        if after == u64::MAX {
            return self.inner.append_atomic(rows).await;
        }
        let interrupted = rows.take(after as usize).chain(futures::stream::once(async move {
            Err(StoreError::retryable("fault", format!("injected: the atomic append's input ended after {after} rows")))
        }));
        self.injected.fetch_add(1, Ordering::SeqCst);
        self.inner.append_atomic(interrupted.boxed()).await
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
        let take = self.failing_run_records.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if take.is_ok() {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::retryable("fault", "injected: the run record was not stored"));
        }
        self.inner.record_run(run).await
    }

    async fn runs(&self, kind: &str, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        self.inner.runs(kind, limit).await
    }

    async fn refresh_current(&self, table: &str, from: RefreshFrom) -> Result<CurrentRefresh, StoreError> {
        self.inner.refresh_current(table, from).await
    }

    async fn current_states(&self, table: &str, tenant: &str) -> Result<Scan<DocState>, StoreError> {
        self.inner.current_states(table, tenant).await
    }

    async fn as_of_states(&self, table: &str, tenant: &str, as_of: crate::value::Timestamp) -> Result<Scan<DocState>, StoreError> {
        self.inner.as_of_states(table, tenant, as_of).await
    }

    async fn compact(&self, table: &str, plan: CompactionPlan) -> Result<TableCompaction, StoreError> {
        self.inner.compact(table, plan).await
    }

    async fn backfill_promoted(&self, table: &str, column: &str) -> Result<crate::schema_change::PromotedBackfill, StoreError> {
        self.inner.backfill_promoted(table, column).await
    }

    async fn latest_states_of(&self, table: &str, tenant: &str, paths: &[String]) -> Result<Vec<DocState>, StoreError> {
        self.inner.latest_states_of(table, tenant, paths).await
    }

    async fn latest_states_in(&self, table: &str, tenant: &str, ranges: &[PathRange]) -> Result<Scan<DocState>, StoreError> {
        self.inner.latest_states_in(table, tenant, ranges).await
    }

    async fn current_range_counts(&self, table: &str, tenant: &str, ranges: &[PathRange]) -> Result<Vec<u64>, StoreError> {
        self.inner.current_range_counts(table, tenant, ranges).await
    }

    async fn split_range(&self, table: &str, tenant: &str, range: &PathRange, parts: usize) -> Result<Vec<String>, StoreError> {
        self.inner.split_range(table, tenant, range, parts).await
    }

    async fn verified_points(&self, table: &str) -> Result<Vec<VerifiedPoint>, StoreError> {
        self.inner.verified_points(table).await
    }

    async fn record_verified_points(&self, points: Vec<VerifiedPoint>) -> Result<(), StoreError> {
        self.inner.record_verified_points(points).await
    }

    fn bytes_processed(&self) -> WarehouseBytes {
        self.inner.bytes_processed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::RowContext;
    use crate::value::Timestamp;
    use futures::executor::block_on;

    /// Counts what reaches it; nothing else is asked of it here.
    #[derive(Default)]
    struct Counting(AtomicU64);

    #[async_trait]
    impl Warehouse for Counting {
        async fn ensure_tables(&self, _: &MirrorConfig) -> Result<(), StoreError> {
            Ok(())
        }
        async fn check_tables(&self, _: &MirrorConfig) -> Result<(), StoreError> {
            Ok(())
        }
        async fn append(&self, rows: Vec<ChangeRow>) -> Result<AppendReceipt, StoreError> {
            self.0.fetch_add(rows.len() as u64, Ordering::SeqCst);
            Ok(AppendReceipt { written: rows.len() as u64, duplicates: 0 })
        }
        async fn append_atomic(&self, _: BoxStream<'static, Result<ChangeRow, StoreError>>) -> Result<AppendReceipt, StoreError> {
            unimplemented!()
        }
        async fn latest_states(&self, _: &str, _: &str) -> Result<Scan<DocState>, StoreError> {
            unimplemented!()
        }
        async fn latest_count(&self, _: &str, _: &str) -> Result<u64, StoreError> {
            unimplemented!()
        }
        async fn tenants(&self, _: &str) -> Result<Vec<String>, StoreError> {
            unimplemented!()
        }
        async fn record_run(&self, _: RunRecord) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn runs(&self, _: &str, _: usize) -> Result<Vec<RunRecord>, StoreError> {
            unimplemented!()
        }
        async fn refresh_current(&self, _: &str, _: RefreshFrom) -> Result<CurrentRefresh, StoreError> {
            unimplemented!()
        }
        async fn current_states(&self, _: &str, _: &str) -> Result<Scan<DocState>, StoreError> {
            unimplemented!()
        }
        async fn as_of_states(&self, _: &str, _: &str, _: Timestamp) -> Result<Scan<DocState>, StoreError> {
            unimplemented!()
        }
        async fn compact(&self, _: &str, _: CompactionPlan) -> Result<TableCompaction, StoreError> {
            unimplemented!()
        }
        async fn verified_points(&self, _: &str) -> Result<Vec<VerifiedPoint>, StoreError> {
            unimplemented!()
        }
        async fn record_verified_points(&self, _: Vec<VerifiedPoint>) -> Result<(), StoreError> {
            unimplemented!()
        }
        fn bytes_processed(&self) -> WarehouseBytes {
            WarehouseBytes::default()
        }
    }

    fn rows(ids: &[&str]) -> Vec<ChangeRow> {
        let config = MirrorConfig::default();
        let ctx = RowContext { ingested_at: Timestamp::new(1, 0), run_id: "t".into(), code_version: "t".into() };
        ids.iter()
            .map(|id| {
                let path = format!("orgs/acme/records/{id}");
                ChangeRow::tombstone(&config.route(&path).unwrap(), &path, crate::Op::Delete, 1, id, &ctx)
            })
            .collect()
    }

    #[test]
    fn appends_fail_by_count_then_by_row_and_nothing_of_a_failed_append_is_written() {
        let inner = Arc::new(Counting::default());
        let faulty = FaultyWarehouse::new(inner.clone());
        faulty.fail_next_appends(1, ErrorKind::Retryable);
        faulty.fail_rows_where(|row| row.doc_id == "bad", ErrorKind::Permanent);

        let first = block_on(faulty.append(rows(&["a", "b"]))).unwrap_err();
        assert!(first.is_retryable(), "the count comes first: {first}");
        let refused = block_on(faulty.append(rows(&["a", "bad", "c"]))).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Permanent);
        assert!(refused.to_string().contains("orgs/acme/records/bad"), "{refused}");
        // Each time it is tried.
        assert!(block_on(faulty.append(rows(&["bad"]))).is_err());
        assert_eq!(inner.0.load(Ordering::SeqCst), 0, "a failed append writes nothing");
        assert_eq!((faulty.injected(), faulty.row_failures()), (1, 2));

        block_on(faulty.append(rows(&["a", "c"]))).unwrap();
        faulty.clear_row_faults();
        block_on(faulty.append(rows(&["bad"]))).unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn lost_rows_are_acknowledged_but_never_stored() {
        let inner = Arc::new(Counting::default());
        let faulty = FaultyWarehouse::new(inner.clone());
        faulty.lose_rows_where(|row| row.doc_id == "gone");
        let receipt = block_on(faulty.append(rows(&["a", "gone", "b"]))).unwrap();
        assert_eq!(receipt.written, 3, "acknowledged as written");
        assert_eq!((inner.0.load(Ordering::SeqCst), faulty.lost()), (2, 1));
        let receipt = block_on(faulty.append(rows(&["gone"]))).unwrap();
        assert_eq!((receipt.written, inner.0.load(Ordering::SeqCst), faulty.lost()), (1, 2, 2));
    }

    #[test]
    fn an_armed_stall_commits_then_never_answers() {
        let inner = Arc::new(Counting::default());
        let faulty = FaultyWarehouse::new(inner.clone());
        faulty.stall_after_next_commit();
        let mut append = faulty.append(rows(&["a"]));
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(std::future::Future::poll(append.as_mut(), &mut cx).is_pending());
        assert!(std::future::Future::poll(append.as_mut(), &mut cx).is_pending(), "it never answers");
        assert_eq!(inner.0.load(Ordering::SeqCst), 1, "but its rows are committed");
        assert!(faulty.stalled());
        drop(append);
        block_on(faulty.append(rows(&["b"]))).unwrap();
        assert_eq!(inner.0.load(Ordering::SeqCst), 2, "armed once");
    }
}
