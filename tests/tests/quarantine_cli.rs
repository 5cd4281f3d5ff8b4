//! `converge quarantine list` and `converge quarantine replay` over the binary: the
//! stored record, its payload, its headers and what to do about its reason, newest
//! first; an event quarantined as unroutable, delivered by the real pipeline (outbox,
//! relay, HTTP, sync), replayed after a route is added, written once however often it
//! is replayed; a record without its whole body refused, saying why.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use converge_core::{DocWrite, ErrorLog, QuarantineReason, QuarantineRecord, SourceStore, Timestamp, Warehouse};
use converge_e2e::{
    binary, data_dir, open_source, open_warehouse, query_i64, quick_relay_config, record_fields, set, start_relay, stop_relay, wait_for_outbox, ServerOptions, SyncServer,
};

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
        replays: 0,
        last_replay: None,
    }
}

fn quarantine_list(data_dir: &Path, json: bool) -> String {
    let mut args = vec!["list"];
    if json {
        args.push("--json");
    }
    stdout(quarantine(data_dir, &args, None))
}

/// `converge quarantine ARGS --data-dir DIR`, with `CONVERGE_CONFIG` set to `config`
/// when given (nothing else from the environment).
fn quarantine(data_dir: &Path, args: &[&str], config: Option<&Path>) -> Output {
    let mut command = Command::new(binary("converge"));
    command.arg("quarantine").args(args).arg("--data-dir").arg(data_dir).env_clear();
    if let Some(config) = config {
        command.env("CONVERGE_CONFIG", config);
    }
    command.output().expect("run converge quarantine")
}

fn stdout(output: Output) -> String {
    assert!(output.status.success(), "exit {:?}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn json(output: Output) -> Vec<serde_json::Value> {
    let text = stdout(output);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    value.as_array().unwrap_or_else(|| panic!("a JSON array: {text}")).clone()
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

/// The built-in route (its promoted columns as `MirrorConfig::default` has them) and
/// the route the fix adds: `orgs/{tenant}/invoices/{doc}` into `invoices`.
const CONFIG_WITH_INVOICES: &str = r#"
[[route]]
pattern = "orgs/{tenant}/records/{doc}"
table = "records"
promote = [
  { column = "account", field = "account", type = "string" },
  { column = "fund", field = "fund", type = "string" },
  { column = "date", field = "date", type = "date" },
  { column = "label", field = "label", type = "string" },
  { column = "amount", field = "amount", type = "float64" },
]

[[route]]
pattern = "orgs/{tenant}/invoices/{doc}"
table = "invoices"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_event_replayed_after_a_route_is_added_is_written_once() {
    let (_dir, path) = data_dir();
    let config = path.join("converge.toml");
    std::fs::write(&config, CONFIG_WITH_INVOICES).unwrap();
    converge_core::MirrorConfig::from_toml(CONFIG_WITH_INVOICES).expect("the fixed configuration is valid");

    // The pipeline with the built-in configuration: a record is written, an invoice
    // (no route yet) is quarantined as unroutable.
    {
        let source = open_source(&path);
        let server = SyncServer::start_embedded(&path, &source, ServerOptions::default()).await.unwrap();
        let relay = start_relay(&source, &server.url, quick_relay_config());
        let invoice = DocWrite::Set { path: "orgs/acme/invoices/i1".into(), fields: record_fields(1, 99.5) };
        source.apply(vec![set("acme", "r1", 1, 10.0), invoice]).await.unwrap();
        wait_for_outbox(&source, Duration::from_secs(60)).await.unwrap();
        stop_relay(relay).await;
        server.stop().await;
    }
    let listed: Vec<serde_json::Value> = serde_json::from_str(&quarantine_list(&path, true)).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0]["reason"].as_str(), listed[0]["open"].as_bool(), listed[0]["replays"].as_u64()), (Some("unroutable"), Some(true), Some(0)));
    let id = listed[0]["id"].as_str().unwrap().to_owned();

    // Replayed before the fix: refused again, into the same record, still open.
    let before = json(quarantine(&path, &["replay", "--all", "--json"], None));
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!((before[0]["id"].as_str(), before[0]["outcome"].as_str(), before[0]["open"].as_bool()), (Some(id.as_str()), Some("quarantined"), Some(true)), "{before:?}");
    let detail = before[0]["detail"].as_str().unwrap();
    assert!(detail.contains("refused again as unroutable") && detail.contains("this record") && detail.contains("add a route"), "{detail}");

    // After the fix (the route added): written; the record is no longer open.
    let after = json(quarantine(&path, &["replay", "--all", "--json"], Some(&config)));
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!((after[0]["outcome"].as_str(), after[0]["open"].as_bool(), after[0]["replays"].as_u64()), (Some("written"), Some(false), Some(2)), "{after:?}");
    assert_eq!(quarantine_list(&path, true).trim(), "[]", "a written replay is no longer listed as open");
    let all = json(quarantine(&path, &["list", "--all", "--json"], None));
    assert_eq!(all.len(), 1);
    assert_eq!((all[0]["open"].as_bool(), all[0]["replays"].as_u64(), all[0]["last_replay"]["outcome"].as_str()), (Some(false), Some(2), Some("written")), "{all:?}");
    let text = stdout(quarantine(&path, &["list", "--all"], None));
    assert!(text.contains("replayed 2 time(s)") && text.contains("written (settled)"), "{text}");

    // Replayed again by id, and --all with nothing open: no second row.
    let again = json(quarantine(&path, &["replay", "--id", &id, "--json"], Some(&config)));
    assert_eq!((again[0]["outcome"].as_str(), again[0]["replays"].as_u64()), (Some("written"), Some(3)), "{again:?}");
    let nothing = stdout(quarantine(&path, &["replay", "--all"], Some(&config)));
    assert_eq!(nothing.trim(), "No quarantined event to replay.");

    let warehouse = open_warehouse(&path);
    warehouse.ensure_tables(&converge_core::MirrorConfig::from_toml(CONFIG_WITH_INVOICES).unwrap()).await.unwrap();
    assert_eq!(warehouse.latest_count("invoices", "acme").await.unwrap(), 1, "the invoice is mirrored");
    assert_eq!(query_i64(&warehouse, "SELECT count(*) AS n FROM invoices").await, 1, "replayed three times, written once");
    assert_eq!(query_i64(&warehouse, "SELECT count(*) AS n FROM invoices WHERE doc_path = 'orgs/acme/invoices/i1' AND op = 'CREATE'").await, 1);
    assert_eq!(warehouse.latest_count("records", "acme").await.unwrap(), 1, "the record written by the pipeline is untouched");
    let source = open_source(&path);
    let record = source.quarantine_record(&id).await.unwrap().unwrap();
    assert_eq!((record.replays, record.last_replay.map(|r| r.outcome)), (3, Some(converge_core::ReplayOutcome::Written)));
    assert!(source.open_sync_errors(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_record_without_its_whole_body_is_not_replayed_and_says_why() {
    let (_dir, path) = data_dir();
    {
        let source = open_source(&path);
        let limit = converge_core::error_log::QUARANTINE_PAYLOAD_LIMIT;
        let truncated = QuarantineRecord { payload: vec![0x0a; limit], payload_bytes: 300 * 1024, ..record("q-truncated", QuarantineReason::Malformed, 1_700_000_000) };
        source.quarantine(truncated).await.unwrap();
        source.quarantine(record("q-unroutable", QuarantineReason::Unroutable, 1_700_000_100)).await.unwrap();
    }

    // --reason narrows --all: only the malformed one is tried.
    let replayed = json(quarantine(&path, &["replay", "--all", "--reason", "malformed", "--json"], None));
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!((replayed[0]["id"].as_str(), replayed[0]["outcome"].as_str(), replayed[0]["open"].as_bool()), (Some("q-truncated"), Some("not_replayable"), Some(true)));
    let detail = replayed[0]["detail"].as_str().unwrap();
    assert!(detail.contains("not replayable") && detail.contains("307200 bytes") && detail.contains("first 262144") && detail.contains("converge reconcile"), "{detail}");
    let listed = json(quarantine(&path, &["list", "--json"], None));
    let truncated = listed.iter().find(|r| r["id"] == "q-truncated").expect("still listed as open");
    assert_eq!((truncated["open"].as_bool(), truncated["last_replay"]["outcome"].as_str()), (Some(true), Some("not_replayable")));

    // Mistakes are refused, saying what was expected.
    let unknown = quarantine(&path, &["replay", "--id", "q-nope"], None);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("no quarantine record \"q-nope\"") && stderr.contains("converge quarantine list --all"), "{stderr}");
    let neither = quarantine(&path, &["replay"], None);
    assert!(!neither.status.success() && String::from_utf8_lossy(&neither.stderr).contains("--id"), "{}", String::from_utf8_lossy(&neither.stderr));
    let bad_reason = quarantine(&path, &["replay", "--all", "--reason", "lost"], None);
    assert!(String::from_utf8_lossy(&bad_reason.stderr).contains("expected one of malformed"), "{}", String::from_utf8_lossy(&bad_reason.stderr));
    assert_eq!(open_source(&path).quarantine_record("q-unroutable").await.unwrap().unwrap().replays, 0, "nothing else was replayed");
}
