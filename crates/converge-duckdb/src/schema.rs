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

fn sql_type(column_type: ColumnType) -> &'static str {
    match column_type {
        ColumnType::String => "VARCHAR",
        ColumnType::Int64 => "BIGINT",
        ColumnType::Float64 => "DOUBLE",
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Timestamp => "TIMESTAMP",
        ColumnType::Date => "DATE",
    }
}

fn column_list(route: &Route) -> String {
    let promoted = route.promoted.iter().map(|c| (c.column.as_str(), sql_type(c.column_type)));
    LEADING_COLUMNS
        .iter()
        .copied()
        .chain(promoted)
        .chain(TRAILING_COLUMNS.iter().copied())
        .map(|(name, ty)| {
            format!("{name} {ty}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What picks each document's winner, greatest first: (version, is_deleted) packed
/// into one BIGINT (see [`create_statements`]).
const WINNER_KEY: &str = "epoch_us(version) * 2 + is_deleted::INTEGER";

/// The latest states (path, version in microseconds, content hash) of one tenant's
/// documents in `table`, in path order; parameter `$1` is the tenant. The latest
/// view's rule, with the tenant filtered before the winners are picked: the view's
/// own filter cannot reach inside its `GROUP BY`, so through the view every tenant's
/// documents would be aggregated to return one tenant's.
pub fn latest_states_query(table: &str) -> String {
    format!(
        "SELECT doc_path, epoch_us(version), content_hash FROM {table} WHERE tenant = $1 AND rowid IN (
            SELECT arg_max(rowid, {WINNER_KEY}) FROM {table} WHERE tenant = $1 GROUP BY doc_path
         ) AND NOT is_deleted ORDER BY doc_path"
    )
}

/// Statements that create the changelog table, the latest view and
/// the as-of macro. Idempotent.
pub fn create_statements(route: &Route) -> Vec<String> {
    let t = &route.table;
    // The winner of each document: the greatest (version, is_deleted), so a delete
    // beats a write at the same instant (converge_core::version). Packed into one
    // BIGINT so the winner is a hash aggregate over integers, not a sort over strings:
    // ~2x faster than a window over 300,000 rows. Rows that tie on it carry the same
    // state (a redelivery, a rebuild of an unchanged document), so the view's content
    // is a pure function of the set of rows. Grouped by `doc_path` alone: a path names
    // one document across tenants (every route pattern has its `{tenant}` segment), and
    // hashing the tenant's text too cost ~25% of the view's time (the demo's report on
    // 330,000 documents not yet checkpointed: 89-160 ms grouped by both, 72-85 by path).
    let winners = |filter: &str| {
        format!(
            "SELECT * REPLACE (data::JSON AS data) FROM {t} WHERE rowid IN (
                SELECT arg_max(rowid, {WINNER_KEY}) FROM {t} {filter} GROUP BY doc_path
             ) AND NOT is_deleted"
        )
    };
    vec![
        format!("CREATE TABLE IF NOT EXISTS {t} ({})", column_list(route)),
        format!("CREATE OR REPLACE VIEW {t}_latest AS {}", winners("")),
        // State at any past instant of the source: rows committed at or before `as_of`.
        format!("CREATE OR REPLACE MACRO {t}_as_of(as_of) AS TABLE {}", winners("WHERE version <= as_of")),
    ]
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
