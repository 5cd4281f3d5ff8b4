//! `converge quarantine list` over the binary: the stored record, its payload, its
//! headers and what to do about its reason, newest first.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use converge_core::{ErrorLog, QuarantineReason, QuarantineRecord, Timestamp};
use converge_e2e::{binary, data_dir, open_source};

fn record(id: &str, reason: QuarantineReason, received_second: i64) -> QuarantineRecord {
    QuarantineRecord {
        id: id.into(),
        reason,
        detail: format!("{} for the test", reason.as_str()),
        event_id: Some(format!("event-{id}")),
        event_type: Some("google.cloud.firestore.document.v1.written".into()),
        content_type: Some("application/protobuf".into()),
        headers_json: r#"{"ce-id":"event-1","content-type":"application/protobuf"}"#.into(),
        payload: vec![0xff, 0x00, 0x10, b'x'],
        payload_bytes: 4,
        received_at: Timestamp::new(received_second, 0),
        attempts: 1,
    }
}

fn quarantine_list(data_dir: &Path, json: bool) -> String {
    let mut command = Command::new(binary("converge"));
    command.args(["quarantine", "list", "--data-dir"]).arg(data_dir).env_clear();
    if json {
        command.arg("--json");
    }
    let output = command.output().expect("run converge quarantine list");
    assert!(output.status.success(), "exit {:?}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn converge_quarantine_list_shows_each_record_with_what_to_do_newest_first() {
    let (_dir, path) = data_dir();
    {
        let source = open_source(&path);
        source.quarantine(record("q-old", QuarantineReason::Malformed, 1_700_000_000)).await.unwrap();
        source.quarantine(record("q-new", QuarantineReason::Unroutable, 1_700_000_100)).await.unwrap();
    }

    let listed: serde_json::Value = serde_json::from_str(&quarantine_list(&path, true)).unwrap();
    let listed = listed.as_array().expect("a JSON array");
    let ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["q-new", "q-old"], "newest first");
    let newest = &listed[0];
    assert_eq!(newest["reason"], "unroutable");
    assert_eq!(newest["what_to_do"], QuarantineReason::Unroutable.what_to_do());
    assert_eq!(newest["headers"]["ce-id"], "event-1");
    let payload = base64::engine::general_purpose::STANDARD.decode(newest["payload_base64"].as_str().unwrap()).unwrap();
    assert_eq!(payload, [0xff, 0x00, 0x10, b'x']);

    let text = quarantine_list(&path, false);
    assert!(text.contains("unroutable") && text.contains(QuarantineReason::Malformed.what_to_do()), "{text}");
}
