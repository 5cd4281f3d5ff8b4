//! `converge drill --backend cloud` as a library call, at a small size: the fault
//! drill on Firestore and BigQuery, both on their emulators, the Firestore emulator's
//! triggers delivering through the Eventarc front. Every injected loss found and
//! classified as injected, derived == source after repair, a second run finds nothing,
//! no error record left open, the incremental phase's drift found reading a fraction of
//! its tenant. Skipped, loudly, where an emulator is missing.

use converge_scenarios::drill_cloud::{run, CloudDrillOptions};
use converge_e2e::{assert_drill_found_what_it_injected, bounded, cloud_emulators_present};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_drill_finds_exactly_what_it_injected_and_converges() {
    if !cloud_emulators_present("the cloud drill test") {
        return;
    }
    bounded(180, "cloud drill", async {
        let summary = run(CloudDrillOptions { records: 300, progress: false }).await.expect("cloud drill run");
        assert_eq!(summary.backend, "cloud");
        assert_drill_found_what_it_injected(&summary);
        // The transient failures' records closed as converged, the known losses' as
        // repaired.
        assert_eq!(summary.open_sync_errors, 0, "{summary:#?}");
        assert!(summary.errors_resolved >= summary.injected.known, "{summary:#?}");

        // The no-drift faults happened: no relay on this backend, so no relay kill.
        let faults = &summary.no_drift_faults;
        assert!(faults.duplicates > 0 && faults.reordered > 0, "{faults:?}");
        assert_eq!((faults.transient_failures, faults.sync_kills, faults.relay_kills), (3, 1, 0), "{faults:?}");
        // Each failed append sent its events back at least once, and so did the kill.
        assert!(faults.delivery_retries > faults.transient_failures, "{faults:?}");
    })
    .await;
}
