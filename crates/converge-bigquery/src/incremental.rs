//! What an incremental reconcile reads from BigQuery and records there
//! (`converge_core::incremental`): the latest states of given paths or of a path
//! range, live counts per range and split points from the current table, and the
//! verified points.
//!
//! Each read names the tenant and the paths or range it wants, so it reads only the
//! blocks that hold them: the changelog and `<table>_current` are clustered by
//! (tenant, doc_path), and BigQuery prunes clustered blocks by filters on those
//! columns (an `IN UNNEST` list, a range). The latest states are ranked from the
//! changelog filtered first, by the latest view's own rule (`schema::winners`), rather
//! than from the view with a filter on top, so the pruning does not depend on the
//! optimizer pushing the filter through the window. A range's bounds compare STRINGs,
//! which BigQuery orders by their UTF-8 bytes: `PathRange`'s order. Paths and bounds
//! travel as query parameters; only the table name, checked against the
//! configuration, and numbers from code reach the SQL text.

use futures::{StreamExt, TryStreamExt};
use google_cloud_bigquery::query::Row;

use converge_core::incremental::{PathRange, ReconcileMode, VerifiedPoint};
use converge_core::{Clock, DocState, Scan, StoreError, SystemClock, Timestamp};

use crate::error::BACKEND;
use crate::query::{doc_state, row_error, QueryParam};
use crate::schema::{qualified, winners, STATE_COLUMNS, VERIFIED_POINTS};
use crate::warehouse::BigQueryWarehouse;

/// Paths per `latest_states_of` query: a request (SQL and parameters) is limited to
/// 10 MB (<https://cloud.google.com/bigquery/quotas>, "Maximum request size");
/// 10,000 document paths stay far below it.
const PATHS_PER_QUERY: usize = 10_000;

/// Ranges per `current_range_counts` or `latest_states_in` query (one `COUNTIF`
/// column or one `OR` term, and two parameters, each): a bisection level of a
/// reconcile's ranges fits in one query unless it has more than this many.
const RANGES_PER_QUERY: usize = 500;

/// The most parts `split_range` asks `APPROX_QUANTILES` for: more is refused by
/// BigQuery (at most 100,000 quantiles) and pointless for a split.
const MAX_SPLIT_PARTS: usize = 10_000;

/// Verified points per `INSERT` (five parameters each; BigQuery takes at most 10,000
/// parameters per query).
const POINTS_PER_INSERT: usize = 500;

/// `doc_path >= @{name}_start AND doc_path < @{name}_end` for the bounds `range` has
/// (`TRUE` for [`PathRange::all`]), and the parameters it names.
fn range_filter(range: &PathRange, name: &str) -> (String, Vec<(String, QueryParam)>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(start) = &range.start {
        conditions.push(format!("doc_path >= @{name}_start"));
        params.push((format!("{name}_start"), QueryParam::String(start.clone())));
    }
    if let Some(end) = &range.end {
        conditions.push(format!("doc_path < @{name}_end"));
        params.push((format!("{name}_end"), QueryParam::String(end.clone())));
    }
    match conditions.is_empty() {
        true => ("TRUE".to_owned(), params),
        false => (conditions.join(" AND "), params),
    }
}

/// The smallest range holding every one of `ranges` (`None` on a side where one of
/// them is unbounded): a filter that prunes blocks before the per-range counts.
fn envelope(ranges: &[PathRange]) -> PathRange {
    let start = ranges.iter().map(|r| r.start.clone()).collect::<Option<Vec<String>>>().and_then(|starts| starts.into_iter().min());
    let end = ranges.iter().map(|r| r.end.clone()).collect::<Option<Vec<String>>>().and_then(|ends| ends.into_iter().max());
    PathRange::new(start, end)
}

fn borrowed(params: &[(String, QueryParam)]) -> Vec<(&str, QueryParam)> {
    params.iter().map(|(name, value)| (name.as_str(), value.clone())).collect()
}

impl BigQueryWarehouse {
    /// [`converge_core::Warehouse::latest_states_of`]: `paths` sorted and deduplicated,
    /// asked for in chunks of [`PATHS_PER_QUERY`] ascending paths, so the chunks'
    /// answers, each in path order, follow each other in path order.
    pub(crate) async fn latest_states_at_paths(&self, table: &str, tenant: &str, paths: &[String]) -> Result<Vec<DocState>, StoreError> {
        let mut wanted: Vec<String> = paths.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let filtered = format!("(SELECT * FROM {} WHERE tenant = @tenant AND doc_path IN UNNEST(@paths))", qualified(self.config(), table));
        let sql = format!("SELECT doc_path, {STATE_COLUMNS} FROM ({}) ORDER BY doc_path", winners(&filtered));
        let mut states = Vec::new();
        for chunk in wanted.chunks(PATHS_PER_QUERY) {
            let params = [("tenant", QueryParam::String(tenant.to_owned())), ("paths", QueryParam::Strings(chunk.to_vec()))];
            let done = self.run("read the latest states of paths", sql.clone(), &params).await?;
            let mut rows = self.rows("read the latest states of paths", done);
            while let Some(row) = rows.next().await {
                states.push(doc_state(&row?)?);
            }
        }
        Ok(states)
    }

    /// [`converge_core::Warehouse::latest_states_in`]: the changelog rows of the
    /// tenant inside any of `ranges` (disjoint, ascending), ranked; one query per
    /// [`RANGES_PER_QUERY`] ranges, each run when the previous one's rows are consumed,
    /// so the states stream in path order.
    pub(crate) async fn latest_states_in_ranges(&self, table: &str, tenant: &str, ranges: &[PathRange]) -> Result<Scan<DocState>, StoreError> {
        let changelog = qualified(self.config(), table);
        let queries: Vec<(String, Vec<(String, QueryParam)>)> = ranges
            .chunks(RANGES_PER_QUERY)
            .map(|chunk| {
                let mut params = vec![("tenant".to_owned(), QueryParam::String(tenant.to_owned()))];
                let mut any = Vec::with_capacity(chunk.len());
                for (i, range) in chunk.iter().enumerate() {
                    let (condition, range_params) = range_filter(range, &format!("r{i}"));
                    any.push(format!("({condition})"));
                    params.extend(range_params);
                }
                // The envelope as a plain range besides the OR of the ranges: a filter
                // block pruning reads whatever the optimizer makes of the OR.
                let (outer, outer_params) = range_filter(&envelope(chunk), "envelope");
                params.extend(outer_params);
                let filtered = format!("(SELECT * FROM {changelog} WHERE tenant = @tenant AND {outer} AND ({}))", any.join(" OR "));
                (format!("SELECT doc_path, {STATE_COLUMNS} FROM ({}) ORDER BY doc_path", winners(&filtered)), params)
            })
            .collect();
        // Informational, as for `latest_states`: each query reads the snapshot as of its start.
        let read_time = SystemClock.now();
        let this = self.clone();
        let items = futures::stream::iter(queries)
            .then(move |(sql, params)| {
                let this = this.clone();
                async move {
                    let done = this.run("scan latest in ranges", sql, &borrowed(&params)).await?;
                    Ok::<_, StoreError>(this.rows("scan latest in ranges", done).map(|row| row.and_then(|r| doc_state(&r))))
                }
            })
            .try_flatten();
        Ok(Scan { read_time, items: Box::pin(items) })
    }

    /// [`converge_core::Warehouse::current_range_counts`]: one `COUNTIF` per range over
    /// the tenant's rows of `<table>_current` inside the ranges' envelope, so one scan
    /// of those blocks answers every range (per [`RANGES_PER_QUERY`] ranges).
    pub(crate) async fn current_counts_per_range(&self, table: &str, tenant: &str, ranges: &[PathRange]) -> Result<Vec<u64>, StoreError> {
        let current = qualified(self.config(), &converge_core::retention::current_table(table));
        let context = "count the current table per range";
        let mut counts = Vec::with_capacity(ranges.len());
        for chunk in ranges.chunks(RANGES_PER_QUERY) {
            let mut params = vec![("tenant".to_owned(), QueryParam::String(tenant.to_owned()))];
            let mut columns = Vec::with_capacity(chunk.len());
            for (i, range) in chunk.iter().enumerate() {
                let (condition, range_params) = range_filter(range, &format!("r{i}"));
                columns.push(format!("COUNTIF({condition}) AS c{i}"));
                params.extend(range_params);
            }
            let (outer, outer_params) = range_filter(&envelope(chunk), "envelope");
            params.extend(outer_params);
            let sql = format!("SELECT {} FROM {current} WHERE tenant = @tenant AND {outer}", columns.join(", "));
            let done = self.run(context, sql, &borrowed(&params)).await?;
            let row = self.rows(context, done).next().await.ok_or_else(|| StoreError::permanent(BACKEND, format!("{context}: COUNTIF returned no row")))??;
            for i in 0..chunk.len() {
                let n: Option<i64> = row.get(i).map_err(|e| row_error(context, &e))?;
                counts.push(n.unwrap_or(0).max(0) as u64);
            }
        }
        Ok(counts)
    }

    /// [`converge_core::Warehouse::split_range`]: the inner quantiles of the range's
    /// live paths in `<table>_current` (`APPROX_QUANTILES(doc_path, parts)` returns the
    /// minimum, `parts - 1` cut points and the maximum), without repeats and without
    /// the range's first path (a cut there would leave an empty first part).
    pub(crate) async fn split_current_range(&self, table: &str, tenant: &str, range: &PathRange, parts: usize) -> Result<Vec<String>, StoreError> {
        if parts < 2 {
            return Ok(Vec::new());
        }
        let parts = parts.min(MAX_SPLIT_PARTS);
        let current = qualified(self.config(), &converge_core::retention::current_table(table));
        let (condition, mut params) = range_filter(range, "range");
        params.push(("tenant".to_owned(), QueryParam::String(tenant.to_owned())));
        // The first path comes from MIN, not from the array's offset 0: the bqemulator
        // answers `array[OFFSET(0)]` of a subquery's array with NULL. An empty range
        // gives a NULL array, which UNNEST turns into no rows.
        let sql = format!(
            "SELECT DISTINCT cut FROM (\
               SELECT APPROX_QUANTILES(doc_path, {parts}) AS cuts, MIN(doc_path) AS first FROM {current} WHERE tenant = @tenant AND {condition}\
             ) AS q, UNNEST(q.cuts) AS cut WITH OFFSET o \
             WHERE o > 0 AND o < {parts} AND cut > q.first ORDER BY cut"
        );
        let context = "split a range of the current table";
        let done = self.run(context, sql, &borrowed(&params)).await?;
        let rows: Vec<Result<Row, StoreError>> = self.rows(context, done).collect().await;
        rows.into_iter().map(|row| row?.get::<String>(0).map_err(|e| row_error(context, &e))).collect()
    }

    /// [`converge_core::Warehouse::record_verified_points`]: appended, one `INSERT` per
    /// [`POINTS_PER_INSERT`] points, each stamped with the time it was recorded.
    pub(crate) async fn insert_verified_points(&self, points: Vec<VerifiedPoint>) -> Result<(), StoreError> {
        let target = qualified(self.config(), VERIFIED_POINTS);
        for chunk in points.chunks(POINTS_PER_INSERT) {
            let mut values = Vec::with_capacity(chunk.len());
            let mut params = Vec::with_capacity(chunk.len() * 5);
            for (i, point) in chunk.iter().enumerate() {
                values.push(format!("(@tbl{i}, @tenant{i}, @read_time{i}, @batch_id{i}, @mode{i}, CURRENT_TIMESTAMP())"));
                params.extend([
                    (format!("tbl{i}"), QueryParam::String(point.table.clone())),
                    (format!("tenant{i}"), QueryParam::String(point.tenant.clone())),
                    (format!("read_time{i}"), QueryParam::Timestamp(point.read_time.as_micros())),
                    (format!("batch_id{i}"), QueryParam::String(point.batch_id.clone())),
                    (format!("mode{i}"), QueryParam::String(point.mode.as_str().to_owned())),
                ]);
            }
            let sql = format!("INSERT INTO {target} (tbl, tenant, read_time, batch_id, mode, recorded_at) VALUES {}", values.join(", "));
            self.run("record verified points", sql, &borrowed(&params)).await?;
        }
        Ok(())
    }

    /// [`converge_core::Warehouse::verified_points`]: per tenant, the point with the
    /// latest read time (the one an incremental run reads from; of two at the same read
    /// time, the later recorded), ordered by tenant.
    pub(crate) async fn read_verified_points(&self, table: &str) -> Result<Vec<VerifiedPoint>, StoreError> {
        let context = "read verified points";
        let sql = format!(
            "SELECT tbl, tenant, UNIX_MICROS(read_time), batch_id, mode FROM {} WHERE tbl = @tbl \
             QUALIFY ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY read_time DESC, recorded_at DESC, batch_id DESC) = 1 \
             ORDER BY tenant",
            qualified(self.config(), VERIFIED_POINTS)
        );
        let done = self.run(context, sql, &[("tbl", QueryParam::String(table.to_owned()))]).await?;
        let rows: Vec<Result<Row, StoreError>> = self.rows(context, done).collect().await;
        rows.into_iter()
            .map(|row| {
                let row = row?;
                let error = |e: google_cloud_bigquery::error::RowError| row_error(context, &e);
                let mode: String = row.get(4).map_err(error)?;
                Ok(VerifiedPoint {
                    table: row.get(0).map_err(error)?,
                    tenant: row.get(1).map_err(error)?,
                    read_time: Timestamp::from_micros(row.get(2).map_err(error)?),
                    batch_id: row.get(3).map_err(error)?,
                    mode: mode.parse::<ReconcileMode>().map_err(|e| {
                        StoreError::permanent(BACKEND, format!("`{VERIFIED_POINTS}` holds a point of table `{table}` with {e}; was it written by a newer Converge? Upgrade, or delete that row"))
                    })?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: Option<&str>, end: Option<&str>) -> PathRange {
        PathRange::new(start.map(str::to_owned), end.map(str::to_owned))
    }

    #[test]
    fn a_range_becomes_a_parameterized_filter_on_the_bounds_it_has() {
        assert_eq!(range_filter(&PathRange::all(), "r0"), ("TRUE".to_owned(), vec![]));
        let (sql, params) = range_filter(&range(Some("a'b"), None), "r1");
        assert_eq!(sql, "doc_path >= @r1_start");
        assert_eq!(params, vec![("r1_start".to_owned(), QueryParam::String("a'b".into()))]);
        let (sql, params) = range_filter(&range(Some("a"), Some("b")), "r2");
        assert_eq!(sql, "doc_path >= @r2_start AND doc_path < @r2_end");
        assert_eq!(params.len(), 2);
    }

    #[test]
    fn the_envelope_holds_every_range_and_is_unbounded_where_one_is() {
        assert_eq!(envelope(&[range(Some("c"), Some("d")), range(Some("a"), Some("b"))]), range(Some("a"), Some("d")));
        assert_eq!(envelope(&[range(None, Some("b")), range(Some("c"), Some("d"))]), range(None, Some("d")));
        assert_eq!(envelope(&[range(Some("a"), Some("b")), range(Some("c"), None)]), range(Some("a"), None));
    }
}
