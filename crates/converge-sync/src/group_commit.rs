//! Group commit: every row waiting while an append runs goes into the next append.
//!
//! One writer task owns the warehouse's append path. Handlers send their row with a
//! reply channel and wait; the writer takes whatever is queued (up to a bound), appends
//! it in one transaction, and answers every waiter with the shared result. Under load
//! batches grow by themselves, so throughput does not cost one round-trip per event;
//! when idle a lone event is committed at once (no timer adds latency).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use converge_core::{ChangeRow, StoreError, Warehouse};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Clone, Copy)]
pub struct GroupCommitConfig {
    /// Largest number of rows in one append.
    pub max_batch: usize,
    /// Rows waiting for the writer before senders are slowed down (back-pressure).
    pub queue: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self { max_batch: 4096, queue: 16_384 }
    }
}

struct Pending {
    row: ChangeRow,
    reply: oneshot::Sender<Answer>,
}

/// The writer's answer to one waiting row.
enum Answer {
    Committed,
    Failed(StoreError),
    /// The group's append failed for good: the waiter appends its row alone, so only
    /// the rows the warehouse refuses fail. The row is made again by the waiter
    /// rather than kept by the writer: a copy of every row of every group would cost
    /// more than making the rare refused one twice.
    /// The warehouse travels with the answer: the handle stays with the writer task,
    /// so it is gone when the task is.
    AppendAlone { batch_id: Arc<str>, warehouse: Arc<dyn Warehouse> },
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommitter {
    sender: mpsc::Sender<Pending>,
    stats: Arc<CommitStats>,
}

/// Counters of the writer, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub appends: AtomicU64,
    pub rows: AtomicU64,
    pub written: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed_appends: AtomicU64,
}

impl CommitStats {
    fn count(&self, receipt: &converge_core::AppendReceipt) {
        self.written.fetch_add(receipt.written, Ordering::Relaxed);
        self.duplicates.fetch_add(receipt.duplicates, Ordering::Relaxed);
    }
}

impl GroupCommitter {
    /// Starts the writer task on the current runtime. `run_id` prefixes each append's
    /// batch id, which every row of that append carries as its `run_id`.
    pub fn start(warehouse: Arc<dyn Warehouse>, config: GroupCommitConfig, run_id: String) -> Self {
        let (sender, receiver) = mpsc::channel(config.queue);
        let stats = Arc::new(CommitStats::default());
        tokio::spawn(writer(warehouse, receiver, config, run_id, stats.clone()));
        Self { sender, stats }
    }

    /// Commits one row together with whatever else is waiting. Returns once the
    /// append that carried it has committed (or failed). `again` makes the same row
    /// anew, for the rare group that must be split (see [`Answer::AppendAlone`]).
    pub async fn commit(&self, row: ChangeRow, again: impl FnOnce() -> Result<ChangeRow, StoreError>) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending { row, reply })
            .await
            .map_err(|_| StoreError::retryable("group-commit", "the writer task has stopped"))?;
        match answer.await.map_err(|_| StoreError::retryable("group-commit", "the writer task stopped before answering"))? {
            Answer::Committed => Ok(()),
            Answer::Failed(error) => Err(error),
            Answer::AppendAlone { batch_id, warehouse } => {
                let mut row = again()?;
                row.run_id = batch_id.to_string();
                let receipt = warehouse.append(vec![row]).await?;
                self.stats.count(&receipt);
                Ok(())
            }
        }
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }
}

async fn writer(
    warehouse: Arc<dyn Warehouse>,
    mut receiver: mpsc::Receiver<Pending>,
    config: GroupCommitConfig,
    run_id: String,
    stats: Arc<CommitStats>,
) {
    let mut sequence: u64 = 0;
    let max_batch = config.max_batch;
    let mut batch = Vec::with_capacity(max_batch);
    while receiver.recv_many(&mut batch, max_batch).await > 0 {
        sequence += 1;
        let batch_id = format!("{run_id}:{sequence}");
        let (rows, replies): (Vec<ChangeRow>, Vec<_>) = batch
            .drain(..)
            .map(|mut p| {
                p.row.run_id.clone_from(&batch_id);
                (p.row, p.reply)
            })
            .unzip();
        let count = rows.len() as u64;
        let append_started = std::time::Instant::now();
        let result = warehouse.append(rows).await;
        let append_micros = append_started.elapsed().as_micros() as u64;
        stats.appends.fetch_add(1, Ordering::Relaxed);
        stats.rows.fetch_add(count, Ordering::Relaxed);
        match result {
            Ok(receipt) => {
                stats.count(&receipt);
                tracing::debug!(batch_id, rows = count, written = receipt.written, append_micros, "append committed");
                for reply in replies {
                    // A waiter that went away (client disconnected) is not our concern:
                    // its event will be redelivered and skipped if it was written.
                    let _ = reply.send(Answer::Committed);
                }
            }
            Err(error) if !error.is_retryable() && count > 1 => {
                // A permanent failure may be one bad row: each waiter appends its row
                // alone, so only the rows the warehouse refuses fail (and get error records).
                stats.failed_appends.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(run_id, batch_id, rows = count, %error, "append failed for good; its rows are appended one by one to isolate the bad ones");
                let batch_id: Arc<str> = batch_id.into();
                for reply in replies {
                    let _ = reply.send(Answer::AppendAlone { batch_id: batch_id.clone(), warehouse: warehouse.clone() });
                }
            }
            Err(error) => {
                stats.failed_appends.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(run_id, batch_id, rows = count, %error, "append failed; every event in it will record an error");
                for reply in replies {
                    let _ = reply.send(Answer::Failed(error.clone()));
                }
            }
        }
    }
}
