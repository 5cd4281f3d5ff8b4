//! DDL for the dataset and each mirrored table. Names come only from the validated
//! mirror configuration (plain identifiers, see `converge_core::config`) and the
//! validated [`BigQueryConfig`]; no input is ever spliced in.
//!
//! Columns mirror `converge-duckdb`'s changelog table one for one, with one choice of
//! type: `data` is `STRING`, not `JSON`. BigQuery's JSON type re-encodes its input
//! (numbers beyond 2^53 become doubles unless `wide_number_mode`, key order and
//! spacing change), while `data` is Converge JSON whose text must read back exactly;
//! JSON functions (`JSON_VALUE(data, '$.label')`) accept a STRING as well. The
//! emulator also stores a JSON column as STRING, so STRING behaves the same on both.

use converge_core::config::{ColumnType, Route};

use crate::config::BigQueryConfig;

/// The fixed columns before the promoted ones, in append order, with their
/// BigQuery types and modes. `true` = REQUIRED.
pub const LEADING_COLUMNS: &[(&str, &str, bool)] = &[
    ("tenant", "STRING", true),
    ("collection", "STRING", true),
    ("doc_id", "STRING", true),
    ("doc_path", "STRING", true),
    ("op", "STRING", true),
    ("is_deleted", "BOOL", true),
    ("version", "TIMESTAMP", true),
    ("event_id", "STRING", true),
    ("content_hash", "STRING", false),
    ("data", "STRING", false),
];

/// The fixed columns after the promoted ones.
pub const TRAILING_COLUMNS: &[(&str, &str, bool)] =
    &[("ingested_at", "TIMESTAMP", true), ("run_id", "STRING", true), ("code_version", "STRING", true)];

/// Columns added after the first release, last in every table (an existing table gets
/// them by `ALTER TABLE … ADD COLUMN IF NOT EXISTS`). The document's own timestamps:
/// a row's `version` is when its state was known to hold (a repair's read time).
pub const ADDED_COLUMNS: &[(&str, &str, bool)] = &[("update_time", "TIMESTAMP", false), ("create_time", "TIMESTAMP", false)];

/// What a state scan selects after `doc_path`: update time, content hash, version
/// (microseconds). Rows written before `update_time` existed carry it in `version`.
pub const STATE_COLUMNS: &str = "UNIX_MICROS(COALESCE(update_time, version)) AS update_time, content_hash, UNIX_MICROS(version) AS version";

pub fn sql_type(column_type: ColumnType) -> &'static str {
    match column_type {
        ColumnType::String => "STRING",
        ColumnType::Int64 => "INT64",
        ColumnType::Float64 => "FLOAT64",
        ColumnType::Bool => "BOOL",
        ColumnType::Timestamp => "TIMESTAMP",
        ColumnType::Date => "DATE",
    }
}

/// Every column of `route`'s changelog table, in append order: (name, type, required).
pub fn columns(route: &Route) -> Vec<(&str, &'static str, bool)> {
    LEADING_COLUMNS
        .iter()
        .copied()
        .chain(route.promoted.iter().map(|c| (c.column.as_str(), sql_type(c.column_type), false)))
        .chain(TRAILING_COLUMNS.iter().copied())
        .chain(ADDED_COLUMNS.iter().copied())
        .collect()
}

/// `ALTER TABLE … ADD COLUMN IF NOT EXISTS` of one column: what setup skips when the
/// table has the column already.
pub fn add_column(config: &BigQueryConfig, table: &str, column: &str, ty: &str) -> String {
    format!("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {column} {ty}", qualified(config, table))
}

/// Every `ALTER TABLE … ADD COLUMN IF NOT EXISTS` setup may run for `route`, as
/// (table, column, type), in the order [`create_statements`] lists them: the
/// [`ADDED_COLUMNS`] on the changelog, then each promoted column on the changelog and
/// both current tables.
///
/// A promoted column added to the configuration (converge_core::schema_change) goes to
/// the changelog and both current tables, nullable (BigQuery adds only NULLABLE or
/// REPEATED columns to an existing table, always at the end:
/// <https://cloud.google.com/bigquery/docs/managing-table-schemas>, "Add an empty
/// column"). One column per statement (the emulator parses one ALTER command per
/// statement). Each is a table metadata update, rate-limited per table, so setup runs
/// only those whose column the table lacks (`BigQueryWarehouse::ensure_tables`), then
/// checks the table resource lists them (`BigQueryWarehouse::sync_table_schema`); all
/// of them are in the fingerprint. Removed or retyped ones are refused before.
pub fn added_columns(route: &Route) -> Vec<(String, &str, &'static str)> {
    let t = &route.table;
    let mut added: Vec<(String, &str, &'static str)> = ADDED_COLUMNS.iter().map(|(name, ty, _)| (t.clone(), *name, *ty)).collect();
    for table in [t.clone(), converge_core::retention::current_table(t), converge_core::retention::current_tombstones_table(t)] {
        added.extend(route.promoted.iter().map(|c| (table.clone(), c.column.as_str(), sql_type(c.column_type))));
    }
    added
}

/// The promoted column type a BigQuery column type is (`INFORMATION_SCHEMA.COLUMNS`
/// spelling).
pub fn column_type_of(bq_type: &str) -> Option<ColumnType> {
    [ColumnType::String, ColumnType::Int64, ColumnType::Float64, ColumnType::Bool, ColumnType::Timestamp, ColumnType::Date]
        .into_iter()
        .find(|t| sql_type(*t) == bq_type)
}

/// Every column that is not a promoted one, whatever the configuration.
pub fn fixed_columns() -> Vec<&'static str> {
    LEADING_COLUMNS.iter().chain(TRAILING_COLUMNS).chain(ADDED_COLUMNS).map(|(name, _, _)| *name).collect()
}

/// Every column of every table of the dataset, in table order: what setup and a
/// function's start compare the configured promoted columns with. The view can lag a
/// schema change by a little (<https://cloud.google.com/bigquery/docs/managing-table-schemas>:
/// "changes might not be immediately reflected in INFORMATION_SCHEMA.COLUMNS"), so
/// it is used to refuse what is there, never to decide what is missing (the setup
/// fingerprint does that).
pub fn columns_query(config: &BigQueryConfig) -> String {
    format!(
        "SELECT table_name, column_name, data_type FROM `{}.{}.INFORMATION_SCHEMA.COLUMNS` ORDER BY table_name, ordinal_position",
        config.project, config.dataset
    )
}

/// The column order of `route`'s changelog table whose columns were `present`
/// (before setup's statements ran, or as the catalog lists them): those, then the ones
/// setup's `ALTER TABLE … ADD COLUMN` appended after them, in the order it adds them.
/// Empty for a table created with every column ([`columns`] order).
pub fn changelog_order(route: &Route, present: &[String]) -> Vec<String> {
    if present.is_empty() {
        return Vec::new();
    }
    let mut order = present.to_vec();
    let added = ADDED_COLUMNS.iter().map(|(name, _, _)| *name).chain(route.promoted.iter().map(|c| c.column.as_str()));
    for name in added {
        if !order.iter().any(|c| c == name) {
            order.push(name.to_owned());
        }
    }
    order
}

/// `` `project.dataset.name` ``: a fully qualified, quoted table, view or function name.
pub fn qualified(config: &BigQueryConfig, name: &str) -> String {
    format!("`{}.{}.{}`", config.project, config.dataset, name)
}

/// Creates the dataset if missing.
pub fn create_dataset(config: &BigQueryConfig) -> String {
    let name = format!("`{}.{}`", config.project, config.dataset);
    match &config.location {
        Some(location) => format!("CREATE SCHEMA IF NOT EXISTS {name} OPTIONS (location = \"{location}\")"),
        None => format!("CREATE SCHEMA IF NOT EXISTS {name}"),
    }
}

/// The winner of each document among `source`'s rows: `converge_core::version`'s
/// rule, greatest first — version, then a row read from the source over an event row,
/// then a delete over a write, then the greater content hash (NULL lowest). The winner
/// is a pure function of the set of rows (identical copies may supply either's audit
/// columns). Tombstones win and are then hidden. The warehouse contract suite's
/// property test checks this view against `converge_core::RowOrder`. The incremental
/// reads (`incremental.rs`) rank a filtered `source` with it, so the one rule is
/// rendered once.
pub(crate) fn winners(source: &str) -> String {
    format!(
        "SELECT * EXCEPT (_converge_rank) FROM (
           SELECT *, ROW_NUMBER() OVER (
             PARTITION BY tenant, doc_path
             ORDER BY version DESC, op IN ({ops}) DESC, is_deleted DESC, content_hash DESC NULLS LAST
           ) AS _converge_rank
           FROM {source}
         ) WHERE _converge_rank = 1 AND NOT is_deleted",
        ops = converge_core::version::source_read_ops_sql()
    )
}

/// Statements that create `route`'s changelog table, `<table>_latest` view and
/// `<table>_as_of(as_of TIMESTAMP)` table function. Idempotent: the table is created
/// only if missing (an existing one keeps its columns, as in DuckDB), the view and
/// function are replaced with the same text.
pub fn create_statements(config: &BigQueryConfig, route: &Route) -> Vec<String> {
    let t = &route.table;
    let table = qualified(config, t);
    let columns = columns(route)
        .into_iter()
        .map(|(name, ty, required)| if required { format!("{name} {ty} NOT NULL") } else { format!("{name} {ty}") })
        .collect::<Vec<_>>()
        .join(", ");
    let mut statements = vec![
        // Partitioned by ingestion day so compaction and time-bounded scans prune
        // partitions; clustered by (tenant, doc_path) so one tenant's latest view reads
        // only that tenant's blocks, already grouped by document.
        format!(
            "CREATE TABLE IF NOT EXISTS {table} ({columns}) PARTITION BY DATE(ingested_at) CLUSTER BY tenant, doc_path \
             OPTIONS (description = \"Converge changelog: append-only, one row per document change; read {t}_latest\")"
        ),
    ];
    // The latest view materialized (converge_core::retention): the same columns, one
    // row per document whose winner is live, and its deletes beside it. Clustered by
    // (tenant, doc_path) so a tenant's report reads only that tenant's blocks; not
    // partitioned: BigQuery partitions by a time or integer column, and a tenant is
    // neither (clustering is what prunes by tenant).
    for name in [converge_core::retention::current_table(t), converge_core::retention::current_tombstones_table(t)] {
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {} ({columns}) CLUSTER BY tenant, doc_path \
             OPTIONS (description = \"Converge: each document's winner by the ordering rule, refreshed from {t}\")",
            qualified(config, &name)
        ));
    }
    statements.extend(added_columns(route).into_iter().map(|(table, name, ty)| add_column(config, &table, name, ty)));
    // As of an instant before the compaction horizon the changelog no longer has the
    // rows superseded then: the function fails instead of answering wrongly.
    let guard = format!(
        "(SELECT IF(horizon > as_of, ERROR(CONCAT('{message} (horizon ', CAST(horizon AS STRING), ')')), 1) AS ok \
           FROM (SELECT MAX(compacted_before) AS horizon FROM {state} WHERE table_name = '{t}'))",
        message = converge_core::retention::incomplete_as_of_message(t).replace('`', "").replace('\'', "\\'"),
        state = qualified(config, converge_core::retention::TABLE_STATE),
    );
    statements.extend([
        format!("CREATE OR REPLACE VIEW {} AS {}", qualified(config, &format!("{t}_latest")), winners(&table)),
        // As of an instant: the winner among the rows known to hold by then
        // (converge_core::version, "As of an instant").
        format!(
            "CREATE OR REPLACE TABLE FUNCTION {}(as_of TIMESTAMP) AS SELECT s.* FROM ({}) AS s CROSS JOIN {guard} AS g WHERE g.ok = 1",
            qualified(config, &format!("{t}_as_of")),
            winners(&format!("(SELECT * FROM {table} WHERE version <= as_of)"))
        ),
    ]);
    statements
}

/// One row per changelog table: its current table's watermark and its compaction
/// horizon; and the watermark resets an atomic append records before its commit (see
/// `converge_core::retention` and `crates/converge-duckdb/src/schema.rs`).
pub fn create_table_state(config: &BigQueryConfig) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {} (table_name STRING NOT NULL, current_watermark TIMESTAMP, compacted_before TIMESTAMP, refreshed_at TIMESTAMP) \
             OPTIONS (description = \"Converge: each changelog's current-table watermark and compaction horizon\")",
            qualified(config, converge_core::retention::TABLE_STATE)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (table_name STRING NOT NULL, lowered_to TIMESTAMP NOT NULL)",
            qualified(config, WATERMARK_RESETS)
        ),
    ]
}

/// Where an atomic append lowers a current table's watermark (see [`create_table_state`]).
pub const WATERMARK_RESETS: &str = "converge_watermark_resets";

/// The runs table (`converge_core::RUNS_TABLE`): one row per recorded run,
/// append-only; readers take the newest row of each batch id. `report` is JSON text.
pub fn create_runs(config: &BigQueryConfig) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (batch_id STRING NOT NULL, kind STRING NOT NULL, scope STRING NOT NULL, \
         started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP NOT NULL, outcome STRING NOT NULL, report STRING NOT NULL, \
         code_version STRING NOT NULL, recorded_at TIMESTAMP NOT NULL) \
         OPTIONS (description = \"Converge run records: reconcile, rebuild, ETL, detectors\")",
        qualified(config, converge_core::RUNS_TABLE)
    )
}

/// Where reconcile runs record each (table, tenant)'s verified point
/// (`converge_core::incremental::VerifiedPoint`).
pub const VERIFIED_POINTS: &str = "converge_verified_points";

/// The verified points table ([`VERIFIED_POINTS`]): one row per recorded point,
/// append-only; readers take the newest `read_time` per (tbl, tenant). `tbl` is the
/// mirrored table's name (`table` is a reserved word in standard SQL and DuckDB).
/// Clustered by (tbl, tenant): a run reads one table's points.
pub fn create_verified_points(config: &BigQueryConfig) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (tbl STRING NOT NULL, tenant STRING NOT NULL, read_time TIMESTAMP NOT NULL, \
         batch_id STRING NOT NULL, mode STRING NOT NULL, recorded_at TIMESTAMP NOT NULL) CLUSTER BY tbl, tenant \
         OPTIONS (description = \"Converge: each table and tenant's verified points (reconcile runs that found it equal to the source)\")",
        qualified(config, VERIFIED_POINTS)
    )
}

/// The run kind (in `converge_runs`) of a completed setup: `ensure_tables` records one
/// after its last statement, with batch id [`setup_batch_id`].
pub const SETUP_KIND: &str = "setup";

/// A digest of every statement `ensure_tables` runs for `mirror` (the runs table, the
/// table state, the verified points, then each route's table, added columns, view and table function, but not the dataset):
/// equal digests, equal layouts. A function's start compares it with the last recorded
/// setup, so a view from an older ordering rule or a route added to the configuration
/// without setup stops the function instead of running on the wrong layout.
pub fn layout_fingerprint(config: &BigQueryConfig, mirror: &converge_core::MirrorConfig) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let statements = std::iter::once(create_runs(config))
        .chain(create_table_state(config))
        .chain(std::iter::once(create_verified_points(config)))
        .chain(mirror.routes.iter().flat_map(|route| create_statements(config, route)));
    for statement in statements {
        hasher.update((statement.len() as u64).to_be_bytes());
        hasher.update(statement.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The batch id of the setup run that created the layout with `fingerprint`: a re-run
/// of the same setup replaces its record instead of adding one.
pub fn setup_batch_id(fingerprint: &str) -> String {
    format!("{SETUP_KIND}-{fingerprint}")
}

/// Every table and view of the dataset with its type (`BASE TABLE`, `VIEW`, …).
/// Querying `INFORMATION_SCHEMA.TABLES` needs `bigquery.tables.get`/`list` and
/// `bigquery.routines.get`/`list` on the dataset, which `roles/bigquery.dataViewer`
/// and `dataEditor` hold, plus `bigquery.jobs.create` for the query job
/// (<https://cloud.google.com/bigquery/docs/information-schema-tables>, "Required
/// permissions"); a missing dataset fails it with `notFound`.
pub fn catalog_query(config: &BigQueryConfig) -> String {
    format!("SELECT table_name, table_type FROM `{}.{}.INFORMATION_SCHEMA.TABLES`", config.project, config.dataset)
}

/// The as-of state of one tenant, as a query with named parameters `@tenant` and
/// `@as_of` (a TIMESTAMP), through the table function.
pub fn as_of_query(config: &BigQueryConfig, table: &str) -> String {
    format!(
        "SELECT doc_path, {STATE_COLUMNS} FROM {}(@as_of) WHERE tenant = @tenant ORDER BY doc_path",
        qualified(config, &format!("{table}_as_of"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use converge_core::MirrorConfig;

    #[test]
    fn statements_name_only_configured_identifiers() {
        let config = BigQueryConfig::new("p1", "converge").unwrap();
        let mirror = MirrorConfig::default();
        let statements = create_statements(&config, &mirror.routes[0]);
        assert!(statements[0].starts_with("CREATE TABLE IF NOT EXISTS `p1.converge.records` (tenant STRING NOT NULL"));
        assert!(statements[0].contains("amount FLOAT64, ingested_at TIMESTAMP NOT NULL"));
        assert!(statements[0].contains("PARTITION BY DATE(ingested_at) CLUSTER BY tenant, doc_path"));
        assert!(statements[1].starts_with("CREATE TABLE IF NOT EXISTS `p1.converge.records_current` (tenant STRING NOT NULL"));
        assert!(statements[2].starts_with("CREATE TABLE IF NOT EXISTS `p1.converge.records_current_tombstones`"));
        assert_eq!(statements[3], "ALTER TABLE `p1.converge.records` ADD COLUMN IF NOT EXISTS update_time TIMESTAMP");
        assert_eq!(statements[5], "ALTER TABLE `p1.converge.records` ADD COLUMN IF NOT EXISTS account STRING");
        assert_eq!(statements[19], "ALTER TABLE `p1.converge.records_current_tombstones` ADD COLUMN IF NOT EXISTS amount FLOAT64");
        assert!(statements[20].starts_with("CREATE OR REPLACE VIEW `p1.converge.records_latest`"));
        assert!(statements[21].contains("`p1.converge.records_as_of`(as_of TIMESTAMP)"));
        assert_eq!(create_dataset(&config.clone().with_location("EU").unwrap()), "CREATE SCHEMA IF NOT EXISTS `p1.converge` OPTIONS (location = \"EU\")");
    }
}
