//! Where the Firestore backend connects and what it names its collections.

use std::time::Duration;

/// Default collection of sync error records (`sync_errors/{table}_{tenant}_{doc_id}_{action}`).
pub const DEFAULT_SYNC_ERRORS_COLLECTION: &str = "sync_errors";
/// Default collection of quarantine records.
pub const DEFAULT_QUARANTINE_COLLECTION: &str = "quarantine";
/// Documents per query page of a scan.
pub const DEFAULT_PAGE_SIZE: u32 = 1_000;
/// The longest one request (or one page of a stream) waits.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach one Firestore database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirestoreConfig {
    pub project_id: String,
    /// `(default)` unless the project has named databases.
    pub database_id: String,
    /// `host:port` of an emulator. When set, this client talks plain HTTP/2 to it
    /// and sends the emulator's `Bearer owner` token, looking up no credentials. It is
    /// per client, so tests can run several emulators in one process without
    /// touching the process environment. When `None`, the `firestore` crate decides:
    /// `FIRESTORE_EMULATOR_HOST` if set, else the real service with Application
    /// Default Credentials.
    pub emulator_host: Option<String>,
    pub sync_errors_collection: String,
    pub quarantine_collection: String,
    /// Documents per page of a scan: the most a scan holds in memory at once.
    pub page_size: u32,
    pub request_timeout: Duration,
}

impl FirestoreConfig {
    /// The `(default)` database of `project_id`, with default collection names.
    pub fn new(project_id: impl Into<String>) -> Self {
        Self {
            project_id: project_id.into(),
            database_id: firestore::FIREBASE_DEFAULT_DATABASE_ID.to_owned(),
            emulator_host: None,
            sync_errors_collection: DEFAULT_SYNC_ERRORS_COLLECTION.to_owned(),
            quarantine_collection: DEFAULT_QUARANTINE_COLLECTION.to_owned(),
            page_size: DEFAULT_PAGE_SIZE,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// An emulator at `host:port` serving `project_id`.
    pub fn emulator(project_id: impl Into<String>, host_port: impl Into<String>) -> Self {
        Self { emulator_host: Some(host_port.into()), ..Self::new(project_id) }
    }

    pub fn with_database_id(mut self, database_id: impl Into<String>) -> Self {
        self.database_id = database_id.into();
        self
    }

    pub fn with_collections(mut self, sync_errors: impl Into<String>, quarantine: impl Into<String>) -> Self {
        self.sync_errors_collection = sync_errors.into();
        self.quarantine_collection = quarantine.into();
        self
    }

    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}
