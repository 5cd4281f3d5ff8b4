//! A harness for Google's official Firestore emulator (a Java program that ships
//! with the Cloud SDK), for tests and for local runs of the cloud path.
//!
//! [`FirestoreEmulator::start`] picks a free loopback port, starts the emulator in
//! its own process group, waits until it answers, and hands out
//! [`FirestoreSource`]s pointed at it. Dropping it kills the whole group (the
//! launcher script and the JVM it starts). A watchdog shell leads the group and
//! kills it too when the owning process dies without dropping it (a panic that
//! aborts, a `static`, a killed test binary): it blocks reading a pipe whose only
//! writer is this process, and the pipe closes when the process ends.
//!
//! The emulator serves any project id, each with its own empty database, so tests
//! share one emulator and isolate themselves by project ([`FirestoreEmulator::fresh_source`]).
//!
//! The binary is `$CONVERGE_FIRESTORE_EMULATOR`, else [`DEFAULT_EMULATOR_PATH`]; it
//! needs Java 17+ (`$JAVA` or `java` on `PATH`).
//!
//! # What the emulator does (checked against this crate's tests)
//!
//! Like the service: timestamp values keep microseconds (nanoseconds dropped); an
//! array directly inside an array and an empty field name are `INVALID_ARGUMENT`;
//! a query at a past `read_time` sees that snapshot; preconditions and the
//! increment transform behave; commit times are microseconds and increase.
//!
//! Security Rules: none until [`FirestoreEmulator::load_rules`] loads some for a
//! project (until then every client may do anything); then every request without the
//! `Bearer owner` token is judged by them, as the service judges the app's clients.
//!
//! Unlike the service, and so never relied on: it accepts reference values into
//! other projects, several writes to one document in one commit, and any number of
//! writes per commit; it answers an empty `Commit` without a commit time. Every
//! project id gets its own empty database; it opens a WebSocket port of its own
//! choosing, and logs "Detected non-HTTP/2 connection" for each REST call.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use converge_core::StoreError;
use firestore::gcloud_sdk::google_cloud_auth::credentials::{CacheableResource, Credentials, CredentialsProvider, EntityTag};
use firestore::gcloud_sdk::google_cloud_auth::errors::CredentialsError;
use firestore::gcloud_sdk::{GoogleAuthHeaders, HeaderMap};

use crate::{FirestoreConfig, FirestoreSource};

/// Where the Cloud SDK's Debian package installs the emulator.
pub const DEFAULT_EMULATOR_PATH: &str = "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator";
/// Environment variable naming the emulator's launcher instead.
pub const EMULATOR_ENV: &str = "CONVERGE_FIRESTORE_EMULATOR";
/// How to get the emulator, for messages.
pub const INSTALL_HINT: &str = "install it with `gcloud components install cloud-firestore-emulator`, or the Debian package \
     google-cloud-cli-firestore-emulator from Google's Cloud SDK apt repository, plus a JDK 17+ (apt-get install openjdk-17-jre-headless); \
     or point CONVERGE_FIRESTORE_EMULATOR at its cloud_firestore_emulator launcher";
/// The event type the Eventarc trigger helper registers by default.
pub const WRITTEN_EVENT_TYPE: &str = "google.cloud.firestore.document.v1.written";

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("the Firestore emulator is not available: {reason}; {hint}", hint = INSTALL_HINT)]
    Unavailable { reason: String },

    #[error("the Firestore emulator did not start on {addr} within {waited:?}: {detail}")]
    NotReady { addr: String, waited: Duration, detail: String },

    #[error("cannot start the Firestore emulator: {0}")]
    Io(#[from] std::io::Error),

    #[error("the Firestore emulator answered {method} {path} with HTTP {status}: {body}; expected 2xx")]
    Http { method: &'static str, path: String, status: u16, body: String },
}

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// The project the emulator serves by default (others work too).
    pub project_id: String,
    /// `host:port` of a functions emulator to which the emulator sends Eventarc-style
    /// CloudEvents for the triggers registered with
    /// [`FirestoreEmulator::register_eventarc_trigger`].
    pub functions_emulator: Option<String>,
    /// The launcher; `None`: `$CONVERGE_FIRESTORE_EMULATOR`, else [`DEFAULT_EMULATOR_PATH`].
    pub binary: Option<PathBuf>,
    /// How long to wait for it to answer.
    pub startup_timeout: Duration,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self { project_id: "converge-test".into(), functions_emulator: None, binary: None, startup_timeout: Duration::from_secs(60) }
    }
}

/// A running emulator. Dropping it stops it.
pub struct FirestoreEmulator {
    child: Child,
    /// Held open: the watchdog kills the group when it closes.
    _lifeline: ChildStdin,
    host: String,
    port: u16,
    project_id: String,
    log_path: PathBuf,
}

impl std::fmt::Debug for FirestoreEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirestoreEmulator").field("addr", &self.host_port()).field("project_id", &self.project_id).finish()
    }
}

/// The emulator's launcher, after checking that it and Java are there.
pub fn locate(binary: Option<&Path>) -> Result<PathBuf, EmulatorError> {
    let path = match binary {
        Some(path) => path.to_owned(),
        None => std::env::var_os(EMULATOR_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_EMULATOR_PATH)),
    };
    if !path.is_file() {
        return Err(EmulatorError::Unavailable { reason: format!("no emulator at {}", path.display()) });
    }
    let java = std::env::var_os("JAVA").unwrap_or_else(|| "java".into());
    let java_ok = Command::new(&java).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !java_ok {
        return Err(EmulatorError::Unavailable { reason: format!("`{} -version` does not run (the emulator is a Java program)", java.to_string_lossy()) });
    }
    Ok(path)
}

/// Runs the launcher under `sh` as the leader of a new process group. The group is
/// killed (the shell included) when the emulator exits, or when the shell's stdin
/// closes: its other end is held by this process, so that happens when the
/// [`FirestoreEmulator`] is dropped or this process dies, however it dies.
const WATCHDOG: &str = r#"launcher="$1"; shift
exec 3<&0
"$launcher" start "$@" </dev/null 3<&- &
emulator=$!
( read -r _ignored <&3; rm -f "$CONVERGE_EMULATOR_LOG"; kill -KILL 0 ) &
wait "$emulator"
kill -KILL 0
"#;

static STARTED: AtomicU64 = AtomicU64::new(0);

impl FirestoreEmulator {
    /// Starts an emulator on a free loopback port and waits until it answers.
    pub async fn start(options: EmulatorOptions) -> Result<Self, EmulatorError> {
        let binary = locate(options.binary.as_deref())?;
        // A port picked free can be taken before the emulator binds it: try again.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::start_once(&binary, &options).await {
                Ok(emulator) => return Ok(emulator),
                Err(e @ EmulatorError::NotReady { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("three attempts"))
    }

    async fn start_once(binary: &Path, options: &EmulatorOptions) -> Result<Self, EmulatorError> {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let host = "127.0.0.1".to_owned();
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log_path = std::env::temp_dir().join(format!("converge-firestore-emulator-{}-{n}-{port}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("converge-firestore-emulator")
            .arg(binary)
            .arg(format!("--host={host}"))
            .arg(format!("--port={port}"))
            .arg(format!("--project_id={}", options.project_id));
        if let Some(functions) = &options.functions_emulator {
            command.arg(format!("--functions_emulator={functions}"));
        }
        // Removed by the watchdog when this process ends without dropping the emulator.
        command.env("CONVERGE_EMULATOR_LOG", &log_path);
        {
            use std::os::unix::process::CommandExt as _;
            command.process_group(0);
        }
        let mut child = command.stdin(Stdio::piped()).stdout(log.try_clone()?).stderr(log).spawn()?;
        let lifeline = child.stdin.take().expect("stdin is piped");
        let mut emulator = Self { child, _lifeline: lifeline, host, port, project_id: options.project_id.clone(), log_path };
        emulator.wait_ready(options.startup_timeout).await?;
        tracing::info!(addr = %emulator.host_port(), "firestore emulator ready");
        Ok(emulator)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), EmulatorError> {
        let started = Instant::now();
        let addr = self.host_port();
        let not_ready = |detail: String| EmulatorError::NotReady { addr: addr.clone(), waited: started.elapsed(), detail };
        loop {
            if let Ok(Ok((200, body))) = tokio::time::timeout(Duration::from_secs(2), http(&self.host_port(), "GET", "/", None)).await {
                if body.trim() == "Ok" {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(not_ready(format!("it exited ({status}); its output:\n{}", self.log())));
            }
            if started.elapsed() > timeout {
                return Err(not_ready(format!("no answer; its output so far:\n{}", self.log())));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the emulator printed so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, the value `FIRESTORE_EMULATOR_HOST` would take.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The process group id (the watchdog's pid), to check that it is gone.
    pub fn process_group(&self) -> u32 {
        self.child.id()
    }

    /// A configuration for this emulator's default project.
    pub fn config(&self) -> FirestoreConfig {
        FirestoreConfig::emulator(self.project_id.clone(), self.host_port())
    }

    /// A source store (and error log) on this emulator's default project.
    pub async fn source(&self) -> Result<FirestoreSource, StoreError> {
        FirestoreSource::connect(self.config()).await
    }

    /// A source store on a project of its own, so empty and isolated from every other
    /// user of this emulator: the way parallel tests share one emulator.
    pub async fn fresh_source(&self) -> Result<FirestoreSource, StoreError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let project = format!("converge-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        FirestoreSource::connect(FirestoreConfig::emulator(project, self.host_port())).await
    }

    /// Deletes every document of the default project's `(default)` database.
    pub async fn reset(&self) -> Result<(), EmulatorError> {
        self.reset_project(&self.project_id.clone()).await
    }

    /// Deletes every document of `project_id`'s `(default)` database.
    pub async fn reset_project(&self, project_id: &str) -> Result<(), EmulatorError> {
        let path = format!("/emulator/v1/projects/{project_id}/databases/(default)/documents");
        self.call("DELETE", path, None).await
    }

    /// Registers an Eventarc trigger: the emulator then sends a CloudEvent of
    /// `event_type` to the functions emulator (see
    /// [`EmulatorOptions::functions_emulator`]) for every write to a document matching
    /// `document_pattern` (e.g. `orgs/{tenant}/records/{doc}`). `trigger_id` names it.
    pub async fn register_eventarc_trigger(&self, trigger_id: &str, event_type: &str, document_pattern: &str) -> Result<(), EmulatorError> {
        let body = serde_json::json!({
            "eventType": event_type,
            "database": "(default)",
            "namespace": "(default)",
            "document": {"value": document_pattern, "matchType": "PATH_PATTERN"},
        });
        let path = format!("/emulator/v1/projects/{}/eventarcTrigger?eventarcTriggerId={}", self.project_id, query_escape(trigger_id));
        self.call("POST", path, Some(body.to_string())).await
    }

    /// Loads Firestore Security Rules (the text of a `firestore.rules` file) for
    /// `project_id`, replacing any loaded before. A project with no rules loaded is open
    /// to every client.
    ///
    /// With rules loaded, the emulator judges by them every request that does not carry
    /// its `Bearer owner` token: a request with no `Authorization` is an unauthenticated
    /// client, one with `Bearer <ID token>` a signed-in client whose claims the rules
    /// see in `request.auth.token` (the emulator does not check the token's signature,
    /// so a test can send an unsigned one). Requests with `Bearer owner`, which this
    /// crate's stores send, are not judged: they stand for Converge's server client
    /// library, which IAM authorizes and rules never judge in production.
    ///
    /// Rules that do not compile are refused ([`EmulatorError::Http`], 400, with the
    /// compiler's message). The emulator's API takes a list of files, but given two
    /// (tried) it enforced only the first: rules from two sources are merged into one
    /// text first.
    pub async fn load_rules(&self, project_id: &str, rules: &str) -> Result<(), EmulatorError> {
        let body = serde_json::json!({"rules": {"files": [{"name": "firestore.rules", "content": rules}]}});
        self.call("PUT", format!("/emulator/v1/projects/{project_id}:securityRules"), Some(body.to_string())).await
    }

    async fn call(&self, method: &'static str, path: String, body: Option<String>) -> Result<(), EmulatorError> {
        let (status, text) = http(&self.host_port(), method, &path, body.as_deref()).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(EmulatorError::Http { method, path, status, body: text })
        }
    }
}

impl Drop for FirestoreEmulator {
    fn drop(&mut self) {
        // The watchdog leads the group: its pid is the group id.
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        // The JVM dies an instant later (and is reaped by init): wait for that
        // briefly, so that whoever looks right after sees nothing left running.
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            let deadline = Instant::now() + Duration::from_secs(5);
            // SAFETY: signal 0 only checks whether the group still has a process.
            while unsafe { libc::kill(-pgid, 0) } == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One request to the emulator's REST control API: the status and the body.
async fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(std::io::Error::other)?;
    let mut request = reqwest::Client::new().request(method, format!("http://{addr}{path}")).timeout(Duration::from_secs(10));
    if let Some(body) = body {
        request = request.header(http::header::CONTENT_TYPE, "application/json").body(body.to_owned());
    }
    let response = request.send().await.map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(std::io::Error::other)?;
    Ok((status, text))
}

/// The emulator's credentials: the `Bearer owner` token it expects, looked up from
/// nowhere.
#[derive(Debug)]
pub(crate) struct EmulatorCredentials {
    entity_tag: EntityTag,
}

impl EmulatorCredentials {
    pub(crate) fn new() -> Self {
        Self { entity_tag: EntityTag::new() }
    }
}

impl CredentialsProvider for EmulatorCredentials {
    async fn headers(&self, extensions: http::Extensions) -> Result<CacheableResource<HeaderMap>, CredentialsError> {
        if extensions.get::<EntityTag>() == Some(&self.entity_tag) {
            return Ok(CacheableResource::NotModified);
        }
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer owner"));
        Ok(CacheableResource::New { entity_tag: self.entity_tag.clone(), data: headers })
    }

    async fn universe_domain(&self) -> Option<String> {
        None
    }
}

impl From<EmulatorCredentials> for GoogleAuthHeaders {
    fn from(credentials: EmulatorCredentials) -> Self {
        GoogleAuthHeaders::from(Credentials::from(credentials))
    }
}
