//! `converge detect --json` over the binary, on a data directory holding the planted
//! 90 days of `daily_entity_metrics` (the test kit's dataset, loaded the way the
//! nightly ETL loads it): the printed run record, the stored one, and a second pass
//! that opens nothing new.

use converge_e2e::binary;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use converge_core::{MetricsWarehouse, SliceLoad, SliceRow, Timestamp, Warehouse};
use futures::StreamExt;

use converge_contract::kit::planted;


/// Loads the planted dataset into the data directory's warehouse, one slice per
/// (tenant, date), and closes it (DuckDB: one writing process per file).
async fn load_planted(data_dir: &Path) {
    let warehouse = converge_e2e::open_warehouse(data_dir);
    warehouse.ensure_metrics_tables().await.unwrap();
    let mut slices: BTreeMap<(String, chrono::NaiveDate), Vec<converge_core::MetricRow>> = BTreeMap::new();
    for row in planted::dataset() {
        slices.entry((row.tenant.clone(), row.date)).or_default().push(row);
    }
    for ((tenant, date), rows) in slices {
        let load = SliceLoad {
            batch_id: format!("planted-{tenant}-{date}"),
            tenant,
            date,
            rows_in: rows.len() as u64,
            rows_out: rows.len() as u64,
            loaded_at: Timestamp::from_micros(1_743_465_600_000_000),
        };
        warehouse.replace_slice(load, futures::stream::iter(rows.into_iter().map(|r| Ok(SliceRow::Metric(r)))).boxed()).await.unwrap();
    }
}

fn detect(data_dir: &Path) -> serde_json::Value {
    let output = Command::new(binary("converge"))
        .args(["detect", "--json", "--data-dir"])
        .arg(data_dir)
        .env_clear()
        .output()
        .expect("run converge detect");
    assert!(output.status.success(), "exit {:?}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn converge_detect_json_prints_the_run_record_and_a_second_pass_opens_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    load_planted(dir.path()).await;
    let expected: usize = planted::expected_acme_findings().iter().map(|(_, ids)| ids.len()).sum();
    let as_of = planted::as_of().to_string();
    let batch = converge_core::batch_id("detectors", "*", &as_of);

    let first = detect(dir.path());
    assert_eq!(first["as_of"], as_of.as_str(), "the latest loaded date by default: {first}");
    assert_eq!(first["batch_id"], batch.as_str());
    assert_eq!(first["outcome"], "ok", "{first}");
    assert_eq!((first["run"].as_u64(), first["failed"].as_u64()), (Some(34), Some(0)));
    assert_eq!(first["fired"].as_u64(), Some(expected as u64));
    assert_eq!(first["opportunities"], serde_json::json!({"opened": expected, "updated": 0, "resolved": 0}));
    assert!(first["failures"].as_array().unwrap().is_empty());
    assert_eq!(first["detectors"].as_array().unwrap().len(), 34);
    assert!(first["code_version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(first["scope"], "*", "every tenant");
    assert!(first.get("findings").is_none(), "the record carries counts, not the findings");
    // Per detector, in pack order: what each found.
    let per_detector: BTreeMap<String, u64> =
        first["detectors"].as_array().unwrap().iter().map(|d| (d["id"].as_str().unwrap().to_owned(), d["findings"].as_u64().unwrap())).collect();
    let planted: BTreeMap<String, u64> = planted::expected_acme_findings().into_iter().map(|(id, ids)| (id.to_owned(), ids.len() as u64)).collect();
    assert_eq!(per_detector.iter().filter(|(_, n)| **n > 0).map(|(id, n)| (id.clone(), *n)).collect::<BTreeMap<_, _>>(), planted);

    let second = detect(dir.path());
    assert_eq!(second["batch_id"], batch.as_str());
    assert_eq!(second["opportunities"], serde_json::json!({"opened": 0, "updated": expected, "resolved": 0}));
    assert_eq!(second["detectors"].as_array().unwrap().iter().map(|d| &d["findings"]).collect::<Vec<_>>(), first["detectors"].as_array().unwrap().iter().map(|d| &d["findings"]).collect::<Vec<_>>());

    // The record stored in converge_runs is the printed one (one per batch).
    let warehouse = converge_e2e::open_warehouse(dir.path());
    warehouse.ensure_tables(&converge_core::MirrorConfig::default()).await.unwrap();
    let runs = warehouse.runs("detectors", 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].batch_id.as_str(), runs[0].outcome.as_str()), (batch.as_str(), "ok"));
    assert_eq!(runs[0].report["opportunities"], second["opportunities"]);
}
