//! The warehouse contract: append-only rows, the latest view's winner rule, harmless
//! redelivery, and the all-or-nothing append rebuilds depend on.
//!
//! Every case uses [`MirrorConfig::default`] (table `records`, documents at
//! `orgs/{tenant}/records/{doc}`).

use std::future::Future;
use std::sync::Arc;

use converge_core::value::fields_from_json;
use converge_core::{
    ChangeRow, CompactionPlan, DocState, Document, ErrorKind, MirrorConfig, Op, RefreshFrom, RowContext, RunOutcome, RunRecord, StoreError, Timestamp,
    Warehouse,
};
use futures::StreamExt;

use crate::case;

const TABLE: &str = "records";

/// Runs every warehouse case, each on a fresh, empty warehouse from `fresh` (on which
/// the suite itself calls `ensure_tables`).
pub async fn warehouse_contract<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Warehouse>>,
{
    let config = MirrorConfig::default();
    let setup = || async {
        let warehouse = fresh().await;
        warehouse.ensure_tables(&config).await.expect("ensure_tables on a fresh warehouse");
        warehouse
    };
    let suite = "warehouse";

    case(suite, "ensure_tables is idempotent and starts empty", async {
        let warehouse = setup().await;
        warehouse.ensure_tables(&config).await.expect("second ensure_tables");
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 0);
        assert!(latest(&*warehouse, "acme").await.is_empty());
    })
    .await;

    case(suite, "check_tables names what setup has not made, and passes once it has", async {
        let warehouse = fresh().await;
        let before = warehouse.check_tables(&config).await.expect_err("a fresh warehouse is not set up");
        assert_eq!(before.kind, ErrorKind::NotFound, "{before}");
        warehouse.ensure_tables(&config).await.expect("ensure_tables");
        warehouse.check_tables(&config).await.expect("the layout ensure_tables made passes the check");
        // A route added to the configuration without running setup again.
        let mut wider = config.clone();
        wider.routes.extend(MirrorConfig::from_toml("[[route]]\npattern = \"orgs/{tenant}/orders/{doc}\"\ntable = \"orders\"\n").unwrap().routes);
        let error = warehouse.check_tables(&wider).await.expect_err("the new route's table is missing");
        assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
        assert!(error.message.contains("`orders`") && error.message.contains("`orders_latest`"), "names the table and its view: {error}");
        assert!(!error.message.contains("`records`"), "names only what is missing: {error}");
        // The check took the configuration it passed for: rows append and read back.
        warehouse.check_tables(&config).await.unwrap();
        warehouse.append(vec![live("acme", "a", 10, 1.0, "a-c")]).await.unwrap();
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 1);
    })
    .await;

    case(suite, "a promoted column added to the configuration is added at setup and carried by new rows; removed or retyped, refused", async {
        let warehouse = setup().await;
        let old = [live("acme", "a", 10, 1.0, "a-c"), tombstone("acme", "t", 12, "t-d")];
        warehouse.append(old.to_vec()).await.unwrap();
        // One more promoted column: `note`, from the documents' field of that name.
        let with_note = |column_type| {
            let mut wider = config.clone();
            wider.routes[0].promoted.push(converge_core::PromotedColumn { column: "note".into(), field: "note".into(), column_type });
            wider
        };
        let wider = with_note(converge_core::ColumnType::String);
        let before = warehouse.check_tables(&wider).await.expect_err("the new column is not in the tables yet");
        assert_eq!(before.kind, ErrorKind::NotFound, "{before}");
        warehouse.ensure_tables(&wider).await.expect("setup adds the column");
        warehouse.check_tables(&wider).await.expect("the widened layout passes the check");
        let routed = wider.route("orgs/acme/records/b").unwrap();
        let new = ChangeRow::live(&routed, Op::Update, &doc("acme", "b", 20, 2.0), "b-c", &ctx()).unwrap();
        assert_eq!(new.promoted.last(), Some(&Some(converge_core::PromotedValue::String("b ✓".into()))));
        warehouse.append(vec![new.clone()]).await.unwrap();
        assert_eq!(latest(&*warehouse, "acme").await, vec![state(&old[0]), state(&new)]);
        assert_eq!(as_of(&*warehouse, 15).await.expect("as of before the new row"), vec![state(&old[0])]);
        warehouse.refresh_current(TABLE, RefreshFrom::Full).await.expect("refresh");
        assert_eq!(current(&*warehouse, "acme").await, latest(&*warehouse, "acme").await);

        // Removed from the configuration: refused at start, by setup and by the check.
        for refused in [warehouse.ensure_tables(&config).await, warehouse.check_tables(&config).await] {
            let refused = refused.expect_err("a promoted column removed from the configuration");
            assert_eq!(refused.kind, ErrorKind::Permanent, "{refused}");
            assert!(refused.message.contains("`records.note`") && refused.message.contains("no longer promoted"), "{refused}");
            assert!(refused.message.contains("put it back") && refused.message.contains("drop the column"), "says what to do: {refused}");
        }
        // Retyped: refused the same way.
        for refused in [warehouse.ensure_tables(&with_note(converge_core::ColumnType::Int64)).await, warehouse.check_tables(&with_note(converge_core::ColumnType::Int64)).await] {
            let refused = refused.expect_err("a retyped promoted column");
            assert_eq!(refused.kind, ErrorKind::Permanent, "{refused}");
            assert!(refused.message.contains("configured as int64") && refused.message.contains("type = \"string\""), "{refused}");
        }
        // Nothing was changed by the refusals: the widened configuration still runs.
        warehouse.check_tables(&wider).await.expect("still set up for the widened configuration");
        warehouse.append(vec![ChangeRow::live(&routed, Op::Update, &doc("acme", "b", 30, 3.0), "b-u", &ctx()).unwrap()]).await.unwrap();
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 2);
    })
    .await;

    case(suite, "the latest view shows each document's highest version", async {
        let warehouse = setup().await;
        let rows = vec![live("acme", "a", 10, 1.0, "a-c"), live("acme", "a", 20, 2.0, "a-u"), live("acme", "b", 15, 3.0, "b-c")];
        let receipt = warehouse.append(rows.clone()).await.unwrap();
        assert_eq!(receipt.written, 3);
        assert_eq!(latest(&*warehouse, "acme").await, vec![state(&rows[1]), state(&rows[2])]);
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 2);
    })
    .await;

    case(suite, "a delete delivered before its create still wins", async {
        let warehouse = setup().await;
        warehouse.append(vec![tombstone("acme", "a", 30, "a-d")]).await.unwrap();
        warehouse.append(vec![live("acme", "a", 10, 1.0, "a-c")]).await.unwrap();
        warehouse.append(vec![live("acme", "a", 20, 2.0, "a-u")]).await.unwrap();
        assert!(latest(&*warehouse, "acme").await.is_empty());
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 0);
    })
    .await;

    case(suite, "a delete beats a write at the same version", async {
        let warehouse = setup().await;
        warehouse.append(vec![tombstone("acme", "a", 20, "a-d"), live("acme", "a", 20, 2.0, "a-u")]).await.unwrap();
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 0);
    })
    .await;

    case(suite, "a later write after a delete brings the document back", async {
        let warehouse = setup().await;
        let recreated = live("acme", "a", 40, 4.0, "a-c2");
        warehouse.append(vec![live("acme", "a", 10, 1.0, "a-c"), tombstone("acme", "a", 30, "a-d"), recreated.clone()]).await.unwrap();
        assert_eq!(latest(&*warehouse, "acme").await, vec![state(&recreated)]);
    })
    .await;

    case(suite, "redelivered rows change no view", async {
        let warehouse = setup().await;
        let rows = vec![live("acme", "a", 10, 1.0, "a-c"), live("acme", "a", 20, 2.0, "a-u"), live("acme", "b", 15, 3.0, "b-c")];
        warehouse.append(rows.clone()).await.unwrap();
        let before = latest(&*warehouse, "acme").await;
        // Again in separate appends, and twice within one append.
        warehouse.append(vec![rows[1].clone()]).await.unwrap();
        let mut doubled = rows.clone();
        doubled.extend(rows.clone());
        let receipt = warehouse.append(doubled).await.unwrap();
        assert!(receipt.written + receipt.duplicates == 6, "every row is either written or counted as a duplicate: {receipt:?}");
        assert_eq!(latest(&*warehouse, "acme").await, before);
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 2);
    })
    .await;

    case(suite, "tenants are separate", async {
        let warehouse = setup().await;
        warehouse
            .append(vec![live("acme", "a", 10, 1.0, "acme-a"), live("globex", "a", 10, 1.0, "globex-a"), live("globex", "b", 10, 1.0, "globex-b")])
            .await
            .unwrap();
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 1);
        assert_eq!(warehouse.latest_count(TABLE, "globex").await.unwrap(), 2);
        assert_eq!(warehouse.latest_count(TABLE, "initech").await.unwrap(), 0);
        let globex = latest(&*warehouse, "globex").await;
        assert!(globex.iter().all(|s| s.doc_path.starts_with("orgs/globex/")), "{globex:?}");
    })
    .await;

    case(suite, "a tenant id is data, never SQL", async {
        let warehouse = setup().await;
        warehouse.append(vec![live("acme", "a", 10, 1.0, "a-c")]).await.unwrap();
        for hostile in ["acme' OR '1'='1", "acme\"; DROP TABLE records; --", "%", "acme\\"] {
            assert_eq!(warehouse.latest_count(TABLE, hostile).await.unwrap(), 0, "tenant {hostile:?}");
            assert!(latest(&*warehouse, hostile).await.is_empty(), "tenant {hostile:?}");
        }
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 1);
    })
    .await;

    case(suite, "tenants lists every tenant with rows, deleted ones too", async {
        let warehouse = setup().await;
        assert!(warehouse.tenants(TABLE).await.unwrap().is_empty());
        warehouse
            .append(vec![live("globex", "a", 10, 1.0, "g-a"), live("acme", "a", 10, 1.0, "a-a"), tombstone("initech", "x", 10, "i-x")])
            .await
            .unwrap();
        assert_eq!(warehouse.tenants(TABLE).await.unwrap(), vec!["acme", "globex", "initech"]);
    })
    .await;

    case(suite, "run records read back newest first, one per batch id", async {
        let warehouse = setup().await;
        let run = |batch: &str, finished: i64, outcome: RunOutcome| RunRecord {
            batch_id: batch.into(),
            kind: "reconcile".into(),
            scope: "acme".into(),
            started_at: Timestamp::new(finished - 5, 250_000),
            finished_at: Timestamp::new(finished, 500_000),
            outcome,
            report: serde_json::json!({"missing": 3, "silent": 1, "tenants": ["acme"]}),
            code_version: "contract".into(),
        };
        warehouse.record_run(run("b1", 1_700_000_100, RunOutcome::Partial)).await.unwrap();
        warehouse.record_run(run("b2", 1_700_000_200, RunOutcome::Ok)).await.unwrap();
        // The same batch recorded again (a re-run): read back once, as last recorded.
        warehouse.record_run(run("b1", 1_700_000_300, RunOutcome::Ok)).await.unwrap();
        let mut other = run("e1", 1_700_000_400, RunOutcome::Ok);
        other.kind = "etl".into();
        warehouse.record_run(other).await.unwrap();
        let runs = warehouse.runs("reconcile", 10).await.unwrap();
        assert_eq!(runs, vec![run("b1", 1_700_000_300, RunOutcome::Ok), run("b2", 1_700_000_200, RunOutcome::Ok)]);
        assert_eq!(warehouse.runs("reconcile", 1).await.unwrap().len(), 1);
        // Every outcome is stored under its name and read back as itself.
        for (i, outcome) in RunOutcome::ALL.into_iter().enumerate() {
            let mut record = run(&format!("o{i}"), 1_700_001_000 - i as i64, outcome);
            record.kind = "outcomes".into();
            warehouse.record_run(record).await.unwrap();
        }
        let outcomes: Vec<RunOutcome> = warehouse.runs("outcomes", 10).await.unwrap().into_iter().map(|run| run.outcome).collect();
        assert_eq!(outcomes, RunOutcome::ALL);
    })
    .await;

    case(suite, "an unknown table is refused as not found", async {
        let warehouse = setup().await;
        let error = warehouse.latest_count("records; DROP TABLE records", "acme").await.expect_err("unknown table");
        assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
        let error = warehouse.latest_states("nope", "acme").await.err().expect("unknown table");
        assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
    })
    .await;

    case(suite, "the latest view streams every document in path order", async {
        let warehouse = setup().await;
        let total = 1_500;
        let rows: Vec<ChangeRow> = (0..total).rev().map(|i| live("acme", &format!("r{i:05}"), 10 + i as i64, i as f64, &format!("e{i}"))).collect();
        for chunk in rows.chunks(500) {
            warehouse.append(chunk.to_vec()).await.unwrap();
        }
        let states = latest(&*warehouse, "acme").await;
        assert_eq!(states.len(), total);
        assert!(states.windows(2).all(|w| w[0].doc_path < w[1].doc_path), "ascending path order");
        let mut expected: Vec<DocState> = rows.iter().map(state).collect();
        expected.sort();
        assert_eq!(states, expected);
    })
    .await;

    case(suite, "an atomic append shows all rows at once", async {
        let warehouse = setup().await;
        let rows: Vec<ChangeRow> = (0..3_000).map(|i| rebuilt("acme", &format!("r{i:05}"), 10, "batch-1")).collect();
        let receipt = warehouse.append_atomic(futures::stream::iter(rows.into_iter().map(Ok)).boxed()).await.unwrap();
        assert_eq!(receipt.written + receipt.duplicates, 3_000);
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 3_000);
    })
    .await;

    case(suite, "an atomic append that fails half way leaves nothing visible", async {
        let warehouse = setup().await;
        warehouse.append(vec![live("acme", "kept", 10, 1.0, "kept-c")]).await.unwrap();
        let rows = (0..2_500).map(|i| {
            if i == 2_000 {
                Err(StoreError::retryable("source", "the source scan broke off"))
            } else {
                Ok(rebuilt("acme", &format!("r{i:05}"), 10, "batch-2"))
            }
        });
        let result = warehouse.append_atomic(futures::stream::iter(rows.collect::<Vec<_>>()).boxed()).await;
        assert!(result.is_err(), "the stream's error must fail the append");
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 1, "none of the 2,000 rows before the error is visible");
        // Running it again, whole, converges.
        let rows: Vec<ChangeRow> = (0..2_500).map(|i| rebuilt("acme", &format!("r{i:05}"), 10, "batch-2")).collect();
        warehouse.append_atomic(futures::stream::iter(rows.clone().into_iter().map(Ok)).boxed()).await.unwrap();
        warehouse.append_atomic(futures::stream::iter(rows.into_iter().map(Ok)).boxed()).await.unwrap();
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 2_501);
    })
    .await;

    case(suite, "a rebuild's older copy never overwrites a newer live write", async {
        let warehouse = setup().await;
        let newer = live("acme", "a", 50, 5.0, "a-u");
        warehouse.append(vec![newer.clone()]).await.unwrap();
        let older = rebuilt("acme", "a", 40, "batch-3");
        warehouse.append_atomic(futures::stream::iter(vec![Ok(older)]).boxed()).await.unwrap();
        assert_eq!(latest(&*warehouse, "acme").await, vec![state(&newer)]);
    })
    .await;

    case(suite, "the current table follows the changelog by the ordering rule, refresh after refresh", async {
        let warehouse = setup().await;
        let refresh = |from| {
            let warehouse = warehouse.clone();
            async move { warehouse.refresh_current(TABLE, from).await.expect("refresh_current") }
        };
        let first = refresh(RefreshFrom::Watermark).await;
        assert!(first.full && first.current_rows == 0, "no watermark yet: a full refresh of nothing: {first:?}");
        let a2 = live("acme", "a", 20, 2.0, "a-u");
        warehouse.append(vec![live("acme", "a", 10, 1.0, "a-c"), a2.clone(), live("acme", "b", 10, 1.0, "b-c")]).await.unwrap();
        let second = refresh(RefreshFrom::Watermark).await;
        assert_eq!((second.full, second.documents_merged, second.current_rows), (true, 2, 2), "still no watermark: {second:?}");
        // A delete, then a stale event of the deleted document delivered after it: the
        // stale event loses to the delete the tombstone table remembers.
        warehouse.append(vec![tombstone("acme", "b", 30, "b-d")]).await.unwrap();
        refresh(RefreshFrom::Watermark).await;
        warehouse.append(vec![live("acme", "b", 20, 9.0, "b-u-late")]).await.unwrap();
        let fourth = refresh(RefreshFrom::Watermark).await;
        assert_eq!(fourth.current_rows, 1, "{fourth:?}");
        assert_eq!(current(&*warehouse, "acme").await, vec![state(&a2)]);
        assert_eq!(current(&*warehouse, "acme").await, latest(&*warehouse, "acme").await);
        // A rebuild's atomic append stamped long before the watermark still reaches the
        // current table: the append lowers the watermark for the next refresh.
        let mut old = rebuilt("acme", "c", 40, "batch-c");
        old.ingested_at -= 86_400_000_000;
        warehouse.append_atomic(futures::stream::iter(vec![Ok(old)]).boxed()).await.unwrap();
        refresh(RefreshFrom::Watermark).await;
        assert_eq!(current(&*warehouse, "acme").await, latest(&*warehouse, "acme").await);
        assert_eq!(warehouse.latest_count(TABLE, "acme").await.unwrap(), 2);
        let full = refresh(RefreshFrom::Full).await;
        assert_eq!((full.full, full.current_rows), (true, 2), "{full:?}");
        assert_eq!(current(&*warehouse, "acme").await, latest(&*warehouse, "acme").await);
    })
    .await;

    case(suite, "compaction prunes superseded rows and old deletes, never a delete a late event could outrank", async {
        let warehouse = setup().await;
        let a = [live("acme", "a", 10, 1.0, "a1"), live("acme", "a", 20, 2.0, "a2"), live("acme", "a", 30, 3.0, "a3")];
        let b = [live("acme", "b", 10, 1.0, "b1"), tombstone("acme", "b", 20, "b2")];
        let c = [live("acme", "c", 10, 1.0, "c1"), tombstone("acme", "c", 40, "c2")];
        let d = live("acme", "d", 50, 5.0, "d1");
        // Each row ingested a second after its version, as the sync path does (BigQuery
        // scans for rows at or before the horizon only in partitions up to the horizon
        // plus the late-event bound).
        let arrived = |row: &ChangeRow| ChangeRow { ingested_at: row.version + 1_000_000, ..row.clone() };
        warehouse.append(a.iter().chain(&b).chain(&c).chain([&d]).map(arrived).collect()).await.unwrap();
        let latest_before = latest(&*warehouse, "acme").await;
        let as_of_25 = as_of(&*warehouse, 25).await.expect("as of 25 before compaction");
        assert_eq!(as_of_25, vec![state(&a[1]), state(&c[0])]);
        let now = ctx().ingested_at.as_micros() + 86_400_000_000; // a day after the rows arrived
        let plan = |horizon_secs: i64, tombstone_secs: i64| CompactionPlan {
            horizon: Timestamp::new(horizon_secs, 0),
            tombstone_horizon: Timestamp::new(tombstone_secs, 0),
            now: Timestamp::from_micros(now),
        };
        // Horizon 25: a's version 10 and b's create are superseded; b's delete (20) is
        // younger than the late-event bound (15 here), so it stays.
        let first = warehouse.compact(TABLE, plan(25, 15)).await.expect("compact");
        assert_eq!((first.rows_before, first.superseded_pruned, first.tombstones_pruned, first.rows_after), (8, 2, 0, 6), "{first:?}");
        assert_eq!(latest(&*warehouse, "acme").await, latest_before);
        assert_eq!(as_of(&*warehouse, 25).await.expect("as of the horizon"), as_of_25);
        let refused = as_of(&*warehouse, 24).await.expect_err("before the horizon the state is incomplete");
        assert!(refused.message.contains("incomplete"), "{refused}");
        // A late event older than b's kept delete cannot bring b back.
        warehouse.append(vec![ChangeRow { ingested_at: 60_000_000, ..live("acme", "b", 10, 1.0, "b1-late") }]).await.unwrap();
        assert_eq!(latest(&*warehouse, "acme").await, latest_before);
        // Once the delete is past the bound it goes, with the late copy it outranked.
        let second = warehouse.compact(TABLE, plan(25, 25)).await.expect("compact again");
        assert_eq!((second.superseded_pruned, second.tombstones_pruned, second.rows_after), (1, 1, 5), "{second:?}");
        assert_eq!(latest(&*warehouse, "acme").await, latest_before);
        warehouse.refresh_current(TABLE, RefreshFrom::Full).await.expect("refresh after compaction");
        assert_eq!(current(&*warehouse, "acme").await, latest_before);
        assert_eq!(latest_before, vec![state(&a[2]), state(&d)]);
    })
    .await;
}

/// `Warehouse::backfill_promoted` (`converge backfill`): a promoted column added to
/// the configuration, filled in the rows written before it, on a fresh warehouse from
/// `fresh`. DuckDB and BigQuery run it.
pub async fn promoted_backfill_contract<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Warehouse>>,
{
    let config = MirrorConfig::default();
    case("warehouse", "a promoted column added later is backfilled from each older row's data, changing no state", async {
        let warehouse = fresh().await;
        warehouse.ensure_tables(&config).await.unwrap();
        let old = [live("acme", "a", 10, 1.0, "a-c"), tombstone("acme", "t", 12, "t-d")];
        warehouse.append(old.to_vec()).await.unwrap();
        let mut wider = config.clone();
        wider.routes[0].promoted.push(converge_core::PromotedColumn { column: "note".into(), field: "note".into(), column_type: converge_core::ColumnType::String });
        // A second one the documents lack, and a third of the wrong type.
        wider.routes[0].promoted.push(converge_core::PromotedColumn { column: "missing".into(), field: "nope".into(), column_type: converge_core::ColumnType::String });
        wider.routes[0].promoted.push(converge_core::PromotedColumn { column: "label_n".into(), field: "label".into(), column_type: converge_core::ColumnType::Int64 });
        warehouse.ensure_tables(&wider).await.unwrap();
        let routed = wider.route("orgs/acme/records/b").unwrap();
        let new = ChangeRow::live(&routed, Op::Update, &doc("acme", "b", 20, 2.0), "b-c", &ctx()).unwrap_err();
        assert!(new.to_string().contains("label"), "the wrongly typed column refuses new rows: {new}");
        let filled = warehouse.backfill_promoted(TABLE, "note").await.expect("backfill");
        // Old `a` in the changelog; the current tables were never refreshed; the
        // tombstone has no data.
        assert_eq!((filled.filled, filled.absent, filled.refused), (1, 0, 0), "{filled:?}");
        warehouse.refresh_current(TABLE, RefreshFrom::Full).await.expect("refresh");
        let again = warehouse.backfill_promoted(TABLE, "note").await.expect("backfill again");
        assert_eq!((again.filled, again.absent, again.refused), (0, 0, 0), "nothing left, the current table refreshed from filled rows: {again:?}");
        let absent = warehouse.backfill_promoted(TABLE, "missing").await.expect("backfill a field no document has");
        assert_eq!((absent.filled, absent.absent, absent.refused), (0, 2, 0), "the changelog's and the current table's row of `a`: {absent:?}");
        let refused = warehouse.backfill_promoted(TABLE, "label_n").await.expect("backfill a field of another type");
        assert_eq!((refused.filled, refused.refused), (0, 2), "{refused:?}");
        assert!(refused.refused_examples[0].contains("orgs/acme/records/a") && refused.refused_examples[0].contains("expected int64"), "{refused:?}");
        let unknown = warehouse.backfill_promoted(TABLE, "nope").await.expect_err("not a promoted column");
        assert_eq!(unknown.kind, ErrorKind::NotFound, "{unknown}");
        assert_eq!(latest(&*warehouse, "acme").await, vec![state(&old[0])], "no state changed");
    })
    .await;
}

async fn current(warehouse: &dyn Warehouse, tenant: &str) -> Vec<DocState> {
    let scan = warehouse.current_states(TABLE, tenant).await.expect("current_states");
    scan.items.map(|item| item.expect("current state")).collect().await
}

async fn as_of(warehouse: &dyn Warehouse, secs: i64) -> Result<Vec<DocState>, StoreError> {
    let scan = warehouse.as_of_states(TABLE, "acme", Timestamp::new(secs, 0)).await?;
    scan.items.collect::<Vec<_>>().await.into_iter().collect()
}

fn ctx() -> RowContext {
    RowContext { ingested_at: Timestamp::new(1_700_000_000, 0), run_id: "contract".into(), code_version: "contract".into() }
}

fn doc(tenant: &str, id: &str, update_secs: i64, amount: f64) -> Document {
    Document {
        path: format!("orgs/{tenant}/records/{id}"),
        fields: fields_from_json(&serde_json::json!({
            "account": "4000", "fund": "general", "date": {"$timestamp": "2024-03-05T00:00:00Z"},
            "label": "grants", "amount": amount, "note": format!("{id} ✓"),
        }))
        .expect("valid Converge JSON"),
        create_time: Timestamp::new(1, 0),
        update_time: Timestamp::new(update_secs, 0),
    }
}

fn row(doc: &Document, op: Op, event_id: &str) -> ChangeRow {
    let config = MirrorConfig::default();
    let routed = config.route(&doc.path).expect("contract documents match the default route");
    ChangeRow::live(&routed, op, doc, event_id, &ctx()).expect("contract documents fit the promoted columns")
}

fn live(tenant: &str, id: &str, update_secs: i64, amount: f64, event_id: &str) -> ChangeRow {
    row(&doc(tenant, id, update_secs, amount), Op::Update, event_id)
}

/// A rebuild row: its event id is the batch's and the document's, so a re-run repeats it.
fn rebuilt(tenant: &str, id: &str, update_secs: i64, batch: &str) -> ChangeRow {
    row(&doc(tenant, id, update_secs, 1.0), Op::Rebuild, &format!("{batch}:{tenant}:{id}"))
}

fn tombstone(tenant: &str, id: &str, version_secs: i64, event_id: &str) -> ChangeRow {
    let config = MirrorConfig::default();
    let path = format!("orgs/{tenant}/records/{id}");
    let routed = config.route(&path).expect("contract documents match the default route");
    ChangeRow::tombstone(&routed, &path, Op::Delete, Timestamp::new(version_secs, 0).as_micros(), event_id, &ctx())
}

fn state(row: &ChangeRow) -> DocState {
    DocState {
        doc_path: row.doc_path.clone(),
        update_time: row.update_time.unwrap_or(row.version),
        content_hash: row.content_hash.clone().unwrap_or_default(),
        version: row.version,
    }
}

async fn latest(warehouse: &dyn Warehouse, tenant: &str) -> Vec<DocState> {
    let scan = warehouse.latest_states(TABLE, tenant).await.expect("latest_states");
    scan.items.map(|item| item.expect("latest state")).collect().await
}
