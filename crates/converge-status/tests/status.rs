//! The status router over the embedded stores, without a socket: the page and its JSON
//! follow what the stores hold — a reconcile's findings and repairs, counts that
//! disagree after a write the warehouse missed, the sync errors and quarantine. (Over
//! real HTTP and in a real browser: `tests/tests/status_page.rs`.)

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use converge_backends::EmbeddedBackends;
use converge_core::value::fields_from_json;
use converge_core::{Clock, DocWrite, MirrorConfig, RefreshFrom, SourceStore, SystemClock, Timestamp, Warehouse};
use converge_sync::minutes::MinuteReport;
use converge_reconcile::Reconciler;
use converge_status::{Commands, StatusSources};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn get(router: &axum::Router, path: &str) -> (StatusCode, String, String) {
    let response = router.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8(body.to_vec()).unwrap())
}

fn set(tenant: &str, id: &str, amount: f64) -> DocWrite {
    DocWrite::Set {
        path: format!("orgs/{tenant}/records/{id}"),
        fields: fields_from_json(&serde_json::json!({"account": "4000", "fund": "general", "amount": amount})).unwrap(),
    }
}

#[tokio::test]
async fn the_page_and_its_json_follow_the_stores() {
    let dir = tempfile::tempdir().unwrap();
    let config = MirrorConfig::default();
    let backends = EmbeddedBackends::open(dir.path(), Arc::new(SystemClock)).unwrap();
    backends.warehouse.ensure_tables(&config).await.unwrap();
    let source: Arc<dyn SourceStore> = backends.source_store();
    let warehouse: Arc<dyn Warehouse> = backends.warehouse();
    let sources = StatusSources::new(&backends.backends(), config.clone(), Arc::new(SystemClock), Commands::Embedded { data_dir: "DIR".into() });
    let router = converge_status::app(Arc::new(sources));

    // Nothing yet: a page that says so, not an error.
    let (status, content_type, html) = get(&router, "/status").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(html.contains("No tenant in the source or the warehouse yet") && html.contains("<svg"), "{html}");

    // The source has documents the warehouse never got: a reconcile finds and repairs them.
    source.apply(vec![set("acme", "a", 1.0), set("acme", "b", 2.0), set("acme", "c", 3.0), set("globex", "x", 4.0)]).await.unwrap();
    let reconciler = Reconciler::new(source.clone(), backends.error_log(), warehouse.clone(), config.clone(), Arc::new(SystemClock));
    let run = reconciler.run(None, false).await.unwrap();
    assert_eq!(run.missing, 4);
    warehouse.refresh_current("records", RefreshFrom::Watermark).await.unwrap();

    let (status, _, json) = get(&router, "/status.json").await;
    assert_eq!(status, StatusCode::OK);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let tenants = report["tenants"].as_array().unwrap();
    assert_eq!(tenants.iter().map(|t| t["tenant"].as_str().unwrap()).collect::<Vec<_>>(), ["acme", "globex"]);
    let acme = &tenants[0];
    assert_eq!((acme["source_docs"].as_u64(), acme["current_rows"].as_u64()), (Some(3), Some(3)));
    assert_eq!(acme["last_reconcile"]["missing"], 3);
    assert_eq!(acme["last_reconcile"]["repaired"], 3);
    assert_eq!(acme["last_reconcile"]["silent"], 3, "no sync error explained them");
    assert_eq!(acme["equal"], true, "everything found was repaired and the counts agree");
    assert_eq!(report["equal"], true);
    assert_eq!(report["reconciles"].as_array().unwrap().len(), 1);

    let (_, _, html) = get(&router, "/status").await;
    for needle in ["data-tenant=\"acme\"", "data-tenant=\"globex\"", "Every tenant&#39;s copy equals its source", "<svg", "class=\"missing\""] {
        assert!(html.contains(needle), "{needle} missing from the page");
    }

    // A write the warehouse never saw: the counts disagree until a reconcile repairs it.
    source.apply(vec![set("globex", "y", 5.0)]).await.unwrap();
    let report: serde_json::Value = serde_json::from_str(&get(&router, "/status.json").await.2).unwrap();
    let globex = &report["tenants"][1];
    assert_eq!((globex["source_docs"].as_u64(), globex["current_rows"].as_u64(), globex["equal"].as_bool()), (Some(2), Some(1), Some(false)));
    assert_eq!(report["equal"], false);
    let (_, _, html) = get(&router, "/status").await;
    assert!(html.contains("1 of 2 tenants differ from their source"), "{html}");

    reconciler.run(None, false).await.unwrap();
    // Refreshed as `converge serve` and the scheduled job do: recorded as a run.
    converge_retention::Retention::new(warehouse.clone(), config.clone(), Arc::new(SystemClock)).refresh(RefreshFrom::Watermark, None).await.unwrap();
    // A minute of sync traffic, as the sync service records it.
    let now = SystemClock.now();
    let minute = MinuteReport { events: 120, lag_ms_p50: 40, lag_ms_p95: 90, lag_ms_max: 250, ..MinuteReport::default() };
    converge_sync::minutes::record(&*warehouse, "serve-test", Timestamp::from_micros(now.as_micros() - 60_000_000), now, &minute).await.unwrap();
    let report: serde_json::Value = serde_json::from_str(&get(&router, "/status.json").await.2).unwrap();
    assert_eq!(report["equal"], true, "{report:#}");
    assert_eq!((report["sync"]["events_last_hour"].as_u64(), report["sync"]["lag_ms_max"].as_u64()), (Some(120), Some(250)), "{report:#}");
    assert_eq!(report["freshness"][0]["table"], "records", "the last refresh: {report:#}");
    assert_eq!(report["reconciles"].as_array().unwrap().len(), 2, "the drift chart has both runs");
    assert_eq!(report["tenants"][1]["last_reconcile"]["missing"], 1);
}
