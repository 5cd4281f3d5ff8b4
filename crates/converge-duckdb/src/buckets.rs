//! Live documents per bucket of each tenant's paths, kept beside the current tables so
//! that an incremental reconcile counts and cuts a tenant without scanning it.
//!
//! # Why
//!
//! An incremental run compares the source's `count()` per path range with the current
//! table's live count per range, level after level of a bisection
//! (`converge_core::incremental`). DuckDB has no index on the paths, so every level
//! scanned the whole current table (at 10,000,000 documents 0.3–0.7 s a level, three
//! levels, plus 0.4 s sampling the cut points): most of the run. The bisection only ever
//! asks for ranges that begin and end on the tenant's fine cut points, so the live count
//! per fine bucket, kept up to date by each refresh, answers every level by addition.
//!
//! # The table
//!
//! `converge_current_buckets (tbl, tenant, start_path, live)`: per tenant of a route
//! whose tenant's documents are one collection, consecutive path ranges; a bucket runs
//! from its `start_path` (`''` for the first) to the next bucket's; `live` is how many
//! rows of the current table lie in it. A nested route (several collections per
//! tenant) is counted only whole (`SourceStore::count_range`) and keeps none. Written
//! only inside the refresh's transaction (`crate::retention::refresh`):
//! - a full refresh cuts every tenant anew from one ordered pass over the ids (buckets
//!   of [`BUCKET_DOCUMENTS`], larger for a tenant past [`MAX_BUCKETS`] of them);
//! - a refresh from the watermark adds each replaced document's change of liveness (+1
//!   created or revived, −1 deleted) to its bucket (an as-of join on the path), cuts a
//!   touched tenant that has none yet, and splits a touched bucket grown past
//!   [`OVERFULL`] times its tenant's size from its rows (ids that only grow — a time
//!   prefix — pile into the last bucket);
//! - every refresh ends with the check that the buckets add up to the current table's
//!   rows (DuckDB counts a table's rows without reading them): a table changed any
//!   other way, or buckets from before this table existed, are cut anew.
//!
//! Readers take the buckets only when that same check holds, and answer from them only
//! ranges that begin and end on cut points; anything else is counted by a scan, as
//! before. So the answers are exact either way.

use converge_core::config::Route;
use converge_core::incremental::{BUCKET_DOCUMENTS, MAX_BUCKETS};
use converge_core::retention::current_table;
use converge_core::{PathRange, StoreError};
use duckdb::{params, Connection};

use crate::db::db_error;
use crate::incremental::literal;

pub const TABLE: &str = "converge_current_buckets";

/// Created by `ensure_tables` beside the verified points.
pub const CREATE_CURRENT_BUCKETS: &str = "CREATE TABLE IF NOT EXISTS converge_current_buckets (
    tbl VARCHAR NOT NULL,
    tenant VARCHAR NOT NULL,
    start_path VARCHAR NOT NULL,
    live BIGINT NOT NULL
)";

/// A bucket holding more than this many times its tenant's bucket size is split.
pub const OVERFULL: i64 = 4;

/// More overfull buckets than this in one tenant (it grew everywhere at once): the
/// tenant is cut anew instead, in one ordered pass.
const SPLITS_BEFORE_RECUT: usize = 64;

/// Whether `route` keeps buckets: its tenant's documents are one collection.
pub(crate) fn kept(route: &Route) -> bool {
    route.pattern.collection_path("tenant").is_some()
}

/// The SQL of a tenant's bucket size from its live documents `n` (an SQL expression):
/// [`BUCKET_DOCUMENTS`], or as many as spread it over [`MAX_BUCKETS`].
fn size_sql(n: &str) -> String {
    format!("greatest({BUCKET_DOCUMENTS}, ceil(({n}) / {MAX_BUCKETS}))::BIGINT")
}

/// Cuts `tenants` (every tenant when `None`) of `route`'s current table anew: one
/// ordered pass over their ids (a single collection per tenant orders its paths as its
/// ids, and a short id is compared inline, where whole paths sharing their prefix are
/// not). Returns the buckets written.
pub(crate) fn cut(connection: &Connection, route: &Route, tenants: Option<&[String]>) -> Result<u64, StoreError> {
    let t = &route.table;
    let which = match tenants {
        None => String::new(),
        Some([]) => return Ok(0),
        Some(list) => format!("AND tenant IN ({})", list.iter().map(|s| literal(s)).collect::<Vec<_>>().join(", ")),
    };
    connection
        .execute(&format!("DELETE FROM {TABLE} WHERE tbl = ? {which}"), params![t])
        .map_err(|e| db_error("drop the buckets to cut anew", e))?;
    if !kept(route) {
        return Ok(0);
    }
    let current = current_table(t);
    let filter = which.replacen("AND", "WHERE", 1);
    let sql = format!(
        "SELECT tenant, b, min(doc_id), count(*) FROM (
            SELECT tenant, doc_id,
                   (row_number() OVER (PARTITION BY tenant ORDER BY doc_id) - 1) // {size} AS b
            FROM {current} {filter}
         ) GROUP BY tenant, b ORDER BY tenant, b",
        size = size_sql("count(*) OVER (PARTITION BY tenant)")
    );
    let error = |e| db_error("cut the current table into buckets", e);
    let mut statement = connection.prepare(&sql).map_err(error)?;
    let rows = statement
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?, row.get::<_, i64>(3)?)))
        .map_err(error)?;
    let mut appender = connection.appender(TABLE).map_err(|e| db_error("write the buckets", e))?;
    let mut written = 0;
    for row in rows {
        let (tenant, bucket, first_id, live) = row.map_err(error)?;
        let start = if bucket == 0 { String::new() } else { start_path(route, &tenant, &first_id)? };
        appender.append_row(params![t, tenant, start, live]).map_err(|e| db_error("write a bucket", e))?;
        written += 1;
    }
    appender.flush().map_err(|e| db_error("write the buckets", e))?;
    Ok(written)
}

/// The path of `tenant`'s document `id` under `route` (one collection per tenant).
fn start_path(route: &Route, tenant: &str, id: &str) -> Result<String, StoreError> {
    route
        .pattern
        .document_path(tenant, id)
        .ok_or_else(|| StoreError::permanent(crate::db::BACKEND, format!("route `{}` has no single collection per tenant: it keeps no buckets", route.table)))
}

/// Adds the liveness change of the documents a refresh replaces to their buckets, before
/// what stood for them is deleted: `winners` is the refresh's table of each touched
/// document's best new row (`tenant`, `doc_path`, `dead`), restricted by `in_part`;
/// `standing` its table of what stands for them (`side`, `p`). A tenant without buckets
/// is skipped here and cut once the refresh is written ([`after_refresh`]).
pub(crate) fn apply_changes(connection: &Connection, route: &Route, winners: &str, standing: &str, in_part: &str) -> Result<(), StoreError> {
    if !kept(route) {
        return Ok(());
    }
    let t = &route.table;
    connection
        .execute(
            &format!(
                "UPDATE {TABLE} AS b SET live = b.live + x.d FROM (
                    SELECT k.tenant, k.start_path, sum(c.d) AS d
                    FROM (
                        SELECT w.tenant, w.doc_path,
                               (NOT w.dead)::BIGINT - (w.doc_path IN (SELECT p FROM {standing} WHERE side = 'current'))::BIGINT AS d
                        FROM {winners} AS w WHERE {in_part}
                    ) AS c
                    ASOF JOIN (SELECT tenant, start_path FROM {TABLE} WHERE tbl = {tbl}) AS k
                      ON c.tenant = k.tenant AND c.doc_path >= k.start_path
                    GROUP BY ALL
                 ) AS x
                 WHERE b.tbl = {tbl} AND b.tenant = x.tenant AND b.start_path = x.start_path AND x.d <> 0",
                tbl = literal(t)
            ),
            [],
        )
        .map_err(|e| db_error("count the refreshed documents into their buckets", e))?;
    Ok(())
}

/// What a refresh from the watermark does once its rows are written: cuts the touched
/// tenants (`touched`, an SQL query of tenants) that have no buckets yet, and splits
/// their overfull buckets.
pub(crate) fn after_refresh(connection: &Connection, route: &Route, touched: &str) -> Result<(), StoreError> {
    if !kept(route) {
        return Ok(());
    }
    let t = &route.table;
    let error = |e| db_error("read the touched tenants' buckets", e);
    let uncut: Vec<String> = {
        let mut statement = connection
            .prepare(&format!("SELECT DISTINCT tenant FROM ({touched}) WHERE tenant NOT IN (SELECT tenant FROM {TABLE} WHERE tbl = ?) ORDER BY tenant"))
            .map_err(error)?;
        let rows = statement.query_map(params![t], |row| row.get::<_, String>(0)).map_err(error)?;
        rows.collect::<Result<_, _>>().map_err(error)?
    };
    cut(connection, route, Some(&uncut))?;
    // (tenant, start, end or None, the tenant's bucket size) of every overfull bucket.
    let overfull: Vec<(String, String, Option<String>, i64)> = {
        let mut statement = connection
            .prepare(&format!(
                "SELECT tenant, start_path, end_path, size FROM (
                    SELECT tenant, start_path, live,
                           lead(start_path) OVER (PARTITION BY tenant ORDER BY start_path) AS end_path,
                           {size} AS size
                    FROM {TABLE} WHERE tbl = ? AND tenant IN (SELECT tenant FROM ({touched}))
                 ) WHERE live > {OVERFULL} * size ORDER BY tenant, start_path",
                size = size_sql("sum(live) OVER (PARTITION BY tenant)")
            ))
            .map_err(error)?;
        let rows = statement.query_map(params![t], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))).map_err(error)?;
        rows.collect::<Result<_, _>>().map_err(error)?
    };
    let mut by_tenant: std::collections::BTreeMap<&str, Vec<&(String, String, Option<String>, i64)>> = Default::default();
    for bucket in &overfull {
        by_tenant.entry(bucket.0.as_str()).or_default().push(bucket);
    }
    for (tenant, buckets) in by_tenant {
        if buckets.len() > SPLITS_BEFORE_RECUT {
            cut(connection, route, Some(&[tenant.to_owned()]))?;
            continue;
        }
        for (tenant, start, end, size) in buckets {
            split(connection, route, tenant, start, end.as_deref(), *size as usize)?;
        }
    }
    Ok(())
}

/// Splits `tenant`'s bucket `[start, end)` into buckets of `size`, read from its rows.
fn split(connection: &Connection, route: &Route, tenant: &str, start: &str, end: Option<&str>, size: usize) -> Result<(), StoreError> {
    let t = &route.table;
    let collection = route.pattern.collection_path(tenant);
    let range = PathRange::new((!start.is_empty()).then(|| start.to_owned()), end.map(str::to_owned));
    let (column, mapped) = crate::incremental::comparable(collection.as_deref(), std::slice::from_ref(&range));
    let filter = crate::incremental::range_filter(column, &mapped[0]);
    let error = |e| db_error("read an overfull bucket's ids", e);
    let ids: Vec<String> = {
        let mut statement = connection
            .prepare(&format!("SELECT doc_id FROM {} WHERE tenant = ? {filter} ORDER BY doc_id", current_table(t)))
            .map_err(error)?;
        let rows = statement.query_map(params![tenant], |row| row.get::<_, String>(0)).map_err(error)?;
        rows.collect::<Result<_, _>>().map_err(error)?
    };
    connection
        .execute(&format!("DELETE FROM {TABLE} WHERE tbl = ? AND tenant = ? AND start_path = ?"), params![t, tenant, start])
        .map_err(|e| db_error("replace an overfull bucket", e))?;
    let mut insert = connection
        .prepare(&format!("INSERT INTO {TABLE} (tbl, tenant, start_path, live) VALUES (?, ?, ?, ?)"))
        .map_err(|e| db_error("write the split buckets", e))?;
    for (i, piece) in ids.chunks(size.max(1)).enumerate() {
        let piece_start = if i == 0 { start.to_owned() } else { start_path(route, tenant, &piece[0])? };
        insert.execute(params![t, tenant, piece_start, piece.len() as i64]).map_err(|e| db_error("write a split bucket", e))?;
    }
    if ids.is_empty() {
        // Every row left meanwhile: the bucket stays, empty.
        insert.execute(params![t, tenant, start, 0i64]).map_err(|e| db_error("write a split bucket", e))?;
    }
    Ok(())
}

/// Whether `t`'s buckets add up to its current table's rows (neither is read row by row:
/// DuckDB keeps a table's row count, and the buckets are few).
pub(crate) fn consistent(connection: &Connection, t: &str) -> Result<bool, StoreError> {
    connection
        .query_row(
            &format!("SELECT (SELECT coalesce(sum(live), 0) FROM {TABLE} WHERE tbl = ?) = (SELECT count(*) FROM {})", current_table(t)),
            params![t],
            |row| row.get(0),
        )
        .map_err(|e| db_error("check the buckets against the current table", e))
}

/// The end of every refresh: buckets that do not add up are cut anew (the first
/// refresh after they were introduced, or a current table changed outside a refresh).
pub(crate) fn check(connection: &Connection, route: &Route) -> Result<(), StoreError> {
    if kept(route) && !consistent(connection, &route.table)? {
        tracing::info!(table = route.table, "the current table's buckets do not add up to its rows: cutting them anew");
        cut(connection, route, None)?;
    }
    Ok(())
}

/// `tenant`'s buckets of `t` as (start path, live documents), in path order, when they
/// can be trusted ([`consistent`]); `None` otherwise. One snapshot for both reads.
pub(crate) fn read(connection: &Connection, t: &str, tenant: &str) -> Result<Option<Vec<(String, u64)>>, StoreError> {
    let error = |e| db_error("read the buckets", e);
    connection.execute_batch("BEGIN TRANSACTION").map_err(error)?;
    let result = (|| {
        if !consistent(connection, t)? {
            return Ok(None);
        }
        let mut statement = connection.prepare(&format!("SELECT start_path, live FROM {TABLE} WHERE tbl = ? AND tenant = ? ORDER BY start_path")).map_err(error)?;
        let rows = statement.query_map(params![t, tenant], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?.max(0) as u64))).map_err(error)?;
        let buckets: Vec<(String, u64)> = rows.collect::<Result<_, _>>().map_err(error)?;
        Ok((!buckets.is_empty()).then_some(buckets))
    })();
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    connection.execute_batch(end).map_err(error)?;
    result
}

/// Live counts of `ranges` from `buckets` when every bound is a cut point (or open);
/// `None` when one is not (the caller scans).
pub(crate) fn range_counts(buckets: &[(String, u64)], ranges: &[PathRange]) -> Option<Vec<u64>> {
    let mut prefix = Vec::with_capacity(buckets.len() + 1);
    prefix.push(0u64);
    for (_, live) in buckets {
        prefix.push(prefix.last().copied().unwrap_or(0) + live);
    }
    // The bucket a bound begins: the first (start '') for no bound or '', else the one
    // whose start it is.
    let index = |bound: &Option<String>, open: usize| -> Option<usize> {
        match bound.as_deref() {
            None => Some(open),
            Some("") => Some(0),
            Some(path) => buckets.binary_search_by(|(start, _)| start.as_str().cmp(path)).ok(),
        }
    };
    ranges
        .iter()
        .map(|range| {
            let from = index(&range.start, 0)?;
            let to = index(&range.end, buckets.len())?;
            Some(if to > from { prefix[to] - prefix[from] } else { 0 })
        })
        .collect()
}

/// About `parts - 1` cut points of a whole tenant from its buckets: every bucket's start
/// but the first, or every k-th of them when there are more than `parts` buckets (so
/// the ranges between them begin and end on cuts, and [`range_counts`] answers them).
pub(crate) fn cuts(buckets: &[(String, u64)], parts: usize) -> Vec<String> {
    if parts < 2 {
        return Vec::new();
    }
    let step = buckets.len().div_ceil(parts).max(1);
    buckets.iter().enumerate().filter(|(i, _)| *i > 0 && i % step == 0).map(|(_, (start, _))| start.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets() -> Vec<(String, u64)> {
        vec![("".into(), 3), ("p/c".into(), 2), ("p/f".into(), 0), ("p/k".into(), 5)]
    }

    #[test]
    fn ranges_on_cut_points_are_summed_and_others_refused() {
        let b = buckets();
        let r = |a: Option<&str>, z: Option<&str>| PathRange::new(a.map(Into::into), z.map(Into::into));
        assert_eq!(range_counts(&b, &[PathRange::all()]), Some(vec![10]));
        assert_eq!(range_counts(&b, &[r(None, Some("p/c")), r(Some("p/c"), Some("p/k")), r(Some("p/k"), None)]), Some(vec![3, 2, 5]));
        assert_eq!(range_counts(&b, &[r(Some("p/f"), Some("p/f")), r(Some("p/k"), Some("p/c"))]), Some(vec![0, 0]), "empty and reversed ranges");
        assert_eq!(range_counts(&b, &[r(None, Some("p/d"))]), None, "p/d is not a cut: only a scan knows");
        assert_eq!(range_counts(&b, &[]), Some(vec![]));
    }

    #[test]
    fn cuts_are_bucket_starts_at_most_parts_minus_one() {
        let b = buckets();
        assert_eq!(cuts(&b, 8), vec!["p/c", "p/f", "p/k"]);
        assert_eq!(cuts(&b, 2), vec!["p/f"]);
        assert_eq!(cuts(&b, 3), vec!["p/f"]);
        assert!(cuts(&b, 1).is_empty());
        for parts in 2..10 {
            let c = cuts(&b, parts);
            assert!(c.len() < parts, "{parts}: {c:?}");
            assert_eq!(range_counts(&b, &PathRange::all().split_at(&c)).map(|v| v.iter().sum::<u64>()), Some(10));
        }
    }
}
