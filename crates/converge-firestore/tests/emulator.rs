//! The emulator harness itself: start, reset, trigger registration, and that
//! dropping it leaves no process behind.

use converge_core::{DocWrite, Fields, SourceScope, SourceStore, Value};
use converge_firestore::emulator::WRITTEN_EVENT_TYPE;
use converge_firestore::{EmulatorError, EmulatorOptions, FirestoreEmulator};

fn group_alive(pgid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence.
    unsafe { libc::kill(-(pgid as i32), 0) == 0 }
}

#[tokio::test]
async fn start_use_reset_register_and_stop() {
    let functions = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let options = EmulatorOptions {
        project_id: "harness".into(),
        functions_emulator: Some(functions.local_addr().unwrap().to_string()),
        ..EmulatorOptions::default()
    };
    let emulator = match FirestoreEmulator::start(options).await {
        Ok(emulator) => emulator,
        Err(e @ EmulatorError::Unavailable { .. }) => {
            loud(&format!("!!!!! SKIPPING Firestore emulator harness test: {e} !!!!!"));
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(emulator.project_id(), "harness");
    let source = emulator.source().await.unwrap();
    let doc = Fields::from([("n".to_string(), Value::Integer(1))]);
    source.apply(vec![DocWrite::Set { path: "c/a".into(), fields: doc }]).await.unwrap();
    assert_eq!(source.count(&SourceScope::collection("c").unwrap()).await.unwrap(), 1);

    emulator.register_eventarc_trigger("records-written", WRITTEN_EVENT_TYPE, "orgs/{tenant}/records/{doc}").await.unwrap();

    emulator.reset().await.unwrap();
    assert_eq!(source.count(&SourceScope::collection("c").unwrap()).await.unwrap(), 0);
    assert_eq!(source.get("c/a").await.unwrap(), None);

    let pgid = emulator.process_group();
    assert!(group_alive(pgid));
    drop(source);
    drop(emulator);
    assert!(!group_alive(pgid), "the emulator's process group outlived the harness");
}

/// One line on the real stderr: the test harness captures `eprintln!` of passing
/// tests, and a skip must be seen.
fn loud(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
