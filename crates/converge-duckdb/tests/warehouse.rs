//! The DuckDB warehouse against real DuckDB: appends, the latest view's winner rule,
//! the as-of macro, redelivery, and the ordering property.

use converge_core::value::fields_from_json;
use converge_core::{ChangeRow, Document, DocumentChange, MirrorConfig, RowContext, Timestamp, Warehouse};
use converge_duckdb::DuckWarehouse;
use futures::StreamExt;
use proptest::prelude::*;

fn ctx() -> RowContext {
    RowContext { ingested_at: Timestamp::new(1_700_000_000, 0), run_id: "test-run".into(), code_version: "test".into() }
}

fn doc(path: &str, update_secs: i64, amount: f64) -> Document {
    Document {
        path: path.into(),
        fields: fields_from_json(&serde_json::json!({"amount": amount, "account": "A", "label": "x"})).unwrap(),
        create_time: Timestamp::new(1, 0),
        update_time: Timestamp::new(update_secs, 0),
    }
}

/// The events of one document's life: create at t=10, update at t=20, delete at t=30.
fn lifecycle(path: &str) -> Vec<DocumentChange> {
    let change = |id: &str, time, value, old_value| DocumentChange {
        event_id: id.into(),
        event_type: "google.cloud.firestore.document.v1.written".into(),
        event_time: Timestamp::new(time, 0),
        document: path.into(),
        value,
        old_value,
        update_mask: vec![],
    };
    vec![
        change(&format!("{path}-c"), 10, Some(doc(path, 10, 1.0)), None),
        change(&format!("{path}-u"), 20, Some(doc(path, 20, 2.0)), Some(doc(path, 10, 1.0))),
        // The delete event's own time is coarser than the update it follows.
        change(&format!("{path}-d"), 20, None, Some(doc(path, 20, 2.0))),
    ]
}

fn rows(config: &MirrorConfig, changes: &[DocumentChange]) -> Vec<ChangeRow> {
    changes
        .iter()
        .map(|c| ChangeRow::from_change(&config.route(&c.document).unwrap(), c, &ctx()).unwrap().unwrap())
        .collect()
}

async fn warehouse() -> (DuckWarehouse, MirrorConfig) {
    let config = MirrorConfig::default();
    let warehouse = DuckWarehouse::open_in_memory().unwrap();
    warehouse.ensure_tables(&config).await.unwrap();
    warehouse.ensure_tables(&config).await.unwrap(); // idempotent
    (warehouse, config)
}

async fn latest(warehouse: &DuckWarehouse, tenant: &str) -> Vec<(String, i64, String)> {
    let scan = warehouse.latest_states("records", tenant).await.unwrap();
    scan.items.map(|s| s.unwrap()).map(|s| (s.doc_path, s.version, s.content_hash)).collect().await
}

#[tokio::test]
async fn delete_wins_even_when_delivered_first() {
    let (warehouse, config) = warehouse().await;
    let mut all = rows(&config, &lifecycle("orgs/t/records/a"));
    all.reverse();
    for row in all {
        warehouse.append(vec![row]).await.unwrap();
    }
    assert!(latest(&warehouse, "t").await.is_empty());
    assert_eq!(warehouse.changelog_rows("records").await.unwrap(), 3);
}

#[tokio::test]
async fn redelivery_is_skipped_by_event_id() {
    let (warehouse, config) = warehouse().await;
    let all = rows(&config, &lifecycle("orgs/t/records/a")[..2]);
    let first = warehouse.append(all.clone()).await.unwrap();
    assert_eq!((first.written, first.duplicates), (2, 0));
    let mut twice = all.clone();
    twice.extend(all);
    let again = warehouse.append(twice).await.unwrap();
    assert_eq!((again.written, again.duplicates), (0, 4));
    let state = latest(&warehouse, "t").await;
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].1, 20_000_000);
}

#[tokio::test]
async fn as_of_shows_past_states_and_promoted_columns_are_typed() {
    let (warehouse, config) = warehouse().await;
    warehouse.append(rows(&config, &lifecycle("orgs/t/records/a"))).await.unwrap();
    let at = |secs: i64| format!("SELECT amount, account FROM records_as_of(make_timestamp({}::BIGINT))", secs * 1_000_000);
    assert_eq!(warehouse.query_json(&at(5)).await.unwrap(), Vec::<serde_json::Value>::new());
    assert_eq!(warehouse.query_json(&at(15)).await.unwrap(), vec![serde_json::json!({"amount": 1.0, "account": "A"})]);
    assert_eq!(warehouse.query_json(&at(25)).await.unwrap(), Vec::<serde_json::Value>::new());
    let described = warehouse.query_json("SELECT typeof(amount) AS t FROM records LIMIT 1").await.unwrap();
    assert_eq!(described, vec![serde_json::json!({"t": "DOUBLE"})]);
}

#[tokio::test]
async fn tenants_are_separate_and_unknown_tables_refused() {
    let (warehouse, config) = warehouse().await;
    warehouse.append(rows(&config, &lifecycle("orgs/t1/records/a")[..1])).await.unwrap();
    warehouse.append(rows(&config, &lifecycle("orgs/t2/records/a")[..2])).await.unwrap();
    assert_eq!(warehouse.latest_count("records", "t1").await.unwrap(), 1);
    assert_eq!(warehouse.latest_count("records", "t2").await.unwrap(), 1);
    assert_eq!(warehouse.latest_count("records", "t3").await.unwrap(), 0);
    let err = warehouse.latest_count("records; DROP TABLE records", "t1").await.unwrap_err();
    assert_eq!(err.kind, converge_core::ErrorKind::NotFound);
}

#[tokio::test]
async fn rows_survive_reopening_the_file() {
    let dir = std::env::temp_dir().join(format!("converge-duck-{}", std::process::id()));
    let path = dir.join("w.duckdb");
    let config = MirrorConfig::default();
    {
        let first = DuckWarehouse::open(&path).unwrap();
        first.ensure_tables(&config).await.unwrap();
        first.append(rows(&config, &lifecycle("orgs/t/records/a")[..2])).await.unwrap();
    }
    let again = DuckWarehouse::open(&path).unwrap();
    again.ensure_tables(&config).await.unwrap();
    assert_eq!(again.changelog_rows("records").await.unwrap(), 2);
    assert_eq!(latest(&again, "t").await.len(), 1);
    // A redelivery after the restart is still recognised.
    let receipt = again.append(rows(&config, &lifecycle("orgs/t/records/a")[..2])).await.unwrap();
    assert_eq!((receipt.written, receipt.duplicates), (0, 2));
    assert_eq!(again.changelog_rows("records").await.unwrap(), 2);
    drop(again);
    std::fs::remove_dir_all(dir).unwrap();
}

/// An append is acknowledged once it is in the journal; if DuckDB then refuses it
/// (here its table is renamed away behind the loader's back), the rows stay in the
/// journal, and the next open loads them once DuckDB can take them again.
#[tokio::test]
async fn rows_acknowledged_while_duckdb_refuses_them_are_loaded_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let config = MirrorConfig::default();
    {
        let first = DuckWarehouse::open(&path).unwrap();
        first.ensure_tables(&config).await.unwrap();
        first.append(rows(&config, &lifecycle("orgs/t/records/a")[..1])).await.unwrap();
        first.reader().unwrap().execute_batch("ALTER TABLE records RENAME TO records_away").unwrap();
        let receipt = first.append(rows(&config, &lifecycle("orgs/t/records/b")[..2])).await.unwrap();
        assert_eq!(receipt.written, 2);
        // Dropped while the loader keeps failing: it gives up, the journal keeps the rows.
    }
    assert!(std::fs::metadata(DuckWarehouse::journal_path(&path)).unwrap().len() > 0);
    {
        let raw = duckdb::Connection::open(&path).unwrap();
        raw.execute_batch("ALTER TABLE records_away RENAME TO records").unwrap();
    }
    let again = DuckWarehouse::open(&path).unwrap();
    again.ensure_tables(&config).await.unwrap();
    assert_eq!(again.changelog_rows("records").await.unwrap(), 3);
    assert_eq!(latest(&again, "t").await.len(), 2);
    assert_eq!(std::fs::metadata(DuckWarehouse::journal_path(&path)).unwrap().len(), 0, "loaded, so emptied");
    drop(again);
    // Loaded once, not again at each open.
    let third = DuckWarehouse::open(&path).unwrap();
    third.ensure_tables(&config).await.unwrap();
    assert_eq!(third.changelog_rows("records").await.unwrap(), 3);
}

/// Journaled rows load by column name, whichever configuration wrote them: rows
/// acknowledged under the old configuration (not yet in DuckDB when the process
/// stopped) load after an upgrade that promotes one more column (NULL there), and rows
/// journaled with the new column load into the table it was appended to (last, after
/// the columns added before it).
#[tokio::test]
async fn journaled_rows_load_across_a_promoted_column_added_to_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let old = MirrorConfig::default();
    let mut new = old.clone();
    new.routes[0].promoted.push(converge_core::PromotedColumn { column: "tag".into(), field: "label".into(), column_type: converge_core::ColumnType::String });
    let stuck = |warehouse: &DuckWarehouse| warehouse.reader().unwrap().execute_batch("ALTER TABLE records RENAME TO records_away").unwrap();
    let unstuck = || duckdb::Connection::open(&path).unwrap().execute_batch("ALTER TABLE records_away RENAME TO records").unwrap();
    let tags = |warehouse: &DuckWarehouse| {
        let warehouse = warehouse.clone();
        async move {
            let rows = warehouse.query_json("SELECT doc_path, op, tag FROM records ORDER BY doc_path, op").await.unwrap();
            rows.into_iter().map(|r| format!("{} {} {}", r["doc_path"].as_str().unwrap(), r["op"].as_str().unwrap(), r["tag"])).collect::<Vec<_>>()
        }
    };
    {
        let first = DuckWarehouse::open(&path).unwrap();
        first.ensure_tables(&old).await.unwrap();
        first.append(rows(&old, &lifecycle("orgs/t/records/a")[..1])).await.unwrap();
        stuck(&first);
        assert_eq!(first.append(rows(&old, &lifecycle("orgs/t/records/b")[..2])).await.unwrap().written, 2);
    }
    unstuck();
    {
        // The upgrade: the journal's rows load at open, then setup adds the column.
        let second = DuckWarehouse::open(&path).unwrap();
        second.ensure_tables(&new).await.unwrap();
        assert_eq!(second.changelog_rows("records").await.unwrap(), 3);
        assert_eq!(tags(&second).await, ["orgs/t/records/a CREATE null", "orgs/t/records/b CREATE null", "orgs/t/records/b UPDATE null"]);
        let columns = second.query_json("SELECT column_name FROM duckdb_columns() WHERE table_name = 'records' ORDER BY column_index DESC LIMIT 2").await.unwrap();
        assert_eq!((columns[0]["column_name"].as_str(), columns[1]["column_name"].as_str()), (Some("tag"), Some("content_rank")), "added last");
        second.append(rows(&new, &lifecycle("orgs/t/records/c")[..1])).await.unwrap();
        assert_eq!(tags(&second).await[3], "orgs/t/records/c CREATE \"x\"", "a new row carries the column, by name");
        stuck(&second);
        second.append(rows(&new, &lifecycle("orgs/t/records/d")[..2])).await.unwrap();
    }
    unstuck();
    let third = DuckWarehouse::open(&path).unwrap();
    third.ensure_tables(&new).await.unwrap();
    assert_eq!(third.changelog_rows("records").await.unwrap(), 6);
    assert_eq!(&tags(&third).await[4..], ["orgs/t/records/d CREATE \"x\"", "orgs/t/records/d UPDATE \"x\""]);
    assert_eq!(latest(&third, "t").await.len(), 4);
    let filled = third.backfill_promoted("records", "tag").await.unwrap();
    assert_eq!(filled.filled, 3, "{filled:?}");
    assert!(tags(&third).await.iter().all(|t| t.ends_with("\"x\"")), "{:?}", tags(&third).await);
}

/// The latest-states scan filters the tenant before picking winners; it must pick the
/// same winners as the `_latest` view users query, tenant by tenant.
#[tokio::test]
async fn the_latest_states_scan_agrees_with_the_latest_view_for_each_tenant() {
    let (warehouse, config) = warehouse().await;
    let mut changes = Vec::new();
    for tenant in ["t1", "t2"] {
        changes.extend(lifecycle(&format!("orgs/{tenant}/records/gone")));
        changes.extend(lifecycle(&format!("orgs/{tenant}/records/kept"))[..2].to_vec());
        changes.extend(lifecycle(&format!("orgs/{tenant}/records/new"))[..1].to_vec());
    }
    // The same path under another tenant must not leak into t1's winners.
    changes.extend(lifecycle("orgs/t3/records/kept")[..1].to_vec());
    warehouse.append(rows(&config, &changes)).await.unwrap();
    for tenant in ["t1", "t2", "t3", "nobody"] {
        let view = warehouse
            .query_json(&format!(
                "SELECT doc_path, epoch_us(version) AS version, content_hash FROM records_latest WHERE tenant = '{tenant}' ORDER BY doc_path"
            ))
            .await
            .unwrap();
        let view: Vec<(String, i64, String)> = view
            .iter()
            .map(|r| (r["doc_path"].as_str().unwrap().to_owned(), r["version"].as_i64().unwrap(), r["content_hash"].as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(latest(&warehouse, tenant).await, view, "tenant {tenant}");
    }
    let t1: Vec<String> = latest(&warehouse, "t1").await.into_iter().map(|s| s.0).collect();
    assert_eq!(t1, ["orgs/t1/records/kept", "orgs/t1/records/new"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any permutation of a document's events, with any duplicates, in any batching,
    /// gives the same latest view.
    #[test]
    fn latest_view_is_independent_of_delivery(
        order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(),
        duplicates in proptest::collection::vec(0..6usize, 0..6),
        batch in 1..4usize,
        stop_after in 1..=3usize,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (warehouse, config) = warehouse().await;
            // Two documents; for the first only a prefix of its life happened.
            let mut changes = lifecycle("orgs/t/records/a")[..stop_after].to_vec();
            changes.extend(lifecycle("orgs/t/records/b"));
            let all = rows(&config, &changes);
            let expected = {
                let reference = DuckWarehouse::open_in_memory().unwrap();
                reference.ensure_tables(&config).await.unwrap();
                reference.append(all.clone()).await.unwrap();
                latest(&reference, "t").await
            };
            let mut delivery: Vec<ChangeRow> = order.iter().filter(|i| **i < all.len()).map(|i| all[*i].clone()).collect();
            delivery.extend(duplicates.iter().filter(|i| **i < all.len()).map(|i| all[*i].clone()));
            for chunk in delivery.chunks(batch) {
                warehouse.append(chunk.to_vec()).await.unwrap();
            }
            let got = latest(&warehouse, "t").await;
            prop_assert_eq!(&got, &expected);
            // And it agrees with the core's winner rule.
            let expected_live = match stop_after { 3 => 0, _ => 1 };
            prop_assert_eq!(got.len(), expected_live);
            Ok(())
        })?;
    }
}

/// A refresh from the watermark that replaces more documents than one part holds
/// (`REFRESH_PART`, 2,500) commits them part by part: afterwards the current table is
/// exactly the latest view, each document once, the stale event and the deletes
/// included, and a second refresh changes nothing.
#[tokio::test]
async fn a_refresh_of_many_documents_in_parts_equals_the_latest_view() {
    let (warehouse, config) = warehouse().await;
    let row = |i: usize, version_secs: i64, amount: f64, ingested_secs: i64| {
        let path = format!("orgs/acme/records/d{i:05}");
        let mut ctx = ctx();
        ctx.ingested_at = Timestamp::new(ingested_secs, 0);
        let routed = config.route(&path).unwrap();
        ChangeRow::live(&routed, converge_core::Op::Update, &doc(&path, version_secs, amount), &format!("e-{i}-{version_secs}"), &ctx).unwrap()
    };
    warehouse.append((0..6_000).map(|i| row(i, 10, 1.0, 1_700_000_000)).collect()).await.unwrap();
    warehouse.refresh_current("records", converge_core::RefreshFrom::Full).await.unwrap();
    // A day later: 5,400 documents updated, one stale event, 300 deletes.
    let later = 1_700_086_400;
    let mut rows: Vec<ChangeRow> = (0..5_400).map(|i| row(i, 20, 2.0, later)).collect();
    rows.push(row(5_999, 5, 9.0, later));
    for i in 5_400..5_700 {
        let path = format!("orgs/acme/records/d{i:05}");
        let mut ctx = ctx();
        ctx.ingested_at = Timestamp::new(later, 0);
        rows.push(ChangeRow::tombstone(&config.route(&path).unwrap(), &path, converge_core::Op::Delete, Timestamp::new(30, 0).as_micros(), &format!("d-{i}"), &ctx));
    }
    warehouse.append(rows).await.unwrap();
    let refresh = warehouse.refresh_current("records", converge_core::RefreshFrom::Watermark).await.unwrap();
    assert!(!refresh.full && refresh.documents_merged >= 5_700, "{refresh:?}");
    let current: Vec<(String, i64, String)> = warehouse
        .current_states("records", "acme")
        .await
        .unwrap()
        .items
        .map(|s| s.unwrap())
        .map(|s| (s.doc_path, s.version, s.content_hash))
        .collect()
        .await;
    assert_eq!(current.len(), 5_700);
    assert_eq!(current, latest(&warehouse, "acme").await);
    let again = warehouse.refresh_current("records", converge_core::RefreshFrom::Watermark).await.unwrap();
    assert_eq!(again.documents_merged, 0, "{again:?}");
}

/// A refresh in many parts, each committed and checkpointed, over a table whose rows a
/// checkpoint renumbers: DuckDB vacuums deleted rows at a checkpoint, so the row ids a
/// refresh found before one part are not the rows' ids in the next. Every document
/// replaced keeps exactly one row (current or tombstone), as the latest view says.
#[tokio::test]
async fn a_refresh_in_parts_survives_the_vacuum() {
    let (warehouse, config) = warehouse().await;
    let row = |i: usize, version_secs: i64, ingested_secs: i64| {
        let path = format!("orgs/acme/records/v{i:06}");
        let mut ctx = ctx();
        ctx.ingested_at = Timestamp::new(ingested_secs, 0);
        ChangeRow::live(&config.route(&path).unwrap(), converge_core::Op::Update, &doc(&path, version_secs, version_secs as f64), &format!("e-{i}-{version_secs}"), &ctx).unwrap()
    };
    // More than a row group of documents (DuckDB's row groups hold 122,880 rows).
    const N: usize = 125_000;
    warehouse.append((0..N).map(|i| row(i, 10, 1_700_000_000)).collect()).await.unwrap();
    warehouse.refresh_current("records", converge_core::RefreshFrom::Full).await.unwrap();
    // Every document of the first row group updated, and every tenth of the rest: the
    // first parts' deletes empty that row group, which the checkpoint then drops.
    let later = 1_700_086_400;
    let rows: Vec<ChangeRow> = (0..N).filter(|&i| i < 123_000 || i % 10 == 0).map(|i| row(i, 20, later)).collect();
    let touched = rows.len();
    warehouse.append(rows).await.unwrap();
    let refresh = warehouse.refresh_current("records", converge_core::RefreshFrom::Watermark).await.unwrap();
    assert_eq!(refresh.documents_merged as usize, touched, "{refresh:?}");
    let current: Vec<(String, i64)> =
        warehouse.current_states("records", "acme").await.unwrap().items.map(|s| s.unwrap()).map(|s| (s.doc_path, s.version)).collect().await;
    assert_eq!(current.len(), N, "one row per document");
    let expected: Vec<(String, i64)> = latest(&warehouse, "acme").await.into_iter().map(|(path, version, _)| (path, version)).collect();
    assert_eq!(current, expected);
    assert_bucket_counts_exact(&warehouse, "acme").await;
}

/// The live counts kept per bucket (`converge_duckdb`'s `buckets`) answer exactly what a
/// scan of the current table answers, after every kind of refresh: ids arriving in no
/// order, updates, deletes, revivals, stale and repeated events, ids that only grow (they
/// pile into the last bucket, which is split), more documents than one refresh part,
/// and a tenant first seen after the full refresh. Ranges on the cut points are
/// answered from the buckets (the bytes counted are the buckets', not the table's).
#[tokio::test]
async fn bucket_counts_equal_a_scan_after_every_refresh() {
    use converge_core::{Op, RefreshFrom};
    let (warehouse, config) = warehouse().await;
    let mut clock = 1_700_000_000i64;
    let live = |tenant: &str, id: &str, version_secs: i64, ingested: i64| {
        let path = format!("orgs/{tenant}/records/{id}");
        let mut ctx = ctx();
        ctx.ingested_at = Timestamp::new(ingested, 0);
        ChangeRow::live(&config.route(&path).unwrap(), Op::Update, &doc(&path, version_secs, version_secs as f64), &format!("e-{path}-{version_secs}"), &ctx).unwrap()
    };
    let gone = |tenant: &str, id: &str, version_secs: i64, ingested: i64| {
        let path = format!("orgs/{tenant}/records/{id}");
        let mut ctx = ctx();
        ctx.ingested_at = Timestamp::new(ingested, 0);
        ChangeRow::tombstone(&config.route(&path).unwrap(), &path, Op::Delete, Timestamp::new(version_secs, 0).as_micros(), &format!("d-{path}-{version_secs}"), &ctx)
    };
    // Ids in a scrambled order (7919 is prime to 3,000).
    let id = |i: u64| format!("k{:05}", (i * 7919) % 3_000);
    warehouse.append((0..3_000).map(|i| live("acme", &id(i), 10, clock)).collect()).await.unwrap();
    warehouse.append((0..40).map(|i| live("globex", &format!("g{i:03}"), 10, clock)).collect()).await.unwrap();
    warehouse.refresh_current("records", RefreshFrom::Full).await.unwrap();
    assert_bucket_counts_exact(&warehouse, "acme").await;
    assert_bucket_counts_exact(&warehouse, "globex").await;

    // Round 1: 2,800 updates (more than a refresh part), 300 deletes, a stale event, a
    // repeated one, 400 new ids past every other (all into the last bucket).
    clock += 3_600;
    let mut rows: Vec<ChangeRow> = (0..2_800).map(|i| live("acme", &id(i), 20, clock)).collect();
    rows.extend((2_800..2_900).map(|i| gone("acme", &id(i), 20, clock)));
    rows.extend((0..200).map(|i| gone("acme", &id(i), 30, clock)));
    rows.push(live("acme", &id(2_950), 5, clock));
    rows.push(live("acme", &id(2_960), 10, clock));
    rows.extend((0..400).map(|i| live("acme", &format!("z{i:05}"), 20, clock)));
    warehouse.append(rows).await.unwrap();
    warehouse.refresh_current("records", RefreshFrom::Watermark).await.unwrap();
    assert_bucket_counts_exact(&warehouse, "acme").await;

    // Round 2: revivals, deletes of created ones, a tenant the full refresh never saw.
    clock += 3_600;
    let mut rows: Vec<ChangeRow> = (0..150).map(|i| live("acme", &id(i), 40, clock)).collect();
    rows.extend((0..100).map(|i| gone("acme", &format!("z{i:05}"), 40, clock)));
    rows.extend((0..90).map(|i| live("initech", &format!("n{i:03}"), 10, clock)));
    warehouse.append(rows).await.unwrap();
    warehouse.refresh_current("records", RefreshFrom::Watermark).await.unwrap();
    for tenant in ["acme", "globex", "initech"] {
        assert_bucket_counts_exact(&warehouse, tenant).await;
    }
    // Nothing new: a refresh changes no count.
    warehouse.refresh_current("records", RefreshFrom::Watermark).await.unwrap();
    assert_bucket_counts_exact(&warehouse, "acme").await;
}

/// Cuts the tenant as an incremental run does, and into every bucket, and compares the
/// counts on those cuts with the current table's rows counted here; checks no bucket is
/// overfull and that the counts came from the buckets (a range off the cut points is
/// scanned: far more bytes).
async fn assert_bucket_counts_exact(warehouse: &DuckWarehouse, tenant: &str) {
    use converge_core::incremental::{BUCKET_DOCUMENTS, MAX_BUCKETS};
    use converge_core::PathRange;
    let states: Vec<String> = warehouse.current_states("records", tenant).await.unwrap().items.map(|s| s.unwrap().doc_path).collect().await;
    assert!(states.windows(2).all(|w| w[0] < w[1]), "{tenant}: one row per document, in path order");
    let as_a_run_cuts = (states.len() as u64 / BUCKET_DOCUMENTS).clamp(1, MAX_BUCKETS) as usize;
    let mut from_buckets = 0;
    for parts in [as_a_run_cuts, MAX_BUCKETS as usize] {
        let cuts = warehouse.split_range("records", tenant, &PathRange::all(), parts).await.unwrap();
        assert!(cuts.len() + 1 >= (states.len() as u64 / (4 * BUCKET_DOCUMENTS)) as usize, "{tenant}: {} cuts for {} documents", cuts.len(), states.len());
        let ranges = PathRange::all().split_at(&cuts);
        let before = warehouse.bytes_processed().processed;
        let counts = warehouse.current_range_counts("records", tenant, &ranges).await.unwrap();
        from_buckets = warehouse.bytes_processed().processed - before;
        // The paths are in order: a range's count is the distance between its bounds.
        let at = |bound: &Option<String>, open: usize| bound.as_ref().map_or(open, |b| states.partition_point(|p| p < b));
        let expected: Vec<u64> = ranges.iter().map(|r| at(&r.end, states.len()).saturating_sub(at(&r.start, 0)) as u64).collect();
        assert_eq!(counts, expected, "{tenant}: counts on {} cuts", cuts.len());
        if parts == MAX_BUCKETS as usize {
            assert!(counts.iter().all(|&n| n <= 4 * BUCKET_DOCUMENTS), "{tenant}: a bucket past 4 × {BUCKET_DOCUMENTS}: {:?}", counts.iter().max());
        }
    }
    // The same tenant in ranges off the cut points: a scan, counted as one.
    let off = PathRange::all().split_at(&[format!("orgs/{tenant}/records/m")]);
    let before = warehouse.bytes_processed().processed;
    let scanned = warehouse.current_range_counts("records", tenant, &off).await.unwrap();
    let from_scan = warehouse.bytes_processed().processed - before;
    assert_eq!(scanned.iter().sum::<u64>(), states.len() as u64);
    assert!(from_buckets * 4 < from_scan, "{tenant}: the buckets' {from_buckets} bytes vs a scan's {from_scan}");
}
