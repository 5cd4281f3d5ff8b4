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
    reply: oneshot::Sender<Result<(), StoreError>>,
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
    /// append that carried it has committed (or failed).
    pub async fn commit(&self, row: ChangeRow) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending { row, reply })
            .await
            .map_err(|_| StoreError::retryable("group-commit", "the writer task has stopped"))?;
        answer.await.map_err(|_| StoreError::retryable("group-commit", "the writer task stopped before answering"))?
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
        // Kept for isolating a permanent failure below (a clone of a few strings per
        // row: small next to the HTTP request that carried it).
        let kept = if count > 1 { Some(rows.clone()) } else { None };
        let result = warehouse.append(rows).await;
        let append_micros = append_started.elapsed().as_micros() as u64;
        stats.appends.fetch_add(1, Ordering::Relaxed);
        stats.rows.fetch_add(count, Ordering::Relaxed);
        match result {
            Ok(receipt) => {
                stats.written.fetch_add(receipt.written, Ordering::Relaxed);
                stats.duplicates.fetch_add(receipt.duplicates, Ordering::Relaxed);
                tracing::debug!(batch_id, rows = count, written = receipt.written, append_micros, "append committed");
                for reply in replies {
                    // A waiter that went away (client disconnected) is not our concern:
                    // its event will be redelivered and skipped if it was written.
                    let _ = reply.send(Ok(()));
                }
            }
            Err(error) if !error.is_retryable() && kept.is_some() => {
                // A permanent failure may be one bad row: append each row alone, so
                // only the rows the warehouse refuses fail (and get error records).
                stats.failed_appends.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(run_id, batch_id, rows = count, %error, "append failed for good; appending its rows one by one to isolate the bad ones");
                for (row, reply) in kept.expect("checked").into_iter().zip(replies) {
                    let outcome = match warehouse.append(vec![row]).await {
                        Ok(receipt) => {
                            stats.written.fetch_add(receipt.written, Ordering::Relaxed);
                            stats.duplicates.fetch_add(receipt.duplicates, Ordering::Relaxed);
                            Ok(())
                        }
                        Err(error) => Err(error),
                    };
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                stats.failed_appends.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(run_id, batch_id, rows = count, %error, "append failed; every event in it will record an error");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}
