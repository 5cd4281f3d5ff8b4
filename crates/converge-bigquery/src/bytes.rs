//! What this warehouse's query jobs processed and were billed: the counters behind
//! [`converge_core::Warehouse::bytes_processed`] (`converge_core::cost`).
//!
//! Every finished query job adds its statistics once: `totalBytesProcessed` and
//! `totalBytesBilled` of the jobs.query response, or of the getQueryResults poll when
//! the job outlived jobs.query's wait. getQueryResults carries no `totalBytesBilled`
//! (<https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/getQueryResults>),
//! and the jobs that outlive the wait are the large ones, whose bill a run's cost is
//! about: for those the billed bytes are read from the job (jobs.get,
//! `statistics.query.totalBytesBilled`; a job's creator holds `bigquery.jobs.get` on
//! it, <https://cloud.google.com/bigquery/docs/jobs-overview>, so no role is added),
//! and if that read fails the processed bytes stand in (a lower bound: on-demand
//! billing rounds up, never down). A job that reports neither counts 0 (the bqemulator
//! reports `"0"` and no billed bytes). Queries that fail count nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use converge_core::WarehouseBytes;
use google_cloud_bigquery::model_ext::CompleteQueryMetadata;

/// The cumulative counters, shared by every clone of one warehouse.
#[derive(Debug, Default)]
pub(crate) struct JobBytes {
    processed: AtomicU64,
    billed: AtomicU64,
}

impl JobBytes {
    pub(crate) fn total(&self) -> WarehouseBytes {
        WarehouseBytes { processed: self.processed.load(Ordering::Relaxed), billed: self.billed.load(Ordering::Relaxed) }
    }

    pub(crate) fn add(&self, processed: u64, billed: u64) {
        self.processed.fetch_add(processed, Ordering::Relaxed);
        self.billed.fetch_add(billed, Ordering::Relaxed);
    }
}

/// What a finished job's response says it processed and was billed (`None`: the
/// response has no billed bytes). Missing or negative processed bytes count 0.
pub(crate) fn reported(metadata: &CompleteQueryMetadata) -> (u64, Option<u64>) {
    let non_negative = |n: i64| u64::try_from(n).unwrap_or(0);
    (metadata.total_bytes_processed.map_or(0, non_negative), metadata.total_bytes_billed.map(non_negative))
}

/// What to count as billed when the response had no billed bytes: the job's own
/// statistics if they were read, else the processed bytes (see the module docs).
pub(crate) fn billed_or_processed(processed: u64, from_job: Option<u64>) -> u64 {
    from_job.unwrap_or(processed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_statistics_count_zero_and_counters_add_up() {
        assert_eq!(reported(&CompleteQueryMetadata::default()), (0, None));
        let mut metadata = CompleteQueryMetadata::default();
        metadata.total_bytes_processed = Some(1_234);
        metadata.total_bytes_billed = Some(10_485_760);
        assert_eq!(reported(&metadata), (1_234, Some(10_485_760)));
        metadata.total_bytes_processed = Some(-1);
        assert_eq!(reported(&metadata).0, 0, "a negative count is not a count");
        assert_eq!(billed_or_processed(500, None), 500);
        assert_eq!(billed_or_processed(500, Some(10_485_760)), 10_485_760);
        let bytes = JobBytes::default();
        bytes.add(1, 10);
        bytes.add(2, 20);
        assert_eq!(bytes.total(), WarehouseBytes { processed: 3, billed: 30 });
    }
}
