//! `converge demo` and `converge sql` as library calls: the demo's claims are checked
//! against the stores it leaves behind, independently of its own summary.

use std::path::PathBuf;

use converge_scenarios::demo::{run, DemoOptions, DemoSummary};
use converge_core::Warehouse;
use converge_e2e::{assert_converged, bounded, data_dir, open_source, open_warehouse, TABLE};

/// Runs the demo on a runtime of its own, dropped before returning: every task the
/// demo started (the server's group-commit writer holds the warehouse) has ended, so
/// the DuckDB file is closed when this returns.
async fn run_demo(data_dir: PathBuf, records: u64) -> DemoSummary {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("demo runtime");
        let summary = runtime.block_on(run(DemoOptions { data_dir, records, progress: false, ops_scale: 0.05 }));
        drop(runtime);
        let _ = done.send(summary);
    });
    finished.await.expect("demo thread").expect("demo run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_converges_and_its_warehouse_answers_sql() {
    bounded(120, "demo", async {
        let (_dir, path) = data_dir();
        let summary = run_demo(path.clone(), 3_000).await;

        assert!(summary.derived_equals_source, "{summary:#?}");
        // Records, and the invoices and nested tasks of the demo's other routes.
        let others: u64 = [3_000, 5_000, 2_000, 500].into_iter().map(|n| converge_scenarios::demo::other_route_documents(n)).map(|(i, t)| i + t).sum();
        assert_eq!(summary.documents_loaded, 3_000 + 5_000 + 2_000 + 500 + others);
        assert_eq!(summary.routes.iter().map(|r| r.table.as_str()).collect::<Vec<_>>(), ["records", "invoices", "tasks"]);
        for route in &summary.routes {
            assert!(route.drift == 0 && route.source_docs == route.latest_rows && route.source_docs > 0, "{route:?}");
        }
        assert_eq!(summary.tenants.len(), 4);
        for tenant in &summary.tenants {
            assert_eq!(tenant.source_docs, tenant.latest_rows, "{tenant:?}");
            assert_eq!((tenant.missing, tenant.different, tenant.orphan), (0, 0, 0), "{tenant:?}");
            assert!(tenant.source_docs > 0, "{tenant:?}");
        }
        assert!(summary.live.deletes > 0 && summary.live.created_then_deleted > 0 && summary.live.edits > 0, "{:?}", summary.live);
        assert!(summary.events_delivered > summary.documents_loaded, "loads plus live traffic: {}", summary.events_delivered);
        assert_eq!((summary.events_rejected, summary.quarantined, summary.open_sync_errors), (0, 0, 0));
        // One changelog row per delivered event.
        assert_eq!(summary.changelog_rows, summary.events_delivered);
        assert_eq!(summary.rows_written, summary.changelog_rows);
        assert!(summary.report.rows > 0, "{:?}", summary.report);
        // The report on the current table gave the latest view's rows.
        assert!(summary.report.current_equals_latest && summary.report.current_millis > 0.0, "{:?}", summary.report);
        assert!(!summary.report.sample.is_empty());

        // The operational half: the ETL loaded the seeded raw rows, the pack found
        // exactly the planted patterns, and the JSON carries both.
        let json = serde_json::to_value(&summary).unwrap();
        let etl = &json["etl"];
        assert!(etl["rows_in"].as_u64().unwrap() > 0 && etl["rows_out"].as_u64().unwrap() > 0 && etl["millis"].is_u64(), "{etl}");
        assert_eq!(etl["rows_in"].as_u64(), summary.ops.as_ref().map(|o| o.raw_rows), "every seeded raw row read");
        let detectors = &json["detectors"];
        for field in ["run", "fired", "failed", "millis", "planted_found", "planted_total", "unexpected"] {
            assert!(detectors[field].is_u64(), "detectors.{field}: {detectors}");
        }
        assert_eq!(detectors["failed"], 0, "{detectors}");
        assert_eq!(detectors["unexpected"], 0, "{detectors}: {:#?}", summary.ops);
        assert!(detectors["planted_total"].as_u64().unwrap() >= 34, "{detectors}");
        assert_eq!(detectors["planted_found"], detectors["planted_total"], "{detectors}: {:#?}", summary.ops);
        assert_eq!(detectors["fired"], detectors["planted_total"], "{detectors}");

        // `converge sql`: one JSON object per line.
        let mut out = Vec::new();
        let rows = converge_cli::sql::run(&path, "SELECT count(*) AS n FROM records_latest", &mut out).await.unwrap();
        assert_eq!(rows, 1);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text:?}");
        let total: u64 = summary.tenants.iter().map(|t| t.latest_rows).sum();
        assert_eq!(serde_json::from_str::<serde_json::Value>(lines[0]).unwrap(), serde_json::json!({"n": total}));

        let mut out = Vec::new();
        let sql = "SELECT tenant, count(*) AS n FROM records_latest GROUP BY tenant ORDER BY tenant";
        assert_eq!(converge_cli::sql::run(&path, sql, &mut out).await.unwrap(), 4);
        let per_tenant: Vec<serde_json::Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let expected: Vec<serde_json::Value> =
            summary.tenants.iter().map(|t| serde_json::json!({"tenant": t.tenant, "n": t.latest_rows})).collect();
        assert_eq!(per_tenant, expected);

        // A bad query is an error, not an empty answer.
        assert!(converge_cli::sql::run(&path, "SELECT nope FROM records_latest", &mut Vec::new()).await.is_err());

        // The demo's verdict, checked again from its data directory.
        let source = open_source(&path);
        let warehouse = open_warehouse(&path);
        warehouse.ensure_tables(&converge_scenarios::demo::mirror_config()).await.unwrap();
        let tenants: Vec<&str> = summary.tenants.iter().map(|t| t.tenant.as_str()).collect();
        let counts = assert_converged(&source, &warehouse, &tenants).await;
        assert_eq!(counts, summary.tenants.iter().map(|t| t.source_docs).collect::<Vec<_>>());
        assert_eq!(converge_e2e::duplicate_event_ids(&warehouse).await, 0);
        let mut changelog_rows = 0;
        for route in &converge_scenarios::demo::mirror_config().routes {
            changelog_rows += warehouse.changelog_rows(&route.table).await.unwrap();
        }
        assert!(warehouse.changelog_rows(TABLE).await.unwrap() < changelog_rows, "the other routes have rows too");
        assert_eq!(changelog_rows, summary.changelog_rows);
    })
    .await;
}
