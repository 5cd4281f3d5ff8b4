//! The current table's refresh and compaction on DuckDB (the rules are
//! `converge_core::retention`'s). Each runs in one transaction on its own connection,
//! so the loader keeps appending meanwhile; the warehouse runs one at a time.

use std::time::Instant;

use converge_core::config::Route;
use converge_core::retention::{current_table, current_tombstones_table, CompactionPlan, CurrentRefresh, RefreshFrom, TableCompaction, REFRESH_OVERLAP_MICROS, TABLE_STATE};
use converge_core::StoreError;
use duckdb::{params, Connection, OptionalExt};

use crate::db::db_error;
use crate::incremental::rows_with_hash_in;
use crate::schema::winner_key;

/// The temporary table of one refresh: each touched document's best new row (dropped
/// at its end, and with its connection).
const REFRESH_WINNERS: &str = "converge_refresh_winners";
/// The rows standing for the touched documents in the current tables (the same).
const REFRESH_STANDING: &str = "converge_refresh_standing";
/// Documents replaced per committed part of a refresh from the watermark (see
/// `refresh`): at most this many vectors' delete information (16 KiB each) at once.
const REFRESH_PART: u64 = 2_500;

/// Writes the winners `winners` selects into `t`'s current tables (live ones and
/// deletes), each with its path's hash (`crate::incremental`), computed as it streams in.
fn write_current(connection: &Connection, t: &str, winners: &str) -> Result<(), StoreError> {
    for (table, which) in [(current_table(t), "NOT"), (current_tombstones_table(t), "")] {
        exec(
            connection,
            "write current rows",
            &format!("INSERT INTO {table} BY NAME SELECT *, md5_number_upper(doc_path) AS path_hash FROM ({winners}) WHERE {which} is_deleted"),
        )?;
    }
    Ok(())
}

fn count(connection: &Connection, context: &str, sql: &str) -> Result<u64, StoreError> {
    connection.query_row(sql, [], |row| row.get::<_, i64>(0)).map(|n| n as u64).map_err(|e| db_error(context, e))
}

fn exec(connection: &Connection, context: &str, sql: &str) -> Result<usize, StoreError> {
    connection.execute(sql, []).map_err(|e| db_error(context, e))
}

/// Where a refresh of `table` reads from, in microseconds (`None`: every row): the
/// watermark minus the overlap, lowered by any reset recorded since.
pub(crate) fn refresh_start(connection: &Connection, table: &str) -> Result<Option<i64>, StoreError> {
    let watermark: Option<i64> = connection
        .query_row(&format!("SELECT epoch_us(current_watermark) FROM {TABLE_STATE} WHERE table_name = ?"), params![table], |row| row.get(0))
        .optional()
        .map_err(|e| db_error("read the current table's watermark", e))?
        .flatten();
    let lowered: Option<i64> = connection
        .query_row("SELECT epoch_us(min(lowered_to)) FROM converge_watermark_resets WHERE table_name = ?", params![table], |row| row.get(0))
        .map_err(|e| db_error("read the watermark resets", e))?;
    Ok(watermark.map(|w| match lowered {
        Some(l) => l.min(w - REFRESH_OVERLAP_MICROS),
        None => w - REFRESH_OVERLAP_MICROS,
    }))
}

/// Brings `route`'s current tables up to date, in one transaction on `connection` (a
/// reader connection that has seen every acknowledged append).
pub(crate) fn refresh(connection: &Connection, route: &Route, from: RefreshFrom) -> Result<CurrentRefresh, StoreError> {
    let started = Instant::now();
    let t = &route.table;
    let (current, tombstones) = (current_table(t), current_tombstones_table(t));
    let key = winner_key();
    exec(connection, "begin refresh", "BEGIN TRANSACTION")?;
    let result = (|| -> Result<CurrentRefresh, StoreError> {
        let start = match from {
            RefreshFrom::Full => None,
            RefreshFrom::Watermark | RefreshFrom::Started => refresh_start(connection, t)?,
        };
        if from == RefreshFrom::Started && start.is_none() {
            return Ok(CurrentRefresh { table: t.clone(), ..CurrentRefresh::default() });
        }
        // Rows written before the current tables had their hash column cannot be
        // found by hash: one full refresh writes them all again.
        let start = if crate::incremental::hashed(connection, t)? { start } else { None };
        let mut report = CurrentRefresh { table: t.clone(), full: start.is_none(), ..CurrentRefresh::default() };
        let newest: Option<i64>;
        match start {
            None => {
                // Every document's winner straight from the changelog into the current
                // tables, streamed (no temporary table: those are held in memory).
                exec(connection, "empty the current table", &format!("DELETE FROM {current}"))?;
                exec(connection, "empty the current tombstones", &format!("DELETE FROM {tombstones}"))?;
                let winners = format!("SELECT * FROM {t} WHERE rowid IN (SELECT arg_max(rowid, {key}) FROM {t} GROUP BY doc_path)");
                write_current(connection, t, &winners)?;
                crate::buckets::cut(connection, route, None)?;
                report.rows_read = count(connection, "count the changelog", &format!("SELECT count(*) FROM {t}"))?;
                report.documents_merged = count(connection, "count the current tables", &format!("SELECT (SELECT count(*) FROM {current}) + (SELECT count(*) FROM {tombstones})"))?;
                newest = connection
                    .query_row(&format!("SELECT epoch_us(max(ingested_at)) FROM {t}"), [], |row| row.get(0))
                    .map_err(|e| db_error("read the newest ingested row", e))?;
            }
            Some(since) => {
                let new_rows = format!("{t} WHERE ingested_at >= make_timestamp({since}::BIGINT)");
                let (rows_read, newest_new): (i64, Option<i64>) = connection
                    .query_row(&format!("SELECT count(*), epoch_us(max(ingested_at)) FROM {new_rows}"), [], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(|e| db_error("read the rows since the watermark", e))?;
                report.rows_read = rows_read as u64;
                newest = newest_new;
                // Each touched document's best new row, by the one rule, as (path, row
                // id, rank key, tenant, whether it is a delete — for the buckets): key
                // columns only, so memory stays small whatever the rows hold. Then only
                // the documents whose best new row outranks what stands for them now
                // (their current row, or the delete that beat it) are replaced: a stale
                // event loses, an identical copy changes nothing.
                exec(
                    connection,
                    "rank the new rows",
                    &format!(
                        "CREATE OR REPLACE TEMP TABLE {REFRESH_WINNERS} AS SELECT doc_path, md5_number_upper(doc_path) AS h, arg_max(rowid, {key}) AS rid, max({key}) AS k, \
                         any_value(tenant) AS tenant, arg_max(is_deleted, {key}) AS dead \
                         FROM {new_rows} GROUP BY doc_path"
                    ),
                )?;
                let winner_hashes = format!("(SELECT h FROM {REFRESH_WINNERS})");
                // What stands for the touched documents now, found by joining on the
                // path's hash (an integer: a join on the paths themselves would hash
                // every current row's string), the paths compared on the matches only.
                exec(
                    connection,
                    "find what stands",
                    &format!(
                        "CREATE OR REPLACE TEMP TABLE {REFRESH_STANDING} AS \
                         SELECT 'current' AS side, s.rowid AS sid, s.doc_path AS p, ({key}) AS sk FROM {current} AS s WHERE s.{} \
                         UNION ALL \
                         SELECT 'tombstones', s.rowid, s.doc_path, ({key}) FROM {tombstones} AS s WHERE s.{}",
                        rows_with_hash_in(&current, &winner_hashes),
                        rows_with_hash_in(&tombstones, &winner_hashes),
                    ),
                )?;
                exec(connection, "keep only what stands for the touched documents", &format!("DELETE FROM {REFRESH_STANDING} WHERE p NOT IN (SELECT doc_path FROM {REFRESH_WINNERS})"))?;
                exec(
                    connection,
                    "keep what outranks the new rows",
                    &format!("DELETE FROM {REFRESH_WINNERS} AS w WHERE EXISTS (SELECT 1 FROM {REFRESH_STANDING} AS s WHERE s.p = w.doc_path AND s.sk >= w.k)"),
                )?;
                report.documents_merged = count(connection, "count merged documents", &format!("SELECT count(*) FROM {REFRESH_WINNERS}"))?;
                // Replaced in parts of at most REFRESH_PART documents, each committed and
                // checkpointed: DuckDB keeps a delete's version information per vector of
                // 2,048 rows touched (16 KiB each) until a checkpoint, so replacing
                // documents spread over a 10,000,000-row table in one transaction needs
                // ~80 MB, past the 96 MB cap. Each document is replaced within one part
                // (readers see its old row or its new one), and the watermark moves only
                // with the last part: after a failure the next refresh does it all again,
                // the parts already done changing nothing (their rows stand, not outranked).
                let parts = report.documents_merged.div_ceil(REFRESH_PART).max(1);
                for part in 0..parts {
                    let in_part = if parts == 1 { "TRUE".to_owned() } else { format!("hash(doc_path) % {parts} = {part}") };
                    if part > 0 {
                        // Row ids hold only within a transaction: the checkpoint between
                        // parts vacuums deleted rows and renumbers the rows after them
                        // (DuckDB 1.5: measured, `a_refresh_in_parts_survives_the_vacuum`),
                        // so each later part finds its documents' rows again — their best
                        // new rows, and what stands for them — in its own transaction.
                        restate_part(connection, &new_rows, &current, &tombstones, &in_part)?;
                    }
                    crate::buckets::apply_changes(connection, route, REFRESH_WINNERS, REFRESH_STANDING, &in_part)?;
                    for (side, table) in [("current", &current), ("tombstones", &tombstones)] {
                        exec(
                            connection,
                            "replace what stood",
                            &format!(
                                "DELETE FROM {table} WHERE rowid IN (SELECT sid FROM {REFRESH_STANDING} WHERE side = '{side}' AND p IN (SELECT doc_path FROM {REFRESH_WINNERS} WHERE {in_part}))"
                            ),
                        )?;
                    }
                    let winners = format!("SELECT * FROM {t} WHERE rowid IN (SELECT rid FROM {REFRESH_WINNERS} WHERE {in_part})");
                    write_current(connection, t, &winners)?;
                    if part + 1 < parts {
                        exec(connection, "commit a part of the refresh", "COMMIT")?;
                        checkpoint(connection);
                        exec(connection, "begin the next part of the refresh", "BEGIN TRANSACTION")?;
                    }
                }
                crate::buckets::after_refresh(connection, route, &format!("SELECT tenant FROM {REFRESH_WINNERS}"))?;
                exec(connection, "drop the ranking", &format!("DROP TABLE {REFRESH_WINNERS}; DROP TABLE {REFRESH_STANDING}"))?;
            }
        }
        crate::buckets::check(connection, route)?;
        // Resets this transaction saw are applied; one committed meanwhile is not
        // visible here, so it stays for the next refresh.
        connection.execute("DELETE FROM converge_watermark_resets WHERE table_name = ?", params![t]).map_err(|e| db_error("clear watermark resets", e))?;
        connection
            .execute(
                &format!(
                    "INSERT INTO {TABLE_STATE} (table_name, current_watermark, refreshed_at) VALUES (?, make_timestamp(?::BIGINT), current_timestamp::TIMESTAMP)
                     ON CONFLICT (table_name) DO UPDATE SET
                       current_watermark = greatest(coalesce({TABLE_STATE}.current_watermark, excluded.current_watermark), coalesce(excluded.current_watermark, {TABLE_STATE}.current_watermark)),
                       refreshed_at = excluded.refreshed_at"
                ),
                params![t, newest],
            )
            .map_err(|e| db_error("record the watermark", e))?;
        report.watermark_micros = connection
            .query_row(&format!("SELECT epoch_us(current_watermark) FROM {TABLE_STATE} WHERE table_name = ?"), params![t], |row| row.get(0))
            .map_err(|e| db_error("read the watermark", e))?;
        report.current_rows = count(connection, "count the current table", &format!("SELECT count(*) FROM {current}"))?;
        Ok(report)
    })();
    let report = finish(connection, result, started, |report, millis| report.millis = millis)?;
    if report.documents_merged > 0 && !report.full {
        // The last part's delete information, as between the parts.
        checkpoint(connection);
    }
    Ok(report)
}

/// The row ids of the documents in one part of a refresh (`in_part`), found again in
/// the part's own transaction: each one's best row among `new_rows` (and whether it is a
/// delete), and the rows standing for it in `current` and `tombstones`.
fn restate_part(connection: &Connection, new_rows: &str, current: &str, tombstones: &str, in_part: &str) -> Result<(), StoreError> {
    let key = winner_key();
    let paths = format!("(SELECT doc_path FROM {REFRESH_WINNERS} WHERE {in_part})");
    let hashes = format!("(SELECT h FROM {REFRESH_WINNERS} WHERE {in_part})");
    exec(
        connection,
        "find the part's best new rows again",
        &format!(
            "UPDATE {REFRESH_WINNERS} AS w SET rid = x.rid, k = x.k, dead = x.dead FROM (
                SELECT doc_path, arg_max(rowid, {key}) AS rid, max({key}) AS k, arg_max(is_deleted, {key}) AS dead
                FROM {new_rows} AND doc_path IN {paths} GROUP BY doc_path
             ) AS x WHERE w.doc_path = x.doc_path"
        ),
    )?;
    exec(connection, "forget what stood for the part", &format!("DELETE FROM {REFRESH_STANDING} WHERE p IN {paths}"))?;
    exec(
        connection,
        "find what stands for the part again",
        &format!(
            "INSERT INTO {REFRESH_STANDING} \
             SELECT 'current', s.rowid, s.doc_path, ({key}) FROM {current} AS s WHERE s.{} AND s.doc_path IN {paths} \
             UNION ALL \
             SELECT 'tombstones', s.rowid, s.doc_path, ({key}) FROM {tombstones} AS s WHERE s.{} AND s.doc_path IN {paths}",
            rows_with_hash_in(current, &hashes),
            rows_with_hash_in(tombstones, &hashes),
        ),
    )?;
    Ok(())
}

/// Frees the replaced rows' delete information a refresh holds until a checkpoint (see
/// `REFRESH_PART`). Best effort: a checkpoint fails while another transaction is open
/// (the loader appending), and the next one frees it all.
fn checkpoint(connection: &Connection) {
    if let Err(error) = connection.execute_batch("CHECKPOINT") {
        tracing::debug!(%error, "no checkpoint after a part of the refresh");
    }
}

/// Commits on success, rolls back on error, and stamps the time taken.
fn finish<T>(connection: &Connection, result: Result<T, StoreError>, started: Instant, stamp: impl FnOnce(&mut T, u64)) -> Result<T, StoreError> {
    match result {
        Ok(mut report) => {
            exec(connection, "commit", "COMMIT")?;
            stamp(&mut report, started.elapsed().as_millis() as u64);
            Ok(report)
        }
        Err(error) => {
            let _ = connection.execute("ROLLBACK", []);
            Err(error)
        }
    }
}

/// Prunes `route`'s changelog by `plan` in one transaction and records the horizon.
/// The current table is left to a full refresh (its tombstones may name pruned rows).
pub(crate) fn compact(connection: &Connection, route: &Route, plan: CompactionPlan) -> Result<TableCompaction, StoreError> {
    let started = Instant::now();
    let t = &route.table;
    let key = winner_key();
    let (horizon, tombstone_horizon) = (plan.horizon.as_micros(), plan.tombstone_horizon.as_micros());
    exec(connection, "begin compaction", "BEGIN TRANSACTION")?;
    let result = (|| -> Result<TableCompaction, StoreError> {
        let mut report = TableCompaction { table: t.clone(), ..TableCompaction::default() };
        report.rows_before = count(connection, "count the changelog", &format!("SELECT count(*) FROM {t}"))?;
        // Every row at or before the horizon except each document's winner as of it
        // (identical redelivered copies of the winner included).
        report.superseded_pruned = connection
            .execute(
                &format!(
                    "DELETE FROM {t} WHERE version <= make_timestamp(?::BIGINT) AND rowid NOT IN (
                       SELECT arg_max(rowid, {key}) FROM {t} WHERE version <= make_timestamp(?::BIGINT) GROUP BY doc_path)"
                ),
                params![horizon, horizon],
            )
            .map_err(|e| db_error("prune superseded rows", e))? as u64;
        // A delete that is now its document's only row at or before the horizon, older
        // than the late-event bound: nothing older is left for a late event to
        // outrank, and no event older than it can still arrive.
        report.tombstones_pruned = connection
            .execute(
                &format!(
                    "DELETE FROM {t} WHERE is_deleted AND version < make_timestamp(?::BIGINT) AND doc_path IN (
                       SELECT doc_path FROM {t} WHERE version <= make_timestamp(?::BIGINT) GROUP BY doc_path HAVING count(*) = 1)"
                ),
                params![tombstone_horizon, horizon],
            )
            .map_err(|e| db_error("prune tombstones", e))? as u64;
        report.rows_after = report.rows_before - report.superseded_pruned - report.tombstones_pruned;
        connection
            .execute(
                &format!(
                    "INSERT INTO {TABLE_STATE} (table_name, compacted_before) VALUES (?, make_timestamp(?::BIGINT))
                     ON CONFLICT (table_name) DO UPDATE SET compacted_before = greatest(coalesce({TABLE_STATE}.compacted_before, excluded.compacted_before), excluded.compacted_before)"
                ),
                params![t, horizon],
            )
            .map_err(|e| db_error("record the compaction horizon", e))?;
        Ok(report)
    })();
    finish(connection, result, started, |report, millis| report.millis = millis)
}

/// Records that rows of `table` stamped from `oldest` (microseconds) on are being
/// appended although the watermark may have passed them: the next refresh reads from
/// there. Run inside the appending transaction, before its commit.
pub(crate) fn lower_watermark(connection: &Connection, table: &str, oldest: i64) -> Result<(), StoreError> {
    connection
        .execute("INSERT INTO converge_watermark_resets VALUES (?, make_timestamp(?::BIGINT))", params![table, oldest])
        .map(|_| ())
        .map_err(|e| db_error("lower the current table's watermark", e))
}
