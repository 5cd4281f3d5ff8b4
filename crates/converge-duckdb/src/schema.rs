//! DDL for one mirrored table. Names come from the validated mirror configuration
//! (plain identifiers only, see `converge_core::config`); no input is spliced in.

use converge_core::config::{ColumnType, Route};

/// The fixed columns of every changelog table, in append order. Promoted columns
/// follow `data`.
pub const LEADING_COLUMNS: &[(&str, &str)] = &[
    ("tenant", "VARCHAR NOT NULL"),
    ("collection", "VARCHAR NOT NULL"),
    ("doc_id", "VARCHAR NOT NULL"),
    ("doc_path", "VARCHAR NOT NULL"),
    ("op", "VARCHAR NOT NULL"),
    ("is_deleted", "BOOLEAN NOT NULL"),
    ("version", "TIMESTAMP NOT NULL"),
    // No primary key: DuckDB's index costs several milliseconds per commit on this
    // path. Redelivery is made harmless by the latest view (a repeated event is an
    // identical row) and by the warehouse's memory of recent event ids.
    ("event_id", "VARCHAR NOT NULL"),
    ("content_hash", "VARCHAR"),
    // VARCHAR, not JSON: appending into a JSON column validates every document on
    // the sync path (41 instead of 55 µs per row in the group commit under load);
    // the views cast it back to JSON for readers, only when `data` is selected.
    ("data", "VARCHAR"),
];

pub const TRAILING_COLUMNS: &[(&str, &str)] =
    &[("ingested_at", "TIMESTAMP NOT NULL"), ("run_id", "VARCHAR NOT NULL"), ("code_version", "VARCHAR NOT NULL")];

/// Columns added after the first release, last in every table (an existing table gets
/// them by `ALTER TABLE … ADD COLUMN`, which appends, so new and upgraded tables have
/// one column order for the appender). NULL in rows written before them.
pub const ADDED_COLUMNS: &[(&str, &str)] = &[
    // The document's own timestamps. A row's `version` is when its state was known to
    // hold (a repair's read time); `update_time` is the document's commit time.
    ("update_time", "TIMESTAMP"),
    ("create_time", "TIMESTAMP"),
    // The content hash's order as an integer ([`content_rank`]), for the winner key:
    // parsing it from the hash at every read cost the demo's report ~60 ms of ~110.
    // Derived from the row's own `content_hash` when appended; NULL in rows appended
    // before it existed, whose rank the views then parse from the hash.
    ("content_rank", "BIGINT"),
];

/// Columns only the current tables have (DuckDB's): `path_hash`, the upper 64 bits of
/// the path's MD5, so an incremental reconcile's lookups and a refresh's find their
/// rows by joining on an integer instead of hashing every row's path string
/// (`crate::incremental`). Filled by every refresh; NULL in rows written before it
/// existed, which make the next refresh a full one.
pub const CURRENT_COLUMNS: &[(&str, &str)] = &[("path_hash", "UBIGINT")];

/// Rule 4 of `converge_core::version` (the greater content hash wins) as an integer:
/// the first 15 hex digits of the hash plus one; 0 for no hash (a tombstone) or one
/// that is not hex. Content hashes are lowercase hex SHA-256, whose order is their
/// prefix's numeric order, so this is the core's order up to a 60-bit prefix collision.
pub fn content_rank(content_hash: Option<&str>) -> i64 {
    content_hash
        .and_then(|hash| hash.get(..15.min(hash.len())))
        .filter(|prefix| !prefix.is_empty())
        .and_then(|prefix| i64::from_str_radix(prefix, 16).ok())
        .map_or(0, |value| value + 1)
}

pub(crate) fn sql_type(column_type: ColumnType) -> &'static str {
    match column_type {
        ColumnType::String => "VARCHAR",
        ColumnType::Int64 => "BIGINT",
        ColumnType::Float64 => "DOUBLE",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Timestamp => "TIMESTAMP",
        ColumnType::Date => "DATE",
    }
}

/// The promoted column type a DuckDB column type is (`information_schema` spelling).
fn column_type_of(sql: &str) -> Option<ColumnType> {
    [ColumnType::String, ColumnType::Int64, ColumnType::Float64, ColumnType::Bool, ColumnType::Timestamp, ColumnType::Date]
        .into_iter()
        .find(|t| sql_type(*t) == sql)
}

/// Every column that is not a promoted one, whatever the configuration.
pub(crate) fn is_fixed_column(name: &str) -> bool {
    LEADING_COLUMNS.iter().chain(TRAILING_COLUMNS).chain(ADDED_COLUMNS).chain(CURRENT_COLUMNS).any(|(fixed, _)| *fixed == name)
}

/// `table`'s columns in the catalog, in table order (empty if there is no such table).
pub(crate) fn table_columns(connection: &duckdb::Connection, table: &str) -> Result<Vec<converge_core::schema_change::TableColumn>, converge_core::StoreError> {
    let error = |e| crate::db::db_error(&format!("read the columns of `{table}`"), e);
    let mut statement = connection
        .prepare_cached("SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = ? ORDER BY column_index")
        .map_err(error)?;
    let rows = statement.query_map([table], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))).map_err(error)?;
    rows.map(|row| {
        let (name, data_type) = row.map_err(error)?;
        Ok(converge_core::schema_change::TableColumn { name, column_type: column_type_of(&data_type), warehouse_type: data_type })
    })
    .collect()
}

/// The promoted columns `route`'s tables (changelog, current, current tombstones) lack,
/// as `(table, column)`; a promoted column removed from the configuration or retyped
/// is refused here, before any DDL (see `converge_core::schema_change`).
pub(crate) fn promoted_changes(connection: &duckdb::Connection, route: &Route) -> Result<Vec<(String, String)>, converge_core::StoreError> {
    let fixed: Vec<&str> = LEADING_COLUMNS.iter().chain(TRAILING_COLUMNS).chain(ADDED_COLUMNS).chain(CURRENT_COLUMNS).map(|(name, _)| *name).collect();
    let t = &route.table;
    let mut missing = Vec::new();
    for table in [t.clone(), converge_core::retention::current_table(t), converge_core::retention::current_tombstones_table(t)] {
        let present = table_columns(connection, &table)?;
        if present.is_empty() {
            continue; // created by setup with every column
        }
        for column in converge_core::schema_change::compare_promoted(crate::db::BACKEND, route, &table, &fixed, &present)? {
            missing.push((table.clone(), column.column));
        }
    }
    Ok(missing)
}

pub(crate) fn column_list(route: &Route) -> String {
    let promoted = route.promoted.iter().map(|c| (c.column.as_str(), sql_type(c.column_type)));
    LEADING_COLUMNS
        .iter()
        .copied()
        .chain(promoted)
        .chain(TRAILING_COLUMNS.iter().copied())
        .chain(ADDED_COLUMNS.iter().copied())
        .map(|(name, ty)| {
            format!("{name} {ty}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What picks each document's winner, greatest first: `converge_core::version`'s rule
/// (version, then source read over event, then delete over write, then content hash)
/// packed into one HUGEINT, so the winner is a hash aggregate over integers rather
/// than a sort over strings (~2x faster than a window over 300,000 rows). The high
/// 64 bits are `version * 4 + source_read * 2 + is_deleted`; the low ones are the
/// content hash's order, [`content_rank`] (stored; parsed from the hash for rows
/// appended before the column existed, as the SQL does the same computation). The warehouse contract
/// suite's property test checks this view against `converge_core::RowOrder`.
pub(crate) fn winner_key() -> String {
    format!(
        "((epoch_us(version) * 4 + (op IN ({ops}))::BIGINT * 2 + is_deleted::BIGINT)::HUGEINT << 64) \
         + coalesce(content_rank, TRY_CAST('0x' || content_hash[1:15] AS BIGINT) + 1, 0)",
        ops = converge_core::version::source_read_ops_sql()
    )
}

/// What a state scan selects: path, update time (microseconds; rows written before
/// `update_time` existed carry it in `version`), content hash, version (microseconds).
pub const STATE_COLUMNS: &str = "doc_path, epoch_us(coalesce(update_time, version)), content_hash, epoch_us(version)";

/// The latest states (path, update time and version in microseconds, content hash) of
/// one tenant's documents in `table`, in path order; parameter `$1` is the tenant. The
/// latest view's rule, with the tenant filtered before the winners are picked: the
/// view's own filter cannot reach inside its `GROUP BY`, so through the view every
/// tenant's documents would be aggregated to return one tenant's. Rows written before
/// `update_time` existed carry it in `version`.
pub fn latest_states_query(table: &str) -> String {
    format!(
        "SELECT {STATE_COLUMNS} FROM {table} WHERE tenant = $1 AND rowid IN (
            SELECT arg_max(rowid, {key}) FROM {table} WHERE tenant = $1 GROUP BY doc_path
         ) AND NOT is_deleted ORDER BY doc_path",
        key = winner_key()
    )
}

/// Statements that create the changelog table (or add the columns it lacks), the
/// latest view and the as-of macro. Idempotent.
pub fn create_statements(route: &Route) -> Vec<String> {
    let t = &route.table;
    let key = winner_key();
    // Grouped by `doc_path` alone: a path names one document across tenants (every
    // route pattern has its `{tenant}` segment), and hashing the tenant's text too cost
    // ~25% of the view's time (the demo's report on 330,000 documents not yet
    // checkpointed: 89-160 ms grouped by both, 72-85 by path).
    let winners = |filter: &str| {
        format!(
            "SELECT * REPLACE (data::JSON AS data) FROM {t} WHERE rowid IN (
                SELECT arg_max(rowid, {key}) FROM {t} {filter} GROUP BY doc_path
             ) AND NOT is_deleted"
        )
    };
    let current = converge_core::retention::current_table(t);
    let tombstones = converge_core::retention::current_tombstones_table(t);
    let mut statements = vec![
        CREATE_TABLE_STATE.to_owned(),
        format!("CREATE TABLE IF NOT EXISTS {t} ({})", column_list(route)),
        // The latest view materialized (converge_core::retention): the same columns,
        // one row per document whose winner is live, and its deletes beside it.
        format!("CREATE TABLE IF NOT EXISTS {current} ({})", column_list(route)),
        format!("CREATE TABLE IF NOT EXISTS {tombstones} ({})", column_list(route)),
    ];
    for table in [t.as_str(), current.as_str(), tombstones.as_str()] {
        statements.extend(ADDED_COLUMNS.iter().map(|(name, ty)| format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {ty}")));
        if table != t.as_str() {
            statements.extend(CURRENT_COLUMNS.iter().map(|(name, ty)| format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {ty}")));
        }
        // A promoted column added to the configuration (converge_core::schema_change):
        // nullable, appended after every other column of an existing table (the
        // appender maps by name, `crate::appender`); a no-op on a table created above.
        // Removed or retyped ones were refused before these statements run.
        statements.extend(
            route.promoted.iter().map(|c| format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {}", c.column, sql_type(c.column_type))),
        );
    }
    // As of an instant before the compaction horizon the changelog no longer has the
    // rows superseded then: the macro fails instead of answering wrongly. The check is
    // a one-row join, evaluated once and whatever the table holds.
    let guard = format!(
        "(SELECT CASE WHEN horizon > as_of THEN error('{message} (horizon ' || horizon::VARCHAR || ')') ELSE 1 END AS ok \
           FROM (SELECT max(compacted_before) AS horizon FROM {TABLE_STATE} WHERE table_name = '{t}')) AS _converge_guard",
        message = converge_core::retention::incomplete_as_of_message(t).replace('\'', "''"),
        TABLE_STATE = converge_core::retention::TABLE_STATE,
    );
    statements.extend([
        format!("CREATE OR REPLACE VIEW {t}_latest AS {}", winners("")),
        // As of an instant: the winner among the rows known to hold by then
        // (converge_core::version, "As of an instant").
        format!(
            "CREATE OR REPLACE MACRO {t}_as_of(as_of) AS TABLE SELECT _converge_states.* FROM ({}) AS _converge_states, {guard} WHERE _converge_guard.ok = 1",
            winners("WHERE version <= as_of")
        ),
    ]);
    statements
}

/// One row per changelog table: its current table's watermark (the greatest
/// `ingested_at` merged) and its compaction horizon (`compacted_before`), see
/// `converge_core::retention`. `converge_watermark_resets` lowers the watermark: an
/// append of rows stamped long before they became visible (an atomic append, the
/// journal replayed at open) records its oldest `ingested_at` there in its own commit,
/// and the next refresh reads from it.
pub const CREATE_TABLE_STATE: &str = "CREATE TABLE IF NOT EXISTS converge_table_state (
    table_name VARCHAR PRIMARY KEY,
    current_watermark TIMESTAMP,
    compacted_before TIMESTAMP,
    refreshed_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS converge_watermark_resets (table_name VARCHAR NOT NULL, lowered_to TIMESTAMP NOT NULL)";

/// What `create_statements` (and `CREATE_RUNS`) would create for `config` and is not
/// there: each missing table, view, macro or added column, named. Reads the catalog
/// only.
pub fn missing_objects(connection: &duckdb::Connection, config: &converge_core::MirrorConfig) -> Result<Vec<String>, converge_core::StoreError> {
    let error = |e| crate::db::db_error("read the catalog", e);
    let mut present = std::collections::HashSet::new();
    let mut statement = connection
        .prepare(
            "SELECT table_type || ' ' || table_name FROM information_schema.tables WHERE table_schema = 'main' \
             UNION ALL SELECT 'MACRO ' || function_name FROM duckdb_functions() WHERE function_type = 'table_macro' \
             UNION ALL SELECT 'COLUMN ' || table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = 'main'",
        )
        .map_err(error)?;
    for name in statement.query_map([], |row| row.get::<_, String>(0)).map_err(error)? {
        present.insert(name.map_err(error)?);
    }
    let mut wanted = vec![
        ("BASE TABLE converge_runs".to_owned(), "table `converge_runs`".to_owned()),
        ("BASE TABLE converge_verified_points".to_owned(), "table `converge_verified_points`".to_owned()),
        (format!("BASE TABLE {}", crate::buckets::TABLE), format!("table `{}`", crate::buckets::TABLE)),
    ];
    for table in [converge_core::retention::TABLE_STATE, "converge_watermark_resets"] {
        wanted.push((format!("BASE TABLE {table}"), format!("table `{table}`")));
    }
    for route in &config.routes {
        let t = &route.table;
        // A promoted column added to the configuration and not yet to a table: setup
        // adds it. One removed or retyped is refused.
        for (table, column) in promoted_changes(connection, route)? {
            wanted.push((format!("COLUMN {table}.{column}"), format!("column `{table}.{column}`")));
        }
        wanted.push((format!("BASE TABLE {t}"), format!("table `{t}`")));
        if present.contains(&format!("BASE TABLE {t}")) {
            // A table from before a column was added: setup adds it.
            wanted.extend(ADDED_COLUMNS.iter().map(|(column, _)| (format!("COLUMN {t}.{column}"), format!("column `{t}.{column}`"))));
        }
        for table in [converge_core::retention::current_table(t), converge_core::retention::current_tombstones_table(t)] {
            wanted.push((format!("BASE TABLE {table}"), format!("table `{table}`")));
            if present.contains(&format!("BASE TABLE {table}")) {
                wanted.extend(CURRENT_COLUMNS.iter().map(|(column, _)| (format!("COLUMN {table}.{column}"), format!("column `{table}.{column}`"))));
            }
        }

        wanted.push((format!("VIEW {t}_latest"), format!("view `{t}_latest`")));
        wanted.push((format!("MACRO {t}_as_of"), format!("table macro `{t}_as_of`")));
    }
    Ok(wanted.into_iter().filter(|(key, _)| !present.contains(key)).map(|(_, name)| name).collect())
}

/// The last journal batch the warehouse's loader committed (see
/// `crate::journal`): one row, updated in the same transaction as the batch's rows.
pub const CREATE_JOURNAL: &str = "CREATE TABLE IF NOT EXISTS converge_journal (seq BIGINT NOT NULL);
    INSERT INTO converge_journal SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM converge_journal)";

/// The runs table: one row per recorded run, append-only; readers take the newest
/// row of each batch id.
pub const CREATE_RUNS: &str = "CREATE TABLE IF NOT EXISTS converge_runs (
    batch_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP NOT NULL,
    outcome VARCHAR NOT NULL,
    report JSON NOT NULL,
    code_version VARCHAR NOT NULL,
    recorded_at TIMESTAMP NOT NULL DEFAULT current_timestamp
)";

#[cfg(test)]
mod tests {
    use super::content_rank;

    #[test]
    fn content_ranks_order_as_the_hashes_do() {
        let a = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let b = "0123456789abcdf00000000000000000000000000000000000000000000000000";
        assert!(a < b && content_rank(Some(a)) < content_rank(Some(b)));
        assert_eq!(content_rank(Some(a)), 0x0123456789abcde + 1);
        assert_eq!(content_rank(Some("fffffffffffffffffff")), 0xfffffffffffffff + 1);
        assert_eq!((content_rank(None), content_rank(Some("")), content_rank(Some("not hex"))), (0, 0, 0));
    }
}
