//! `converge backfill` over the binary, on a demo workspace: promoted columns added to
//! the data directory's `mirror.toml` are added by setup and filled in every row
//! written before them (changelog and current tables), each value equal to the one
//! the row's `data` gives; no document's state changes; a re-run fills nothing; and a
//! configuration that drops a promoted column is refused, saying what to do.

use std::path::Path;
use std::process::{Command, Output};

use converge_core::{ColumnType, MirrorConfig, PromotedColumn};
use converge_e2e::{binary, bounded, data_dir};

fn run(data_dir: &Path, args: &[&str], config: Option<&Path>) -> Output {
    let mut command = Command::new(binary("converge"));
    command.args(args).arg("--data-dir").arg(data_dir).env_remove("CONVERGE_CONFIG").env("CONVERGE_LOG", "warn");
    if let Some(config) = config {
        command.env("CONVERGE_CONFIG", config);
    }
    command.output().expect("run converge")
}

/// Runs `converge <args> --data-dir DIR`, expecting success; stdout.
fn converge(data_dir: &Path, args: &[&str]) -> String {
    let output = run(data_dir, args, None);
    assert!(output.status.success(), "converge {args:?}: exit {:?}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn json(data_dir: &Path, args: &[&str]) -> serde_json::Value {
    let stdout = converge(data_dir, args);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `converge sql` rows (one JSON object per line), in the query's order.
fn sql(data_dir: &Path, query: &str) -> Vec<serde_json::Value> {
    converge(data_dir, &["sql", query]).lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
}

fn count(data_dir: &Path, query: &str) -> u64 {
    sql(data_dir, query)[0]["n"].as_u64().unwrap_or_else(|| panic!("{query}: not a count"))
}

/// The record tables a backfill fills.
const TABLES: [&str; 3] = ["records", "records_current", "records_current_tombstones"];

/// The added columns: (column, field, type, the SQL value `data` gives, in DuckDB).
const ADDED: [(&str, &str, ColumnType, &str); 3] = [
    ("memo", "memo", ColumnType::String, "data->>'$.memo'"),
    ("seq", "seq", ColumnType::Int64, "CAST(data->>'$.seq' AS BIGINT)"),
    ("approved", "approved", ColumnType::Bool, "CAST(data->>'$.approved' AS BOOLEAN)"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_fills_added_columns_from_data_and_changes_no_state() {
    bounded(300, "backfill on a demo workspace", async {
        let (_dir, path) = data_dir();
        let demo = json(&path, &["demo", "--records", "300", "--json"]);
        assert_eq!(demo["derived_equals_source"], true, "{demo}");
        let states = |path: &Path| sql(path, "SELECT doc_path, op, is_deleted, version, content_hash FROM records_latest ORDER BY doc_path");
        let before = states(&path);

        // The operator adds three promoted columns to the data directory's configuration.
        let mirror_toml = path.join("mirror.toml");
        let original = std::fs::read_to_string(&mirror_toml).expect("the demo writes mirror.toml");
        let mut wider = MirrorConfig::from_toml(&original).expect("mirror.toml parses");
        let records = wider.routes.iter_mut().find(|r| r.table == "records").expect("the demo mirrors records");
        records.promoted.extend(ADDED.iter().map(|(column, field, column_type, _)| PromotedColumn { column: (*column).into(), field: (*field).into(), column_type: *column_type }));
        std::fs::write(&mirror_toml, wider.to_toml()).unwrap();

        let first = json(&path, &["backfill", "--table", "records", "--json"]);
        let reports = first.as_array().expect("one report per column");
        assert_eq!(reports.len(), 5 + ADDED.len(), "every promoted column of records: {first}");
        for (column, _, _, from_data) in ADDED {
            let report = reports.iter().find(|r| r["column"] == column).unwrap_or_else(|| panic!("{column} in {first}"));
            // Every row had NULL there: filled = the rows whose data gives a value.
            let expected: u64 = TABLES.iter().map(|t| count(&path, &format!("SELECT count(*) AS n FROM {t} WHERE {from_data} IS NOT NULL"))).sum();
            assert!(expected > 0, "the demo's records carry `{column}`");
            assert_eq!((report["filled"].as_u64(), report["refused"].as_u64(), report["too_recent"].as_u64()), (Some(expected), Some(0), Some(0)), "{column}: {report}");
            for table in TABLES {
                let wrong = count(&path, &format!("SELECT count(*) AS n FROM {table} WHERE data IS NOT NULL AND {column} IS DISTINCT FROM {from_data}"));
                assert_eq!(wrong, 0, "{table}.{column} equals what each row's data gives");
            }
        }
        // The columns promoted before were filled by the rows themselves: nothing to do.
        for report in reports.iter().filter(|r| !ADDED.iter().any(|(c, ..)| r["column"] == *c)) {
            assert_eq!(report["filled"], 0, "{report}");
        }
        assert_eq!(states(&path), before, "no document's state, version or hash changed");

        // A re-run finds nothing; the text form says so per column.
        let again = converge(&path, &["backfill", "--table", "records", "--column", "memo"]);
        assert!(again.starts_with("records.memo: 0 rows filled"), "{again}");
        let reconcile = json(&path, &["reconcile", "--dry-run", "--json"]);
        assert_eq!((reconcile["missing"].as_u64(), reconcile["different"].as_u64(), reconcile["orphan"].as_u64()), (Some(0), Some(0), Some(0)), "{reconcile}");

        // The original configuration lacks the columns the tables now have: refused.
        let narrow = path.join("narrow.toml");
        std::fs::write(&narrow, &original).unwrap();
        let refused = run(&path, &["backfill", "--table", "records"], Some(&narrow));
        assert!(!refused.status.success(), "a configuration without promoted columns the tables have must be refused");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("`records.memo`") && stderr.contains("no longer promoted") && stderr.contains("put it back"), "{stderr}");
        // An unknown column is named as such.
        let unknown = run(&path, &["backfill", "--table", "records", "--column", "nope"], None);
        assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("promotes no column `nope`"), "{unknown:?}");
    })
    .await;
}
