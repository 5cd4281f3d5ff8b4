//! The source store contract: exact values, atomic batches with one commit time,
//! and consistent, ordered, streamed scans, of one collection and of a route's
//! documents of one tenant at any depth; and what an incremental reconcile reads
//! (documents by change field, counts and scans of path ranges).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use converge_core::hash::content_hash;
use converge_core::value::fields_from_json;
use converge_core::{DocState, DocWrite, ErrorKind, Fields, GeoPoint, PathPattern, PathRange, SourceScope, SourceStore, Timestamp, Value};
use futures::StreamExt;

use crate::case;

/// What the suite needs to know about the store under test.
#[derive(Debug, Clone)]
pub struct SourceContract {
    /// The prefix a reference value must carry to be valid in this store: Firestore
    /// only accepts references into its own database
    /// (`projects/P/databases/(default)/documents`).
    pub reference_root: String,
    /// Most writes one `apply` may carry (Firestore commits at most 500).
    pub max_batch: usize,
}

/// Runs every source store case, each on a fresh, empty store from `fresh`.
pub async fn source_store_contract<F, Fut>(contract: SourceContract, fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn SourceStore>>,
{
    let suite = "source store";

    case(suite, "every value type comes back exactly", async {
        let store = fresh().await;
        let fields = every_type(&contract.reference_root);
        let commit = store.apply(vec![set("orgs/acme/records/all", fields.clone())]).await.unwrap();
        let doc = store.get("orgs/acme/records/all").await.unwrap().expect("the document just written");
        assert_eq!(doc.fields, fields);
        assert_eq!(doc.path, "orgs/acme/records/all");
        assert_eq!((doc.create_time, doc.update_time), (commit, commit), "a new document's times are its commit time");
        assert_eq!(store.get("orgs/acme/records/missing").await.unwrap(), None);
    })
    .await;

    case(suite, "an update keeps create_time and moves update_time", async {
        let store = fresh().await;
        let first = store.apply(vec![set("orgs/acme/records/a", json(serde_json::json!({"v": 1})))]).await.unwrap();
        let second = store.apply(vec![set("orgs/acme/records/a", json(serde_json::json!({"v": 2})))]).await.unwrap();
        assert!(second > first, "commit times increase: {first:?} then {second:?}");
        let doc = store.get("orgs/acme/records/a").await.unwrap().unwrap();
        assert_eq!((doc.create_time, doc.update_time), (first, second));
        assert_eq!(doc.fields, json(serde_json::json!({"v": 2})), "a set replaces the whole document");
    })
    .await;

    case(suite, "a batch commits atomically at one time", async {
        let store = fresh().await;
        store.apply(vec![set("orgs/acme/records/old", json(serde_json::json!({"v": 0})))]).await.unwrap();
        let commit = store
            .apply(vec![
                set("orgs/acme/records/a", json(serde_json::json!({"v": 1}))),
                set("orgs/acme/records/b", json(serde_json::json!({"v": 2}))),
                DocWrite::Delete { path: "orgs/acme/records/old".into() },
            ])
            .await
            .unwrap();
        for path in ["orgs/acme/records/a", "orgs/acme/records/b"] {
            assert_eq!(store.get(path).await.unwrap().unwrap().update_time, commit, "{path}");
        }
        assert_eq!(store.get("orgs/acme/records/old").await.unwrap(), None);
    })
    .await;

    case(suite, "deleting a missing document is not an error", async {
        let store = fresh().await;
        store.apply(vec![DocWrite::Delete { path: "orgs/acme/records/never".into() }]).await.expect("delete of a missing document");
        assert_eq!(store.count(&coll("orgs/acme/records")).await.unwrap(), 0);
    })
    .await;

    case(suite, "bad batches are invalid input and write nothing", async {
        let store = fresh().await;
        let twice = vec![set("orgs/acme/records/a", json(serde_json::json!({"v": 1}))), DocWrite::Delete { path: "orgs/acme/records/a".into() }];
        let error = store.apply(twice).await.expect_err("one path twice in a batch");
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
        let error = store.apply(vec![set("orgs/acme/records", json(serde_json::json!({})))]).await.expect_err("a collection path is no document");
        assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
        assert_eq!(store.get("orgs/acme/records/a").await.unwrap(), None);
    })
    .await;

    case(suite, "scans are ordered, exact and hold their snapshot while writes go on", async {
        let store = fresh().await;
        let total = 600;
        let mut last_commit = Timestamp::new(0, 0);
        let writes: Vec<DocWrite> =
            (0..total).map(|i| set(&format!("orgs/acme/records/r{i:04}"), json(serde_json::json!({"i": i, "label": "x"})))).collect();
        for chunk in writes.chunks(contract.max_batch.min(250)) {
            last_commit = store.apply(chunk.to_vec()).await.unwrap();
        }
        // Neighbours that must not leak in: a sibling collection sorting after, another
        // tenant, and a subcollection under one of the documents.
        store
            .apply(vec![
                set("orgs/acme/recordsx/a", json(serde_json::json!({}))),
                set("orgs/globex/records/a", json(serde_json::json!({}))),
                set("orgs/acme/records/r0001/notes/n", json(serde_json::json!({}))),
            ])
            .await
            .unwrap();

        let mut scan = store.scan_states(&coll("orgs/acme/records")).await.unwrap();
        assert!(scan.read_time >= last_commit, "the snapshot includes every earlier commit");
        let mut seen: Vec<DocState> = Vec::new();
        for _ in 0..10 {
            seen.push(scan.items.next().await.expect("more states").unwrap());
        }
        let after = store
            .apply(vec![
                DocWrite::Delete { path: format!("orgs/acme/records/r{:04}", total - 1) },
                set("orgs/acme/records/r0300", json(serde_json::json!({"i": "changed"}))),
                set("orgs/acme/records/r0300x", json(serde_json::json!({"new": true}))),
            ])
            .await
            .unwrap();
        while let Some(state) = scan.items.next().await {
            seen.push(state.unwrap());
        }
        assert!(after > scan.read_time);
        assert_eq!(seen.len(), total, "exactly the documents of the snapshot");
        assert!(seen.windows(2).all(|w| w[0].doc_path < w[1].doc_path), "ascending path order");
        assert!(seen.iter().all(|s| s.version < after.as_micros()), "nothing committed after the snapshot");
        let expected_hash = content_hash(&json(serde_json::json!({"i": 300, "label": "x"})));
        let r300 = seen.iter().find(|s| s.doc_path == "orgs/acme/records/r0300").unwrap();
        assert_eq!(r300.content_hash, expected_hash, "the core's canonical hash of the fields");

        // A new scan sees the new state, and matches the documents one by one.
        let scan = store.scan_states(&coll("orgs/acme/records")).await.unwrap();
        assert!(scan.read_time >= after);
        let states: Vec<DocState> = scan.items.map(Result::unwrap).collect().await;
        assert_eq!(states.len(), total);
        for state in [&states[0], &states[300], &states[total - 1]] {
            let doc = store.get(&state.doc_path).await.unwrap().unwrap();
            assert_eq!((state.version, &state.content_hash), (doc.update_time.as_micros(), &content_hash(&doc.fields)));
        }
        let paths: BTreeSet<&str> = states.iter().map(|s| s.doc_path.as_str()).collect();
        assert!(paths.contains("orgs/acme/records/r0300x") && !paths.contains(format!("orgs/acme/records/r{:04}", total - 1).as_str()));
        assert_eq!(store.count(&coll("orgs/acme/records")).await.unwrap(), total as u64);
        assert_eq!(store.count(&coll("orgs/acme/recordsx")).await.unwrap(), 1);
        assert_eq!(store.count(&coll("orgs/initech/records")).await.unwrap(), 0);

        // Dropping a scan half way must not block later writes.
        let mut abandoned = store.scan_states(&coll("orgs/acme/records")).await.unwrap();
        abandoned.items.next().await.unwrap().unwrap();
        drop(abandoned);
        store.apply(vec![DocWrite::Delete { path: "orgs/acme/records/r0002".into() }]).await.unwrap();
    })
    .await;

    case(suite, "document scans carry whole documents at one read time", async {
        let store = fresh().await;
        let reference_root = contract.reference_root.clone();
        let writes: Vec<DocWrite> = (0..120)
            .map(|i| {
                let mut fields = every_type(&reference_root);
                fields.insert("i".into(), Value::Integer(i));
                set(&format!("orgs/acme/records/d{i:03}"), fields)
            })
            .collect();
        for chunk in writes.chunks(contract.max_batch.min(50)) {
            store.apply(chunk.to_vec()).await.unwrap();
        }
        let scan = store.scan_documents(&coll("orgs/acme/records")).await.unwrap();
        let docs: Vec<_> = scan.items.map(Result::unwrap).collect().await;
        assert_eq!(docs.len(), 120);
        assert!(docs.windows(2).all(|w| w[0].path < w[1].path));
        for doc in [&docs[0], &docs[77], &docs[119]] {
            assert_eq!(Some(doc), store.get(&doc.path).await.unwrap().as_ref(), "scan and get agree");
            assert!(doc.update_time <= scan.read_time);
        }
    })
    .await;

    case(suite, "document ids include parents that exist only through subcollections", async {
        let store = fresh().await;
        store
            .apply(vec![
                set("orgs/globex/records/a", json(serde_json::json!({}))),
                set("orgs/acme/records/a", json(serde_json::json!({}))),
                set("orgs/acme/notes/n", json(serde_json::json!({}))),
                set("orgs/acme-x/records/b", json(serde_json::json!({}))),
                set("orgs/initech", json(serde_json::json!({"name": "a real org document"}))),
                set("orgsx/other/records/c", json(serde_json::json!({}))),
            ])
            .await
            .unwrap();
        assert_eq!(store.list_document_ids("orgs").await.unwrap(), vec!["acme", "acme-x", "globex", "initech"]);
        assert_eq!(store.list_document_ids("orgs/acme/records").await.unwrap(), vec!["a"]);
        assert!(store.list_document_ids("nothing").await.unwrap().is_empty());
    })
    .await;

    case(suite, "a nested route's scan holds one tenant's documents at their depth, in path order, at one snapshot", async {
        let store = fresh().await;
        let pattern = PathPattern::parse(NESTED).unwrap();
        let task = |tenant: &str, project: &str, id: &str| pattern.document_path_with(tenant, &[project], id).unwrap();
        // acme's project ids order differently segment by segment (Firestore's
        // `__name__`) and as whole paths (`p-1/…` and `p.x/…` before `p/…`); only
        // `orgs/acme/projects/q` exists as a document, every other ancestor is missing.
        let mut expected: Vec<String> = Vec::new();
        let mut writes = Vec::new();
        for project in ["p", "p-1", "p.x", "pa", "q"] {
            for i in 0..3 {
                let path = task("acme", project, &format!("t{i}"));
                writes.push(set(&path, json(serde_json::json!({"project": project, "i": i}))));
                expected.push(path);
            }
        }
        writes.push(set("orgs/acme/projects/q", json(serde_json::json!({"name": "a real project document"}))));
        // Neighbours that must not leak in: a `tasks` collection at another depth,
        // another literal, another tenant (and one whose id extends acme's), another
        // route of the same tenant.
        for path in [
            "orgs/acme/tasks/t0",
            "orgs/acme/projects/p/tasks/t0/tasks/deeper",
            "orgs/acme/teams/p/tasks/t0",
            "orgs/acme-x/projects/p/tasks/t0",
            "orgs/globex/projects/p/tasks/t0",
            "orgs/acme/records/r0",
        ] {
            writes.push(set(path, json(serde_json::json!({"neighbour": true}))));
        }
        let last_commit = store.apply(writes).await.unwrap();
        expected.sort();
        let scope = pattern.tenant_scope("acme").unwrap();

        let mut scan = store.scan_states(&scope).await.unwrap();
        assert!(scan.read_time >= last_commit, "the snapshot includes every earlier commit");
        let first = scan.items.next().await.expect("a first state").unwrap();
        // Written after the scan began: a new task in the last project, and a delete.
        let after = store
            .apply(vec![set(&task("acme", "q", "t9"), json(serde_json::json!({}))), DocWrite::Delete { path: task("acme", "q", "t0") }])
            .await
            .unwrap();
        assert!(after > scan.read_time);
        let mut seen = vec![first];
        while let Some(state) = scan.items.next().await {
            seen.push(state.unwrap());
        }
        let paths: Vec<&str> = seen.iter().map(|s| s.doc_path.as_str()).collect();
        assert_eq!(paths, expected, "exactly the tenant's tasks at the route's depth, in byte order of the whole path, as of the snapshot");
        let q0 = seen.iter().find(|s| s.doc_path == task("acme", "q", "t0")).unwrap();
        assert_eq!(q0.content_hash, content_hash(&json(serde_json::json!({"project": "q", "i": 0}))));

        let docs = store.scan_documents(&scope).await.unwrap();
        assert!(docs.read_time >= after);
        let docs: Vec<_> = docs.items.map(Result::unwrap).collect().await;
        let mut now_expected: Vec<String> = expected.iter().filter(|p| **p != task("acme", "q", "t0")).cloned().collect();
        now_expected.push(task("acme", "q", "t9"));
        now_expected.sort();
        assert_eq!(docs.iter().map(|d| d.path.clone()).collect::<Vec<_>>(), now_expected);
        for doc in [&docs[0], &docs[7]] {
            assert_eq!(Some(doc), store.get(&doc.path).await.unwrap().as_ref(), "scan and get agree");
        }
        assert_eq!(store.count(&scope).await.unwrap(), now_expected.len() as u64);
        assert_eq!(store.count(&pattern.tenant_scope("initech").unwrap()).await.unwrap(), 0);
        assert_eq!(store.scan_states(&pattern.tenant_scope("initech").unwrap()).await.unwrap().items.count().await, 0);

        // Tenants whose own document (and their projects') was never written.
        assert_eq!(store.list_tenants(&pattern).await.unwrap(), vec!["acme", "acme-x", "globex"]);
    })
    .await;

    case(suite, "a nested route's scan pages through many documents of many projects", async {
        let store = fresh().await;
        let pattern = PathPattern::parse(NESTED).unwrap();
        let mut expected = Vec::new();
        let writes: Vec<DocWrite> = (0..450)
            .map(|i| {
                let path = pattern.document_path_with("globex", &[&format!("proj{}", i % 3)], &format!("t{i:04}")).unwrap();
                expected.push(path.clone());
                set(&path, json(serde_json::json!({"i": i})))
            })
            .collect();
        for chunk in writes.chunks(contract.max_batch.min(250)) {
            store.apply(chunk.to_vec()).await.unwrap();
        }
        store.apply(vec![set("orgs/globex/archive/x/tasks/t0000", json(serde_json::json!({})))]).await.unwrap();
        expected.sort();
        let scan = store.scan_states(&pattern.tenant_scope("globex").unwrap()).await.unwrap();
        let paths: Vec<String> = scan.items.map(|s| s.unwrap().doc_path).collect().await;
        assert_eq!(paths, expected);
        // Dropping a scan half way must not block later writes.
        let mut abandoned = store.scan_documents(&pattern.tenant_scope("globex").unwrap()).await.unwrap();
        abandoned.items.next().await.unwrap().unwrap();
        drop(abandoned);
        store.apply(vec![DocWrite::Delete { path: expected[0].clone() }]).await.unwrap();
    })
    .await;

    case(suite, "a route with a wildcard before its tenant is scanned and its tenants listed", async {
        let store = fresh().await;
        let pattern = PathPattern::parse("regions/{region}/orgs/{tenant}/records/{doc}").unwrap();
        store
            .apply(vec![
                set("regions/eu/orgs/acme/records/a", json(serde_json::json!({}))),
                set("regions/us/orgs/acme/records/b", json(serde_json::json!({}))),
                set("regions/us/orgs/globex/records/c", json(serde_json::json!({}))),
                set("regions/us/orgs/globex/notes/n", json(serde_json::json!({}))),
                set("orgs/initech/records/d", json(serde_json::json!({}))),
            ])
            .await
            .unwrap();
        assert_eq!(store.list_tenants(&pattern).await.unwrap(), vec!["acme", "globex"]);
        let scan = store.scan_states(&pattern.tenant_scope("acme").unwrap()).await.unwrap();
        let paths: Vec<String> = scan.items.map(|s| s.unwrap().doc_path).collect().await;
        assert_eq!(paths, vec!["regions/eu/orgs/acme/records/a", "regions/us/orgs/acme/records/b"]);
        // A top-level route's tenants are the ids under its literal prefix, as before.
        let plain = PathPattern::parse("orgs/{tenant}/records/{doc}").unwrap();
        assert_eq!(store.list_tenants(&plain).await.unwrap(), vec!["initech"]);
    })
    .await;

    case(suite, "changed_since returns exactly the documents whose change field is a timestamp at or after the time", async {
        let store = fresh().await;
        let since = Timestamp::from_micros(SINCE_MICROS);
        let at = |offset_micros: i64| Value::Timestamp(Timestamp::from_micros(SINCE_MICROS + offset_micros));
        let with = |value: Value| Fields::from([("updated_at".to_owned(), value), ("v".to_owned(), Value::Integer(1))]);
        let mut expected: BTreeSet<String> = BTreeSet::new();
        let mut writes = Vec::new();
        let mut changed = |path: &str, offset: i64| {
            expected.insert(path.to_owned());
            writes.push(set(path, with(at(offset))));
        };
        changed("orgs/acme/records/at", 0);
        changed("orgs/acme/records/just-after", 1);
        changed("orgs/acme/records/a-day-after", 86_400_000_000);
        // Many documents with one value, so a store that pages crosses pages on a tie.
        for i in 0..230 {
            changed(&format!("orgs/acme/records/tie{i:03}"), 5_000_000);
        }
        let unchanged = [
            set("orgs/acme/records/just-before", with(at(-1))),
            set("orgs/acme/records/none", json(serde_json::json!({"v": 1}))),
            set("orgs/acme/records/null", with(Value::Null)),
            set("orgs/acme/records/text", with(Value::String("2999-01-01T00:00:00Z".into()))),
            set("orgs/acme/records/number", with(Value::Integer(i64::MAX))),
            set("orgs/acme/records/nested", Fields::from([("meta".to_owned(), Value::Map(with(at(1))))])),
            set("orgs/acme/records/other-field", Fields::from([("changed_at".to_owned(), at(1))])),
            // Neighbours with a new value: another tenant, a sibling collection, a
            // subcollection of one of the documents.
            set("orgs/globex/records/at", with(at(1))),
            set("orgs/acme/recordsx/at", with(at(1))),
            set("orgs/acme/records/at/notes/n", with(at(1))),
        ];
        writes.extend(unchanged);
        let mut last_commit = Timestamp::new(0, 0);
        for chunk in writes.chunks(contract.max_batch.min(250)) {
            last_commit = store.apply(chunk.to_vec()).await.unwrap();
        }
        let scope = coll("orgs/acme/records");
        let mut scan = store.changed_since(&scope, "updated_at", since).await.unwrap();
        assert!(scan.read_time >= last_commit, "the read includes every earlier commit");
        let first = scan.items.next().await.expect("a first document").unwrap();
        // Written after the read began: one new change, one changed document deleted.
        let after = store
            .apply(vec![set("orgs/acme/records/later", with(at(10))), DocWrite::Delete { path: "orgs/acme/records/tie229".into() }])
            .await
            .unwrap();
        assert!(after > scan.read_time);
        let mut docs = vec![first];
        while let Some(doc) = scan.items.next().await {
            docs.push(doc.unwrap());
        }
        let paths: BTreeSet<String> = docs.iter().map(|d| d.path.clone()).collect();
        assert_eq!(paths.len(), docs.len(), "each document once");
        assert_eq!(paths, expected, "exactly the scope's documents whose updated_at is a timestamp >= since, as of the read");
        let doc = docs.iter().find(|d| d.path == "orgs/acme/records/at").unwrap();
        assert_eq!(doc.fields, with(at(0)), "whole documents");
        assert!(doc.update_time <= scan.read_time);

        // Another field, a later time, a scope with nothing.
        let later: BTreeSet<String> =
            store.changed_since(&scope, "updated_at", Timestamp::from_micros(SINCE_MICROS + 2)).await.unwrap().items.map(|d| d.unwrap().path).collect().await;
        let mut expected_later = expected.clone();
        for gone in ["orgs/acme/records/at", "orgs/acme/records/just-after", "orgs/acme/records/tie229"] {
            expected_later.remove(gone);
        }
        expected_later.insert("orgs/acme/records/later".into());
        assert_eq!(later, expected_later);
        // Another field: answered the same way, or refused by a store that indexes only
        // some fields for changes (the trait lets it refuse rather than read everything).
        match store.changed_since(&scope, "changed_at", since).await {
            Ok(scan) => {
                let other: Vec<String> = scan.items.map(|d| d.unwrap().path).collect().await;
                assert_eq!(other, vec!["orgs/acme/records/other-field"]);
            }
            Err(error) => {
                assert_eq!(error.kind, ErrorKind::InvalidInput, "{error}");
                assert!(error.message.contains("changed_at"), "the refusal names the field: {error}");
            }
        }
        assert_eq!(store.changed_since(&coll("orgs/initech/records"), "updated_at", since).await.unwrap().items.count().await, 0);
    })
    .await;

    case(suite, "changed_since of a nested route's tenant holds that tenant's documents at the route's depth only", async {
        let store = fresh().await;
        let pattern = PathPattern::parse(NESTED).unwrap();
        let task = |tenant: &str, project: &str, id: &str| pattern.document_path_with(tenant, &[project], id).unwrap();
        let since = Timestamp::from_micros(SINCE_MICROS);
        let with = |offset: i64| Fields::from([("updated_at".to_owned(), Value::Timestamp(Timestamp::from_micros(SINCE_MICROS + offset)))]);
        let mut expected = BTreeSet::new();
        let mut writes = Vec::new();
        for project in ["p", "p-1", "q"] {
            let new = task("acme", project, "new");
            writes.push(set(&new, with(0)));
            expected.insert(new);
            writes.push(set(&task("acme", project, "old"), with(-1)));
            writes.push(set(&task("acme", project, "none"), json(serde_json::json!({"done": false}))));
        }
        for path in [
            "orgs/acme/tasks/t0",
            "orgs/acme/projects/p/tasks/new/tasks/deeper",
            "orgs/acme/teams/p/tasks/t0",
            "orgs/acme-x/projects/p/tasks/t0",
            "orgs/globex/projects/p/tasks/t0",
            "orgs/acme/records/r0",
        ] {
            writes.push(set(path, with(1)));
        }
        // Enough changes with one value in one project to cross a store's pages.
        for i in 0..230 {
            let path = task("acme", "p.x", &format!("t{i:03}"));
            writes.push(set(&path, with(7)));
            expected.insert(path);
        }
        let mut last_commit = Timestamp::new(0, 0);
        for chunk in writes.chunks(contract.max_batch.min(250)) {
            last_commit = store.apply(chunk.to_vec()).await.unwrap();
        }
        let scope = pattern.tenant_scope("acme").unwrap();
        let mut scan = store.changed_since(&scope, "updated_at", since).await.unwrap();
        assert!(scan.read_time >= last_commit, "the read includes every earlier commit");
        let first = scan.items.next().await.expect("a first document").unwrap();
        // Written after the read began: a change in an existing project and in a new one.
        let after = store.apply(vec![set(&task("acme", "q", "later"), with(9)), set(&task("acme", "r", "later"), with(9))]).await.unwrap();
        assert!(after > scan.read_time);
        let mut found = BTreeSet::from([first.path]);
        while let Some(doc) = scan.items.next().await {
            assert!(found.insert(doc.unwrap().path), "each document once");
        }
        assert_eq!(found, expected, "exactly the tenant's tasks at the route's depth whose updated_at >= since, as of the read");
        let initech = pattern.tenant_scope("initech").unwrap();
        assert_eq!(store.changed_since(&initech, "updated_at", since).await.unwrap().items.count().await, 0);

        // A wildcard before the tenant: every region's documents of one tenant.
        let regional = PathPattern::parse("regions/{region}/orgs/{tenant}/records/{doc}").unwrap();
        store
            .apply(vec![
                set("regions/eu/orgs/acme/records/a", with(0)),
                set("regions/us/orgs/acme/records/b", with(1)),
                set("regions/us/orgs/acme/records/old", with(-1)),
                set("regions/us/orgs/globex/records/c", with(1)),
            ])
            .await
            .unwrap();
        let found: BTreeSet<String> =
            store.changed_since(&regional.tenant_scope("acme").unwrap(), "updated_at", since).await.unwrap().items.map(|d| d.unwrap().path).collect().await;
        assert_eq!(found, BTreeSet::from(["regions/eu/orgs/acme/records/a".to_owned(), "regions/us/orgs/acme/records/b".to_owned()]));
    })
    .await;

    case(suite, "count_range over adjacent ranges sums to the count, each equal to the scan's documents in it", async {
        let store = fresh().await;
        let scope = coll("orgs/acme/records");
        // Ids whose order as ids and as whole paths is the point: `p` and the ids that
        // extend it (`p-1`, `p.x` sort before `p/…`, `p0` after), and enough `m…` ids
        // to cross a store's pages.
        let mut writes: Vec<DocWrite> = ["a", "p", "p-1", "p.x", "p0", "pa", "q", "z"]
            .iter()
            .map(|id| set(&format!("orgs/acme/records/{id}"), json(serde_json::json!({"id": id}))))
            .collect();
        writes.extend((0..240).map(|i| set(&format!("orgs/acme/records/m{i:03}"), json(serde_json::json!({"i": i})))));
        // Neighbours that no range of the scope may count.
        for path in ["orgs/acme/records/p/notes/n", "orgs/acme/recordsx/a", "orgs/acme-x/records/a", "orgs/globex/records/p", "orgs/acme/records0/a"] {
            writes.push(set(path, json(serde_json::json!({}))));
        }
        for chunk in writes.chunks(contract.max_batch.min(250)) {
            store.apply(chunk.to_vec()).await.unwrap();
        }
        let states: Vec<DocState> = store.scan_states(&scope).await.unwrap().items.map(Result::unwrap).collect().await;
        let total = store.count(&scope).await.unwrap();
        assert_eq!((total, states.len()), (248, 248));

        let bound = |id: &str| format!("orgs/acme/records/{id}");
        let mut cuts: Vec<String> = ["m100", "m199", "p", "p-1", "p.x", "p/notes/n", "p0", "q"].iter().map(|id| bound(id)).collect();
        cuts.sort();
        let parts = PathRange::all().split_at(&cuts);
        assert_eq!(parts.len(), cuts.len() + 1);
        let mut sum = 0;
        for part in &parts {
            let in_part: Vec<&DocState> = states.iter().filter(|s| part.contains(&s.doc_path)).collect();
            let counted = store.count_range(&scope, part).await.unwrap();
            assert_eq!(counted, in_part.len() as u64, "count_range {part}");
            let scanned: Vec<DocState> = store.scan_states_in(&scope, part).await.unwrap().items.map(Result::unwrap).collect().await;
            assert_eq!(scanned.iter().collect::<Vec<_>>(), in_part, "scan_states_in {part}: scan_states filtered to the range, in path order");
            sum += counted;
        }
        assert_eq!(sum, total, "adjacent ranges cover the scope exactly once");
        // `p/notes/n` cuts between `p.x` and `p0`: the documents `p`, `p-1`, `p.x` before it.
        assert_eq!(store.count_range(&scope, &PathRange::new(Some(bound("p")), Some(bound("p/notes/n")))).await.unwrap(), 3);
        assert_eq!(store.count_range(&scope, &PathRange::new(Some(bound("p-1")), Some(bound("p0")))).await.unwrap(), 2, "p-1, p.x");

        // Empty ranges, and ranges whose bounds lie outside the collection.
        let range = |start: Option<&str>, end: Option<&str>| PathRange::new(start.map(str::to_owned), end.map(str::to_owned));
        for (part, expected) in [
            (range(Some(&bound("p")), Some(&bound("p"))), 0),
            (range(Some(&bound("p0")), Some(&bound("p0"))), 0),
            (range(None, Some("orgs/acme/records")), 0),
            (range(None, Some(&bound(""))), 0),
            (range(Some("orgs/acme/recordsx"), None), 0),
            (range(Some("orgs/acme/records0"), Some("orgs/b")), 0),
            (range(Some("orgs"), Some("orgs/z")), 248),
            (range(Some("orgs/acme-x"), Some(&bound("b"))), 1),
            (range(Some(&bound("pa")), Some("orgs/acme/recordsx")), 3),
            (range(Some(&bound("q")), None), 2),
        ] {
            assert_eq!(store.count_range(&scope, &part).await.unwrap(), expected, "count_range {part}");
            let scanned: Vec<String> = store.scan_states_in(&scope, &part).await.unwrap().items.map(|s| s.unwrap().doc_path).collect().await;
            let filtered: Vec<String> = states.iter().filter(|s| part.contains(&s.doc_path)).map(|s| s.doc_path.clone()).collect();
            assert_eq!((scanned.len() as u64, &scanned), (expected, &filtered), "scan_states_in {part}");
        }
        assert_eq!(store.count_range(&coll("orgs/initech/records"), &PathRange::all()).await.unwrap(), 0);

        // The range's read is one snapshot: a write after it began is not in it.
        let mut scan = store.scan_states_in(&scope, &range(Some(&bound("m000")), Some(&bound("m200")))).await.unwrap();
        let first = scan.items.next().await.unwrap().unwrap();
        let after = store.apply(vec![DocWrite::Delete { path: bound("m150") }, set(&bound("m150x"), json(serde_json::json!({})))]).await.unwrap();
        assert!(after > scan.read_time);
        let mut seen = vec![first.doc_path];
        while let Some(state) = scan.items.next().await {
            seen.push(state.unwrap().doc_path);
        }
        assert_eq!(seen, (0..200).map(|i| bound(&format!("m{i:03}"))).collect::<Vec<_>>());
    })
    .await;

    case(suite, "a nested route's tenant takes only the whole range", async {
        let store = fresh().await;
        let pattern = PathPattern::parse(NESTED).unwrap();
        let mut writes = Vec::new();
        for project in ["p", "p-1", "q"] {
            for i in 0..2 {
                writes.push(set(&pattern.document_path_with("acme", &[project], &format!("t{i}")).unwrap(), json(serde_json::json!({"i": i}))));
            }
        }
        writes.push(set("orgs/acme/tasks/t0", json(serde_json::json!({}))));
        store.apply(writes).await.unwrap();
        let scope = pattern.tenant_scope("acme").unwrap();
        assert_eq!(store.count_range(&scope, &PathRange::all()).await.unwrap(), 6);
        assert_eq!(store.count_range(&scope, &PathRange::all()).await.unwrap(), store.count(&scope).await.unwrap());
        let whole: Vec<DocState> = store.scan_states_in(&scope, &PathRange::all()).await.unwrap().items.map(Result::unwrap).collect().await;
        let states: Vec<DocState> = store.scan_states(&scope).await.unwrap().items.map(Result::unwrap).collect().await;
        assert_eq!(whole, states);
        for bounded in [
            PathRange::new(Some("orgs/acme/projects/p".into()), None),
            PathRange::new(None, Some("orgs/acme/projects/q".into())),
            PathRange::new(Some("orgs/acme/".into()), Some("orgs/acme0".into())),
        ] {
            let error = store.count_range(&scope, &bounded).await.expect_err("a bounded range of a nested scope");
            assert_eq!(error.kind, ErrorKind::InvalidInput, "count_range {bounded}: {error}");
            let error = store.scan_states_in(&scope, &bounded).await.err().expect("a bounded range of a nested scope");
            assert_eq!(error.kind, ErrorKind::InvalidInput, "scan_states_in {bounded}: {error}");
        }
    })
    .await;

    case(suite, "commit times strictly increase", async {
        let store = fresh().await;
        let mut previous = Timestamp::new(0, 0);
        for i in 0..20 {
            let commit = store.apply(vec![set("orgs/acme/records/a", json(serde_json::json!({"v": i})))]).await.unwrap();
            assert!(commit > previous, "commit {i}: {commit:?} after {previous:?}");
            previous = commit;
        }
    })
    .await;
}

/// The nested route the cases use.
const NESTED: &str = "orgs/{tenant}/projects/{project}/tasks/{doc}";

/// The `since` of the change field cases (µs: stores keep timestamps to the µs).
const SINCE_MICROS: i64 = 1_790_000_000_123_456;

/// The scope of one collection.
fn coll(path: &str) -> SourceScope {
    SourceScope::collection(path).expect("a collection path")
}

fn json(value: serde_json::Value) -> Fields {
    fields_from_json(&value).expect("valid Converge JSON")
}

fn set(path: &str, fields: Fields) -> DocWrite {
    DocWrite::Set { path: path.into(), fields }
}

/// One field of every Firestore type, with the edges that lossy conversions break:
/// integers beyond 2^53, doubles that are not integers, microsecond timestamps
/// (Firestore keeps microseconds), non-UTF-8 bytes, nested maps and arrays.
fn every_type(reference_root: &str) -> Fields {
    let mut nested = Fields::new();
    nested.insert("deep".into(), Value::Map(Fields::from([("n".into(), Value::Integer(-1))])));
    nested.insert("list".into(), Value::Array(vec![Value::Integer(1), Value::String("two".into()), Value::Null]));
    Fields::from([
        ("null".into(), Value::Null),
        ("yes".into(), Value::Boolean(true)),
        ("big".into(), Value::Integer(9_007_199_254_740_993)),
        ("min".into(), Value::Integer(i64::MIN)),
        ("pi".into(), Value::Double(std::f64::consts::PI)),
        ("tiny".into(), Value::Double(-2.5e-300)),
        ("when".into(), Value::Timestamp(Timestamp::new(1_714_557_600, 123_456_000))),
        ("text".into(), Value::String("grants ✓ \"quoted\"".into())),
        ("blob".into(), Value::Bytes(vec![0, 159, 146, 150, 255])),
        ("ref".into(), Value::Reference(format!("{reference_root}/orgs/acme/records/other"))),
        ("geo".into(), Value::GeoPoint(GeoPoint { latitude: 51.5, longitude: -0.125 })),
        ("empty_list".into(), Value::Array(vec![])),
        ("empty_map".into(), Value::Map(Fields::new())),
        ("map".into(), Value::Map(nested)),
    ])
}
