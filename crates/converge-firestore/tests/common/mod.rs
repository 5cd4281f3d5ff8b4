//! One emulator per test binary, shared by its tests: each test takes a store on a
//! project of its own ([`FirestoreEmulator::fresh_source`]), so tests are isolated
//! and run in parallel. The emulator lives in a `static`, which is never dropped: its
//! watchdog kills it when the test process exits.

#![allow(dead_code)]

use converge_firestore::{EmulatorError, EmulatorOptions, FirestoreEmulator, FirestoreSource};
use tokio::sync::OnceCell;

static EMULATOR: OnceCell<Option<FirestoreEmulator>> = OnceCell::const_new();

/// The shared emulator, or `None` (after one loud line) when it is not installed.
pub async fn emulator() -> Option<&'static FirestoreEmulator> {
    EMULATOR
        .get_or_init(|| async {
            match FirestoreEmulator::start(EmulatorOptions::default()).await {
                Ok(emulator) => Some(emulator),
                Err(e @ EmulatorError::Unavailable { .. }) => {
                    loud(&format!("!!!!! SKIPPING Firestore emulator tests: {e} !!!!!"));
                    None
                }
                Err(e) => panic!("{e}"),
            }
        })
        .await
        .as_ref()
}

/// A fresh, empty store on the shared emulator.
pub async fn fresh_source() -> Option<FirestoreSource> {
    let emulator = emulator().await?;
    Some(emulator.fresh_source().await.expect("connect to the emulator"))
}

/// One line on the real stderr: the test harness captures `eprintln!` of passing
/// tests, and a skip must be seen.
fn loud(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
