//! The BigQuery warehouse against a local emulator (`make bqemulator`): table layout,
//! the latest view's rules, as-of, atomic appends, named parameters, error kinds.
//! These cover the adapter's own behaviour; tests/contract.rs runs the shared suite.
//!
//! Without the emulator each test prints one line and passes; with `CI=true` a missing
//! emulator fails (see `BigQueryEmulator::for_tests`).

use std::time::Duration;

use converge_bigquery::{BigQueryConfig, BigQueryEmulator, BigQueryWarehouse, QueryParam};
use converge_core::{ChangeRow, Document, ErrorKind, MirrorConfig, Op, RowContext, StoreError, Timestamp, Warehouse};
use futures::stream::{self, StreamExt};

fn ctx() -> RowContext {
    RowContext { ingested_at: Timestamp::from_micros(1_800_000_000_000_000), run_id: "run-1".into(), code_version: "test".into() }
}

fn live(tenant: &str, doc: &str, version: i64, event: &str, amount: f64) -> ChangeRow {
    let config = MirrorConfig::default();
    let path = format!("orgs/{tenant}/records/{doc}");
    let routed = config.route(&path).unwrap();
    let fields = converge_core::value::fields_from_json(&serde_json::json!({
        "account": "acc", "fund": "general", "date": "2024-03-01", "label": "grants", "amount": amount,
        "big": {"$int": "9007199254740993"}
    }))
    .unwrap();
    let document = Document { path: path.clone(), fields, create_time: Timestamp::from_micros(version), update_time: Timestamp::from_micros(version) };
    ChangeRow::live(&routed, Op::Update, &document, event, &ctx()).unwrap()
}

fn tombstone(tenant: &str, doc: &str, version: i64, event: &str) -> ChangeRow {
    let config = MirrorConfig::default();
    let path = format!("orgs/{tenant}/records/{doc}");
    let routed = config.route(&path).unwrap();
    ChangeRow::tombstone(&routed, &path, Op::Delete, version, event, &ctx())
}

async fn fresh(emulator: &BigQueryEmulator) -> BigQueryWarehouse {
    let warehouse = emulator.fresh_warehouse().await.unwrap();
    warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap();
    warehouse
}

async fn states(warehouse: &BigQueryWarehouse, tenant: &str) -> Vec<(String, i64, String)> {
    let scan = warehouse.latest_states("records", tenant).await.unwrap();
    scan.items.map(|s| s.map(|s| (s.doc_path, s.version, s.content_hash))).collect::<Vec<_>>().await.into_iter().collect::<Result<_, _>>().unwrap()
}

#[tokio::test]
async fn latest_view_rules_and_redelivery() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let warehouse = fresh(&emulator).await;
    // Idempotent.
    warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap();

    let a1 = live("t1", "a", 1_000, "e-a1", 1.0);
    let a2 = live("t1", "a", 2_000, "e-a2", 2.0);
    let b1 = live("t1", "b", 1_000, "e-b1", 1.0);
    // A delete beats a write at the same instant, and arrives before it.
    let b_del = tombstone("t1", "b", 1_000, "e-b0");
    let c1 = live("t1", "c", 5_000, "e-c1", 3.0);
    let other = live("t2", "a", 9_000, "e-t2", 4.0);
    let receipt = warehouse.append(vec![a2.clone(), b_del, c1.clone(), other]).await.unwrap();
    assert_eq!((receipt.written, receipt.duplicates), (4, 0));
    // Out of order and redelivered: BigQuery stores the copies (duplicates: 0 is the
    // documented contract) and the view ignores them.
    let receipt = warehouse.append(vec![a1, b1, c1.clone(), c1.clone()]).await.unwrap();
    assert_eq!((receipt.written, receipt.duplicates), (4, 0));
    assert_eq!(warehouse.changelog_rows("records").await.unwrap(), 8);

    let expected = vec![
        ("orgs/t1/records/a".to_owned(), 2_000, a2.content_hash.clone().unwrap()),
        ("orgs/t1/records/c".to_owned(), 5_000, c1.content_hash.clone().unwrap()),
    ];
    assert_eq!(states(&warehouse, "t1").await, expected);
    assert_eq!(warehouse.latest_count("records", "t1").await.unwrap(), 2);
    assert_eq!(warehouse.latest_count("records", "t2").await.unwrap(), 1);
    assert_eq!(warehouse.latest_count("records", "nobody").await.unwrap(), 0);

    // As of an earlier instant: a at version 1000, b deleted at 1000, c not yet written.
    let scan = warehouse.as_of_states("records", "t1", converge_core::Timestamp::from_micros(1_500)).await.unwrap();
    let as_of: Vec<converge_core::DocState> = scan.items.map(|s| s.unwrap()).collect().await;
    assert_eq!(as_of.iter().map(|s| (s.doc_path.as_str(), s.version)).collect::<Vec<_>>(), vec![("orgs/t1/records/a", 1_000)]);

    // A tenant value is a parameter, never SQL.
    assert_eq!(warehouse.latest_count("records", "t1' OR '1'='1").await.unwrap(), 0);
    let err = warehouse.latest_count("records; DROP TABLE x", "t1").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn stored_values_read_back_exactly() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let warehouse = fresh(&emulator).await;
    let row = live("t1", "a", 1_700_000_000_123_456, "e-1", 12.5);
    warehouse.append(vec![row.clone()]).await.unwrap();
    let rows = warehouse
        .query_json(
            &format!(
                "SELECT data, amount, date, label, UNIX_MICROS(version) AS version, is_deleted, op FROM `{}.{}.records_latest` WHERE tenant = @tenant AND amount > @min",
                warehouse.config().project,
                warehouse.config().dataset
            ),
            &[("tenant", QueryParam::String("t1".into())), ("min", QueryParam::Float64(1.0))],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let got = &rows[0];
    // Converge JSON is kept byte for byte (data is STRING, see schema.rs).
    assert_eq!(got["data"].as_str(), row.data.as_deref());
    assert_eq!(got["amount"], serde_json::json!(12.5));
    assert_eq!(got["date"], serde_json::json!("2024-03-01"));
    assert_eq!(got["label"], serde_json::json!("grants"));
    assert_eq!(got["version"], serde_json::json!(1_700_000_000_123_456i64));
    assert_eq!(got["is_deleted"], serde_json::json!(false));
    assert_eq!(got["op"], serde_json::json!("UPDATE"));
}

#[tokio::test]
async fn atomic_append_is_all_or_nothing() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let warehouse = fresh(&emulator).await;

    // More rows than one chunk, so several AppendRows calls land in one PENDING stream.
    let rows: Vec<ChangeRow> = (0..5_000).map(|i| live("big", &format!("d{i:05}"), 1_000 + i, &format!("e{i}"), i as f64)).collect();
    let receipt = warehouse.append_atomic(stream::iter(rows.into_iter().map(Ok)).boxed()).await.unwrap();
    assert_eq!(receipt.written, 5_000);
    assert_eq!(warehouse.latest_count("records", "big").await.unwrap(), 5_000);
    let all = states(&warehouse, "big").await;
    assert_eq!(all.len(), 5_000);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "ordered by doc_path");

    // An error from the stream after a chunk was appended leaves nothing visible.
    let failing = (0..4_500)
        .map(|i| Ok(live("half", &format!("d{i}"), 1_000, &format!("h{i}"), 0.0)))
        .chain(std::iter::once(Err(StoreError::retryable("test", "source scan failed mid-way"))));
    let err = warehouse.append_atomic(stream::iter(failing).boxed()).await.unwrap_err();
    assert_eq!(err.message, "source scan failed mid-way");
    assert_eq!(warehouse.latest_count("records", "half").await.unwrap(), 0);
    assert_eq!(warehouse.changelog_rows("records").await.unwrap(), 5_000);

    // A row that does not fit the table is refused before anything is committed.
    let mut bad = live("bad", "x", 1, "b1", 1.0);
    bad.promoted.pop();
    let err = warehouse.append_atomic(stream::iter(vec![Ok(live("bad", "y", 1, "b0", 1.0)), Ok(bad)]).boxed()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert_eq!(warehouse.latest_count("records", "bad").await.unwrap(), 0);

    // An empty stream is a no-op.
    assert_eq!(warehouse.append_atomic(stream::empty().boxed()).await.unwrap().written, 0);
}

#[tokio::test]
async fn an_unreachable_warehouse_is_a_retryable_error_soon() {
    // A port nothing listens on: the call must give up within call_timeout and say
    // "retry", not hang in the client's retry loop.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = BigQueryConfig::emulator("p1", "d1", format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{port}")).unwrap();
    config.call_timeout = Duration::from_secs(3);
    config.attempt_timeout = Duration::from_secs(1);
    let warehouse = BigQueryWarehouse::connect(config).await.unwrap();
    let started = std::time::Instant::now();
    let err = warehouse.ensure_tables(&MirrorConfig::default()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn reads_before_ensure_tables_are_refused() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let warehouse = emulator.fresh_warehouse().await.unwrap();
    let err = warehouse.latest_count("records", "t").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("ensure_tables"), "{err}");
}

/// A function's start (`check_tables`) runs no DDL and trusts only what the last
/// setup recorded: tables made some other way, or set up by another version of the
/// views, stop it until `ensure_tables` (`converge setup`) runs again.
#[tokio::test]
async fn the_start_up_check_trusts_only_the_last_recorded_setup() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let config = MirrorConfig::default();
    let warehouse = emulator.fresh_warehouse().await.unwrap();
    let missing = warehouse.check_tables(&config).await.unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert!(missing.message.contains("does not exist"), "the dataset is missing: {missing}");

    // The tables exist but no setup was recorded (made by hand, or by an older release).
    warehouse.ensure_tables(&config).await.unwrap();
    let runs = converge_bigquery::schema::qualified(warehouse.config(), converge_core::RUNS_TABLE);
    warehouse.query_json(&format!("DELETE FROM {runs} WHERE kind = 'setup'"), &[]).await.unwrap();
    let unrecorded = warehouse.check_tables(&config).await.unwrap_err();
    assert!(unrecorded.message.contains("records no setup"), "{unrecorded}");

    // A later setup by another version (another fingerprint) is the one that counts.
    warehouse.ensure_tables(&config).await.unwrap();
    warehouse.check_tables(&config).await.expect("set up by this version");
    let now = Timestamp::from_micros(4_000_000_000_000_000);
    let other = converge_core::RunRecord {
        batch_id: "setup-0123456789abcdef0123456789abcdef".into(),
        kind: "setup".into(),
        scope: "other".into(),
        started_at: now,
        finished_at: now,
        outcome: converge_core::RunOutcome::Ok,
        report: serde_json::json!({}),
        code_version: "9.9.9".into(),
    };
    warehouse.record_run(other).await.unwrap();
    let outdated = warehouse.check_tables(&config).await.unwrap_err();
    assert_eq!(outdated.kind, ErrorKind::NotFound);
    assert!(outdated.message.contains("another version or configuration") && outdated.message.contains("setup-0123456789abcdef"), "{outdated}");
    warehouse.ensure_tables(&config).await.unwrap();
    warehouse.check_tables(&config).await.expect("setup again heals it");
}

/// `converge backfill` on BigQuery: every promoted type, filled in rows written before
/// the column existed, equals what a new row of the same document carries; rows
/// streamed too recently for DML are counted, not touched.
#[tokio::test]
async fn backfilled_values_equal_new_rows_values_of_every_type() {
    let Some(emulator) = BigQueryEmulator::for_tests().await else { return };
    let warehouse = emulator.fresh_warehouse().await.unwrap();
    let mut narrow = MirrorConfig::default();
    narrow.routes[0].promoted.clear();
    let mut wide = MirrorConfig::default();
    let column = |name: &str, field: &str, column_type| converge_core::PromotedColumn { column: name.into(), field: field.into(), column_type };
    wide.routes[0].promoted.extend([
        column("ts", "when", converge_core::ColumnType::Timestamp),
        column("day", "when", converge_core::ColumnType::Date),
        column("n", "big", converge_core::ColumnType::Int64),
        column("flag", "flag", converge_core::ColumnType::Bool),
        column("nested", "totals.net", converge_core::ColumnType::Float64),
    ]);
    let document = |tenant: &str, id: &str| Document {
        path: format!("orgs/{tenant}/records/{id}"),
        fields: converge_core::value::fields_from_json(&serde_json::json!({
            "account": format!("acc '{id}' \\ \"q\" ✓"), "fund": "general", "date": "2024-03-01", "label": "grants", "amount": 2,
            "when": {"$timestamp": "2024-05-01T10:00:00.123456789Z"}, "big": {"$int": "9007199254740993"}, "flag": true,
            "totals": {"net": 12.5}
        }))
        .unwrap(),
        create_time: Timestamp::from_micros(1_000),
        update_time: Timestamp::from_micros(2_000),
    };
    let settled = RowContext { ingested_at: Timestamp::from_micros(1_600_000_000_000_000), run_id: "old".into(), code_version: "old".into() };
    let recent = RowContext { ingested_at: Timestamp::from_micros(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64), ..settled.clone() };
    let row = |config: &MirrorConfig, tenant: &str, id: &str, ctx: &RowContext| {
        let document = document(tenant, id);
        ChangeRow::live(&config.route(&document.path).unwrap(), Op::Update, &document, &format!("e-{tenant}-{id}"), ctx).unwrap()
    };
    warehouse.ensure_tables(&narrow).await.unwrap();
    // Two documents of the same content but for the id, one stored twice; one too recent.
    let old = vec![row(&narrow, "old", "a", &settled), row(&narrow, "old", "a", &settled), row(&narrow, "old", "b", &settled), row(&narrow, "recent", "a", &recent)];
    warehouse.append(old).await.unwrap();
    warehouse.ensure_tables(&wide).await.unwrap();
    warehouse.append(vec![row(&wide, "new", "a", &settled), row(&wide, "new", "b", &settled)]).await.unwrap();
    for promoted in &wide.routes[0].promoted {
        let report = warehouse.backfill_promoted("records", &promoted.column).await.unwrap();
        assert_eq!((report.filled, report.absent, report.refused, report.too_recent), (3, 0, 0, 1), "{report:?}");
    }
    let names: Vec<&str> = wide.routes[0].promoted.iter().map(|c| c.column.as_str()).collect();
    let read = |tenant: &'static str| {
        let warehouse = warehouse.clone();
        let sql = format!(
            "SELECT doc_id, {} FROM `{}.{}.records` WHERE tenant = @tenant ORDER BY doc_id",
            names.join(", "),
            warehouse.config().project,
            warehouse.config().dataset
        );
        async move { warehouse.query_json(&sql, &[("tenant", QueryParam::String(tenant.into()))]).await.unwrap() }
    };
    let (old, new) = (read("old").await, read("new").await);
    assert_eq!(old[0], new[0], "backfilled a (stored twice) equals the new row");
    assert_eq!(old[1], new[0], "the copy too");
    assert_eq!(old[2], new[1], "backfilled b equals the new row");
    assert_eq!(new[0]["n"], serde_json::json!(9_007_199_254_740_993i64), "{new:?}");
    let recent = read("recent").await;
    assert_eq!(recent[0]["account"], serde_json::Value::Null, "too recent for DML: untouched");
}
