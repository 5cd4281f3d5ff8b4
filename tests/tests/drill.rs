//! `converge drill` as a library call, at a small size: every injected loss found and
//! classified as injected, derived == source after repair, a second run finds nothing,
//! the incremental phase's drift found reading a fraction of its tenant; checked again
//! from the stores it leaves behind.

use std::path::PathBuf;

use converge_scenarios::drill::{run, DrillOptions, DrillSummary};
use converge_core::{ErrorLog, Warehouse};
use converge_e2e::{assert_converged, assert_drill_found_what_it_injected, bounded, data_dir, open_source, open_warehouse};

/// Runs the drill on a runtime of its own, dropped before returning, so the DuckDB
/// file is closed when this returns.
async fn run_drill(data_dir: PathBuf, records: u64) -> DrillSummary {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("drill runtime");
        let summary = runtime.block_on(run(DrillOptions { data_dir, records, progress: false }));
        drop(runtime);
        let _ = done.send(summary);
    });
    finished.await.expect("drill thread").expect("drill run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_finds_exactly_what_it_injected_and_converges() {
    bounded(60, "drill", async {
        let (_dir, path) = data_dir();
        let summary = run_drill(path.clone(), 3_000).await;
        assert_eq!(summary.backend, "embedded");
        assert_drill_found_what_it_injected(&summary);
        assert_eq!(summary.open_sync_errors, 0, "{summary:#?}");

        // The no-drift faults happened, mid-flight.
        let faults = &summary.no_drift_faults;
        assert!(faults.duplicates > 0 && faults.reordered > 0, "{faults:?}");
        assert_eq!((faults.transient_failures, faults.sync_kills, faults.relay_kills), (3, 1, 2), "{faults:?}");
        assert!(faults.pending_at_relay_kills.iter().all(|pending| *pending > 0), "a relay was killed with nothing left to send: {faults:?}");
        assert!(faults.answered_in_killed_batches.iter().all(|answered| *answered > 0), "{faults:?}");
        assert!(faults.redeliveries_skipped >= faults.duplicates, "{faults:?}");
        assert!(faults.delivery_retries > faults.transient_failures, "{faults:?}");

        // Checked again from the data directory: converged, no error left open.
        let source = open_source(&path);
        let warehouse = open_warehouse(&path);
        warehouse.ensure_tables(&converge_core::MirrorConfig::default()).await.unwrap();
        assert_converged(&source, &warehouse, &["acme", "globex", "initech", "umbrella", &summary.incremental.tenant]).await;
        assert!(source.open_sync_errors(None).await.unwrap().is_empty());
        // The repairing run (its override is the same batch), the second run, and the
        // incremental run, recorded as such.
        let runs = warehouse.runs("reconcile", 10).await.unwrap();
        assert_eq!(runs.len(), 3, "{runs:?}");
        let incremental: Vec<_> = runs.iter().filter(|run| run.report["mode"] == "incremental").collect();
        assert_eq!(incremental.len(), 1, "{runs:?}");
        assert_eq!((incremental[0].scope.as_str(), incremental[0].report["source_docs_read"].as_u64()), (summary.incremental.tenant.as_str(), Some(summary.incremental.source_docs_read)));
    })
    .await;
}
