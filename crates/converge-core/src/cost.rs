//! What a run cost: the source reads it was billed for, the warehouse bytes it
//! processed, and a price estimated from a [`PriceTable`].
//!
//! # How reads are counted (the way Firestore bills them)
//!
//! - every document a query, scan or `get_all` returns is one read, and a query that
//!   returns nothing is still one ([`RunCost::docs_read`]);
//! - a `count()` aggregation is one read per batch of up to 1,000 index entries it
//!   matches, at least one: 0 to 1,000 entries bill one read, 1,500 bill two
//!   ([`RunCost::count_query`]; "Aggregation queries" on
//!   <https://firebase.google.com/docs/firestore/pricing#aggregation_queries>);
//! - the embedded SQLite store is counted by the same rules, so a run's figures on a
//!   laptop are what the same run would be billed on Firestore.
//!
//! # Warehouse bytes
//!
//! BigQuery reports each query job's `totalBytesProcessed` and `totalBytesBilled`
//! (on-demand billing: per TiB, at least 10 MB per table a query references and per
//! query, <https://cloud.google.com/bigquery/pricing#on_demand_pricing>). DuckDB
//! reports an estimate of what the same queries would process on BigQuery, for the
//! scans it counts (`converge_duckdb`'s `incremental.rs` says which): the rows each
//! scans times the logical width of the columns it reads (8 bytes for an INT64 or
//! TIMESTAMP, 2 + the UTF-8 length for a STRING), since BigQuery bills the columns
//! read, uncompressed; a scan it does not count adds nothing, so an embedded run's
//! bytes are a floor. Both accumulate in the warehouse
//! ([`crate::Warehouse::bytes_processed`]); a run takes the difference across itself.
//! The counters belong to the warehouse handle, not the run: a run that shares its
//! handle with another running at the same time (two requests to one function
//! instance) also counts the other's bytes.
//!
//! # What the estimate leaves out, and why
//!
//! - Appends: the changelog is written through the BigQuery Storage Write API,
//!   billed per GiB ingested ($0.025 per GiB) with the first 2 TiB of each month free
//!   per billing account (<https://cloud.google.com/bigquery/pricing#data_ingestion_pricing>).
//!   A month of Converge's appends for a 10-million-document database (a full rebuild
//!   writes about 10 GiB of rows of 1 KiB) stays far inside the free 2 TiB, so the
//!   estimate carries no ingestion price.
//! - Free tiers (50,000 Firestore reads a day on one database, BigQuery's first TiB of
//!   queries a month): they are per project or billing account and shared with
//!   everything else there, so a run is priced at list price, as if they were spent.
//! - Writes and deletes (Firestore: opportunities, error records), storage, network.

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

    /// Adds the cost of a part of this run (an ETL pass's slices), price included.
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

/// Prices a run's cost is estimated with, in US dollars. The defaults are Google's
/// list prices for a database in a regional location such as `us-central1`:
///
/// - Firestore (Standard edition) document reads: $0.03 per 100,000 in a US regional
///   location; a multi-region location such as `nam5` costs twice that, $0.06
///   (<https://cloud.google.com/firestore/pricing>, "Pricing by location");
/// - BigQuery on-demand compute: $6.25 per TiB billed
///   (<https://cloud.google.com/bigquery/pricing#on_demand_pricing>).
///
/// Override them for another location, edition or a negotiated price:
/// `CONVERGE_PRICE_FIRESTORE_READS_PER_100K` and `CONVERGE_PRICE_BIGQUERY_PER_TIB`
/// (`converge_function::env::prices_from_env`, through [`PriceTable::price_setting`]),
/// handed to each runner's `with_prices`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    /// US dollars per 100,000 billed document reads.
    pub firestore_usd_per_100k_reads: f64,
    /// US dollars per TiB billed by on-demand queries.
    pub bigquery_usd_per_tib: f64,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self { firestore_usd_per_100k_reads: 0.03, bigquery_usd_per_tib: 6.25 }
    }
}

/// A configured price that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {setting}: expected a price in US dollars as a plain number of at least 0, such as the default {default}; found {found:?}. Fix it, or unset it to use the default")]
pub struct PriceError {
    pub setting: String,
    pub found: String,
    pub default: String,
}

impl PriceTable {
    pub fn usd(&self, cost: &RunCost) -> f64 {
        const TIB: f64 = (1u64 << 40) as f64;
        cost.source_reads as f64 / 100_000.0 * self.firestore_usd_per_100k_reads
            + cost.warehouse_bytes_billed as f64 / TIB * self.bigquery_usd_per_tib
    }

    /// The price `text` gives for `setting` (a variable's name, for the error), or
    /// `default` when there is no text. A price is a finite number of at least 0
    /// (`0` is a price: a flat-rate reservation bills no bytes); anything else (a
    /// currency sign, a comma, `NaN`) is refused rather than read as something else.
    pub fn price_setting(setting: &str, text: Option<&str>, default: f64) -> Result<f64, PriceError> {
        let Some(text) = text else { return Ok(default) };
        match text.trim().parse::<f64>() {
            Ok(price) if price.is_finite() && price >= 0.0 => Ok(price),
            _ => Err(PriceError { setting: setting.to_owned(), found: text.to_owned(), default: default.to_string() }),
        }
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

    #[test]
    fn warehouse_bytes_are_the_counters_difference_and_never_negative() {
        let mut cost = RunCost::default();
        cost.warehouse(WarehouseBytes { processed: 100, billed: 10 << 20 }, WarehouseBytes { processed: 350, billed: 30 << 20 });
        assert_eq!((cost.warehouse_bytes, cost.warehouse_bytes_billed), (250, 20 << 20));
        // A warehouse reopened mid-run restarts its counters: nothing, not a wrap-around.
        cost.warehouse(WarehouseBytes { processed: 500, billed: 500 }, WarehouseBytes { processed: 20, billed: 20 });
        assert_eq!((cost.warehouse_bytes, cost.warehouse_bytes_billed), (250, 20 << 20));
    }

    #[test]
    fn a_configured_price_is_a_plain_non_negative_number() {
        assert_eq!(PriceTable::price_setting("P", None, 0.03), Ok(0.03));
        assert_eq!(PriceTable::price_setting("P", Some(" 0.06 "), 0.03), Ok(0.06));
        assert_eq!(PriceTable::price_setting("P", Some("0"), 6.25), Ok(0.0));
        for bad in ["$0.06", "0,06", "-1", "NaN", "inf", ""] {
            let error = PriceTable::price_setting("CONVERGE_PRICE_X", Some(bad), 0.03).unwrap_err();
            let text = error.to_string();
            assert!(text.starts_with("setting CONVERGE_PRICE_X: expected a price in US dollars"), "{text}");
            assert!(text.contains(&format!("such as the default 0.03; found {bad:?}. Fix it, or unset it")), "{text}");
        }
    }
}
