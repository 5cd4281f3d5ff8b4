//! The convergence property: whatever rows a warehouse holds, one reconcile run makes
//! its latest view equal to the source, a second run finds nothing, and redelivering
//! any of the old rows changes nothing. The current table, refreshed incrementally at
//! arbitrary points, equals the latest view after every refresh; compaction at any
//! horizon keeps the latest view and every as-of state at or after the horizon. And before any repair, the warehouse's latest
//! view is exactly what the core's ordering rule ([`converge_core::RowOrder`]) picks:
//! the rule in Rust is the oracle each warehouse's view SQL is checked against.
//!
//! Each case builds a source history in a real source store (writes and deletes at
//! commit times from a [`ManualClock`]), the genuine event rows of that history, and
//! then an arbitrary warehouse state from them: events dropped, duplicated and
//! shuffled, plus wrong rows of every kind a bug, a stale code version or a wrong clock
//! leaves behind — wrong content at a genuine version, ties, tombstones later than the
//! last write, orphan tombstones from a wrong source scan, stale repairs, rows for
//! documents the source never had. Cases come from a seeded generator, so a failure
//! names the seed that reproduces it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use converge_core::change::{source_read_event_id, winner};
use converge_core::hash::content_hash;
use converge_core::value::fields_from_json;
use converge_core::{
    ChangeRow, Clock, CompactionPlan, DocState, DocWrite, DocumentChange, ErrorLog, ManualClock, MirrorConfig, Op, RefreshFrom, RowContext,
    SourceStore, Timestamp, Warehouse,
};
use converge_reconcile::{OrphanGuard, Reconciler, RunOptions};
use futures::StreamExt;

const TABLE: &str = "records";
const TENANT: &str = "acme";
const T0: i64 = 1_750_000_000_000_000;

/// A fresh source store and its error log, on `clock`.
pub type SourceFactory<'a, Fut> = &'a dyn Fn(Arc<ManualClock>) -> Fut;

/// Runs `cases` cases of the property, each on a fresh warehouse from `fresh_warehouse`
/// and a fresh source store (with its error log) from `fresh_source`.
pub async fn convergence_property<W, WFut, S, SFut>(cases: u64, fresh_warehouse: W, fresh_source: S)
where
    W: Fn() -> WFut,
    WFut: Future<Output = Arc<dyn Warehouse>>,
    S: Fn(Arc<ManualClock>) -> SFut,
    SFut: Future<Output = (Arc<dyn SourceStore>, Arc<dyn ErrorLog>)>,
{
    let seed_base = std::env::var("CONVERGE_PROPERTY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    for case in 0..cases {
        let seed = seed_base.wrapping_add(case);
        eprintln!("convergence property: case {case}, seed {seed} (CONVERGE_PROPERTY_SEED={seed} reproduces it as case 0)");
        let clock = Arc::new(ManualClock::at(Timestamp::from_micros(T0)));
        let (source, errors) = fresh_source(clock.clone()).await;
        let warehouse = fresh_warehouse().await;
        one_case(seed, clock, source, errors, warehouse).await;
    }
}

async fn one_case(seed: u64, clock: Arc<ManualClock>, source: Arc<dyn SourceStore>, errors: Arc<dyn ErrorLog>, warehouse: Arc<dyn Warehouse>) {
    let mut rng = SplitMix(seed);
    let config = MirrorConfig::default();
    warehouse.ensure_tables(&config).await.expect("ensure_tables");
    let ctx = RowContext { ingested_at: clock.now(), run_id: "history".into(), code_version: converge_core::CODE_VERSION.into() };

    // 1. A source history and its genuine event rows.
    let docs = 1 + rng.below(6) as usize;
    let path = |i: usize| format!("orgs/{TENANT}/records/d{i}");
    let mut genuine: Vec<ChangeRow> = Vec::new();
    for step in 0..(docs * 3) {
        let i = rng.below(docs as u64) as usize;
        let doc_path = path(i);
        // Commits close together (sometimes at the same clock reading: the store moves
        // on by a microsecond) or far apart.
        clock.advance_micros([0, 1, 700, 1_000_000][rng.below(4) as usize]);
        let old = source.get(&doc_path).await.expect("get");
        let write = if rng.below(4) == 0 {
            DocWrite::Delete { path: doc_path.clone() }
        } else {
            DocWrite::Set { path: doc_path.clone(), fields: fields(&mut rng, step) }
        };
        let deleting = matches!(write, DocWrite::Delete { .. });
        let commit = source.apply(vec![write]).await.expect("apply");
        let new = source.get(&doc_path).await.expect("get");
        if deleting && old.is_none() {
            continue; // deleting a missing document changes nothing and fires nothing
        }
        let change = DocumentChange {
            event_id: format!("ev-{seed}-{step}"),
            event_type: "google.cloud.firestore.document.v1.written".into(),
            event_time: commit,
            document: doc_path.clone(),
            value: new,
            old_value: old,
            update_mask: vec![],
        };
        let routed = config.route(&doc_path).expect("routed");
        if let Some(row) = ChangeRow::from_change(&routed, &change, &ctx).expect("a genuine row") {
            genuine.push(row);
        }
    }
    clock.advance_micros(1_000);
    let history_end = clock.now().as_micros();

    // 2. An arbitrary warehouse state: genuine rows dropped or repeated, wrong rows.
    let mut stored: Vec<ChangeRow> = Vec::new();
    for row in &genuine {
        for _ in 0..rng.below(3) {
            stored.push(row.clone());
        }
    }
    let wrong_count = rng.below(2 * docs as u64 + 2);
    for n in 0..wrong_count {
        let i = rng.below(docs as u64 + 2) as usize; // d{docs} and d{docs+1}: never in the source
        let doc_path = path(i);
        let routed = config.route(&doc_path).expect("routed");
        let of_doc: Vec<&ChangeRow> = genuine.iter().filter(|r| r.doc_path == doc_path).collect();
        // Any instant of the history; often exactly a genuine row's version or the end
        // of the history (where the reconcile may read): ties are where rules 2-4 act.
        let genuine_versions: Vec<i64> = genuine.iter().map(|r| r.version).collect();
        let some_version = |rng: &mut SplitMix| match rng.below(4) {
            0 if !genuine_versions.is_empty() => genuine_versions[rng.below(genuine_versions.len() as u64) as usize],
            1 => history_end,
            _ => T0 + rng.below((history_end - T0) as u64 + 1) as i64,
        };
        let wrong_doc = |rng: &mut SplitMix, version: i64| converge_core::Document {
            path: doc_path.clone(),
            fields: fields(rng, 1_000 + n as usize),
            create_time: Timestamp::from_micros(T0),
            update_time: Timestamp::from_micros(version),
        };
        let id = format!("wrong-{seed}-{n}");
        let row = match rng.below(6) {
            // Wrong content at a genuine version (a corrupt row, or one whose hash an
            // older code version computed): ties with the genuine row on version.
            0 if !of_doc.is_empty() => {
                let base = of_doc[rng.below(of_doc.len() as u64) as usize];
                let mut row = ChangeRow::live(&routed, Op::Update, &wrong_doc(&mut rng, base.update_time.unwrap_or(base.version)), &id, &ctx).unwrap();
                row.version = base.version;
                row.code_version = "0.0.1-older".into();
                row
            }
            // A tombstone later than the last write (a delete the source never had).
            1 => {
                let last = of_doc.iter().map(|r| r.version).max().unwrap_or(T0);
                let version = if rng.below(2) == 0 { history_end } else { last + rng.below((history_end - last) as u64 + 1) as i64 };
                ChangeRow::tombstone(&routed, &doc_path, Op::Delete, version, &id, &ctx)
            }
            // An orphan tombstone written by a reconcile or rebuild whose scan was wrong.
            2 => {
                let op = if rng.below(2) == 0 { Op::Repair } else { Op::Rebuild };
                let read = Timestamp::from_micros(some_version(&mut rng));
                let mut row = ChangeRow::source_read_tombstone(&routed, op, &doc_path, read, &ctx);
                row.event_id = format!("{}-{id}", source_read_event_id(op, &doc_path, read, true));
                row
            }
            // A stale repair: a source read of other content at some earlier instant.
            3 => {
                let read = Timestamp::from_micros(some_version(&mut rng));
                let doc = wrong_doc(&mut rng, read.as_micros().min(T0 + 1));
                let mut row = ChangeRow::source_read(&routed, Op::Repair, &doc, read, &ctx).unwrap();
                row.event_id = format!("{}-{id}", row.event_id);
                row
            }
            // An event row with other content at any instant (a doc the source never
            // had, for d{docs} and up).
            _ => {
                let version = some_version(&mut rng);
                ChangeRow::live(&routed, Op::Create, &wrong_doc(&mut rng, version), &id, &ctx).unwrap()
            }
        };
        stored.push(row);
    }
    rng.shuffle(&mut stored);
    append_in_chunks(&*warehouse, &clock, false, &stored, &mut rng).await;

    // 3. Before any repair, the view is the core's rule over the stored rows, and so is
    // the current table, refreshed incrementally between the appends above.
    let expected = oracle(&stored);
    let shown = latest(&*warehouse).await;
    assert_eq!(shown, expected, "seed {seed}: the latest view disagrees with converge_core::RowOrder over {stored:#?}");
    warehouse.refresh_current(TABLE, RefreshFrom::Watermark).await.expect("refresh the current table");
    assert_eq!(current(&*warehouse).await, expected, "seed {seed}: the current table disagrees with the latest view over {stored:#?}");

    // 4. One reconcile run converges. Half the time the clock has not moved since the
    // history ended: the run reads at the instant of the last commit and of every wrong
    // row dated then, so repairs tie with them on version.
    if rng.below(2) == 0 {
        clock.advance_micros(1_000_000);
    }
    let reconciler = Reconciler::new(source.clone(), errors.clone(), warehouse.clone(), config.clone(), clock.clone());
    // The guard is for production scans; this property states what a run repairs.
    let options = || RunOptions { orphan_guard: Some(OrphanGuard { max_share: 1.0, min_orphans: 0 }), ..RunOptions::default() };
    let first = reconciler.run_with(options()).await.expect("first reconcile run");
    let source_states = source_states(&*source).await;
    assert_eq!(latest_states(&*warehouse).await, source_states, "seed {seed}: not converged after one run ({first:?}); rows {stored:#?}");
    // The run refreshed the current table after its repairs.
    assert_eq!(current(&*warehouse).await, latest(&*warehouse).await, "seed {seed}: the current table missed the repairs ({first:?})");

    // 5. A second run finds nothing.
    clock.advance_micros(1_000_000);
    let second = reconciler.run_with(options()).await.expect("second reconcile run");
    assert_eq!(second.findings(), 0, "seed {seed}: the second run found drift: {second:?}");

    // 6. Redelivering any subset of the old rows changes nothing: the rows stored before
    // the repair, and late deliveries of old events of the documents the source has.
    // (An old create of a document since deleted, delivered late without its delete and
    // with no row of the document ever stored, shows the document until the next run
    // tombstones it: no rule over the rows can know of a delete it never received.)
    let live_paths: Vec<&str> = source_states.iter().map(|(path, _, _)| path.as_str()).collect();
    let again: Vec<ChangeRow> = stored
        .iter()
        .chain(genuine.iter().filter(|row| live_paths.contains(&row.doc_path.as_str())))
        .filter(|_| rng.below(2) == 0)
        .cloned()
        .collect();
    append_in_chunks(&*warehouse, &clock, true, &again, &mut rng).await;
    assert_eq!(latest_states(&*warehouse).await, source_states, "seed {seed}: redelivered rows undid the repair");
    warehouse.refresh_current(TABLE, RefreshFrom::Watermark).await.expect("refresh the current table");
    assert_eq!(current(&*warehouse).await, latest(&*warehouse).await, "seed {seed}: the current table disagrees after repairs and redelivery");

    // 7. Compaction at any instant of the history changes neither the latest view nor
    // any as-of state at or after the horizon, refuses as-of states before it, and the
    // current table refreshed in full still equals the latest view. The plan pretends
    // a day has passed (BigQuery leaves rows appended in the last 90 minutes alone)
    // and every delete is past the late-event bound.
    let horizon = T0 + rng.below((history_end - T0) as u64 + 1) as i64;
    let instants: Vec<i64> = vec![horizon, horizon + (history_end - horizon) / 2, history_end, clock.now().as_micros()];
    let mut before = Vec::new();
    for at in &instants {
        before.push(as_of(&*warehouse, *at).await.expect("as of, before compaction"));
    }
    let latest_before = latest(&*warehouse).await;
    let plan = CompactionPlan {
        horizon: Timestamp::from_micros(horizon),
        tombstone_horizon: Timestamp::from_micros(horizon),
        now: Timestamp::from_micros(clock.now().as_micros() + 86_400_000_000),
    };
    let compaction = warehouse.compact(TABLE, plan).await.expect("compact");
    assert_eq!(compaction.rows_after, compaction.rows_before - compaction.superseded_pruned - compaction.tombstones_pruned);
    for (at, states) in instants.iter().zip(&before) {
        assert_eq!(&as_of(&*warehouse, *at).await.expect("as of, after compaction"), states, "seed {seed}: compaction changed the state as of {at} (horizon {horizon})");
    }
    assert_eq!(latest(&*warehouse).await, latest_before, "seed {seed}: compaction changed the latest view");
    if horizon > T0 {
        let refused = as_of(&*warehouse, horizon - 1).await.expect_err("an as-of state before the horizon is incomplete");
        assert!(refused.message.contains("incomplete"), "seed {seed}: {refused}");
    }
    warehouse.refresh_current(TABLE, RefreshFrom::Full).await.expect("refresh the current table after compaction");
    assert_eq!(current(&*warehouse).await, latest_before, "seed {seed}: the current table disagrees after compaction");
    clock.advance_micros(1_000_000);
    let after = reconciler.run_with(RunOptions { dry_run: true, ..options() }).await.expect("reconcile after compaction");
    assert_eq!(after.findings(), 0, "seed {seed}: the reconciler found drift after compaction: {after:?}");
}

async fn current(warehouse: &dyn Warehouse) -> Vec<DocState> {
    let scan = warehouse.current_states(TABLE, TENANT).await.expect("current_states");
    scan.items.map(|s| s.expect("a state")).collect().await
}

/// The tenant's states as of `at`, or the warehouse's error.
async fn as_of(warehouse: &dyn Warehouse, at: i64) -> Result<Vec<DocState>, converge_core::StoreError> {
    let scan = warehouse.as_of_states(TABLE, TENANT, Timestamp::from_micros(at)).await?;
    scan.items.collect::<Vec<_>>().await.into_iter().collect()
}

/// The latest states the core's rule picks among `rows`, tombstones hidden, by path.
fn oracle(rows: &[ChangeRow]) -> Vec<DocState> {
    let mut by_path: BTreeMap<&str, Vec<&ChangeRow>> = BTreeMap::new();
    for row in rows {
        by_path.entry(&row.doc_path).or_default().push(row);
    }
    by_path
        .values()
        .filter_map(|rows| winner(rows.iter().copied()))
        .filter(|row| !row.is_deleted)
        .map(|row| DocState {
            doc_path: row.doc_path.clone(),
            update_time: row.update_time.unwrap_or(row.version),
            content_hash: row.content_hash.clone().unwrap_or_default(),
            version: row.version,
        })
        .collect()
}

/// Appends `rows` in chunks of random size, each stamped as ingested when appended;
/// with `spread`, the clock moves on 20 minutes after each chunk (past the refresh
/// overlap, so an incremental refresh between chunks reads only the newer ones).
async fn append_in_chunks(warehouse: &dyn Warehouse, clock: &ManualClock, spread: bool, rows: &[ChangeRow], rng: &mut SplitMix) {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = (1 + rng.below(rest.len() as u64) as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        let ingested_at = clock.now().as_micros();
        warehouse.append(chunk.iter().cloned().map(|row| ChangeRow { ingested_at, ..row }).collect()).await.expect("append");
        if spread {
            clock.advance_micros(20 * 60 * 1_000_000);
        }
        if rng.below(3) == 0 {
            warehouse.refresh_current(TABLE, RefreshFrom::Watermark).await.expect("refresh the current table");
        }
        rest = tail;
    }
}

async fn latest(warehouse: &dyn Warehouse) -> Vec<DocState> {
    let scan = warehouse.latest_states(TABLE, TENANT).await.expect("latest_states");
    scan.items.map(|s| s.expect("a state")).collect().await
}

/// (path, update time, content hash): what source and warehouse must agree on.
async fn latest_states(warehouse: &dyn Warehouse) -> Vec<(String, i64, String)> {
    latest(warehouse).await.into_iter().map(|s| (s.doc_path, s.update_time, s.content_hash)).collect()
}

async fn source_states(source: &dyn SourceStore) -> Vec<(String, i64, String)> {
    let scope = converge_core::SourceScope::collection(&format!("orgs/{TENANT}/records")).expect("a collection path");
    let scan = source.scan_states(&scope).await.expect("scan_states");
    scan.items.map(|s| s.expect("a state")).map(|s| (s.doc_path, s.update_time, s.content_hash)).collect().await
}

fn fields(rng: &mut SplitMix, salt: usize) -> converge_core::Fields {
    let json = serde_json::json!({"amount": rng.below(5) as f64, "label": format!("l{}", rng.below(3)), "note": salt % 2});
    let fields = fields_from_json(&json).expect("fields");
    debug_assert!(!content_hash(&fields).is_empty());
    fields
}

/// A small seeded generator (SplitMix64): deterministic cases without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
