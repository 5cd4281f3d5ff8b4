//! `converge retry-errors --json` over the binary: the documents open sync errors name
//! are re-read and appended (a lost create, a lost delete), their records resolved;
//! drift no record names stays for the reconciler; a second pass has nothing to do.

use std::path::Path;
use std::process::Command;

use converge_core::{ErrorLog, SourceStore, SyncErrorRecord, Timestamp, Warehouse};
use converge_e2e::{binary, data_dir, open_source, open_warehouse, record_path, set};

fn lost(tenant: &str, doc_id: &str, action: &str) -> SyncErrorRecord {
    SyncErrorRecord {
        id: converge_core::change::error_id("records", tenant, doc_id, action),
        tenant: tenant.into(),
        doc_id: doc_id.into(),
        doc_path: record_path(tenant, doc_id),
        action: action.into(),
        event_id: format!("lost-{doc_id}"),
        error: "warehouse unavailable".into(),
        attempts: 3,
        first_seen: Timestamp::new(1_700_000_000, 0),
        last_seen: Timestamp::new(1_700_000_000, 0),
        resolved: false,
    }
}

fn retry_errors(data_dir: &Path) -> serde_json::Value {
    let output = Command::new(binary("converge"))
        .args(["retry-errors", "--json", "--data-dir"])
        .arg(data_dir)
        .env_clear()
        .output()
        .expect("run converge retry-errors");
    assert!(output.status.success(), "exit {:?}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn converge_retry_errors_appends_what_open_records_name_and_resolves_them() {
    let (_dir, path) = data_dir();
    {
        // Two documents written, neither mirrored (nothing delivered them): r1's loss
        // was recorded, r2's was not. r3 was deleted and its delete was lost (recorded).
        let source = open_source(&path);
        source.apply(vec![set("acme", "r1", 1, 10.0), set("acme", "r2", 2, 20.0)]).await.unwrap();
        source.record_sync_error(lost("acme", "r1", "create")).await.unwrap();
        source.record_sync_error(lost("acme", "r3", "delete")).await.unwrap();
    }

    let run = retry_errors(&path);
    assert_eq!(run["outcome"], "ok", "{run}");
    assert_eq!((run["open_errors"].as_u64(), run["rows_appended"].as_u64(), run["tombstones"].as_u64(), run["errors_resolved"].as_u64()), (Some(2), Some(2), Some(1), Some(2)), "{run}");

    let source = open_source(&path);
    assert!(source.open_sync_errors(None).await.unwrap().is_empty());
    let warehouse = open_warehouse(&path);
    warehouse.ensure_tables(&converge_core::MirrorConfig::default()).await.unwrap();
    assert_eq!(warehouse.latest_count("records", "acme").await.unwrap(), 1, "r1 now mirrored; r2 (no record) is the reconciler's to find");
    let runs = warehouse.runs("retry_errors", 10).await.unwrap();
    assert_eq!((runs.len(), runs[0].batch_id.as_str()), (1, run["batch_id"].as_str().unwrap()));
    drop((source, warehouse));

    let again = retry_errors(&path);
    assert_eq!((again["open_errors"].as_u64(), again["rows_appended"].as_u64()), (Some(0), Some(0)), "{again}");
}
