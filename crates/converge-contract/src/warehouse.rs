//! The warehouse contract: append-only rows, the latest view's winner rule, harmless
//! redelivery, the all-or-nothing append rebuilds depend on, and what an incremental
//! reconcile reads (states of paths and ranges equal to the latest view's, live counts
//! per range and split points from the current table) and records (verified points).
//!
//! Why this file is ~700 lines: it is one suite ([`warehouse_contract`], with
//! [`promoted_backfill_contract`] beside it), whose cases share the row helpers at the
//! bottom; every backend runs it whole.
//!
//! Every case uses [`MirrorConfig::default`] (table `records`, documents at
//! `orgs/{tenant}/records/{doc}`).

use std::future::Future;
use std::sync::Arc;

use converge_core::value::fields_from_json;
use converge_core::{
    ChangeRow, CompactionPlan, DocState, Document, ErrorKind, MirrorConfig, Op, PathRange, ReconcileMode, RefreshFrom, RowContext, RunOutcome, RunRecord,
    StoreError, Timestamp, VerifiedPoint, Warehouse, WarehouseBytes,
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

    case(suite, "after a refresh the latest states are the current tables' and what came since, by the one rule", async {
        let warehouse = setup().await;
        // Ingested two days before the rest: older than the refresh's overlap, so after
        // the refresh only the current tables stand for these documents.
        let early = |mut row: ChangeRow| {
            row.ingested_at -= 2 * 86_400_000_000;
            row
        };
        let (a1, b2, c1, e1) = (live("acme", "a", 10, 1.0, "a-1"), live("acme", "b", 20, 2.0, "b-2"), live("acme", "c", 10, 1.0, "c-1"), live("acme", "e", 10, 1.0, "e-1"));
        let g1 = live("globex", "a", 10, 1.0, "g-1");
        warehouse
            .append(vec![early(a1.clone()), early(b2.clone()), early(c1.clone()), early(e1), early(tombstone("acme", "e", 20, "e-d")), early(g1.clone())])
            .await
            .unwrap();
        // The watermark a day before the rest.
        let mut f1 = live("acme", "f", 10, 1.0, "f-1");
        f1.ingested_at -= 86_400_000_000;
        warehouse.append(vec![f1.clone()]).await.unwrap();
        warehouse.refresh_current(TABLE, RefreshFrom::Full).await.expect("refresh");
        assert_eq!(latest(&*warehouse, "acme").await, vec![state(&a1), state(&b2), state(&c1), state(&f1)], "right after the refresh");
        let (a3, d3) = (live("acme", "a", 30, 3.0, "a-3"), live("acme", "d", 30, 1.0, "d-3"));
        warehouse
            .append(vec![
                a3.clone(),
                live("acme", "b", 15, 9.0, "b-stale"),  // older than the current row: loses
                tombstone("acme", "c", 30, "c-d"),      // deleted since
                d3.clone(),                             // created since
                live("acme", "e", 15, 9.0, "e-late"),   // a late event of a document deleted before
                tombstone("acme", "f", 5, "f-d-stale"), // a delete older than the live row: loses
            ])
            .await
            .unwrap();
        let expected = vec![state(&a3), state(&b2), state(&d3), state(&f1)];
        assert_eq!(latest(&*warehouse, "acme").await, expected, "what came since the refresh");
        assert_eq!(latest(&*warehouse, "globex").await, vec![state(&g1)], "another tenant's");
        warehouse.refresh_current(TABLE, RefreshFrom::Watermark).await.expect("refresh again");
        assert_eq!(latest(&*warehouse, "acme").await, expected, "after the next refresh");
        assert_eq!(current(&*warehouse, "acme").await, expected);
    })
    .await;

    case(suite, "the latest states of given paths are the latest view's, tombstoned and unknown paths absent", async {
        let warehouse = setup().await;
        let before = warehouse.bytes_processed();
        let rows = incremental_rows();
        warehouse.append(rows.clone()).await.unwrap();
        let everything = latest(&*warehouse, "acme").await;
        let of = |ids: &[&str]| ids.iter().map(|id| format!("orgs/acme/records/{id}")).collect::<Vec<String>>();
        // Out of order, repeated, a deleted one, a recreated one, unknown ones, another
        // tenant's path and a hostile one: the answer is the latest view's states of
        // the live ones, in path order.
        let mut asked = of(&["g", "a", "c", "nope", "a", "e", "b"]);
        asked.extend(["orgs/globex/records/a".to_owned(), "orgs/acme/records/a' OR '1'='1".to_owned()]);
        let states = warehouse.latest_states_of(TABLE, "acme", &asked).await.expect("latest_states_of");
        let expected: Vec<DocState> = everything.iter().filter(|s| asked.contains(&s.doc_path)).cloned().collect();
        assert_eq!(states, expected);
        assert_eq!(paths_of(&states), of(&["a", "b", "e", "g"]), "c is deleted, nope unknown, globex's a another tenant's");
        assert!(warehouse.latest_states_of(TABLE, "acme", &[]).await.unwrap().is_empty());
        assert!(warehouse.latest_states_of(TABLE, "globex", &of(&["a"])).await.unwrap().is_empty(), "acme's path under the tenant globex");
        // More paths than one query of either backend takes, five of them stored and
        // spread over the list: each is found once, in path order.
        let spread: Vec<ChangeRow> = (0..25_000).step_by(5_000).map(|i| live("acme", &format!("p{i:05}"), 10, 1.0, &format!("p{i}"))).collect();
        warehouse.append(spread.clone()).await.unwrap();
        let many: Vec<String> = (0..25_000).map(|i| format!("orgs/acme/records/p{i:05}")).collect();
        let found = warehouse.latest_states_of(TABLE, "acme", &many).await.expect("latest_states_of 25,000 paths");
        assert_eq!(found, spread.iter().map(state).collect::<Vec<_>>());
        let error = warehouse.latest_states_of("nope", "acme", &asked).await.expect_err("unknown table");
        assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
        assert_non_decreasing(before, warehouse.bytes_processed());
    })
    .await;

    case(suite, "the latest states in path ranges are the latest view's in those ranges", async {
        let warehouse = setup().await;
        warehouse.append(incremental_rows()).await.unwrap();
        let everything = latest(&*warehouse, "acme").await;
        let at = |id: &str| Some(format!("orgs/acme/records/{id}"));
        let within = |ranges: &[PathRange]| -> Vec<DocState> { everything.iter().filter(|s| ranges.iter().any(|r| r.contains(&s.doc_path))).cloned().collect() };
        let cases: Vec<Vec<PathRange>> = vec![
            vec![PathRange::all()],
            // An unbounded start, an empty range, a bounded range over a deleted
            // document, an unbounded end.
            vec![PathRange::new(None, at("b")), PathRange::new(at("b"), at("b")), PathRange::new(at("c"), at("f")), PathRange::new(at("g"), None)],
            // Bounds between documents, and past every path of the tenant.
            vec![PathRange::new(at("a0"), at("e0")), PathRange::new(at("zz"), None)],
            vec![],
        ];
        for ranges in cases {
            let scan = warehouse.latest_states_in(TABLE, "acme", &ranges).await.expect("latest_states_in");
            let states: Vec<DocState> = scan.items.map(|item| item.expect("state in range")).collect().await;
            assert_eq!(states, within(&ranges), "ranges {ranges:?}");
        }
        let split = [PathRange::new(None, at("b")), PathRange::new(at("c"), at("f")), PathRange::new(at("g"), None)];
        let scan = warehouse.latest_states_in(TABLE, "acme", &split).await.unwrap();
        let states: Vec<DocState> = scan.items.map(|item| item.unwrap()).collect().await;
        let ids: Vec<Option<String>> = ["a", "e", "g", "h"].into_iter().map(at).collect();
        assert_eq!(paths_of(&states), ids.into_iter().flatten().collect::<Vec<_>>(), "b outside, c, d and f deleted");
        let globex = warehouse.latest_states_in(TABLE, "globex", &[PathRange::all()]).await.unwrap();
        let globex: Vec<DocState> = globex.items.map(|item| item.unwrap()).collect().await;
        assert_eq!(globex, latest(&*warehouse, "globex").await);
        let error = warehouse.latest_states_in("nope", "acme", &[PathRange::all()]).await.err().expect("unknown table");
        assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
    })
    .await;

    case(suite, "live counts per range are the current table's, as of its last refresh", async {
        let warehouse = setup().await;
        warehouse.append(incremental_rows()).await.unwrap();
        warehouse.refresh_current(TABLE, RefreshFrom::Full).await.expect("refresh");
        let at = |id: &str| Some(format!("orgs/acme/records/{id}"));
        // Adjacent ranges covering every path (unbounded at both ends), an empty one
        // at a boundary, and one after every document.
        let ranges = vec![
            PathRange::new(None, at("b")),
            PathRange::new(at("b"), at("d")),
            PathRange::new(at("d"), at("d")),
            PathRange::new(at("d"), at("g")),
            PathRange::new(at("g"), at("x")),
            PathRange::new(at("x"), None),
        ];
        let states = current(&*warehouse, "acme").await;
        let counted = |ranges: &[PathRange]| -> Vec<u64> { ranges.iter().map(|r| states.iter().filter(|s| r.contains(&s.doc_path)).count() as u64).collect() };
        let counts = warehouse.current_range_counts(TABLE, "acme", &ranges).await.expect("current_range_counts");
        assert_eq!(counts, counted(&ranges));
        assert_eq!(counts, vec![1, 1, 0, 1, 2, 0], "a | b (c deleted) | empty | e (f deleted) | g, h | nothing");
        assert_eq!(warehouse.current_range_counts(TABLE, "acme", &[PathRange::all()]).await.unwrap(), vec![states.len() as u64]);
        assert_eq!(warehouse.current_range_counts(TABLE, "globex", &[PathRange::all()]).await.unwrap(), vec![1]);
        assert!(warehouse.current_range_counts(TABLE, "acme", &[]).await.unwrap().is_empty());
        // A document written since the refresh is not counted until the next one.
        warehouse.append(vec![live("acme", "b5", 50, 5.0, "b5-c")]).await.unwrap();
        assert_eq!(warehouse.current_range_counts(TABLE, "acme", &ranges[1..2]).await.unwrap(), vec![1]);
        warehouse.refresh_current(TABLE, RefreshFrom::Watermark).await.expect("refresh again");
        assert_eq!(warehouse.current_range_counts(TABLE, "acme", &ranges[1..2]).await.unwrap(), vec![2]);
        let error = warehouse.current_range_counts("nope", "acme", &ranges).await.expect_err("unknown table");
        assert_eq!(error.kind, ErrorKind::NotFound, "{error}");
    })
    .await;

    case(suite, "split points are ascending, distinct, strictly inside the range, at most parts - 1", async {
        let warehouse = setup().await;
        let rows: Vec<ChangeRow> = (0..40).map(|i| live("acme", &format!("s{i:02}"), 10, 1.0, &format!("s{i}"))).collect();
        warehouse.append(rows).await.unwrap();
        warehouse.refresh_current(TABLE, RefreshFrom::Full).await.expect("refresh");
        let at = |id: &str| Some(format!("orgs/acme/records/{id}"));
        let check = |range: &PathRange, parts: usize, cuts: &[String]| {
            assert!(cuts.len() < parts.max(1), "at most {} cuts for {parts} parts of {range}: {cuts:?}", parts.saturating_sub(1));
            assert!(cuts.windows(2).all(|w| w[0] < w[1]), "ascending and distinct: {cuts:?}");
            for cut in cuts {
                assert!(range.contains(cut) && range.start.as_deref() != Some(cut.as_str()), "{cut} strictly inside {range}");
            }
        };
        for (range, parts) in [
            (PathRange::all(), 4),
            (PathRange::new(at("s10"), at("s30")), 4),
            (PathRange::new(at("s10"), None), 32),
            (PathRange::new(None, at("s05")), 2),
        ] {
            let cuts = warehouse.split_range(TABLE, "acme", &range, parts).await.expect("split_range");
            check(&range, parts, &cuts);
            assert!(!cuts.is_empty(), "{range} holds at least five documents: split in {parts} parts");
            // The parts cover the range: every document of it is in exactly one.
            let pieces = range.split_at(&cuts);
            let counts = warehouse.current_range_counts(TABLE, "acme", &pieces).await.unwrap();
            let whole = warehouse.current_range_counts(TABLE, "acme", std::slice::from_ref(&range)).await.unwrap();
            assert_eq!(counts.iter().sum::<u64>(), whole[0], "{pieces:?}");
        }
        for (range, parts, why) in [
            (PathRange::new(at("s10"), at("s10")), 4, "an empty range"),
            (PathRange::new(at("t"), None), 4, "a range without documents"),
            (PathRange::new(at("s07"), at("s08")), 4, "a range of one document"),
            (PathRange::all(), 1, "one part"),
            (PathRange::all(), 0, "no parts"),
        ] {
            let cuts = warehouse.split_range(TABLE, "acme", &range, parts).await.expect("split_range");
            assert!(cuts.is_empty(), "{why}: {cuts:?}");
        }
        assert!(warehouse.split_range(TABLE, "globex", &PathRange::all(), 4).await.unwrap().is_empty(), "another tenant's documents");
    })
    .await;

    case(suite, "verified points read back, the newest per tenant", async {
        let warehouse = setup().await;
        assert!(warehouse.verified_points(TABLE).await.unwrap().is_empty());
        let point = |tenant: &str, micros: i64, batch: &str, mode: ReconcileMode| VerifiedPoint {
            table: TABLE.into(),
            tenant: tenant.into(),
            read_time: Timestamp::from_micros(micros),
            batch_id: batch.into(),
            mode,
        };
        warehouse
            .record_verified_points(vec![
                point("acme", 1_700_000_100_000_001, "b1", ReconcileMode::Full),
                point("globex", 1_700_000_150_123_456, "b1", ReconcileMode::Full),
            ])
            .await
            .unwrap();
        warehouse.record_verified_points(vec![point("acme", 1_700_000_200_654_321, "b2", ReconcileMode::Incremental)]).await.unwrap();
        // Recorded last but read earlier (a slow run finishing after a faster one):
        // the newer read time stays the point.
        warehouse.record_verified_points(vec![point("acme", 1_700_000_050_000_000, "b3", ReconcileMode::Full)]).await.unwrap();
        // Another table's point is not this table's.
        let mut other = point("initech", 1_700_000_300_000_000, "b4", ReconcileMode::Full);
        other.table = "orders".into();
        warehouse.record_verified_points(vec![other]).await.unwrap();
        warehouse.record_verified_points(vec![]).await.expect("nothing to record");
        assert_eq!(
            warehouse.verified_points(TABLE).await.unwrap(),
            vec![point("acme", 1_700_000_200_654_321, "b2", ReconcileMode::Incremental), point("globex", 1_700_000_150_123_456, "b1", ReconcileMode::Full)]
        );
        // A tenant id is data.
        warehouse.record_verified_points(vec![point("o'brien\\", 1_700_000_400_000_000, "b5", ReconcileMode::Full)]).await.unwrap();
        assert_eq!(warehouse.verified_points(TABLE).await.unwrap().len(), 3);
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

/// acme's documents for the incremental reads: `a` updated, `b`, `c` created then
/// deleted, `d` deleted before its create arrived, `e`, `f` deleted at the same
/// version as a write, `g` deleted then recreated, `h`; and globex's `a`.
fn incremental_rows() -> Vec<ChangeRow> {
    vec![
        live("acme", "a", 10, 1.0, "a-c"),
        live("acme", "a", 20, 2.0, "a-u"),
        live("acme", "b", 10, 1.0, "b-c"),
        live("acme", "c", 10, 1.0, "c-c"),
        tombstone("acme", "c", 20, "c-d"),
        tombstone("acme", "d", 30, "d-d"),
        live("acme", "d", 10, 1.0, "d-c"),
        live("acme", "e", 15, 1.5, "e-c"),
        live("acme", "f", 20, 2.0, "f-u"),
        tombstone("acme", "f", 20, "f-d"),
        tombstone("acme", "g", 20, "g-d"),
        live("acme", "g", 40, 4.0, "g-c2"),
        live("acme", "h", 10, 1.0, "h-c"),
        live("globex", "a", 10, 1.0, "globex-a"),
    ]
}

fn paths_of(states: &[DocState]) -> Vec<String> {
    states.iter().map(|s| s.doc_path.clone()).collect()
}

/// The warehouse's byte counters only grow (what a run's cost takes the difference of).
fn assert_non_decreasing(before: WarehouseBytes, after: WarehouseBytes) {
    assert!(after.processed >= before.processed && after.billed >= before.billed, "bytes_processed went from {before:?} to {after:?}");
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
