//! `converge bench sync`: the sync path measured end to end over loopback HTTP.
//!
//! The real `on-write-sync` binary runs as its own process on the embedded backends;
//! this process is the load generator, sending real Eventarc binary-mode CloudEvents
//! over keep-alive HTTP/1.1 connections. Two measurements:
//!
//! - **saturation**: a closed loop of `concurrency` senders, as fast as acknowledgements
//!   come back: events/s and acknowledgement latency;
//! - **fixed offered load**: an open loop sending at `rate` events/s whatever the
//!   answers do; latency is measured from each event's *scheduled* send time, so a
//!   stall shows up in the percentiles instead of silently slowing the sender
//!   (no coordinated omission).
//!
//! Both share the machine's two cores with the server: the figures are for the whole
//! loop on one box, a pessimistic setting for the server.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use converge_core::{Clock, Document, DocumentChange, SystemClock};
use converge_events::{to_binary, EventSource};
use converge_scenarios::bookkeeping_records;
use serde::Serialize;

use super::measure::{cpu_time, machine, peak_rss_mb, replace_section};

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub events: usize,
    pub errors: usize,
    pub seconds: f64,
    pub events_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// CPU time per acknowledged event: the server's, and this load generator's
    /// (they share the cores). Linux only.
    pub server_cpu_us_per_event: Option<f64>,
    pub generator_cpu_us_per_event: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncBenchResult {
    pub saturation: LatencySummary,
    /// Saturation events over the time until the last of them was in DuckDB (the
    /// answers come once a row is in the warehouse's journal; see converge_duckdb).
    pub saturation_loaded_events_per_second: f64,
    /// From the last answer until the server went quiet.
    pub saturation_drain_ms: u64,
    pub concurrency: usize,
    pub fixed_load: LatencySummary,
    pub offered_rate: u64,
    /// The same rate held for `sustained_seconds` (None when skipped).
    pub sustained_load: Option<LatencySummary>,
    pub sustained_seconds: u64,
    pub rows_in_warehouse: u64,
    pub events_sent: usize,
    /// The server's peak resident memory over the whole run (VmHWM), MB. Linux only.
    pub server_peak_rss_mb: Option<u64>,
}

pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!("{} not found; build it (`cargo build -p {name}`) or pass --server-bin", path.display());
    }
    Ok(path)
}

/// A child process serving the function; killed on drop so a failed run leaves
/// nothing behind.
struct Server {
    child: std::process::Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn stop(mut self) -> anyhow::Result<()> {
        // SIGTERM: the function finishes in-flight requests and exits.
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the sync function did not stop within 20 s of SIGTERM")
    }
}

async fn start_server(bin: &Path, data_dir: &Path) -> anyhow::Result<(Server, std::net::SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = std::process::Command::new(bin)
        .env("PORT", port.to_string())
        .env(converge_function::env::DATA_DIR, data_dir)
        .env(converge_function::env::LOG, std::env::var(converge_function::env::LOG).unwrap_or_else(|_| "warn".into()))
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let server = Server { child };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await {
            if response.status().is_success() {
                return Ok((server, std::net::SocketAddr::from(([127, 0, 0, 1], port))));
            }
        }
        if Instant::now() > deadline {
            bail!("the sync function did not become healthy within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pre-encoded events: creates of distinct documents across four tenants, each with
/// its `Host` header (the load generator's connections do not add one).
fn events(range: std::ops::Range<usize>, host: &http::HeaderValue) -> Vec<(http::HeaderMap, Bytes)> {
    let now = SystemClock.now();
    let source = EventSource::local();
    range
        .map(|i| {
            let path = format!("orgs/bench{}/records/{}", i % 4, bookkeeping_records::doc_id(i as u64));
            let time = converge_core::Timestamp::new(now.seconds, (i % 1_000_000) as i32 * 1_000);
            let change = DocumentChange {
                event_id: format!("bench-{i}"),
                event_type: "google.cloud.firestore.document.v1.written".into(),
                event_time: time,
                document: path.clone(),
                value: Some(Document { path, fields: bookkeeping_records::record(7, i as u64, now), create_time: time, update_time: time }),
                old_value: None,
                update_mask: vec![],
            };
            let (mut headers, body) = to_binary(&change, &source);
            headers.insert(http::header::HOST, host.clone());
            (headers, Bytes::from(body))
        })
        .collect()
}

/// One keep-alive HTTP/1.1 connection of the load generator. Requests go straight to
/// hyper's connection (no pool, no URL parsing per request): the generator shares the
/// two cores with the server, so every cycle it spends is one the server loses.
type Connection = hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>>;

async fn connect(address: std::net::SocketAddr) -> anyhow::Result<Connection> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Posts one event on `connection` and reads the whole answer; true on a 2xx.
async fn send(connection: &mut Connection, event: &(http::HeaderMap, Bytes)) -> bool {
    if connection.ready().await.is_err() {
        return false;
    }
    let mut request = http::Request::new(http_body_util::Full::new(event.1.clone()));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = http::Uri::from_static("/");
    *request.headers_mut() = event.0.clone();
    match connection.send_request(request).await {
        Ok(response) => {
            let ok = response.status().is_success();
            ok && http_body_util::BodyExt::collect(response.into_body()).await.is_ok()
        }
        Err(_) => false,
    }
}

/// Sends with a connection that is open, reconnecting once if it broke; None when no
/// connection could be made.
async fn send_on(slot: &mut Option<Connection>, address: std::net::SocketAddr, event: &(http::HeaderMap, Bytes)) -> bool {
    if slot.as_ref().is_none_or(|c| c.is_closed()) {
        *slot = connect(address).await.ok();
    }
    match slot {
        Some(connection) => send(connection, event).await,
        None => false,
    }
}

/// CPU used by the server and by this load generator over one run.
struct CpuMeter {
    server_pid: String,
    start: Option<(Duration, Duration)>,
}

impl CpuMeter {
    fn start(server: &Server) -> Self {
        let server_pid = server.child.id().to_string();
        let start = cpu_time(&server_pid).zip(cpu_time("self"));
        Self { server_pid, start }
    }

    /// Microseconds of CPU per event: (server, load generator).
    fn per_event(&self, events: usize) -> (Option<f64>, Option<f64>) {
        let Some(((server_start, self_start), (server_end, self_end))) = self.start.zip(cpu_time(&self.server_pid).zip(cpu_time("self"))) else {
            return (None, None);
        };
        let per = |used: Duration| (events > 0).then(|| (used.as_secs_f64() * 1e6 / events as f64).round());
        (per(server_end.saturating_sub(server_start)), per(self_end.saturating_sub(self_start)))
    }
}

fn summarize(mut latencies_us: Vec<u64>, errors: usize, elapsed: Duration) -> LatencySummary {
    latencies_us.sort_unstable();
    let at = |q: f64| -> f64 {
        if latencies_us.is_empty() {
            return 0.0;
        }
        let index = ((latencies_us.len() as f64 * q).ceil() as usize).clamp(1, latencies_us.len()) - 1;
        (latencies_us[index] as f64 / 100.0).round() / 10.0
    };
    let events = latencies_us.len();
    LatencySummary {
        events,
        errors,
        seconds: (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        events_per_second: (events as f64 / elapsed.as_secs_f64()).round(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: at(1.0),
        server_cpu_us_per_event: None,
        generator_cpu_us_per_event: None,
    }
}

/// A closed loop: `concurrency` senders, each on its own connection, each sending its
/// next event as soon as the previous one is acknowledged.
async fn saturation(address: std::net::SocketAddr, events: Arc<Vec<(http::HeaderMap, Bytes)>>, concurrency: usize) -> LatencySummary {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, events) = (next.clone(), events.clone());
            tokio::spawn(async move {
                let mut connection = None;
                let mut latencies = Vec::new();
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(event) = events.get(i) else { break };
                    let sent = Instant::now();
                    if send_on(&mut connection, address, event).await {
                        latencies.push(sent.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(events.len());
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    summarize(latencies, errors, started.elapsed())
}

/// An open loop: one event every `1/rate` s whatever the answers do, each on an idle
/// connection (a new one when none is idle).
async fn fixed_load(address: std::net::SocketAddr, events: Arc<Vec<(http::HeaderMap, Bytes)>>, rate: u64) -> LatencySummary {
    let idle: Arc<std::sync::Mutex<Vec<Connection>>> = Arc::default();
    let started = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    for i in 0..events.len() {
        let scheduled = started + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let (idle, events, sender) = (idle.clone(), events.clone(), sender.clone());
        tokio::spawn(async move {
            let mut connection = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let ok = send_on(&mut connection, address, &events[i]).await;
            // From the scheduled time, not the actual send: a late sender counts.
            let _ = sender.send(ok.then(|| scheduled.elapsed().as_micros() as u64));
            if let Some(connection) = connection.filter(|c| !c.is_closed()) {
                idle.lock().unwrap_or_else(|p| p.into_inner()).push(connection);
            }
        });
    }
    drop(sender);
    let mut latencies = Vec::with_capacity(events.len());
    let mut errors = 0;
    while let Some(result) = receiver.recv().await {
        match result {
            Some(us) => latencies.push(us),
            None => errors += 1,
        }
    }
    summarize(latencies, errors, started.elapsed())
}

/// Waits until the server has gone quiet (under 10 ms of CPU in 200 ms, twice in a
/// row): its warehouse loader has moved every acknowledged row into DuckDB, and any
/// checkpoint that started is done. Returns how long that took; gives up after 120 s.
async fn wait_until_idle(server: &Server) -> Duration {
    let pid = server.child.id().to_string();
    let started = Instant::now();
    let mut quiet = 0;
    let mut last = cpu_time(&pid);
    while quiet < 2 && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = cpu_time(&pid);
        match (last, now) {
            (Some(before), Some(after)) if after.saturating_sub(before) < Duration::from_millis(10) => quiet += 1,
            (Some(_), Some(_)) => quiet = 0,
            _ => return started.elapsed(), // not on Linux: nothing to watch
        }
        last = now;
    }
    // The quiet windows themselves are not part of the work.
    started.elapsed().saturating_sub(Duration::from_millis(400))
}

/// One paced run at `rate` on the running server, once the previous run's work is
/// done, with the CPU each side spent per event.
async fn paced_run(server: &Server, address: std::net::SocketAddr, events: Arc<Vec<(http::HeaderMap, Bytes)>>, rate: u64, label: &str) -> LatencySummary {
    wait_until_idle(server).await;
    eprintln!("{label}: {rate} events/s for {} s…", events.len() as u64 / rate.max(1));
    let meter = CpuMeter::start(server);
    let mut run = fixed_load(address, events, rate).await;
    (run.server_cpu_us_per_event, run.generator_cpu_us_per_event) = meter.per_event(run.events);
    eprintln!("  {} events/s, p50 {} ms, p99 {} ms, max {} ms", run.events_per_second, run.p50_ms, run.p99_ms, run.max_ms);
    run
}

/// `sustained_seconds` of 0 skips the sustained run.
pub async fn run(
    events_n: usize,
    concurrency: usize,
    rate: u64,
    seconds: u64,
    sustained_seconds: u64,
    server_bin: &Path,
) -> anyhow::Result<SyncBenchResult> {
    let data_dir = std::env::temp_dir().join(format!("converge-bench-{}", uuid::Uuid::new_v4()));
    let (server, address) = start_server(server_bin, &data_dir).await?;
    let host = http::HeaderValue::from_str(&address.to_string())?;
    let warmup = 2_000;
    let fixed_n = (rate * seconds) as usize;
    let sustained_n = (rate * sustained_seconds) as usize;
    eprintln!("encoding {} events…", warmup + events_n + fixed_n + sustained_n);
    let warm = Arc::new(events(0..warmup, &host));
    let burst = Arc::new(events(warmup..warmup + events_n, &host));
    let paced = Arc::new(events(warmup + events_n..warmup + events_n + fixed_n, &host));
    let start = warmup + events_n + fixed_n;
    let sustained_events = Arc::new(events(start..start + sustained_n, &host));
    eprintln!("warm-up: {warmup} events");
    saturation(address, warm, concurrency).await;
    eprintln!("saturation: {events_n} events over {concurrency} connections…");
    wait_until_idle(&server).await;
    let meter = CpuMeter::start(&server);
    let mut saturation_result = saturation(address, burst, concurrency).await;
    let generator_cpu = meter.per_event(saturation_result.events).1;
    // Acknowledged is not yet in DuckDB: the loader may still be moving the burst's
    // tail from the journal. The rate that counts is the one the warehouse absorbed,
    // so the run ends when the server has gone quiet, and its CPU is counted to there.
    let drain = wait_until_idle(&server).await;
    let loaded_seconds = saturation_result.seconds + drain.as_secs_f64();
    let loaded_events_per_second = (saturation_result.events as f64 / loaded_seconds).round();
    saturation_result.server_cpu_us_per_event = meter.per_event(saturation_result.events).0;
    saturation_result.generator_cpu_us_per_event = generator_cpu;
    eprintln!(
        "  {} events/s acknowledged, {loaded_events_per_second} events/s into DuckDB (drained {} ms after the last answer), p50 {} ms, p99 {} ms; CPU per event: server {:?} µs, load generator {:?} µs",
        saturation_result.events_per_second,
        drain.as_millis(),
        saturation_result.p50_ms,
        saturation_result.p99_ms,
        saturation_result.server_cpu_us_per_event,
        saturation_result.generator_cpu_us_per_event
    );
    let fixed = paced_run(&server, address, paced, rate, "fixed load").await;
    let sustained = if sustained_n > 0 { Some(paced_run(&server, address, sustained_events, rate, "sustained load").await) } else { None };
    let server_peak_rss_mb = peak_rss_mb(&server.child.id().to_string());
    server.stop()?;
    // Every acknowledged event must be in the warehouse.
    let warehouse = converge_duckdb::DuckWarehouse::open(&converge_backends::EmbeddedBackends::warehouse_path(&data_dir))?;
    let rows = warehouse.query_json("SELECT count(*) AS n FROM records").await?;
    let rows_in_warehouse = rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
    drop(warehouse);
    let _ = std::fs::remove_dir_all(&data_dir);
    let events_sent = warmup + events_n + fixed_n + sustained_n;
    let acknowledged = (warmup + saturation_result.events + fixed.events + sustained.as_ref().map_or(0, |s| s.events)) as u64;
    if rows_in_warehouse < acknowledged {
        bail!("{acknowledged} events were acknowledged but only {rows_in_warehouse} rows are in the warehouse");
    }
    Ok(SyncBenchResult {
        saturation: saturation_result,
        saturation_loaded_events_per_second: loaded_events_per_second,
        saturation_drain_ms: drain.as_millis() as u64,
        concurrency,
        fixed_load: fixed,
        offered_rate: rate,
        sustained_load: sustained,
        sustained_seconds,
        rows_in_warehouse,
        events_sent,
        server_peak_rss_mb,
    })
}

pub fn markdown(result: &SyncBenchResult) -> String {
    let row = |name: &str, s: &LatencySummary| {
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.events,
            s.errors,
            s.events_per_second,
            s.p50_ms,
            s.p99_ms,
            s.p999_ms,
            s.max_ms,
            s.server_cpu_us_per_event.map_or("–".to_owned(), |us| us.to_string()),
            s.generator_cpu_us_per_event.map_or("–".to_owned(), |us| us.to_string()),
        )
    };
    let mut rows = vec![
        "| run | events | errors | events/s | p50 ms | p99 ms | p99.9 ms | max ms | server CPU µs/event | load generator CPU µs/event |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|---|".to_owned(),
        row(&format!("saturation ({} connections)", result.concurrency), &result.saturation),
        row(&format!("fixed load {} events/s offered", result.offered_rate), &result.fixed_load),
    ];
    if let Some(sustained) = &result.sustained_load {
        rows.push(row(&format!("sustained load {} events/s offered for {} s", result.offered_rate, result.sustained_seconds), sustained));
    }
    rows.join("\n")
        + &format!(
            "\n\nSaturation into DuckDB: {} events/s (the loader had the last of the burst in DuckDB {} ms after the last answer; server CPU above counted to there). Rows in the warehouse after the run: {} (events sent: {}). Server peak resident memory: {}.",
            result.saturation_loaded_events_per_second,
            result.saturation_drain_ms,
            result.rows_in_warehouse,
            result.events_sent,
            result.server_peak_rss_mb.map_or("not measured".to_owned(), |mb| format!("{mb} MB"))
        )
}

/// Replaces the sync section of the results file (creating the file if needed).
pub fn write_results(path: &Path, result: &SyncBenchResult) -> anyhow::Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let section = format!(
        "<!-- bench:sync:start -->\n## On-write sync over loopback HTTP\n\n{}\n\nMeasured {} on {}.\nCommand: `{}` (via `make bench`).\n\n{}\n<!-- bench:sync:end -->",
        "Real Eventarc binary-mode CloudEvents (protobuf `DocumentEventData`) posted to the `on-write-sync` binary running on the embedded backends (DuckDB warehouse, SQLite error log), acknowledged only once the row is durable: in the warehouse's journal, from which a loader thread moves it into DuckDB (so DuckDB's checkpoints stall the loader, not the answers). Load generator and server share the machine's two cores; the generator drives hyper connections directly (one per concurrent sender) and the CPU each side spends per event is reported (from /proc). Each run starts once the server is quiet. Saturation is given twice: answers per second, and events per second into DuckDB (until the loader has the last one). Latency at fixed load is measured from each event's scheduled send time. The sustained run holds the same rate long enough for DuckDB to checkpoint its WAL (at 64 MB) several times.",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine(),
        command.join(" "),
        markdown(result)
    );
    replace_section(path, "sync", &section)
}
