//! The error log contract: one record per failure id, merged and counted, never
//! duplicated, even under concurrent writers; quarantine kept exactly, each replay
//! recorded on its record, and a fresh refusal reopening it.
//!
//! Timestamps here are whole microseconds: Firestore stores no finer.

use std::future::Future;
use std::sync::Arc;

use converge_core::{ErrorLog, QuarantineReason, QuarantineRecord, QuarantineReplay, ReplayOutcome, SyncErrorRecord, Timestamp};

use crate::case;

/// Runs every error log case, each on a fresh, empty log from `fresh`.
pub async fn error_log_contract<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn ErrorLog>>,
{
    let suite = "error log";

    case(suite, "sync errors merge by id and keep the last error", async {
        let log = fresh().await;
        log.record_sync_error(sync_error("t_d_create", "t", "e1", "warehouse down", 100)).await.unwrap();
        log.record_sync_error(sync_error("t_d_create", "t", "e2", "still down", 200)).await.unwrap();
        log.record_sync_error(sync_error("u_d_create", "u", "e3", "other", 150)).await.unwrap();
        let open = log.open_sync_errors(Some("t")).await.unwrap();
        assert_eq!(open.len(), 1, "merged, never duplicated: {open:?}");
        let merged = &open[0];
        assert_eq!(merged.attempts, 2);
        assert_eq!(merged.first_seen, at(100));
        assert_eq!(merged.last_seen, at(200));
        assert_eq!((merged.event_id.as_str(), merged.error.as_str()), ("e2", "still down"));
        assert_eq!((merged.tenant.as_str(), merged.doc_path.as_str(), merged.action.as_str()), ("t", "orgs/t/records/d", "create"));
        assert_eq!(log.open_sync_errors(None).await.unwrap().len(), 2);
        assert!(log.open_sync_errors(Some("nobody")).await.unwrap().is_empty());
    })
    .await;

    case(suite, "resolving closes a record; failing again reopens the same one", async {
        let log = fresh().await;
        log.record_sync_error(sync_error("t_d_create", "t", "e1", "down", 100)).await.unwrap();
        assert!(log.resolve_sync_error("t_d_create").await.unwrap());
        assert!(!log.resolve_sync_error("t_d_create").await.unwrap(), "already resolved");
        assert!(!log.resolve_sync_error("never_recorded").await.unwrap());
        assert!(log.open_sync_errors(Some("t")).await.unwrap().is_empty());
        log.record_sync_error(sync_error("t_d_create", "t", "e4", "again", 300)).await.unwrap();
        let reopened = log.open_sync_errors(Some("t")).await.unwrap();
        assert_eq!((reopened.len(), reopened[0].attempts, reopened[0].resolved), (1, 2, false));
        assert_eq!(reopened[0].first_seen, at(100), "the first sighting is kept");
    })
    .await;

    case(suite, "concurrent records of one failure count every attempt in one record", async {
        let log = fresh().await;
        let writers = 10;
        let tasks: Vec<_> = (0..writers)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.record_sync_error(sync_error("c_d_create", "c", &format!("e{i}"), "x", 400)).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer task").expect("record_sync_error");
        }
        let records = log.open_sync_errors(Some("c")).await.unwrap();
        assert_eq!((records.len(), records[0].attempts), (1, writers));
    })
    .await;

    case(suite, "quarantine merges by id, keeps records exactly and lists newest first", async {
        let log = fresh().await;
        log.quarantine(quarantine("a", 100)).await.unwrap();
        log.quarantine(quarantine("b", 200)).await.unwrap();
        let mut again = quarantine("a", 300);
        again.reason = QuarantineReason::SchemaViolation;
        log.quarantine(again.clone()).await.unwrap();
        let records = log.quarantined(10).await.unwrap();
        assert_eq!(records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(records[0], QuarantineRecord { attempts: 2, ..again });
        assert_eq!(records[1], quarantine("b", 200), "stored exactly");
        assert_eq!(log.quarantined(1).await.unwrap().len(), 1);
    })
    .await;

    case(suite, "a quarantined payload keeps arbitrary bytes and a missing event id", async {
        let log = fresh().await;
        let mut record = quarantine("h_0f3a", 500);
        record.event_id = None;
        record.event_type = None;
        record.content_type = None;
        record.reason = QuarantineReason::Malformed;
        record.payload = (0..=255u8).cycle().take(64 * 1024).collect();
        record.payload_bytes = 20 * 1024 * 1024;
        log.quarantine(record.clone()).await.unwrap();
        assert_eq!(log.quarantined(10).await.unwrap(), vec![record]);
    })
    .await;

    case(suite, "a quarantine record is read by id, exactly", async {
        let log = fresh().await;
        log.quarantine(quarantine("a", 100)).await.unwrap();
        log.quarantine(quarantine("b", 200)).await.unwrap();
        assert_eq!(log.quarantine_record("a").await.unwrap(), Some(quarantine("a", 100)));
        assert_eq!(log.quarantine_record("never_quarantined").await.unwrap(), None);
    })
    .await;

    case(suite, "each replay is recorded on its record, the last one kept and every one counted", async {
        let log = fresh().await;
        log.quarantine(quarantine("a", 100)).await.unwrap();
        let refused = replay(150, ReplayOutcome::Quarantined, "refused again as unroutable: no route matches `x/y` (record a)");
        assert!(log.record_replay("a", refused.clone()).await.unwrap());
        let once = log.quarantine_record("a").await.unwrap().unwrap();
        assert_eq!(once, QuarantineRecord { replays: 1, last_replay: Some(refused), ..quarantine("a", 100) }, "only the replay fields change");
        assert!(once.is_open(), "quarantined again: still open");

        let written = replay(160, ReplayOutcome::Written, "written to `records`");
        assert!(log.record_replay("a", written.clone()).await.unwrap());
        let twice = log.quarantine_record("a").await.unwrap().unwrap();
        assert_eq!((twice.replays, twice.last_replay.as_ref()), (2, Some(&written)));
        assert!(!twice.is_open(), "written: settled");
        assert_eq!(log.quarantined(10).await.unwrap(), vec![twice], "the list reads the replay too");
        assert!(!log.record_replay("never_quarantined", written).await.unwrap(), "no record, nothing recorded");
        assert_eq!(log.quarantine_record("never_quarantined").await.unwrap(), None, "and none created");
    })
    .await;

    case(suite, "refused again after a replay, a record is open again and keeps its count of replays", async {
        let log = fresh().await;
        log.quarantine(quarantine("a", 100)).await.unwrap();
        log.record_replay("a", replay(150, ReplayOutcome::Written, "written")).await.unwrap();
        log.quarantine(quarantine("a", 200)).await.unwrap();
        let reopened = log.quarantine_record("a").await.unwrap().unwrap();
        assert_eq!(reopened, QuarantineRecord { attempts: 2, replays: 1, last_replay: None, ..quarantine("a", 200) });
        assert!(reopened.is_open());
    })
    .await;

    case(suite, "concurrent replays of one record each count", async {
        let log = fresh().await;
        log.quarantine(quarantine("c", 100)).await.unwrap();
        let replays = 8;
        let tasks: Vec<_> = (0..replays)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.record_replay("c", replay(200 + i64::from(i), ReplayOutcome::Unrecorded, "warehouse down")).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.expect("replay task").expect("record_replay"));
        }
        let record = log.quarantine_record("c").await.unwrap().unwrap();
        assert_eq!((record.replays, record.last_replay.map(|r| r.outcome)), (replays, Some(ReplayOutcome::Unrecorded)));
    })
    .await;
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::new(seconds, 5_000)
}

fn sync_error(id: &str, tenant: &str, event_id: &str, error: &str, seen: i64) -> SyncErrorRecord {
    SyncErrorRecord {
        id: id.into(),
        tenant: tenant.into(),
        doc_id: "d".into(),
        doc_path: format!("orgs/{tenant}/records/d"),
        action: "create".into(),
        event_id: event_id.into(),
        error: error.into(),
        attempts: 1,
        first_seen: at(seen),
        last_seen: at(seen),
        resolved: false,
    }
}

fn quarantine(id: &str, received: i64) -> QuarantineRecord {
    QuarantineRecord {
        id: id.into(),
        reason: QuarantineReason::Unroutable,
        detail: "no route matches `x/y`".into(),
        event_id: Some(id.into()),
        event_type: Some("google.cloud.firestore.document.v1.written".into()),
        content_type: Some("application/protobuf".into()),
        headers_json: r#"{"ce-id":"x"}"#.into(),
        payload: vec![0, 1, 2, 255],
        payload_bytes: 4,
        received_at: at(received),
        attempts: 1,
        replays: 0,
        last_replay: None,
    }
}

fn replay(seconds: i64, outcome: ReplayOutcome, detail: &str) -> QuarantineReplay {
    QuarantineReplay { at: at(seconds), outcome, detail: detail.into() }
}
