//! What a run cost: the source reads it was billed for, the warehouse bytes it
//! processed, and a price estimated from a [`PriceTable`].
//!
//! # How reads are counted (the way Firestore bills them)
//!
//! - every document a query, scan or `get_all` returns is one read, and a query that
//!   returns nothing is still one ([`RunCost::docs_read`]);
//! - a `count()` aggregation is one read per 1,000 index entries it matches, at least
//!   one ([`RunCost::count_query`]; "Aggregation queries" on
//!   <https://cloud.google.com/firestore/pricing>);
//! - the embedded SQLite store is counted by the same rules, so a run's figures on a
//!   laptop are what the same run would be billed on Firestore.
//!
//! # Warehouse bytes
//!
//! BigQuery reports each query job's `totalBytesProcessed` and `totalBytesBilled`
//! (on-demand billing: per TiB, at least 10 MiB per table a query references). DuckDB
//! reports an estimate of what the same queries would process on BigQuery: the rows
//! each query scans times the logical width of the columns it reads (8 bytes for an
//! INT64 or TIMESTAMP, 2 + the UTF-8 length for a STRING), since BigQuery bills the
//! columns read, uncompressed. Both accumulate in the warehouse
//! ([`crate::Warehouse::bytes_processed`]); a run takes the difference across itself.

use serde::{Deserialize, Serialize};

/// Index entries a `count()` aggregation reads per billed document read.
pub const INDEX_ENTRIES_PER_READ: u64 = 1_000;

/// What one run cost, as every run record and `--json` output carries it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCost {
    /// Billed source document reads (documents returned, plus the reads `count()`
    /// aggregations are billed).
    pub source_reads: u64,
    /// Index entries the `count()` aggregations matched.
    pub source_index_entries: u64,
    /// Bytes the warehouse's queries processed (BigQuery: job statistics; DuckDB: the
    /// estimate described in the module docs).
    pub warehouse_bytes: u64,
    /// Bytes billed (BigQuery's minimum per table included; the embedded estimate:
    /// the same as processed).
    pub warehouse_bytes_billed: u64,
    /// The price of the above under the run's [`PriceTable`], in US dollars.
    pub estimated_usd: f64,
}

impl RunCost {
    /// `documents` returned by a query, scan or batch get (one read at least: an
    /// empty answer is billed one).
    pub fn docs_read(&mut self, documents: u64) {
        self.source_reads += documents.max(1);
    }

    /// A `count()` aggregation that matched `entries` index entries.
    pub fn count_query(&mut self, entries: u64) {
        self.source_index_entries += entries;
        self.source_reads += entries.div_ceil(INDEX_ENTRIES_PER_READ).max(1);
    }

    /// The warehouse's byte counters across the run (`after` minus `before`).
    pub fn warehouse(&mut self, before: WarehouseBytes, after: WarehouseBytes) {
        self.warehouse_bytes += after.processed.saturating_sub(before.processed);
        self.warehouse_bytes_billed += after.billed.saturating_sub(before.billed);
    }

    /// Sets `estimated_usd` from the counts and `prices`.
    pub fn priced(mut self, prices: &PriceTable) -> Self {
        self.estimated_usd = prices.usd(&self);
        self
    }

    pub fn add(&mut self, other: &RunCost) {
        self.source_reads += other.source_reads;
        self.source_index_entries += other.source_index_entries;
        self.warehouse_bytes += other.warehouse_bytes;
        self.warehouse_bytes_billed += other.warehouse_bytes_billed;
        self.estimated_usd += other.estimated_usd;
    }
}

/// A warehouse's cumulative byte counters ([`crate::Warehouse::bytes_processed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarehouseBytes {
    pub processed: u64,
    pub billed: u64,
}

/// Prices a run's cost is estimated with. The defaults are Google's list prices
/// (USD, checked 2026-12): Firestore Standard edition document reads in a regional
/// location, and BigQuery on-demand compute. Override them for another location,
/// edition or a negotiated price (`CONVERGE_PRICE_*`, see `converge_core::env`-style
/// settings of the binaries).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    /// US dollars per 100,000 billed document reads
    /// (<https://cloud.google.com/firestore/pricing>).
    pub firestore_usd_per_100k_reads: f64,
    /// US dollars per TiB billed by on-demand queries
    /// (<https://cloud.google.com/bigquery/pricing#on_demand_pricing>).
    pub bigquery_usd_per_tib: f64,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self { firestore_usd_per_100k_reads: 0.03, bigquery_usd_per_tib: 6.25 }
    }
}

impl PriceTable {
    pub fn usd(&self, cost: &RunCost) -> f64 {
        const TIB: f64 = (1u64 << 40) as f64;
        cost.source_reads as f64 / 100_000.0 * self.firestore_usd_per_100k_reads
            + cost.warehouse_bytes_billed as f64 / TIB * self.bigquery_usd_per_tib
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_billed_per_thousand_entries_and_an_empty_answer_is_one_read() {
        let mut cost = RunCost::default();
        cost.count_query(0);
        cost.count_query(1_000);
        cost.count_query(1_500);
        assert_eq!((cost.source_reads, cost.source_index_entries), (1 + 1 + 2, 2_500));
        cost.docs_read(0);
        cost.docs_read(7);
        assert_eq!(cost.source_reads, 4 + 1 + 7);
    }

    #[test]
    fn the_price_follows_the_table() {
        let cost = RunCost { source_reads: 10_000_000, warehouse_bytes_billed: 1 << 40, ..RunCost::default() }.priced(&PriceTable::default());
        assert!((cost.estimated_usd - (3.0 + 6.25)).abs() < 1e-9, "{}", cost.estimated_usd);
    }
}
