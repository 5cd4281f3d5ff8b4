//! `converge compact` and `converge refresh-current` over the binary, on a demo
//! workspace (every route the demo mirrors): the latest views and every as-of state at
//! or after the horizon are identical before and after, row by row; the changelog
//! shrinks by exactly the superseded rows; the reconciler then finds nothing; as-of
//! queries before the horizon fail, saying why; and `records_current` equals
//! `records_latest`. (A late event older than a delete: the warehouse contract's
//! compaction case, on both warehouses.)

use std::path::Path;
use std::process::Command;

use converge_e2e::{binary, bounded, converge_ok as converge, data_dir};


fn json(data_dir: &Path, args: &[&str]) -> serde_json::Value {
    let stdout = converge(data_dir, args);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `converge sql` rows (one JSON object per line), in the query's order.
fn sql(data_dir: &Path, query: &str) -> Vec<serde_json::Value> {
    converge(data_dir, &["sql", query]).lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
}

fn sql_fails(data_dir: &Path, query: &str) -> String {
    let output = Command::new(binary("converge")).args(["sql", query, "--data-dir"]).arg(data_dir).env("CONVERGE_LOG", "warn").output().unwrap();
    assert!(!output.status.success(), "expected {query} to fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const TABLES: [&str; 3] = ["records", "invoices", "tasks"];

/// Every column but the audit ones a full refresh or redelivery may take from either
/// identical copy, ordered, as text.
fn states(data_dir: &Path, from: &str) -> Vec<serde_json::Value> {
    sql(data_dir, &format!("SELECT doc_path, op, is_deleted, version, content_hash, data::VARCHAR AS data, update_time, create_time FROM {from} ORDER BY doc_path"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_state_from_the_horizon_on_and_shrinks_the_changelog() {
    bounded(300, "compaction on a demo workspace", async {
        let (_dir, path) = data_dir();
        let demo = json(&path, &["demo", "--records", "2000", "--json"]);
        assert_eq!(demo["derived_equals_source"], true, "{demo}");
        assert_eq!(demo["report"]["current_equals_latest"], true, "{}", demo["report"]);

        // The interface outside checks use: records_current equals records_latest.
        let differ = sql(&path, "SELECT count(*) AS n FROM (SELECT doc_path, content_hash FROM records_current EXCEPT SELECT doc_path, content_hash FROM records_latest \
                                 UNION ALL SELECT doc_path, content_hash FROM records_latest EXCEPT SELECT doc_path, content_hash FROM records_current)");
        assert_eq!(differ[0]["n"], 0);

        // Before: every table's latest view, and its state as of an instant after the
        // horizon (`--retain-days 0` puts the horizon at the run's start; the property
        // test in converge-contract compacts at horizons inside a history, on both
        // warehouses).
        let later = "2100-01-01 00:00:00";
        let newest = sql(&path, "SELECT max(version)::VARCHAR AS v FROM records")[0]["v"].as_str().unwrap().to_owned();
        let mut before = Vec::new();
        let mut expected_pruned = 0;
        for table in TABLES {
            before.push(states(&path, &format!("{table}_latest")));
            before.push(states(&path, &format!("{table}_as_of(TIMESTAMP '{later}')")));
            // Every row is before the horizon (now): each document keeps one row.
            expected_pruned += sql(&path, &format!("SELECT count(*) - count(DISTINCT doc_path) AS n FROM {table}"))[0]["n"].as_u64().unwrap();
        }
        assert!(expected_pruned > 0, "the demo's live traffic supersedes rows");

        let run = json(&path, &["compact", "--retain-days", "0", "--json"]);
        for field in ["rows_before", "rows_after", "tombstones_pruned", "millis"] {
            assert!(run[field].is_u64(), "{field} in {run}");
        }
        assert_eq!(run["tables"].as_array().unwrap().len(), TABLES.len(), "every route's table: {run}");
        let (rows_before, rows_after) = (run["rows_before"].as_u64().unwrap(), run["rows_after"].as_u64().unwrap());
        assert_eq!(run["superseded_pruned"].as_u64().unwrap(), expected_pruned, "{run}");
        // The demo's deletes are minutes old: within the late-event bound, none goes.
        assert_eq!(run["tombstones_pruned"], 0, "{run}");
        assert_eq!(rows_before - rows_after, expected_pruned);

        let mut after = Vec::new();
        for table in TABLES {
            after.push(states(&path, &format!("{table}_latest")));
            after.push(states(&path, &format!("{table}_as_of(TIMESTAMP '{later}')")));
        }
        assert!(before == after, "compaction changed a latest view or an as-of state after the horizon");
        let refused = sql_fails(&path, &format!("SELECT count(*) FROM records_as_of(TIMESTAMP '{newest}')"));
        assert!(refused.contains("incomplete") && refused.contains("horizon"), "{refused}");

        // The reconciler finds nothing; the current tables (refreshed in full by the
        // compaction run) still equal the latest views.
        let reconcile = json(&path, &["reconcile", "--dry-run", "--json"]);
        assert_eq!((reconcile["missing"].as_u64(), reconcile["different"].as_u64(), reconcile["orphan"].as_u64()), (Some(0), Some(0), Some(0)), "{reconcile}");
        for table in TABLES {
            assert_eq!(states(&path, &format!("{table}_current")), states(&path, &format!("{table}_latest")), "{table}_current after compaction");
        }
        let refresh = json(&path, &["refresh-current", "--json"]);
        assert_eq!(refresh["tables"].as_array().unwrap().len(), TABLES.len(), "{refresh}");
        assert_eq!(refresh["full"], false, "a watermark exists after the demo's refresh: {refresh}");
    })
    .await;
}
