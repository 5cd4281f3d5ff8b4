//! `Warehouse::bytes_processed` adds up what BigQuery's responses say, each job once.
//!
//! The bqemulator reports `"totalBytesProcessed": "0"` and no billed bytes, so the
//! warehouse here talks REST to a proxy in front of it that rewrites each job's
//! statistics to figures of its own, different per job, and remembers what it said.
//! Every few SELECT jobs it plays a query that outlives jobs.query's wait
//! (`jobComplete: false`, no rows): the client then polls getQueryResults, which
//! carries no billed bytes, and the warehouse must read them from jobs.get; the first
//! such jobs.get is refused, and then the processed bytes stand in for the billed.
//! Result pages (getQueryResults) repeat their job's processed bytes, as BigQuery's do:
//! counting them again would show.
//!
//! Without the emulator this prints one line and passes; with `CI=true` it fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use converge_bigquery::{BigQueryConfig, BigQueryEmulator, BigQueryWarehouse};
use converge_core::{ChangeRow, Document, MirrorConfig, Op, PathRange, ReconcileMode, RefreshFrom, RowContext, Timestamp, VerifiedPoint, Warehouse, WarehouseBytes};
use futures::StreamExt;
use serde_json::Value;

/// What the proxy told the warehouse about one job.
#[derive(Debug, Clone, Copy)]
struct Job {
    processed: u64,
    /// In the jobs.query response; `None` for a job played as slow.
    billed: Option<u64>,
    /// What jobs.get says it was billed (slow jobs); `None`: jobs.get is refused.
    billed_from_get: Option<u64>,
}

impl Job {
    /// What the warehouse should count for this job as billed.
    fn counted_billed(&self) -> u64 {
        self.billed.or(self.billed_from_get).unwrap_or(self.processed)
    }
}

#[derive(Default)]
struct Told {
    jobs: HashMap<String, Job>,
    selects: u64,
    slow: u64,
    gets: u64,
}

impl Told {
    fn expected(&self) -> WarehouseBytes {
        WarehouseBytes {
            processed: self.jobs.values().map(|j| j.processed).sum(),
            billed: self.jobs.values().map(Job::counted_billed).sum(),
        }
    }
}

struct Proxy {
    upstream: String,
    client: reqwest::Client,
    told: Mutex<Told>,
}

/// Every third SELECT job is played as slow.
const SLOW_EVERY: u64 = 3;

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("request body");
    let url = format!("{}{}", proxy.upstream, parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let mut upstream = proxy.client.request(parts.method.clone(), url).body(body);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream.send().await.expect("the emulator answers the proxy");
    let status = answer.status();
    let content_type = answer.headers().get(axum::http::header::CONTENT_TYPE).cloned();
    let bytes = answer.bytes().await.expect("the emulator's answer");
    let Ok(mut json) = serde_json::from_slice::<Value>(&bytes) else {
        return respond(status, content_type, bytes.to_vec());
    };
    let job_id = json["jobReference"]["jobId"].as_str().map(str::to_owned);
    let mut told = proxy.told.lock().unwrap();
    match (json["kind"].as_str(), job_id) {
        (Some("bigquery#queryResponse"), Some(id)) => {
            let n = told.jobs.len() as u64 + 1;
            let select = json["statementType"] == "SELECT";
            told.selects += u64::from(select);
            let slow = select && told.selects % SLOW_EVERY == 0;
            let processed = 1_000 * n + 7;
            let job = if slow {
                told.slow += 1;
                // The first slow job's jobs.get is refused.
                Job { processed, billed: None, billed_from_get: (told.slow > 1).then_some(10_485_760 + 3 * n) }
            } else {
                Job { processed, billed: Some(10_485_760 + n), billed_from_get: None }
            };
            told.jobs.insert(id, job);
            let object = json.as_object_mut().expect("a JSON object");
            if slow {
                object.insert("jobComplete".into(), Value::Bool(false));
                for field in ["rows", "schema", "totalRows", "pageToken", "totalBytesProcessed"] {
                    object.remove(field);
                }
            } else {
                object.insert("totalBytesProcessed".into(), processed.to_string().into());
                object.insert("totalBytesBilled".into(), job.billed.unwrap().to_string().into());
            }
        }
        (Some("bigquery#getQueryResultsResponse"), Some(id)) => {
            let job = told.jobs.get(&id).copied().unwrap_or_else(|| panic!("getQueryResults of a job jobs.query never answered: {id}"));
            json["totalBytesProcessed"] = job.processed.to_string().into();
        }
        (Some("bigquery#job"), Some(id)) => {
            told.gets += 1;
            let job = told.jobs.get(&id).copied().unwrap_or_else(|| panic!("jobs.get of a job jobs.query never answered: {id}"));
            let Some(billed) = job.billed_from_get else {
                return respond(StatusCode::FORBIDDEN, None, br#"{"error":{"code":403,"message":"refused by the test proxy","status":"PERMISSION_DENIED"}}"#.to_vec());
            };
            json["statistics"]["totalBytesProcessed"] = job.processed.to_string().into();
            json["statistics"]["query"]["totalBytesProcessed"] = job.processed.to_string().into();
            json["statistics"]["query"]["totalBytesBilled"] = billed.to_string().into();
        }
        _ => {}
    }
    respond(status, content_type, serde_json::to_vec(&json).unwrap())
}

fn respond(status: StatusCode, content_type: Option<axum::http::HeaderValue>, body: Vec<u8>) -> Response {
    let mut response = Response::builder().status(status);
    response = response.header(axum::http::header::CONTENT_TYPE, content_type.unwrap_or_else(|| axum::http::HeaderValue::from_static("application/json")));
    response.body(Body::from(body)).unwrap()
}

fn live(id: &str, secs: i64) -> ChangeRow {
    let config = MirrorConfig::default();
    let path = format!("orgs/acme/records/{id}");
    let routed = config.route(&path).unwrap();
    let fields = converge_core::value::fields_from_json(&serde_json::json!({"account": "a", "fund": "f", "label": "l", "amount": 1.0})).unwrap();
    let document = Document { path, fields, create_time: Timestamp::new(secs, 0), update_time: Timestamp::new(secs, 0) };
    let ctx = RowContext { ingested_at: Timestamp::new(1_700_000_000, 0), run_id: "bytes".into(), code_version: "test".into() };
    ChangeRow::live(&routed, Op::Update, &document, &format!("e-{id}"), &ctx).unwrap()
}

#[tokio::test]
async fn the_byte_counters_add_up_each_job_s_statistics_once() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let proxy = Arc::new(Proxy { upstream: emulator.rest_url(), client: reqwest::Client::new(), told: Mutex::new(Told::default()) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(forward).with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut config = BigQueryConfig::emulator(emulator.project(), "converge_bytes", format!("http://{address}"), emulator.grpc_url()).unwrap();
    // Pages of two rows: a read of seven states fetches four pages of one job.
    config.page_size = 2;
    let warehouse = BigQueryWarehouse::connect(config).await.unwrap();
    assert_eq!(warehouse.bytes_processed(), WarehouseBytes::default(), "nothing counted before the first query");

    let mut last = WarehouseBytes::default();
    let mut check = |step: &str| {
        let now = warehouse.bytes_processed();
        assert!(now.processed >= last.processed && now.billed >= last.billed, "{step}: the counters went from {last:?} to {now:?}");
        assert_eq!(now, proxy.told.lock().unwrap().expected(), "{step}: the counters are the sum of what the responses said, each job once");
        last = now;
    };
    warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap();
    check("setup");
    warehouse.append((0..7).map(|i| live(&format!("d{i}"), 10 + i)).collect()).await.unwrap();
    check("an append (Storage Write API: no query job)");
    for _ in 0..3 {
        let scan = warehouse.latest_states("records", "acme").await.unwrap();
        let states: Vec<_> = scan.items.map(|s| s.unwrap()).collect().await;
        assert_eq!(states.len(), 7);
        check("a paged read");
    }
    warehouse.refresh_current("records", RefreshFrom::Full).await.unwrap();
    check("a refresh script");
    let paths: Vec<String> = (0..7).map(|i| format!("orgs/acme/records/d{i}")).collect();
    assert_eq!(warehouse.latest_states_of("records", "acme", &paths).await.unwrap().len(), 7);
    assert_eq!(warehouse.current_range_counts("records", "acme", &[PathRange::all()]).await.unwrap(), vec![7]);
    warehouse.split_range("records", "acme", &PathRange::all(), 4).await.unwrap();
    let point = VerifiedPoint { table: "records".into(), tenant: "acme".into(), read_time: Timestamp::new(1_700_000_000, 0), batch_id: "b".into(), mode: ReconcileMode::Full };
    warehouse.record_verified_points(vec![point.clone()]).await.unwrap();
    assert_eq!(warehouse.verified_points("records").await.unwrap(), vec![point]);
    for _ in 0..3 {
        assert_eq!(warehouse.latest_count("records", "acme").await.unwrap(), 7);
    }
    check("the incremental reads");

    let told = proxy.told.lock().unwrap();
    assert!(told.slow >= 3, "the test played slow jobs: {} of {} selects", told.slow, told.selects);
    assert_eq!(told.gets, told.slow, "one jobs.get per slow job (its billed bytes), none for the others");
    assert!(last.processed > 0 && last.billed > last.processed, "{last:?}");
}
