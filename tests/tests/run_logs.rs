//! Every log line of a run carries the run's id and kind, from the run's span — not
//! because each line names them — in the Cloud Logging format the functions write on
//! Cloud Run (`converge_function::telemetry`).

use std::sync::Arc;

use converge_core::value::fields_from_json;
use converge_core::{DocWrite, MirrorConfig, RefreshFrom, SourceStore, SystemClock, Warehouse};
use converge_e2e::{data_dir, EmbeddedBackends};

#[test]
fn every_line_of_a_reconcile_and_a_refresh_names_its_run() {
    let (_dir, path) = data_dir();
    let buffer = converge_function::telemetry::LogBuffer::default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let subscriber = converge_function::telemetry::cloud_logging("reconciler", Some("p".into()), buffer.clone());
    let (reconcile_id, refresh_id) = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let config = MirrorConfig::default();
            let backends = EmbeddedBackends::open(&path, Arc::new(SystemClock)).unwrap();
            backends.warehouse.ensure_tables(&config).await.unwrap();
            let source: Arc<dyn SourceStore> = backends.source_store();
            let fields = fields_from_json(&serde_json::json!({"account": "4000", "fund": "general", "amount": 1.0})).unwrap();
            source.apply(vec![DocWrite::Set { path: "orgs/acme/records/a".into(), fields }]).await.unwrap();
            let warehouse: Arc<dyn Warehouse> = backends.warehouse();
            let reconciler = converge_reconcile::Reconciler::new(source, backends.error_log(), warehouse.clone(), config.clone(), Arc::new(SystemClock));
            // A silent difference is logged at error level inside the run.
            let run = reconciler.run(None, false).await.unwrap();
            assert_eq!(run.silent, 1);
            let refresh = converge_retention::Retention::new(warehouse, config, Arc::new(SystemClock)).refresh(RefreshFrom::Watermark, None).await.unwrap();
            (run.batch_id, refresh.batch_id)
        })
    });
    let lines = buffer.lines();
    let text = format!("{lines:#?}");
    let of = |id: &str| lines.iter().filter(|l| l["run_id"] == id).collect::<Vec<_>>();
    let (reconcile, refresh) = (of(&reconcile_id), of(&refresh_id));
    assert!(reconcile.iter().any(|l| l["severity"] == "ERROR" && l["message"].as_str().unwrap().contains("silent drift")), "{text}");
    assert!(reconcile.iter().any(|l| l["message"] == "reconcile run finished"), "{text}");
    assert!(reconcile.iter().all(|l| l["kind"] == "reconcile"));
    assert!(!refresh.is_empty() && refresh.iter().all(|l| l["kind"] == "refresh_current"), "{text}");
    // Every line was logged inside one run or the other (opening the stores logs
    // before either; those lines are the only ones without a run).
    let outside: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("run_id").is_none()).collect();
    assert!(outside.iter().all(|l| !l["message"].as_str().unwrap_or("").contains("run")), "lines of a run without its id: {outside:?}");
}
