//! Sources for suites that need one beside a warehouse: a fresh SQLite store
//! (feature `sqlite`) and Google's Firestore emulator (feature `firestore`). Behind
//! features so a backend that runs only the core suites does not build the others.

#[cfg(feature = "sqlite")]
use std::sync::Arc;

/// A fresh SQLite source store (and error log) in a temporary directory, on `clock`.
/// The directory is kept: the store outlives this call and the test is short-lived.
#[cfg(feature = "sqlite")]
pub async fn sqlite_source(clock: Arc<converge_core::ManualClock>) -> (Arc<dyn converge_core::SourceStore>, Arc<dyn converge_core::ErrorLog>) {
    let store = fresh_sqlite(clock);
    (Arc::new(store.clone()), Arc::new(store))
}

/// A fresh SQLite store in a temporary directory that lives as long as the process.
#[cfg(feature = "sqlite")]
pub fn fresh_sqlite(clock: Arc<dyn converge_core::Clock>) -> converge_sqlite::SqliteStore {
    let dir = tempfile::tempdir().expect("a temporary directory").keep();
    converge_sqlite::SqliteStore::open(&dir.join("source.sqlite"), clock, converge_events::EventSource::local()).expect("a SQLite source")
}

/// For tests: Google's Firestore emulator, or `None` after one loud line when it (or
/// Java) is not installed. Any other failure to start is a broken setup and panics.
#[cfg(feature = "firestore")]
pub async fn firestore_for_tests() -> Option<converge_firestore::FirestoreEmulator> {
    use converge_firestore::{EmulatorError, EmulatorOptions, FirestoreEmulator};
    match FirestoreEmulator::start(EmulatorOptions::default()).await {
        Ok(emulator) => Some(emulator),
        Err(e @ EmulatorError::Unavailable { .. }) => {
            eprintln!("SKIPPED Firestore emulator tests: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}
