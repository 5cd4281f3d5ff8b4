//! The built binaries as processes: `on-write-sync` started the way Cloud Run starts
//! it (`PORT`, settings from the environment), stopped with SIGTERM; then `converge
//! sql` reading what it wrote.

use converge_e2e::binary;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use converge_core::value::fields_from_json;
use converge_core::{DocWrite, Document, DocumentChange, ErrorLog, SourceStore, Timestamp, Warehouse};
use converge_e2e::{bounded, data_dir, http_client, open_source, open_warehouse, TABLE};
use converge_events::{to_binary, EventSource};


/// A child process killed (SIGKILL) if the test ends before it exits.
struct Process {
    child: Child,
    stderr: PathBuf,
}

impl Process {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Fails the test if the process has already exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the process exited early ({status}); its stderr:\n{}", self.stderr());
        }
    }

    async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the process did not exit within {timeout:?}; its stderr:\n{}", self.stderr());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts function `name` the way Cloud Run does (`PORT`, settings from the
/// environment) on the embedded data directory `data`, and waits for `/healthz`.
async fn start_function(name: &str, data: &Path, logs: &Path) -> (Process, String) {
    let data = data.to_string_lossy();
    let (mut process, base) = spawn_function(name, &[("CONVERGE_DATA_DIR", &data)], logs);
    wait_healthy(name, &mut process, &base).await;
    (process, base)
}

/// Starts function `name` with only `PORT`, `CONVERGE_LOG` and `settings` in its
/// environment; returns it and its base URL, without waiting.
fn spawn_function(name: &str, settings: &[(&str, &str)], logs: &Path) -> (Process, String) {
    let program = binary(name);
    let port = free_port();
    let stderr = logs.join(format!("{name}.stderr"));
    let child = Command::new(&program)
        .env_clear()
        .env("PORT", port.to_string())
        .env("CONVERGE_LOG", "info")
        .envs(settings.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    (Process { child, stderr }, format!("http://127.0.0.1:{port}"))
}

/// Waits until the function at `base` answers `/healthz` with 200.
async fn wait_healthy(name: &str, process: &mut Process, base: &str) {
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        process.assert_running();
        match client.get(format!("{base}/healthz")).timeout(Duration::from_secs(2)).send().await {
            Ok(response) if response.status().as_u16() == 200 => return,
            _ => {}
        }
        assert!(Instant::now() < deadline, "{name}: /healthz did not answer 200 within 30s; stderr:\n{}", process.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM and expects a clean exit.
async fn stop(name: &str, mut process: Process) {
    process.assert_running();
    let pid = process.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(kill.success(), "kill -TERM {pid} failed");
    let status = process.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{name} exited with {status} after SIGTERM; stderr:\n{}", process.stderr());
}

/// Every function, as deployed.
const FUNCTIONS: [&str; 5] = ["on-write-sync", "reconciler", "rebuild", "nightly-etl", "detector-runner"];

/// In the cloud configuration no function creates tables at start (DDL needs
/// project-level BigQuery permissions no function's account has): each checks what
/// `converge setup --backend cloud` made and, until it has run, exits non-zero naming
/// what is missing and that command. After setup (run twice: it is idempotent), each
/// serves. On both emulators, with the binaries as built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_functions_exit_until_setup_has_run_and_serve_after_it() {
    if !converge_e2e::cloud_emulators_present("cloud_functions_exit_until_setup_has_run_and_serve_after_it") {
        return;
    }
    bounded(300, "cloud functions before and after setup", async {
        let bigquery = converge_bigquery::BigQueryEmulator::start().await.expect("the BigQuery emulator");
        let firestore =
            converge_firestore::FirestoreEmulator::start(converge_firestore::EmulatorOptions::default()).await.expect("the Firestore emulator");
        let logs = tempfile::tempdir().unwrap();
        let (rest, grpc, firestore_host) = (bigquery.rest_url(), bigquery.grpc_url(), firestore.host_port());
        let settings = [
            ("CONVERGE_BACKEND", "cloud"),
            ("GOOGLE_CLOUD_PROJECT", bigquery.project()),
            ("CONVERGE_BIGQUERY_DATASET", "converge_setup"),
            ("BIGQUERY_EMULATOR_HOST", rest.as_str()),
            ("CONVERGE_BIGQUERY_STORAGE_EMULATOR_HOST", grpc.as_str()),
            ("FIRESTORE_EMULATOR_HOST", firestore_host.as_str()),
            // What the functions that check callers' tokens require in the cloud.
            ("CONVERGE_AUTH_AUDIENCE", "https://converge.example"),
            ("CONVERGE_AUTH_ALLOWED_EMAILS", "operator@example.com"),
        ];

        for name in FUNCTIONS {
            let (mut process, _) = spawn_function(name, &settings, logs.path());
            let status = process.wait(Duration::from_secs(60)).await;
            let stderr = process.stderr();
            assert!(!status.success(), "{name} started before setup ({status}); stderr:\n{stderr}");
            assert!(
                stderr.contains("dataset `converge-test.converge_setup`") && stderr.contains("does not exist") && stderr.contains("converge setup --backend cloud"),
                "{name} must name the missing dataset and the command that creates it; stderr:\n{stderr}"
            );
        }

        for attempt in ["first", "second"] {
            let output = Command::new(binary("converge"))
                .args(["setup", "--backend", "cloud", "--json"])
                .env_clear()
                .env("CONVERGE_LOG", "warn")
                .envs(settings.iter().copied())
                .stdin(Stdio::null())
                .output()
                .expect("run converge setup");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{attempt} converge setup failed: {stderr}");
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
            assert_eq!((&report["backend"], &report["tables"], &report["checked"]), (&serde_json::json!("cloud"), &serde_json::json!(["records"]), &serde_json::json!(true)), "{report}");
        }

        for name in FUNCTIONS {
            let (mut process, base) = spawn_function(name, &settings, logs.path());
            wait_healthy(name, &mut process, &base).await;
            if name == "reconciler" {
                // The status page, read from Firestore and BigQuery: nothing mirrored yet.
                let client = reqwest::Client::new();
                let response = client.get(format!("{base}/status.json")).send().await.unwrap();
                assert_eq!(response.status().as_u16(), 200);
                let report: serde_json::Value = response.json().await.unwrap();
                assert_eq!((report["tenants"].as_array().map(Vec::len), &report["equal"]), (Some(0), &serde_json::json!(true)), "{report}");
                let html = client.get(format!("{base}/status")).send().await.unwrap().text().await.unwrap();
                assert!(html.contains("<svg") && html.contains("No tenant in the source or the warehouse yet"), "{html}");
            }
            stop(name, process).await;
        }
    })
    .await;
}

/// A port free at the time of asking.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn event() -> DocumentChange {
    numbered_event("from-binary", "binary-1")
}

fn numbered_event(doc: &str, event_id: &str) -> DocumentChange {
    let path = format!("orgs/acme/records/{doc}");
    let doc = Document {
        path: path.clone(),
        fields: fields_from_json(&serde_json::json!({"amount": 12.5, "account": "4100 Tuition", "date": "2024-05-01"})).unwrap(),
        create_time: Timestamp::new(1_750_000_000, 0),
        update_time: Timestamp::new(1_750_000_000, 0),
    };
    DocumentChange {
        event_id: event_id.into(),
        event_type: "google.cloud.firestore.document.v1.written".into(),
        event_time: doc.update_time,
        document: path,
        value: Some(doc),
        old_value: None,
        update_mask: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_on_write_sync_binary_serves_events_and_stops_on_sigterm() {
    bounded(60, "on-write-sync binary", async {
        let (dir, path) = data_dir();
        let (process, base) = start_function("on-write-sync", &path, dir.path()).await;
        let client = http_client();

        // A valid binary-mode event.
        let (headers, body) = to_binary(&event(), &EventSource::local());
        let response = client.post(format!("{base}/")).headers(headers.clone()).body(body.clone()).send().await.unwrap();
        let status = response.status().as_u16();
        let reply: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!((status, &reply["outcome"]), (200, &serde_json::json!("written")), "{reply}");
        // Redelivered: acknowledged, not written again.
        let again = client.post(format!("{base}/")).headers(headers).body(body).send().await.unwrap();
        assert_eq!(again.status().as_u16(), 200);

        // Garbage.
        let response = client.post(format!("{base}/")).body(b"garbage".to_vec()).send().await.unwrap();
        let status = response.status().as_u16();
        let reply: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or_default();
        // Quarantined, and acknowledged once its record is durable (Eventarc would
        // redeliver any other answer for a day).
        assert_eq!(status, 200, "HTTP {status}: {reply}");
        assert_eq!(reply["outcome"], "quarantined", "{reply}");

        // SIGTERM: a clean exit.
        stop("on-write-sync", process).await;

        // What it wrote is durable after the process is gone.
        let source = open_source(&path);
        let quarantined = source.quarantined(10).await.unwrap();
        assert_eq!(quarantined.len(), 1, "{quarantined:?}");
        assert_eq!(quarantined[0].payload, b"garbage");
        {
            let warehouse = open_warehouse(&path);
            warehouse.ensure_tables(&converge_core::MirrorConfig::default()).await.unwrap();
            assert_eq!(warehouse.changelog_rows(TABLE).await.unwrap(), 1);
            assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 1);
        }

        // `converge sql` on the same data directory, as a process.
        let converge = binary("converge");
        let output = Command::new(&converge)
            .args(["sql", "--data-dir"])
            .arg(&path)
            .arg("SELECT doc_id, amount, op FROM records_latest")
            .env_clear()
            .env("CONVERGE_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run converge sql");
        assert!(output.status.success(), "converge sql failed: {}", String::from_utf8_lossy(&output.stderr));
        let stdout = String::from_utf8(output.stdout).unwrap();
        let rows: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows, vec![serde_json::json!({"doc_id": "from-binary", "amount": 12.5, "op": "CREATE"})], "{stdout}");

        // Without a warehouse, it says how to get one.
        let empty = dir.path().join("empty");
        let output = Command::new(&converge).args(["sql", "--data-dir"]).arg(&empty).arg("SELECT 1").env_clear().output().unwrap();
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("no warehouse"), "{}", String::from_utf8_lossy(&output.stderr));
    })
    .await;
}

/// Killed without warning right after answering a burst: every event it answered is
/// in the warehouse at the next open, once (an answer means the row is in the
/// warehouse's journal; rows not yet moved into DuckDB are loaded at the next open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_the_sync_binary_answered_survives_a_sigkill() {
    bounded(120, "on-write-sync SIGKILL", async {
        let (dir, path) = data_dir();
        let (mut process, base) = start_function("on-write-sync", &path, dir.path()).await;
        let client = http_client();
        const EVENTS: usize = 3000;
        let sends = futures::StreamExt::map(futures::stream::iter(0..EVENTS), |i| {
            let (headers, body) = to_binary(&numbered_event(&format!("k{i}"), &format!("kill-{i}")), &EventSource::local());
            let request = client.post(format!("{base}/")).headers(headers).body(body);
            async move { request.send().await.map(|r| r.status().as_u16()) }
        });
        let statuses: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(sends, 64)).await;
        process.assert_running();
        process.child.kill().expect("SIGKILL");
        process.child.wait().expect("reap");
        let answered = statuses.iter().filter(|s| matches!(s, Ok(200))).count();
        assert_eq!(answered, EVENTS, "every event answered 200 before the kill: {:?}", statuses.iter().find(|s| !matches!(s, Ok(200))));
        drop(process);

        let warehouse = open_warehouse(&path);
        warehouse.ensure_tables(&converge_core::MirrorConfig::default()).await.unwrap();
        assert_eq!(warehouse.changelog_rows(TABLE).await.unwrap(), EVENTS as u64);
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), EVENTS as u64);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebuild_binary_refuses_callers_without_a_token_and_rebuilds_for_the_local_operator() {
    bounded(60, "rebuild binary", async {
        let (dir, path) = data_dir();
        let source = open_source(&path);
        let fields = fields_from_json(&serde_json::json!({"amount": 3})).unwrap();
        let writes = (0..25).map(|i| DocWrite::Set { path: format!("orgs/acme/records/r{i}"), fields: fields.clone() }).collect();
        source.apply(writes).await.unwrap();
        drop(source);
        let (process, base) = start_function("rebuild", &path, dir.path()).await;
        let client = http_client();

        let response = client.post(format!("{base}/")).body(r#"{"tenant": "acme"}"#).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);

        // The embedded setup trusts the local signer in the data directory.
        let signer = converge_auth::LocalSigner::open(converge_auth::local_signer_dir(&path)).unwrap();
        let token = signer.sign(rebuild::LOCAL_OPERATOR, rebuild::LOCAL_AUDIENCE, Duration::from_secs(300)).unwrap();
        let response = client.post(format!("{base}/")).bearer_auth(&token).body(r#"{"tenant": "acme"}"#).send().await.unwrap();
        let status = response.status().as_u16();
        let run: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!((status, run["documents"].as_u64(), run["rows_written"].as_u64()), (200, Some(25), Some(25)), "{run}");
        // A token for another audience is refused, local or not.
        let elsewhere = signer.sign(rebuild::LOCAL_OPERATOR, "https://elsewhere.example.com", Duration::from_secs(300)).unwrap();
        let response = client.post(format!("{base}/")).bearer_auth(&elsewhere).body(r#"{"tenant": "acme"}"#).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);

        stop("rebuild", process).await;
    })
    .await;
}

#[test]
fn converge_detectors_list_prints_the_shipped_pack_one_json_object_per_line() {
    let output = Command::new(binary("converge")).args(["detectors", "list", "--json"]).env_clear().output().expect("run converge");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let detectors: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(detectors.len() >= 25, "{} detectors", detectors.len());
    let mut ids = std::collections::HashSet::new();
    for d in &detectors {
        assert!(ids.insert(d["id"].as_str().unwrap().to_owned()), "duplicate id {d}");
        assert!(d["entity"].is_string() && ["info", "warning", "critical"].contains(&d["severity"].as_str().unwrap()), "{d}");
    }
    let entities: std::collections::HashSet<&str> = detectors.iter().map(|d| d["entity"].as_str().unwrap()).collect();
    for entity in ["page", "campaign", "email", "funnel_step", "device", "traffic_source"] {
        assert!(entities.contains(entity), "no {entity} detector");
    }
    // How each decides: most are tested, spend-without-conversion stays a rule.
    let decides = |id: &str| detectors.iter().find(|d| d["id"] == id).map(|d| d["decides"].as_str().unwrap().to_owned()).unwrap();
    assert_eq!(decides("page_conversion_rate_drop"), "tested");
    assert_eq!(decides("campaign_spend_without_conversions"), "rule");
    assert_eq!(decides("device_mobile_conversion_gap"), "raw_sql");
    let tested = detectors.iter().filter(|d| d["decides"] == "tested").count();
    assert!(tested >= 25, "{tested} tested detectors");
    assert!(detectors.iter().all(|d| d["test"].as_str().is_some_and(|t| !t.is_empty())));
}

fn page_record(date: &str, url: &str) -> converge_core::Fields {
    fields_from_json(&serde_json::json!({
        "date": date, "page_location": url, "sessions": 5, "screen_page_views": 7, "engaged_sessions": 3, "bounces": 1,
        "conversions": 1, "purchase_revenue": 20.5, "entrances": 2, "exits": 2, "page_load_time_ms_sum": 3000, "page_load_samples": 2
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nightly_etl_binary_loads_yesterday_for_a_scheduler_tick_and_stops_on_sigterm() {
    bounded(60, "nightly-etl binary", async {
        let (dir, path) = data_dir();
        let source = open_source(&path);
        source
            .apply(vec![
                DocWrite::Set { path: "orgs/acme/ga4_pages/a".into(), fields: page_record("2025-06-01", "https://shop.example/pricing?utm_source=x") },
                DocWrite::Set { path: "orgs/acme/ga4_pages/b".into(), fields: page_record("2025-06-01", "https://shop.example/pricing/") },
            ])
            .await
            .unwrap();
        drop(source);
        let (process, base) = start_function("nightly-etl", &path, dir.path()).await;
        let client = http_client();
        let tick = ("X-CloudScheduler-ScheduleTime", "2025-06-02T02:00:00Z");

        let response = client.post(format!("{base}/")).header(tick.0, tick.1).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);

        let signer = converge_auth::LocalSigner::open(converge_auth::local_signer_dir(&path)).unwrap();
        let token = signer.sign(converge_function::caller_auth::LOCAL_OPERATOR, nightly_etl::LOCAL_AUDIENCE, Duration::from_secs(300)).unwrap();
        let response = client.post(format!("{base}/")).bearer_auth(&token).header(tick.0, tick.1).send().await.unwrap();
        let status = response.status().as_u16();
        let run: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!((status, run["to"].as_str(), run["rows_in"].as_u64()), (200, Some("2025-06-01"), Some(2)), "{run}");
        assert_eq!(run["runs"].as_array().map(Vec::len), Some(4), "yesterday and the 3 days before: {run}");
        assert_eq!(run["runs"][3]["kind"], "etl");

        stop("nightly-etl", process).await;

        // The same data directory through the command: one object with the run record.
        let output = Command::new(binary("converge"))
            .args(["etl", "--data-dir", path.to_str().unwrap(), "--date", "2025-06-01", "--json"])
            .env_clear()
            .output()
            .expect("run converge etl");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!((printed["rows_in"].as_u64(), printed["slices"].as_u64()), (Some(2), Some(1)), "{printed}");
        assert_eq!(printed["runs"][0]["batch_id"], run["runs"][3]["batch_id"], "the same slice, the same batch");
    })
    .await;
}
