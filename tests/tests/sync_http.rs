//! The on-write sync function over real HTTP on loopback (reqwest, and a raw socket
//! for the 20 MB uploads the server refuses mid-body), on the real embedded stores.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use converge_core::hash::content_hash;
use converge_core::{drift, DocState, Document, DocumentChange, ErrorLog, QuarantineReason, Timestamp, Warehouse};
use converge_duckdb::DuckWarehouse;
use converge_e2e::{bounded, data_dir, http_client, open_source, open_warehouse, record_fields, record_path, ServerOptions, SyncServer, TABLE};
use converge_events::{to_binary, EventSource};
use converge_sqlite::SqliteStore;
use http::{HeaderMap, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
const TWENTY_MB: usize = 20 * 1024 * 1024;

struct Fixture {
    server: SyncServer,
    warehouse: DuckWarehouse,
    errors: SqliteStore,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let (dir, path) = data_dir();
    let errors = open_source(&path);
    let warehouse = open_warehouse(&path);
    let server = SyncServer::start(Arc::new(warehouse.clone()), Arc::new(errors.clone()), ServerOptions::default()).await.unwrap();
    Fixture { server, warehouse, errors, client: http_client(), _dir: dir }
}

fn document(tenant: &str, doc_id: &str, n: u64, update_micros: i64) -> Document {
    Document {
        path: record_path(tenant, doc_id),
        fields: record_fields(n, n as f64 + 0.25),
        create_time: Timestamp::from_micros(update_micros),
        update_time: Timestamp::from_micros(update_micros),
    }
}

fn change(event_id: &str, value: Option<Document>, old_value: Option<Document>) -> DocumentChange {
    let document = value.as_ref().or(old_value.as_ref()).expect("a document").path.clone();
    let time = value.as_ref().or(old_value.as_ref()).unwrap().update_time;
    DocumentChange {
        event_id: event_id.into(),
        event_type: "google.cloud.firestore.document.v1.written".into(),
        event_time: time,
        document,
        value,
        old_value,
        update_mask: vec![],
    }
}

/// POSTs raw headers and body; returns the status and the JSON answer.
async fn post(client: &reqwest::Client, url: &str, headers: HeaderMap, body: Vec<u8>) -> (u16, serde_json::Value) {
    let response = client.post(url).headers(headers).body(body).send().await.unwrap_or_else(|e| panic!("POST {url}: {e:?}"));
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("response body");
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

async fn send(client: &reqwest::Client, url: &str, change: &DocumentChange) -> (u16, serde_json::Value) {
    let (headers, body) = to_binary(change, &EventSource::local());
    post(client, url, headers, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_burst_is_written_once_each_with_group_commit() {
    bounded(90, "burst", async {
        let f = fixture().await;
        const EVENTS: usize = 2_000;
        const TASKS: usize = 64;
        let base = 1_750_000_000_000_000i64;
        let docs: Vec<Document> = (0..EVENTS)
            .map(|i| document(TENANTS[i % TENANTS.len()], &format!("d{i:05}"), i as u64, base + i as i64 * 1_000))
            .collect();
        let docs = Arc::new(docs);
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let (client, url, docs) = (f.client.clone(), f.server.url.clone(), docs.clone());
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in (task..EVENTS).step_by(TASKS) {
                    let (status, reply) = send(&client, &url, &change(&format!("burst-{i}"), Some(docs[i].clone()), None)).await;
                    if status != 200 {
                        failures.push(format!("event {i}: HTTP {status} {reply}"));
                    }
                }
                failures
            }));
        }
        let mut failures = Vec::new();
        for task in tasks {
            failures.extend(task.await.unwrap());
        }
        assert!(failures.is_empty(), "{} of {EVENTS} events not acknowledged with 2xx, e.g. {:?}", failures.len(), &failures[..failures.len().min(3)]);

        assert_eq!(f.warehouse.changelog_rows(TABLE).await.unwrap(), EVENTS as u64);
        let stats = f.server.service.committer().stats();
        let (appends, rows, written) =
            (stats.appends.load(Ordering::Relaxed), stats.rows.load(Ordering::Relaxed), stats.written.load(Ordering::Relaxed));
        assert_eq!((rows, written), (EVENTS as u64, EVENTS as u64));
        assert!(appends < EVENTS as u64, "no group commit: {appends} appends for {EVENTS} events");
        assert_eq!(stats.failed_appends.load(Ordering::Relaxed), 0);
        eprintln!("burst: {EVENTS} events in {appends} appends");

        // Every tenant's latest view is exactly what was sent.
        for tenant in TENANTS {
            let mut expected: Vec<DocState> = docs
                .iter()
                .filter(|d| d.path.starts_with(&format!("orgs/{tenant}/")))
                .map(|d| DocState::from_source(d.path.clone(), d.update_time.as_micros(), content_hash(&d.fields)))
                .collect();
            expected.sort();
            let derived = f.warehouse.latest_states(TABLE, tenant).await.unwrap();
            let report = drift::compare(futures::stream::iter(expected.into_iter().map(Ok)), derived.items).await.unwrap();
            assert!(report.is_clean(), "tenant {tenant}: {report:?}");
            assert_eq!(report.source_docs, (EVENTS / TENANTS.len()) as u64);
        }
        f.server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_out_of_order_delivery_change_nothing() {
    bounded(60, "duplicates", async {
        let f = fixture().await;
        let created = document("acme", "dup", 1, 1_750_000_000_000_000);
        let create = change("dup-create", Some(created.clone()), None);
        // Sequential redeliveries, then a concurrent storm of the same event.
        for _ in 0..5 {
            let (status, reply) = send(&f.client, &f.server.url, &create).await;
            assert_eq!(status, 200, "{reply}");
        }
        let storm: Vec<_> = (0..20)
            .map(|_| {
                let (client, url, create) = (f.client.clone(), f.server.url.clone(), create.clone());
                tokio::spawn(async move { send(&client, &url, &create).await })
            })
            .collect();
        for request in storm {
            let (status, reply) = request.await.unwrap();
            assert_eq!(status, 200, "{reply}");
        }
        assert_eq!(f.warehouse.changelog_rows(TABLE).await.unwrap(), 1);
        let stats = f.server.service.committer().stats();
        assert_eq!((stats.rows.load(Ordering::Relaxed), stats.written.load(Ordering::Relaxed), stats.duplicates.load(Ordering::Relaxed)), (25, 1, 24));

        // An update, then a late redelivery of the create: the update stays the winner.
        let updated = Document { fields: record_fields(2, 99.5), update_time: Timestamp::from_micros(1_750_000_001_000_000), ..created.clone() };
        assert_eq!(send(&f.client, &f.server.url, &change("dup-update", Some(updated.clone()), Some(created))).await.0, 200);
        assert_eq!(send(&f.client, &f.server.url, &create).await.0, 200);
        assert_eq!(f.warehouse.changelog_rows(TABLE).await.unwrap(), 2);
        let latest = f.warehouse.query_json("SELECT op, epoch_us(version) AS v, amount FROM records_latest").await.unwrap();
        assert_eq!(latest, vec![serde_json::json!({"op": "UPDATE", "v": 1_750_000_001_000_000i64, "amount": 99.5})]);
        f.server.stop().await;
    })
    .await;
}

/// How a large body is framed.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    /// `content-length: total`, then the bytes.
    Declared,
    /// `transfer-encoding: chunked`, no content-length: the size is known only by reading.
    Chunked,
}

/// POSTs `total` bytes of `x` over a raw socket, reading the answer while the body is
/// still being sent. (reqwest reports a refused upload as a broken pipe, dropping
/// the server's early 413, as hyper's client does when the server closes first.)
async fn post_large(addr: std::net::SocketAddr, headers: &HeaderMap, total: usize, framing: Framing) -> (u16, serde_json::Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let mut head = format!("POST / HTTP/1.1\r\nhost: {addr}\r\n");
    head.push_str(&match framing {
        Framing::Declared => format!("content-length: {total}\r\n"),
        Framing::Chunked => "transfer-encoding: chunked\r\n".to_owned(),
    });
    for (name, value) in headers {
        assert_ne!(name, http::header::CONTENT_LENGTH);
        head.push_str(&format!("{}: {}\r\n", name, value.to_str().unwrap()));
    }
    head.push_str("\r\n");
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            if framing == Framing::Chunked {
                write.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            }
            write.write_all(&chunk[..n]).await?;
            if framing == Framing::Chunked {
                write.write_all(b"\r\n").await?;
            }
            sent += n;
        }
        if framing == Framing::Chunked {
            write.write_all(b"0\r\n\r\n").await?;
        }
        std::io::Result::Ok(sent)
    });
    // Read the response head, then the body by its content-length.
    let mut buffer = Vec::new();
    let mut scratch = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = read.read(&mut scratch).await.expect("read the response");
        assert!(n > 0, "connection closed before a response; got {:?}", String::from_utf8_lossy(&buffer));
        buffer.extend_from_slice(&scratch[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad response head {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    while buffer.len() < head_end + length {
        let n = read.read(&mut scratch).await.expect("read the response body");
        assert!(n > 0, "connection closed mid-response");
        buffer.extend_from_slice(&scratch[..n]);
    }
    // The server answered without reading the rest; the upload may fail or finish.
    writer.abort();
    (status, serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_quarantined_acknowledged_and_the_server_keeps_serving() {
    bounded(90, "bad input", async {
        let f = fixture().await;
        let url = f.server.url.clone();
        let event = |id: &str| change(id, Some(document("acme", id, 7, 1_750_000_000_000_000)), None);
        let mut expected: BTreeMap<String, (u16, &str)> = BTreeMap::new();

        // Truncated protobuf.
        let (headers, body) = to_binary(&event("trunc"), &EventSource::local());
        let (status, reply) = post(&f.client, &url, headers, body[..body.len() / 2].to_vec()).await;
        assert_eq!((status, reply["reason"].as_str()), (200, Some("malformed")), "{reply}");
        expected.insert(reply["quarantine_id"].as_str().unwrap().into(), (status, "malformed"));

        // Wrong content type.
        let (mut headers, body) = to_binary(&event("ctype"), &EventSource::local());
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let (status, reply) = post(&f.client, &url, headers, body).await;
        assert_eq!((status, reply["reason"].as_str()), (200, Some("unsupported_content_type")), "{reply}");
        expected.insert(reply["quarantine_id"].as_str().unwrap().into(), (status, "unsupported_content_type"));

        // Unknown event type.
        let (mut headers, body) = to_binary(&event("etype"), &EventSource::local());
        headers.insert("ce-type", HeaderValue::from_static("google.cloud.storage.object.v1.finalized"));
        let (status, reply) = post(&f.client, &url, headers, body).await;
        assert_eq!((status, reply["reason"].as_str()), (200, Some("unknown_event_type")), "{reply}");
        expected.insert(reply["quarantine_id"].as_str().unwrap().into(), (status, "unknown_event_type"));

        // A document path no route matches.
        let stray = Document { path: "users/u1".into(), ..document("acme", "x", 1, 1_750_000_000_000_000) };
        let (status, reply) = send(&f.client, &url, &change("stray", Some(stray), None)).await;
        assert_eq!((status, reply["reason"].as_str()), (200, Some("unroutable")), "{reply}");
        assert!(reply["error"].as_str().unwrap().contains("matches no route"), "{reply}");
        expected.insert(reply["quarantine_id"].as_str().unwrap().into(), (status, "unroutable"));

        // Every refusal above is acknowledged (200) once its record is durable: Eventarc
        // would redeliver any other answer for a day. The body says it was quarantined.
        // 20 MB with a content-length: refused unread.
        let (mut headers, _) = to_binary(&event("big"), &EventSource::local());
        headers.remove(http::header::CONTENT_LENGTH);
        let (status, reply) = post_large(f.server.addr, &headers, TWENTY_MB, Framing::Declared).await;
        assert_eq!((status, reply["reason"].as_str()), (200, Some("oversized")), "{reply}");
        expected.insert(reply["quarantine_id"].as_str().unwrap().into(), (status, "oversized"));

        // 20 MB streamed, chunked, no content-length: refused once past the limit.
        let (status, reply) = post_large(f.server.addr, &headers, TWENTY_MB, Framing::Chunked).await;
        assert_eq!((status, reply["reason"].as_str()), (200, Some("oversized")), "{reply}");
        expected.insert(reply["quarantine_id"].as_str().unwrap().into(), (status, "oversized"));

        // An HTTP path the function does not serve: 404 from the router, no record.
        let (headers, body) = to_binary(&event("path"), &EventSource::local());
        let (status, _) = post(&f.client, &f.server.at("/not-a-route"), headers, body).await;
        assert_eq!(status, 404);

        // One quarantine record per refused event, with the reason it was refused for.
        assert_eq!(expected.len(), 6, "each refusal has its own record id: {expected:?}");
        let records = f.errors.quarantined(100).await.unwrap();
        let stored: BTreeMap<String, &str> = records.iter().map(|r| (r.id.clone(), r.reason.as_str())).collect();
        let wanted: BTreeMap<String, &str> = expected.iter().map(|(id, (_, reason))| (id.clone(), *reason)).collect();
        assert_eq!(stored, wanted);
        let oversized: Vec<_> = records.iter().filter(|r| r.reason == QuarantineReason::Oversized).collect();
        let declared = oversized.iter().find(|r| r.payload.is_empty()).expect("the declared oversized body is recorded unread");
        assert_eq!(declared.payload_bytes, TWENTY_MB as u64);
        let streamed = oversized.iter().find(|r| !r.payload.is_empty()).expect("the streamed oversized body keeps its first bytes");
        assert!(streamed.payload_bytes > converge_function::settings::DEFAULT_MAX_BODY_BYTES as u64, "{}", streamed.payload_bytes);
        assert!(streamed.payload.len() <= converge_core::error_log::QUARANTINE_PAYLOAD_LIMIT);
        assert!(streamed.payload.iter().all(|b| *b == b'x'));
        let truncated = records.iter().find(|r| r.reason == QuarantineReason::Malformed).unwrap();
        assert_eq!(truncated.payload, body_of(&event("trunc"))[..body_of(&event("trunc")).len() / 2]);
        assert_eq!(f.server.service.counters().quarantined.load(Ordering::Relaxed), 6);

        // Still serving.
        let (status, reply) = send(&f.client, &url, &event("good")).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(f.warehouse.latest_count(TABLE, "acme").await.unwrap(), 1);
        assert_eq!(f.warehouse.changelog_rows(TABLE).await.unwrap(), 1);
        assert!(f.errors.open_sync_errors(None).await.unwrap().is_empty());
        f.server.stop().await;
    })
    .await;
}

fn body_of(change: &DocumentChange) -> Vec<u8> {
    to_binary(change, &EventSource::local()).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health() {
    bounded(30, "health", async {
        let f = fixture().await;
        let response = f.client.get(f.server.at("/healthz")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body, serde_json::json!({"status": "ok"}));
        // GET on the event route is not an event.
        assert_eq!(f.client.get(f.server.url.clone()).send().await.unwrap().status().as_u16(), 405);
        f.server.stop().await;
    })
    .await;
}

/// Each delivery class on real HTTP: bad input is quarantined and acknowledged (2xx,
/// one record however often it comes back); a warehouse failure that a retry or a
/// fixed configuration heals (unavailable, a table not found, a permission refused)
/// answers 5xx with nothing acknowledged, and the redelivery after it lands the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_class_answers_as_eventarc_needs() {
    bounded(60, "delivery classes", async {
        let (dir, path) = data_dir();
        let errors = open_source(&path);
        let warehouse = open_warehouse(&path);
        let faulty = Arc::new(converge_core::faulty_warehouse::FaultyWarehouse::new(Arc::new(warehouse.clone())));
        let server = SyncServer::start(faulty.clone(), Arc::new(errors.clone()), ServerOptions::default()).await.unwrap();
        let client = http_client();
        let url = server.url.clone();

        // Quarantined: 200 every time it comes, one record.
        let stray = Document { path: "users/u1".into(), ..document("acme", "x", 1, 1_750_000_000_000_000) };
        for attempt in 1..=3 {
            let (status, reply) = send(&client, &url, &change("stray", Some(stray.clone()), None)).await;
            assert_eq!((status, reply["outcome"].as_str()), (200, Some("quarantined")), "attempt {attempt}: {reply}");
        }
        let records = errors.quarantined(10).await.unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].attempts, 3);

        // Retryable, not found, permission: 5xx, nothing written, then the redelivery lands.
        let classes = [
            (converge_core::ErrorKind::Retryable, "r-unavailable"),
            (converge_core::ErrorKind::NotFound, "r-notfound"),
            // The adapters classify a refused permission as retryable (fixed IAM heals it).
            (converge_core::ErrorKind::Retryable, "r-permission"),
        ];
        for (kind, id) in classes {
            let before = warehouse.latest_count(TABLE, "acme").await.unwrap();
            let event = change(id, Some(document("acme", id, 3, 1_750_000_000_000_000)), None);
            faulty.fail_next_appends(1, kind);
            let (status, reply) = send(&client, &url, &event).await;
            assert_eq!(status, 503, "{kind:?}: {reply}");
            assert_eq!(reply["retryable"], true, "{reply}");
            assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), before, "{kind:?}: nothing acknowledged, nothing written");
            let (status, reply) = send(&client, &url, &event).await;
            assert_eq!(status, 200, "{kind:?}, redelivered: {reply}");
            assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), before + 1, "{kind:?}: the redelivery landed");
        }
        drop(dir);
    })
    .await;
}
