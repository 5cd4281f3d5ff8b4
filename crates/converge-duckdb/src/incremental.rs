//! The warehouse's side of an incremental reconcile (`converge_core::incremental`):
//! states of given paths and of path ranges (exact: the ordering rule over the
//! changelog), live counts per range and split points (from `<table>_current`), the
//! verified points, and the bytes the queries would process on BigQuery.
//!
//! # One scan per call, however many ranges
//!
//! DuckDB has no index on `doc_path`, and its string statistics keep only an 8-byte
//! prefix, so every range filter scans the column. A level of the bisection asks for
//! hundreds of ranges at once: [`range_index_sql`] maps a path to the index of the
//! range holding it with a balanced tree of `CASE` comparisons (about log2 of the
//! ranges per row), so counting or reading any number of ranges is one scan.
//!
//! # Lookups by path hash
//!
//! Comparing paths costs ~75 ns a row (they share their prefix, so every comparison
//! follows the pointer): a scan of ten million is most of a second. The current tables
//! carry each path's hash (`path_hash`), so the latest states of given documents are
//! the current tables' rows found by an integer join, plus the changelog's rows since
//! the refresh watermark (the changelog is in ingestion order, so those are its last
//! row groups), ranked by the one rule.
//!
//! # Bytes
//!
//! DuckDB reports no bytes scanned; what is counted is what the same query would
//! process on BigQuery (on-demand bills the logical bytes of the columns read: 8 per
//! INT64/TIMESTAMP/BOOL-ish value, 2 + the length of a STRING), estimated as the
//! table's rows times the columns' widths, the string widths measured once per table
//! from a sample.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use converge_core::{DocState, PathRange, ReconcileMode, StoreError, Timestamp, VerifiedPoint, WarehouseBytes};
use duckdb::{params, Connection};

use crate::db::{db_error, BACKEND};
use crate::schema::{winner_key, STATE_COLUMNS};

/// Created by `ensure_tables` beside the runs table.
pub const CREATE_VERIFIED_POINTS: &str = "CREATE TABLE IF NOT EXISTS converge_verified_points (
    tbl VARCHAR NOT NULL,
    tenant VARCHAR NOT NULL,
    read_time TIMESTAMP NOT NULL,
    batch_id VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    recorded_at TIMESTAMP NOT NULL DEFAULT current_timestamp
)";

/// [`sorted_candidates_sql`] reads the current tables unless the changelog's rows since
/// their watermark are over 1/`RECENT_SHARE` of the current rows (and many).
const RECENT_SHARE: i64 = 8;
/// Up to this many rows since the watermark the sort is cheap either way.
const RECENT_ROWS_SORTED_ANYWAY: i64 = 100_000;

/// The temporary table of the paths [`states_of`] looks up (per connection).
const WANTED: &str = "converge_wanted_paths";
/// A SQL string literal (DuckDB: a quote is doubled; backslashes are plain).
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// An expression giving the index (0-based) of the range of `ranges` (disjoint,
/// ascending) that holds `column`'s value, or NULL when none does.
pub(crate) fn range_index_sql(column: &str, ranges: &[PathRange]) -> String {
    fn node(column: &str, ranges: &[PathRange], offset: usize) -> String {
        if ranges.is_empty() {
            return "NULL".into();
        }
        let mid = ranges.len() / 2;
        let range = &ranges[mid];
        let below = match &range.start {
            Some(start) => format!("WHEN {column} < {} THEN {}", literal(start), node(column, &ranges[..mid], offset)),
            None => String::new(),
        };
        let inside = match &range.end {
            Some(end) => format!("WHEN {column} < {} THEN {}", literal(end), offset + mid),
            None => format!("WHEN TRUE THEN {}", offset + mid),
        };
        format!("(CASE {below} {inside} ELSE {} END)", node(column, &ranges[mid + 1..], offset + mid + 1))
    }
    node(column, ranges, 0)
}

/// The column and ranges to compare for `ranges` of one tenant's documents: when all
/// of them lie in one collection (`collection`, a plain route's `orgs/acme/records`),
/// their ids — `collection/` + id orders as the id, and a short id is held inline by
/// DuckDB, so comparing it does not follow a pointer as comparing a whole path does
/// (~75 ns a row for paths sharing their prefix) — else the paths themselves. Each
/// bound maps monotonically: one at or before the collection's first path to `""`, one
/// inside it to the rest after `collection/`, one past it to past every id; so
/// `collection/id` is in a range exactly when `id` is in its image.
pub(crate) fn comparable(collection: Option<&str>, ranges: &[PathRange]) -> (&'static str, Vec<PathRange>) {
    let Some(collection) = collection else { return ("doc_path", ranges.to_vec()) };
    let prefix = format!("{collection}/");
    let map = |bound: &Option<String>| {
        bound.as_ref().map(|b| {
            if b.as_str() <= prefix.as_str() {
                String::new()
            } else if let Some(rest) = b.strip_prefix(&prefix) {
                rest.to_owned()
            } else {
                char::MAX.to_string()
            }
        })
    };
    ("doc_id", ranges.iter().map(|range| PathRange::new(map(&range.start), map(&range.end))).collect())
}

/// The number of rows DuckDB's catalog estimates for `table` (no scan).
fn estimated_rows(connection: &Connection, table: &str) -> Result<i64, duckdb::Error> {
    connection.query_row("SELECT coalesce(sum(estimated_size), 0) FROM duckdb_tables() WHERE table_name = ?", params![table], |row| row.get(0))
}

/// Whether `t`'s current tables have a path hash in every row (rows written before the
/// column existed have none until the next refresh, a full one).
pub(crate) fn hashed(connection: &Connection, t: &str) -> Result<bool, StoreError> {
    let (current, tombstones) = (converge_core::retention::current_table(t), converge_core::retention::current_tombstones_table(t));
    let unhashed: i64 = connection
        .query_row(
            &format!("SELECT (SELECT count(*) FROM {current} WHERE path_hash IS NULL) + (SELECT count(*) FROM {tombstones} WHERE path_hash IS NULL)"),
            [],
            |row| row.get(0),
        )
        .map_err(|e| db_error("check the current tables' path hashes", e))?;
    Ok(unhashed == 0)
}

/// Live documents of `tenant` per range in `t`'s current table: one scan comparing
/// paths ([`range_index_sql`]).
pub(crate) fn range_counts(connection: &Connection, t: &str, tenant: &str, collection: Option<&str>, ranges: &[PathRange]) -> Result<Vec<u64>, StoreError> {
    let current = converge_core::retention::current_table(t);
    let mut counts = vec![0u64; ranges.len()];
    if ranges.is_empty() {
        return Ok(counts);
    }
    let error = |e| db_error("count the current table's ranges", e);
    let (column, compared) = comparable(collection, ranges);
    let sql = format!(
        "SELECT i, count(*) FROM (SELECT {} AS i FROM {current} WHERE tenant = $1) WHERE i IS NOT NULL GROUP BY i",
        range_index_sql(column, &compared)
    );
    let mut statement = connection.prepare(&sql).map_err(error)?;
    let rows = statement.query_map(params![tenant], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))).map_err(error)?;
    for row in rows {
        let (i, n) = row.map_err(error)?;
        counts[i as usize] = n as u64;
    }
    Ok(counts)
}

/// About `parts - 1` cut points of `range` from a sample of the current table's live
/// paths in it (distinct, ascending, strictly after the range's start).
pub(crate) fn split(connection: &Connection, t: &str, tenant: &str, range: &PathRange, parts: usize) -> Result<Vec<String>, StoreError> {
    if parts < 2 {
        return Ok(Vec::new());
    }
    let current = converge_core::retention::current_table(t);
    let filter = range_filter("doc_path", range);
    // A sample several times the parts evens them out. Bernoulli sampling keeps each
    // row by chance, so the sample is spread over the paths even when the table holds
    // them in order (system sampling takes whole vectors of consecutive rows: in a
    // table written in path order its cuts came in clusters, and the buckets between
    // them held thousands); the share is sized from the table's row count, and the
    // range and tenant filter apply to the sample.
    let rows = estimated_rows(connection, &current).map_err(|e| db_error("read the current table's size", e))?;
    let wanted = parts.saturating_mul(4).min(1_000_000) as f64;
    let percent = (wanted / rows.max(1) as f64 * 100.0).clamp(0.001, 100.0);
    let sql = if percent >= 50.0 {
        format!("SELECT doc_path FROM {current} WHERE tenant = $1 {filter}")
    } else {
        format!("SELECT doc_path FROM (SELECT doc_path, tenant FROM {current} TABLESAMPLE bernoulli({percent:.4}%) REPEATABLE (7)) WHERE tenant = $1 {filter}")
    };
    let error = |e| db_error("sample the current table's paths", e);
    let read = |sql: &str| -> Result<Vec<String>, StoreError> {
        let mut statement = connection.prepare(sql).map_err(error)?;
        let paths = statement.query_map(params![tenant], |row| row.get::<_, String>(0)).map_err(error)?.collect::<Result<_, _>>().map_err(error)?;
        Ok(paths)
    };
    let mut paths = read(&sql)?;
    if paths.len() < parts && percent < 50.0 {
        // A tenant (or range) small beside the table: the sample missed it; read it.
        paths = read(&format!("SELECT doc_path FROM {current} WHERE tenant = $1 {filter}"))?;
    }
    paths.sort_unstable();
    paths.dedup();
    let step = paths.len().div_ceil(parts).max(1);
    Ok(paths
        .into_iter()
        .enumerate()
        .filter(|(i, path)| i % step == 0 && *i > 0 && range.start.as_deref() != Some(path.as_str()))
        .map(|(_, path)| path)
        .collect())
}

/// `AND column >= 'start' AND column < 'end'` for the bounds `range` has.
pub(crate) fn range_filter(column: &str, range: &PathRange) -> String {
    let mut filter = String::new();
    if let Some(start) = &range.start {
        filter.push_str(&format!(" AND {column} >= {}", literal(start)));
    }
    if let Some(end) = &range.end {
        filter.push_str(&format!(" AND {column} < {}", literal(end)));
    }
    filter
}

/// The winner per document among the rows `source` selects (with the changelog's
/// columns the rule reads), live ones only, as [`crate::schema::STATE_COLUMNS`].
fn ranked(source: &str) -> String {
    let key = winner_key();
    format!(
        "SELECT doc_path, u, h, v FROM (
            SELECT doc_path,
                   arg_max(epoch_us(coalesce(update_time, version)), {key}) AS u,
                   arg_max(content_hash, {key}) AS h,
                   arg_max(epoch_us(version), {key}) AS v,
                   arg_max(is_deleted, {key}) AS d
            FROM ({source}) GROUP BY doc_path
         ) WHERE NOT d ORDER BY doc_path"
    )
}

/// The columns the rule and the states read.
const RULE_COLUMNS: &str = "doc_path, update_time, version, content_hash, is_deleted, op, content_rank";

/// Every row of `tenant` that can be the winner of a document `keep` (a condition on
/// `doc_path`) holds: the current tables' rows whose path hash is among `hashes` (a
/// subquery), and the changelog's rows ingested since the refresh started reading
/// (`since`, µs): what stood at the last refresh, and everything that came after it.
/// The current tables' rows are materialized first, so the string condition runs on
/// the few of them only.
fn candidates(t: &str, hashes: &str, keep: &str, since: i64) -> String {
    let (current, tombstones) = (converge_core::retention::current_table(t), converge_core::retention::current_tombstones_table(t));
    format!(
        "WITH standing AS MATERIALIZED (
            SELECT {RULE_COLUMNS} FROM {current} WHERE tenant = $1 AND {}
            UNION ALL SELECT {RULE_COLUMNS} FROM {tombstones} WHERE tenant = $1 AND {}
         )
         SELECT * FROM standing WHERE {keep}
         UNION ALL SELECT {RULE_COLUMNS} FROM {t} WHERE ingested_at >= make_timestamp({since}::BIGINT) AND tenant = $1 AND {keep}",
        rows_with_hash_in(&current, hashes),
        rows_with_hash_in(&tombstones, hashes),
    )
}

/// A condition on `table`'s `rowid`: the rows whose `path_hash` is among `hashes` (a
/// parenthesized subquery or list). Filtered on the hash itself, DuckDB reads every
/// row's other columns beside it; by row id it scans the hash column alone and then
/// reads the other columns of the row groups that hold a match. What that saves
/// depends on how the matches lie: at 10,000,000 current rows, the refresh of an
/// incremental run took 0.44-0.72 s against 1.5 s; 9,000 paths spread over the
/// whole table still touch every row group (0.76 s against 0.82 s), 8,000 written
/// lately (appended together) 0.23 s against 1.0 s.
pub(crate) fn rows_with_hash_in(table: &str, hashes: &str) -> String {
    format!("rowid IN (SELECT rowid FROM {table} WHERE path_hash IN {hashes})")
}

/// The query of every row of tenant `$1` that may be a document's winner, a document's
/// rows together and documents in path order (ids when the route is one collection
/// `collection`: the same order there, and cheaper to compare; the first column is
/// then the id), with `is_deleted` and the winner key after the state columns: the current tables' rows and the
/// changelog's since the refresh started reading ([`candidates`]' rule). The reader
/// keeps each document's greatest key (`Rows::Candidates` in `crate::warehouse`).
///
/// Why not the latest view: its winners are a hash aggregate over every changelog row,
/// which holds every document at once — at 10,000,000 documents DuckDB needs ~1 GB
/// for it and fails under its 96 MB cap. A sort spills to disk instead, so this stays
/// within the cap at any size (measured at 10,000,000: ~3 s of DuckDB's time, 96 MB).
/// `None` before the current tables are refreshed and hashed, or when much has come
/// since their watermark: the latest view then.
pub(crate) fn sorted_candidates_sql(connection: &Connection, t: &str, collection: Option<&str>) -> Result<Option<String>, StoreError> {
    if !hashed(connection, t)? {
        return Ok(None);
    }
    let Some(since) = crate::retention::refresh_start(connection, t)? else { return Ok(None) };
    let (current, tombstones) = (converge_core::retention::current_table(t), converge_core::retention::current_tombstones_table(t));
    // Worth it only when little has come since the watermark: a changelog written in the
    // last quarter hour (a demo, a first load) would be sorted whole beside the current
    // table (the demo's 390,000 rows ran out of the 96 MB), where the latest view's
    // aggregate is the cheaper read.
    let recent: i64 = connection
        .query_row(&format!("SELECT count(*) FROM {t} WHERE ingested_at >= make_timestamp({since}::BIGINT)"), [], |row| row.get(0))
        .map_err(|e| db_error("count the rows since the watermark", e))?;
    let standing = estimated_rows(connection, &current).map_err(|e| db_error("read the current table's size", e))?;
    if recent > RECENT_ROWS_SORTED_ANYWAY && recent.saturating_mul(RECENT_SHARE) > standing {
        return Ok(None);
    }
    // The sort holds every row's first column: an id is shorter than its path, and
    // DuckDB keeps one of up to 12 bytes inline (at 10,000,000 documents, sorting the
    // paths spilled past the 96 MB cap and took three times as long).
    let first = if collection.is_some() { "doc_id" } else { "doc_path" };
    let states = STATE_COLUMNS.replacen("doc_path", first, 1);
    Ok(Some(format!(
        "SELECT {states}, is_deleted, {key} FROM (
            SELECT {RULE_COLUMNS}, doc_id FROM {current} WHERE tenant = $1
            UNION ALL SELECT {RULE_COLUMNS}, doc_id FROM {tombstones} WHERE tenant = $1
            UNION ALL SELECT {RULE_COLUMNS}, doc_id FROM {t} WHERE ingested_at >= make_timestamp({since}::BIGINT) AND tenant = $1
         ) ORDER BY {first}",
        key = winner_key()
    )))
}

/// Exact latest states of `paths` (live ones), in path order: from the current tables
/// by path hash and the rows since the last refresh, or, before any refresh, from the
/// whole changelog.
pub(crate) fn states_of(connection: &Connection, table: &str, tenant: &str, paths: &[String]) -> Result<Vec<DocState>, StoreError> {
    let timer = std::time::Instant::now();
    let since = if hashed(connection, table)? { crate::retention::refresh_start(connection, table)? } else { None };
    let checked_millis = timer.elapsed().as_millis() as u64;
    // The paths go in through a temporary table filled by the appender: spelled as
    // literals, 9,000 paths made a query DuckDB took longer to parse and plan than to
    // run (1.8 s against 0.75 s at 10,000,000 documents).
    let error = |e| db_error("stage the paths to look up", e);
    connection.execute_batch(&format!("CREATE OR REPLACE TEMP TABLE {WANTED} (p VARCHAR NOT NULL)")).map_err(error)?;
    let result = (|| {
        {
            let mut appender = connection.appender_to_catalog_and_db(WANTED, "temp", "main").map_err(error)?;
            for path in paths {
                appender.append_row(params![path]).map_err(error)?;
            }
            appender.flush().map_err(error)?;
        }
        let staged_millis = timer.elapsed().as_millis() as u64;
        let keep = format!("doc_path IN (SELECT p FROM {WANTED})");
        let sql = match since {
            Some(since) => ranked(&candidates(table, &format!("(SELECT md5_number_upper(p) FROM {WANTED})"), &keep, since)),
            None => ranked(&format!("SELECT {RULE_COLUMNS} FROM {table} WHERE tenant = $1 AND {keep}")),
        };
        let read = read_states(connection, &sql, tenant);
        tracing::debug!(paths = paths.len(), checked_millis, staged_millis, read_millis = timer.elapsed().as_millis() as u64, "states_of: checked, staged, read");
        read
    })();
    connection.execute_batch(&format!("DROP TABLE IF EXISTS {WANTED}")).map_err(error)?;
    let mut out = result?;
    out.sort_unstable_by(|a, b| a.doc_path.cmp(&b.doc_path));
    Ok(out)
}

/// The query of exact latest states in any of `ranges` (one scan of the changelog,
/// each path placed by [`range_index_sql`]).
pub(crate) fn states_in_sql(table: &str, collection: Option<&str>, ranges: &[PathRange]) -> String {
    if ranges.is_empty() {
        return ranked(&format!("SELECT {RULE_COLUMNS} FROM {table} WHERE tenant = $1 AND FALSE"));
    }
    let (column, compared) = comparable(collection, ranges);
    ranked(&format!("SELECT {RULE_COLUMNS} FROM {table} WHERE tenant = $1 AND {} IS NOT NULL", range_index_sql(column, &compared)))
}

fn read_states(connection: &Connection, sql: &str, tenant: &str) -> Result<Vec<DocState>, StoreError> {
    let error = |e| db_error("read latest states", e);
    let mut statement = connection.prepare(sql).map_err(error)?;
    let rows = statement
        .query_map(params![tenant], |row| {
            Ok(DocState {
                doc_path: row.get(0)?,
                update_time: row.get(1)?,
                content_hash: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                version: row.get(3)?,
            })
        })
        .map_err(error)?;
    rows.map(|r| r.map_err(error)).collect()
}

pub(crate) fn record_points(connection: &Connection, points: &[VerifiedPoint]) -> Result<(), StoreError> {
    let error = |e| db_error("record verified points", e);
    let mut statement = connection
        .prepare("INSERT INTO converge_verified_points (tbl, tenant, read_time, batch_id, mode) VALUES (?, ?, make_timestamp(?), ?, ?)")
        .map_err(error)?;
    for point in points {
        statement.execute(params![point.table, point.tenant, point.read_time.as_micros(), point.batch_id, point.mode.as_str()]).map_err(error)?;
    }
    Ok(())
}

pub(crate) fn read_points(connection: &Connection, table: &str) -> Result<Vec<VerifiedPoint>, StoreError> {
    let error = |e| db_error("read verified points", e);
    let mut statement = connection
        .prepare(
            "SELECT tbl, tenant, epoch_us(read_time), batch_id, mode FROM converge_verified_points WHERE tbl = ? \
             QUALIFY row_number() OVER (PARTITION BY tenant ORDER BY read_time DESC, recorded_at DESC) = 1 ORDER BY tenant",
        )
        .map_err(error)?;
    let rows = statement
        .query_map(params![table], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, String>(3)?, row.get::<_, String>(4)?))
        })
        .map_err(error)?;
    rows.map(|row| {
        let (table, tenant, micros, batch_id, mode) = row.map_err(error)?;
        let mode: ReconcileMode = mode.parse().map_err(|e: String| StoreError::permanent(BACKEND, format!("converge_verified_points: {e}")))?;
        Ok(VerifiedPoint { table, tenant, read_time: Timestamp::from_micros(micros), batch_id, mode })
    })
    .collect()
}

/// The bytes counter and the per-table widths it estimates with.
#[derive(Default)]
pub(crate) struct ScanBytes {
    processed: AtomicU64,
    /// Per table: bytes per row of the state columns (path, hash, tenant, times).
    widths: Mutex<HashMap<String, u64>>,
}

impl ScanBytes {
    pub(crate) fn total(&self) -> WarehouseBytes {
        let processed = self.processed.load(Ordering::Relaxed);
        WarehouseBytes { processed, billed: processed }
    }

    /// Counts a scan of `table`'s state columns (every row: DuckDB has no index).
    pub(crate) fn scanned(&self, connection: &Connection, table: &str) {
        let rows = estimated_rows(connection, table).unwrap_or(0);
        let width = {
            let cached = self.widths.lock().unwrap_or_else(|p| p.into_inner()).get(table).copied();
            match cached {
                Some(width) => width,
                None => {
                    // tenant, doc_path, content_hash: 2 + length each; version,
                    // update_time and the flag/op columns the rule reads: 8 each. The
                    // first rows stand for all (a reservoir sample would read them all).
                    let sql = format!(
                        "SELECT coalesce(avg(strlen(tenant)) + avg(strlen(doc_path)) + avg(coalesce(strlen(content_hash), 0)), 0)::BIGINT \
                         FROM (SELECT tenant, doc_path, content_hash FROM {table} LIMIT 2048)"
                    );
                    let strings: i64 = connection.query_row(&sql, [], |row| row.get(0)).unwrap_or(0);
                    let width = strings.max(0) as u64 + 3 * 2 + 4 * 8;
                    self.widths.lock().unwrap_or_else(|p| p.into_inner()).insert(table.to_owned(), width);
                    width
                }
            }
        };
        self.processed.fetch_add(rows.max(0) as u64 * width, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_as_their_paths_do() {
        let r = |a: Option<&str>, b: Option<&str>| PathRange::new(a.map(Into::into), b.map(Into::into));
        let ranges = vec![
            r(None, Some("orgs/acme/records/b")),
            r(Some("orgs/acme/records/b"), Some("orgs/acme/records/p/notes/n")),
            r(Some("orgs/acme/records/p/notes/n"), Some("orgs/acme/records0")),
            r(Some("orgs/acme/records0"), None),
            r(Some("orgs/acme/reco"), Some("orgs/acme/records/")),
        ];
        let (column, ids) = comparable(Some("orgs/acme/records"), &ranges);
        assert_eq!(column, "doc_id");
        for id in ["a", "b", "ba", "p", "p-1", "p.x", "p0", "zz", "\u{10FFFE}"] {
            let path = format!("orgs/acme/records/{id}");
            for (range, mapped) in ranges.iter().zip(&ids) {
                assert_eq!(range.contains(&path), mapped.contains(id), "{path} in {range} vs {id} in {mapped}");
            }
        }
        assert_eq!(comparable(None, &ranges), ("doc_path", ranges.clone()));
    }

    #[test]
    fn the_range_index_finds_each_path_and_nothing_between_ranges() {
        let connection = Connection::open_in_memory().unwrap();
        let r = |a: Option<&str>, b: Option<&str>| PathRange::new(a.map(Into::into), b.map(Into::into));
        let ranges = vec![r(None, Some("b")), r(Some("c"), Some("e")), r(Some("e"), Some("f")), r(Some("h"), None)];
        let sql = format!("SELECT p, {} FROM (VALUES ('a'), ('b'), ('c'), ('d'), ('e'), ('f'), ('g'), ('h'), ('zz'), ('it''s')) t(p) ORDER BY p", range_index_sql("p", &ranges));
        let mut statement = connection.prepare(&sql).unwrap();
        let got: Vec<(String, Option<i64>)> = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect();
        for (path, index) in &got {
            let expected = ranges.iter().position(|range| range.contains(path)).map(|i| i as i64);
            assert_eq!(*index, expected, "{path}");
        }
        assert_eq!(got.len(), 10);
    }
}
