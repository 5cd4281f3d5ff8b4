//! `converge demo --backend cloud` as a library call: the embedded demo's scenario on
//! the cloud adapters, with both emulators, the Firestore emulator's own triggers
//! delivering to the sync function. Skipped, loudly, where an emulator is missing
//! (outside CI the BigQuery one may not be installed yet; the Firestore one needs the
//! Google Cloud SDK and Java, which a CI machine may lack).

use converge_scenarios::demo_cloud::{run, CloudDemoOptions};
use converge_e2e::{bounded, cloud_emulators_present};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_demo_converges_on_both_emulators() {
    if !cloud_emulators_present("the cloud demo test") {
        return;
    }
    bounded(300, "cloud demo", async {
        let summary = run(CloudDemoOptions { records: 240, progress: false }).await.expect("cloud demo run");
        assert!(summary.derived_equals_source, "{summary:#?}");
        assert_eq!(summary.tenants.len(), 4);
        for tenant in &summary.tenants {
            assert_eq!(tenant.source_docs, tenant.latest_rows, "{tenant:?}");
            assert_eq!((tenant.missing, tenant.different, tenant.orphan), (0, 0, 0), "{tenant:?}");
        }
        assert!(summary.live.deletes > 0 && summary.live.created_then_deleted > 0, "{:?}", summary.live);
        // Every write fired one delivery, and each became exactly one row.
        assert_eq!(summary.events_delivered, summary.documents_loaded + summary.live.writes());
        assert_eq!(summary.rows_written, summary.events_delivered);
        assert_eq!(summary.changelog_rows, summary.rows_written);
        assert_eq!((summary.quarantined, summary.open_sync_errors), (0, 0));
        assert!(summary.report.rows > 0, "{:?}", summary.report);
        // The report on the current table gave the latest view's rows, and BigQuery said
        // what each read.
        assert!(summary.report.current_equals_latest, "{:?}", summary.report);
        assert!(summary.report.bytes_processed.is_some() && summary.report.current_bytes_processed.is_some(), "{:?}", summary.report);
    })
    .await;
}
